//! Shared test harness: a simulator, a temp folder with a config pointing at it, and helpers to
//! run the binary and compare the archive with the simulator's manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};
use webex_sim::{DatasetSpec, ExpectedRecording, SimClient, SimConfig, SimHandle, SimServer};

pub const MASTER_KEY: &str = "q6i6m5eV0k3Qbn2n1m7Yv9Q4c2l8Zt1uXw0aPz3sR5E=";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: SimServer,
    pub client: SimClient,
    pub config_path: PathBuf,
}

impl Env {
    /// A simulator with `dataset` (rate limit off unless asked) and a config file for it.
    pub async fn start(dataset: DatasetSpec) -> Env {
        Self::start_with(
            SimConfig {
                dataset,
                rate_limit_per_minute: None,
                realtime_clock: false,
                ..SimConfig::default()
            },
            None,
        )
        .await
    }

    pub async fn start_with(sim_config: SimConfig, extra_config: Option<&str>) -> Env {
        let client = sim_config.clients.first().cloned().expect("a sim client");
        let sim = SimServer::start(sim_config, ([127, 0, 0, 1], 0).into())
            .await
            .expect("sim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("wxvault.toml");
        let base = sim.base_url();
        let mut text = format!(
            "[database]\nurl = \"sqlite://state/wxvault.db\"\n\n[storage]\nurl = \"file://archive\"\n\n\
             [webex]\napi_base = \"{base}\"\n\n[wxcc]\napi_base = \"{base}\"\n\n[vault]\nmaster_key_file = \"master.key\"\n"
        );
        if let Some(extra) = extra_config {
            text.push_str(extra);
        }
        std::fs::write(&config_path, text).expect("write config");
        Env {
            dir,
            sim,
            client,
            config_path,
        }
    }

    /// Points this env's config at `pg` when there is one (a fleet test shares PostgreSQL like
    /// a real fleet), else leaves it on its SQLite file and says so; returns the database URL.
    pub fn use_postgres_if_any(
        &self,
        pg: Option<&vault::testing::TempPostgres>,
        test: &str,
    ) -> String {
        match pg {
            Some(pg) => {
                let cfg = std::fs::read_to_string(&self.config_path)
                    .expect("config")
                    .replace("sqlite://state/wxvault.db", pg.url());
                std::fs::write(&self.config_path, cfg).expect("config");
                pg.url().to_owned()
            }
            None => {
                eprintln!("{test}: PostgreSQL unreachable and WXVAULT_REQUIRE_PG unset; on SQLite");
                format!("sqlite://{}", self.db_path().display())
            }
        }
    }

    pub fn handle(&self) -> SimHandle {
        self.sim.handle()
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state/wxvault.db")
    }

    /// The binary with this env's config and `args`: the test master key, no inherited
    /// `WXVAULT_CONFIG` or `RUST_LOG`, stdin not a terminal. Output goes wherever the caller
    /// points it (inherited unless set).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd.env_remove("WXVAULT_CONFIG")
            .env_remove("RUST_LOG")
            .env("WXVAULT_MASTER_KEY", MASTER_KEY)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// [`Env::command`] started with stdout and stderr piped (for `wait_with_output`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts")
    }

    /// Runs the binary with this env's config and the given extra environment.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
            .await
            .expect("join")
    }

    /// `wxvault org add` for sim org `org_id` with a freshly issued grant. Returns the grant.
    pub async fn add_org(&self, name: &str, org_id: &str) -> webex_sim::GrantTokens {
        let (grant, out) = self
            .add_org_with(name, org_id, &[], &["cjp:config_read"])
            .await;
        assert_ok(&out, "org add");
        grant
    }

    /// `wxvault org add` with `extra` arguments (e.g. `--sources`) and a grant of `scopes`;
    /// returns the grant and what the command said.
    pub async fn add_org_with(
        &self,
        name: &str,
        org_id: &str,
        extra: &[&str],
        scopes: &[&str],
    ) -> (webex_sim::GrantTokens, Output) {
        let grant = self
            .handle()
            .issue_grant(&self.client.client_id, org_id, scopes);
        let mut args = vec![
            "org",
            "add",
            "--name",
            name,
            "--region",
            "us1",
            "--client-id",
            &self.client.client_id,
        ];
        args.extend_from_slice(extra);
        let out = self
            .run(
                &args,
                &[
                    ("WXVAULT_CLIENT_SECRET", &self.client.client_secret),
                    ("WXVAULT_REFRESH_TOKEN", &grant.refresh_token),
                    ("WXVAULT_ACCESS_TOKEN", &grant.access_token),
                ],
            )
            .await;
        (grant, out)
    }

    /// Sync over the whole dataset span (the last `days` days up to the sim's now).
    pub async fn sync_all(&self, days: i64, extra: &[&str]) -> Output {
        let now = self.handle().now_ms();
        let from = rfc3339(now - days * 86_400_000);
        let to = rfc3339(now + 1);
        let mut args = vec!["sync", "--from", &from, "--to", &to];
        args.extend_from_slice(extra);
        self.run(&args, &[]).await
    }
}

