//! Issue 7, "Hold what is built to its promises": configuration errors that must not echo
//! credentials, `./wxvault.toml` discovery, windows in the future, region checks, `org add`
//! proving its grant, `init` checking before writing the key, S3 without credentials and
//! `org remove` asking first.

use std::path::Path;
use std::process::Output;

use webex_sim::DatasetSpec;

use crate::harness::*;

/// Runs the binary in `cwd` with a clean environment: no `WXVAULT_CONFIG`, no `AWS_*`, no
/// `RUST_LOG`, stdin not a terminal; the master key from `MASTER_KEY` unless `env` unsets it.
async fn run_in(cwd: &Path, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("AWS_") || k.starts_with("WXVAULT_") || k == "RUST_LOG")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("WXVAULT_MASTER_KEY", MASTER_KEY);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .expect("join")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `text` as a config file in a fresh folder and runs `args` with it.
async fn with_config(text: &str, args: &[&str]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut full = vec!["--config", path.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = run_in(dir.path(), &full, &[]).await;
    (dir, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_and_never_echo_credentials() {
    let cases = [
        // A scheme wxvault does not support, with a password in it.
        (
            "[database]\nurl = \"mysql://u:hunter2@h/db\"\n",
            "database.url",
        ),
        // A postgres URL that does not parse (port out of range).
        (
            "[database]\nurl = \"postgres://u:hunter2@h:99999/db\"\n",
            "database.url",
        ),
        // A password in the query string.
        (
            "[database]\nurl = \"postgres://u@/db?password=hunter2\"\n",
            "database.url",
        ),
        // A webhook whose token is in the query string and in the path.
        (
            "[notify]\nwebhook_url = \"ftp://hooks.example.com/hunter2?token=hunter2\"\n",
            "notify.webhook_url",
        ),
        // The TOML parser quotes the offending line: a URL there is redacted too.
        (
            "[database]\nurl = [\"postgres://u:hunter2@h/db?token=hunter2\"]\n",
            "url",
        ),
        (
            "[storage]\nurl = \"s3://b/p\"\nendpoint = \"ftp://k:hunter2@s3.local/?sig=hunter2\"\n",
            "storage.endpoint",
        ),
    ];
    for (text, key) in cases {
        let (_dir, out) = with_config(text, &["status"]).await;
        let all = super::harness::text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}: {all}");
        assert!(all.contains(key), "{text}: the key is named: {all}");
        assert!(
            !all.contains("hunter2"),
            "{text}: a credential leaked: {all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_open_errors_redact_the_url() {
    // A refused connection on a closed local port: the driver's error must not carry the
    // password either.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_dir, out) = with_config(
        &format!(
            "[database]\nurl = \"postgres://u:hunter2@127.0.0.1:{port}/db?sslmode=disable\"\n"
        ),
        &["status"],
    )
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("127.0.0.1"), "says where: {all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_wxvault_toml_is_used_and_every_command_names_its_config() {
    let env = Env::start(DatasetSpec::small()).await;
    // The harness's config lives in the env's folder as wxvault.toml: run there without --config.
    let out = run_in(env.dir.path(), &["org", "list", "--json"], &[]).await;
    assert_ok(&out, "org list in a folder with wxvault.toml");
    assert!(
        stderr(&out).contains("config: ./wxvault.toml"),
        "{}",
        stderr(&out)
    );
    let orgs: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only the JSON");
    assert!(orgs.as_array().is_some_and(Vec::is_empty));
    // It really is that file: its relative database path was used, not ./wxvault-data.
    assert!(env.db_path().exists());
    assert!(!env.dir.path().join("wxvault-data").exists());

    // WXVAULT_CONFIG wins over ./wxvault.toml, and is named.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = other.path().join("other.toml");
    std::fs::write(
        &other_cfg,
        "[database]\nurl = \"sqlite://o.db\"\n[vault]\nmaster_key_file = \"k\"\n",
    )
    .unwrap();
    let out = run_in(
        env.dir.path(),
        &["status", "--json"],
        &[("WXVAULT_CONFIG", Some(other_cfg.to_str().unwrap()))],
    )
    .await;
    assert_ok(&out, "status with WXVAULT_CONFIG");
    assert!(
        stderr(&out).contains(&format!("config: {}", other_cfg.display())),
        "{}",
        stderr(&out)
    );
    assert!(other.path().join("o.db").exists());

    // No file anywhere: the built-in defaults, said so.
    let empty = tempfile::tempdir().unwrap();
    let out = run_in(empty.path(), &["status", "--json"], &[]).await;
    assert_ok(&out, "status on defaults");
    assert!(
        stderr(&out).contains("built-in defaults"),
        "{}",
        stderr(&out)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout is only the JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_that_cannot_hold_anything_are_refused() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let future = rfc3339(now_ms + 40 * 86_400_000);
    let out = env.run(&["sync", "--from", &future], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--from") && text(&out).contains("future"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("window ["),
        "nothing harvested: {}",
        text(&out)
    );

    // The same with an explicit, later --to.
    let later = rfc3339(now_ms + 41 * 86_400_000);
    let out = env
        .run(&["sync", "--from", &future, "--to", &later], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // --from equal to --to, and after it.
    let day = rfc3339(now_ms - 2 * 86_400_000);
    let before = rfc3339(now_ms - 3 * 86_400_000);
    for (from, to) in [(&day, &day), (&day, &before)] {
        let out = env.run(&["sync", "--from", from, "--to", to], &[]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("--to"), "{}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_regions_are_refused_unless_asked_for() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    let grant = env
        .handle()
        .issue_grant(&env.client.client_id, &org.org_id, &["cjp:config_read"]);
    let secrets = [
        ("WXVAULT_CLIENT_SECRET", env.client.client_secret.as_str()),
        ("WXVAULT_REFRESH_TOKEN", grant.refresh_token.as_str()),
    ];
    let add = |region: &'static str, unlisted: bool| {
        let mut a = vec![
            "org".to_string(),
            "add".into(),
            "--name".into(),
            "acme".into(),
            "--region".into(),
            region.into(),
            "--client-id".into(),
            env.client.client_id.clone(),
        ];
        if unlisted {
            a.push("--region-unlisted".into());
        }
        a
    };
    let args = add("mars", false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args, &secrets).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("mars") && text(&out).contains("--region-unlisted"),
        "{}",
        text(&out)
    );
    let out = env.run(&["org", "list", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([]),
        "nothing stored"
    );

    let out = env
        .run(
            &["invite", "create", "--name", "x", "--region", "mars"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--region-unlisted"), "{}", text(&out));
    let out = env
        .run(
            &[
                "connect",
                "--name",
                "x",
                "--region",
                "mars",
                "--client-id",
                "c",
                "--no-browser",
            ],
            &[("WXVAULT_CLIENT_SECRET", "s")],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--region-unlisted"), "{}", text(&out));

    // On purpose: a new region is accepted and stored.
    let out = env
        .run(
            &[
                "invite",
                "create",
                "--name",
                "x",
                "--region",
                "mars1",
                "--region-unlisted",
                "--json",
            ],
            &[],
        )
        .await;
    assert_ok(&out, "invite create with --region-unlisted");
    let args = add("mars1", true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args, &secrets).await;
    assert_ok(&out, "org add with --region-unlisted");
    let out = env.run(&["org", "list", "--json"], &[]).await;
    let orgs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(orgs[0]["region"], "mars1", "{orgs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_add_refreshes_once_and_refuses_a_grant_webex_refuses() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    // Shaped like a Webex token (so the org id can be read) but never issued.
    let garbage = format!("Zm9vYmFyZ2FyYmFnZQ_P0A1_{}", org.org_id);
    let out = env
        .run(
            &[
                "org",
                "add",
                "--name",
                "acme",
                "--region",
                "us1",
                "--client-id",
                &env.client.client_id,
            ],
            &[
                ("WXVAULT_CLIENT_SECRET", &env.client.client_secret),
                ("WXVAULT_REFRESH_TOKEN", &garbage),
            ],
        )
        .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("invalid_grant"),
        "the token endpoint's answer: {all}"
    );
    assert!(!all.contains("added org"), "{all}");
    assert!(!all.contains(&garbage), "the token is not echoed: {all}");
    assert!(!all.contains(&env.client.client_secret), "{all}");
    let out = env.run(&["org", "list", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([]),
        "no org stored"
    );

    // A real grant: refreshed once, stored with its lifetimes, and usable right away.
    env.add_org("acme", &org.org_id).await;
    let out = env.run(&["status", "--json"], &[]).await;
    assert_ok(&out, "status");
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !views[0]["org"]["refresh_expires_at_ms"].is_null(),
        "the refresh told us the lifetimes: {views}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_checks_everything_before_writing_the_master_key() {
    for (text, key) in [
        (
            "[database]\nurl = \"postgres://u:hunter2@/db\"\n",
            "database.url",
        ),
        ("[storage]\nurl = \"s3://not a bucket!/x\"\n", "bucket"),
        (
            "[wxcc]\nurl_expiration_minutes = 0\n",
            "url_expiration_minutes",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxvault.toml");
        std::fs::write(
            &path,
            format!("{text}\n[vault]\nmaster_key_file = \"master.key\"\n"),
        )
        .unwrap();
        let out = run_in(dir.path(), &["init"], &[("WXVAULT_MASTER_KEY", None)]).await;
        let all = super::harness::text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}: {all}");
        assert!(all.contains(key), "{text}: {all}");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(
            !dir.path().join("master.key").exists(),
            "{text}: no key written for a config that does not work"
        );
    }
    // A good config still gets its key.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wxvault.toml"),
        "[database]\nurl = \"sqlite://s.db\"\n[vault]\nmaster_key_file = \"master.key\"\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["init"], &[("WXVAULT_MASTER_KEY", None)]).await;
    assert_ok(&out, "init");
    assert!(dir.path().join("master.key").exists());
}

/// Answers every request with 404 at once: an instance-metadata endpoint on a machine that is
/// not an EC2 instance, without any traffic leaving 127.0.0.1.
async fn refusing_metadata_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_credentials_says_which_credentials_are_read() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = archive::testing::TestS3::start(s3_root.path(), "recordings").await;
    let env = Env::start(DatasetSpec::small()).await;
    use_s3(&env, &s3.endpoint());
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let (metadata, server) = refusing_metadata_endpoint().await;
    let now = env.handle().now_ms();
    let from = rfc3339(now - 86_400_000);
    let to = rfc3339(now + 1);
    let config = env.config_path.to_str().unwrap().to_string();
    let out = run_in(
        env.dir.path(),
        &["--config", &config, "sync", "--from", &from, "--to", &to],
        &[("AWS_METADATA_ENDPOINT", Some(&metadata))],
    )
    .await;
    server.abort();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "the org failed: {all}");
    assert!(
        all.contains("no AWS credentials were found")
            && all.contains("AWS_ACCESS_KEY_ID")
            && all.contains("AWS_SECRET_ACCESS_KEY")
            && all.contains("~/.aws/credentials"),
        "{all}"
    );
    assert!(!all.contains("169.254.169.254"), "{all}");
    assert!(!all.contains("/latest/api/token"), "{all}");
    // Not transient: nothing was counted as an item to retry, nothing was marked failed.
    assert!(!all.contains("will be retried"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_remove_needs_yes_without_a_terminal() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let out = env.run(&["org", "remove", "acme"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert!(!text(&out).contains("Revoked"), "{}", text(&out));
    let out = env.run(&["org", "list", "--json"], &[]).await;
    let orgs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(orgs[0]["name"], "acme", "still there: {orgs}");

    let out = env
        .run(&["org", "remove", "acme", "--yes", "--keep-grant"], &[])
        .await;
    assert_ok(&out, "org remove --yes");
    let out = env.run(&["org", "list", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
}