/// Sends SIGTERM to `child` (the shutdown every deployment uses).
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "SIGTERM delivered");
}

/// Waits up to `limit` for `child` to exit (after a [`sigterm`]). `None` if it did not (it is
/// then SIGKILLed and reaped, so no process outlives the test).
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let exited = wait_until(limit, || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("process reaped");
    exited.then_some(status)
}

/// The last 40 lines of a process log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn rfc3339(ms: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}",
        out.status.code(),
        text(out)
    );
}

/// Every file under `root`, as relative path → (sha256, size).
pub fn files(root: &Path) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let rel = p
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(
                    rel,
                    (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64),
                );
            }
        }
    }
    out
}

/// Recordings the archive must hold: telephony tasks in the window, capture available by `now`.
pub fn expected_recordings(
    h: &SimHandle,
    org_id: &str,
    from_ms: i64,
    now_ms: i64,
) -> Vec<ExpectedRecording> {
    let m = h.manifest(org_id);
    let telephony: std::collections::HashSet<&str> = m
        .tasks
        .iter()
        .filter(|t| {
            t.channel_type == "telephony" && t.created_ms >= from_ms && t.created_ms <= now_ms
        })
        .map(|t| t.task_id.as_str())
        .collect();
    // wxvault asks for virtual-agent legs too (includeVARecordings: true) but not for segments.
    m.recordings
        .iter()
        .chain(
            m.optional_recordings
                .iter()
                .filter(|r| !r.segment && r.call_type.starts_with("va")),
        )
        .filter(|r| telephony.contains(r.task_id.as_str()) && r.available_at_ms <= now_ms)
        .cloned()
        .collect()
}

/// The object key the layout contract (docs/layout.md) promises for a recording.
pub fn audio_key(org_id: &str, r: &ExpectedRecording) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.task_created_ms) * 1_000_000)
            .expect("time");
    let ext = Path::new(&r.file_name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("wav")
        .to_ascii_lowercase();
    format!(
        "{org_id}/wxcc/{:04}/{:02}/{:02}/{}/{}.{ext}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        r.task_id,
        r.recording_id
    )
}

/// Asserts that the archive holds every `expected` recording (audio + sidecar each, matching
/// sha256) and nothing else for that org — except recordings whose capture became available while
/// the sync ran (the simulator's clock moves with real time), which may or may not be there but
/// must be correct when they are.
pub fn assert_archive_matches(
    archive: &BTreeMap<String, (String, u64)>,
    org_id: &str,
    expected: &[ExpectedRecording],
) {
    assert_archive_matches_allowing(archive, org_id, expected, &[]);
}

pub fn assert_archive_matches_allowing(
    archive: &BTreeMap<String, (String, u64)>,
    org_id: &str,
    expected: &[ExpectedRecording],
    allowed: &[ExpectedRecording],
) {
    let mut want = std::collections::BTreeSet::new();
    for r in allowed {
        let key = audio_key(org_id, r);
        if let Some((sha, size)) = archive.get(&key) {
            assert_eq!(sha, &r.sha256, "sha256 of {key}");
            assert_eq!(*size, r.size_bytes, "size of {key}");
            let sidecar_key = format!("{}.json", key.rsplit_once('.').expect("ext").0);
            assert!(
                archive.contains_key(&sidecar_key),
                "missing sidecar {sidecar_key}"
            );
            want.insert(key);
            want.insert(sidecar_key);
        }
    }
    for r in expected {
        let key = audio_key(org_id, r);
        let (sha, size) = archive
            .get(&key)
            .unwrap_or_else(|| panic!("missing object {key}"));
        assert_eq!(sha, &r.sha256, "sha256 of {key}");
        assert_eq!(*size, r.size_bytes, "size of {key}");
        let sidecar_key = format!("{}.json", key.rsplit_once('.').expect("ext").0);
        let (_, _) = archive
            .get(&sidecar_key)
            .unwrap_or_else(|| panic!("missing sidecar {sidecar_key}"));
        want.insert(key);
        want.insert(sidecar_key);
    }
    let got: std::collections::BTreeSet<String> = archive
        .keys()
        .filter(|k| k.starts_with(&format!("{org_id}/")))
        .cloned()
        .collect();
    let extra: Vec<&String> = got.difference(&want).collect();
    assert!(
        extra.is_empty(),
        "unexpected objects in the archive: {extra:?}"
    );
}

/// Checks the archive of `org_id` after a sync over `[from_ms, …)` that started at `before_ms`.
pub fn check_archive(env: &Env, org_id: &str, from_ms: i64, before_ms: i64) {
    let h = env.handle();
    let required = expected_recordings(&h, org_id, from_ms, before_ms);
    let allowed = expected_recordings(&h, org_id, from_ms, h.now_ms());
    assert_archive_matches_allowing(&files(&env.archive_dir()), org_id, &required, &allowed);
}

/// Adds sim org `org_id` as `name` straight through the engine's vault (for tests that drive the
/// engine on the simulator's clock), with a fresh grant and its lifetimes. Returns the grant.
pub async fn add_org_to_engine(
    env: &Env,
    engine: &engine::Engine,
    name: &str,
    org_id: &str,
) -> webex_sim::GrantTokens {
    use secrecy::SecretString;
    let grant = env
        .handle()
        .issue_grant(&env.client.client_id, org_id, &["cjp:config_read"]);
    let t0 = env.handle().now_ms();
    let secs = |s: u64| t0 + i64::try_from(s).expect("lifetime") * 1000;
    engine
        .vault
        .add_org(vault::NewOrg {
            name: name.into(),
            org_id: org_id.into(),
            region: "us1".into(),
            client_id: env.client.client_id.clone(),
            client_secret: SecretString::from(env.client.client_secret.clone()),
            client_auth: "form".into(),
            sources: vec!["wxcc".into()],
            tokens: vault::TokenUpdate {
                access_token: Some(SecretString::from(grant.access_token.clone())),
                access_expires_at_ms: Some(secs(grant.expires_in)),
                refresh_token: Some(SecretString::from(grant.refresh_token.clone())),
                refresh_expires_at_ms: Some(secs(grant.refresh_token_expires_in)),
                scopes: None,
                refreshed_at_ms: Some(t0),
            },
        })
        .await
        .expect("add org");
    grant
}

/// Waits for `cond` to hold, checking on a fixed interval, up to `limit`; false if it never did.
/// Used only to decide *when* to act (kill a process, start a second one), never as a stand-in
/// for an assertion.
pub async fn wait_until<F, Fut>(limit: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tick.tick().await;
    }
    cond().await
}

/// The engine on `env`'s config, running on the simulator's clock.
pub async fn engine_on_sim_clock(env: &Env) -> engine::Engine {
    let config = engine::Config::load(Some(&env.config_path)).expect("config");
    vault::init_key_file(Path::new(&config.vault.master_key_file)).expect("key file");
    let h = env.handle();
    engine::Engine::open(
        config,
        Some(MASTER_KEY),
        std::sync::Arc::new(engine::FnClock(move || h.now_ms())),
    )
    .await
    .expect("engine opens")
}

/// Points `env`'s config at an S3 store instead of the local archive.
pub fn use_s3(env: &Env, endpoint: &str) {
    let extra = format!(
        "\n[storage]\nurl = \"s3://recordings/wx\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nallow_http = true\n"
    );
    let cfg = std::fs::read_to_string(&env.config_path)
        .expect("config")
        .replace("[storage]\nurl = \"file://archive\"\n", "");
    std::fs::write(&env.config_path, format!("{cfg}{extra}")).expect("config");
}

pub fn small_with_client() -> SimConfig {
    SimConfig {
        dataset: DatasetSpec::small(),
        rate_limit_per_minute: None,
        realtime_clock: false,
        ..SimConfig::default()
    }
}
