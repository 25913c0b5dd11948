//! Chaos: four `wxvault worker --plan` processes share PostgreSQL, an S3 store and a simulator
//! that injects 5xx, 429 (Retry-After 1–5 s), truncated bodies and latency. A controller SIGKILLs a
//! random worker every 0.8–2 s (seeded, so the victims and gaps are the same every run; only the
//! moments the kills land in each process's work vary) and starts it again, at least
//! [`MIN_KILLS`] times; once a multipart upload shows up in the store it also kills every worker
//! at that instant, so an upload is interrupted half-way. Then the fleet finishes on its own and
//! the test checks, against the simulator's manifest and the store's files: every recording
//! archived once, byte-exact, with its sidecar and nothing else; the ledger done; no job queued,
//! running or failed; no org lease or planner lease held; no multipart upload left in the store.
//!
//! The kill cadence is real time by nature; completion is awaited by condition, never by a sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use archive::testing::TestS3;
use vault::Vault;
use webex_sim::{DatasetSpec, ExpectedRecording, Faults, SimConfig};

use crate::harness::{
    Env, assert_archive_matches, expected_recordings, files, sigterm, tail, use_s3, wait_exit,
    wait_until,
};

const WORKERS: usize = 4;
const MIN_KILLS: usize = 30;
const ORGS: u32 = 8;
const TASKS_PER_ORG: u32 = 120;
const SEED: u64 = 0x00c4_a05e_ed09;
/// Above the 8 MiB part size (and the 16 MiB default `[storage] multipart_threshold`): four
/// parts. `bytes - 44` is a multiple of 4, so the simulator makes it exactly this long.
const LARGE_BYTES: u64 = 32 * 1024 * 1024 + 44;
/// Gap between two random kills, in milliseconds.
const KILL_GAP_MS: (u64, u64) = (800, 2_000);
/// How long the kills may go on waiting for the large recording's upload.
const UPLOAD_KILL_LIMIT: Duration = Duration::from_secs(240);
/// How long the fleet may take to finish once the kills stop (a harvest that ended with
/// transient leftovers is followed by the planner's next pass, a minute later).
const FINISH_LIMIT: Duration = Duration::from_secs(300);

/// Short leases so killed work is picked up within seconds; a planner pass every minute; more
/// attempts than the default, since a job re-claimed while its dead holder's org lease is still
/// running out is skipped once and that counts as a run.
const FLEET_CONFIG: &str = "\n[sync]\nfirst_lookback_hours = 72\nlease_ttl_secs = 4\nlease_renew_secs = 1\n\n\
    [worker]\nconcurrency = 2\nlease_seconds = 3\npoll_seconds = 1\nretry_seconds = 1\nmax_attempts = 20\n\n\
    [schedule]\ninterval_minutes = 1\n\n[serve]\nshutdown_grace_seconds = 5\n";

/// splitmix64: a seeded sequence with no dependency; only the schedule of kills uses it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One worker slot: the running process and the log every incarnation appends to.
struct Slot {
    child: Child,
    log: PathBuf,
    starts: usize,
    /// Where the running incarnation's lines begin in `log` (its length when it was started).
    since: u64,
}

/// How long `log` is now: where the next incarnation's lines will begin.
fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// What the running incarnation of a slot has logged so far.
fn current_lines(slot: &Slot) -> String {
    let text = std::fs::read(&slot.log).unwrap_or_default();
    let from = usize::try_from(slot.since).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

struct Fleet<'a> {
    env: &'a Env,
    aws: [(&'static str, String); 2],
    slots: Vec<Slot>,
    kills: usize,
}

/// A test that fails half-way must not leave its workers running.
impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            let _ = slot.child.kill();
            let _ = slot.child.wait();
        }
    }
}

impl<'a> Fleet<'a> {
    fn start(env: &'a Env, s3: &TestS3) -> Fleet<'a> {
        let aws = [
            ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
        ];
        let mut fleet = Fleet {
            env,
            aws,
            slots: Vec::new(),
            kills: 0,
        };
        for i in 0..WORKERS {
            let log = env.dir.path().join(format!("worker-{i}.log"));
            let since = log_len(&log);
            let child = fleet.spawn(&log);
            fleet.slots.push(Slot {
                child,
                log,
                starts: 1,
                since,
            });
        }
        fleet
    }

    fn spawn(&self, log: &Path) -> Child {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("worker log");
        let err = out.try_clone().expect("worker log");
        let mut cmd = self.env.command(&["worker", "--plan"]);
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        for (k, v) in &self.aws {
            cmd.env(k, v);
        }
        cmd.spawn().expect("wxvault worker starts")
    }

    /// Fails the test if a worker ended without being killed: a crash is a defect.
    fn check_alive(&mut self) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Ok(Some(status)) = slot.child.try_wait() {
                panic!(
                    "worker {i} exited on its own ({status}):\n{}",
                    tail(&slot.log)
                );
            }
        }
    }

    /// SIGKILLs worker `i`, reaps it and starts a new one in its slot.
    fn kill_and_restart(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.child.kill().expect("SIGKILL delivered");
        slot.child.wait().expect("killed worker reaped");
        self.kills += 1;
        let log = slot.log.clone();
        let since = log_len(&log);
        let child = self.spawn(&log);
        let slot = &mut self.slots[i];
        slot.child = child;
        slot.starts += 1;
        slot.since = since;
    }

    /// SIGTERMs every worker and expects each to exit 0 within the shutdown grace.
    async fn stop(mut self) {
        // Each incarnation says it is up once its SIGTERM handler is in place; one restarted a
        // moment ago may not be there yet. (Only the running incarnation counts: one killed
        // while it was still starting never said it.)
        let up = wait_until(Duration::from_secs(60), || {
            let all = self
                .slots
                .iter()
                .all(|s| current_lines(s).contains("wxvault worker: up to"));
            async move { all }
        })
        .await;
        if !up {
            let late: Vec<String> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !current_lines(s).contains("wxvault worker: up to"))
                .map(|(i, s)| format!("worker {i}:\n{}", current_lines(s)))
                .collect();
            panic!(
                "a restarted worker never came up:\n{}",
                late.join("\n---\n")
            );
        }
        for slot in &self.slots {
            sigterm(&slot.child);
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let code = wait_exit(&mut slot.child, Duration::from_secs(30)).await;
            assert!(
                code.is_some_and(|c| c.success()),
                "worker {i} did not stop cleanly on SIGTERM ({code:?}):\n{}",
                tail(&slot.log)
            );
        }
    }
}

/// Multipart uploads the in-process S3 (s3s-fs) holds: it keeps each upload's record
/// (`.upload-<id>.json`), its parts (`.upload_id-<id>.part-<n>`) and its metadata
/// (`….upload-<id>.metadata.json`) at the top of its root until the upload is completed or
/// aborted. Returned: the upload ids.
fn multipart_uploads(s3_root: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(s3_root).expect("S3 root").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = if let Some(rest) = name.strip_prefix(".upload_id-") {
            rest.split(".part-").next()
        } else if let Some(rest) = name.strip_prefix(".upload-") {
            rest.strip_suffix(".json")
        } else {
            name.split(".upload-")
                .nth(1)
                .and_then(|r| r.strip_suffix(".metadata.json"))
        };
        if let Some(id) = id {
            ids.insert(id.to_owned());
        }
    }
    ids
}

/// Whether a file of exactly `size` bytes is anywhere below `root` (metadata only), outside
/// the staging folder.
fn holds_file_of_size(root: &Path, size: u64) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != ".wxvault-staging" {
                    stack.push(e.path());
                }
            } else if meta.len() == size {
                return true;
            }
        }
    }
    false
}

/// Whether every org's ledger has all its expected recordings done and the queue is idle.
async fn finished(vault: &Vault, expected: &BTreeMap<String, Vec<ExpectedRecording>>) -> bool {
    let now = now_ms();
    let Ok(q) = vault.queue_status(now).await else {
        return false;
    };
    if q.queued > 0 || q.running > 0 {
        return false;
    }
    let Ok(orgs) = vault.orgs().await else {
        return false;
    };
    for org in &orgs {
        let Ok(c) = vault.counts(org).await else {
            return false;
        };
        if usize::try_from(c.archived).ok() != expected.get(&org.org_id).map(Vec::len) {
            return false;
        }
    }
    true
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_at_random_loses_and_duplicates_nothing() {
    let Some(pg) = vault::testing::TempPostgres::create().await else {
        eprintln!("chaos: PostgreSQL unreachable and WXVAULT_REQUIRE_PG unset; skipping");
        return;
    };
    let t0 = Instant::now();
    let s3_root = tempfile::tempdir().expect("tempdir");
    let s3 = TestS3::start(s3_root.path(), "recordings").await;
    let dataset = DatasetSpec {
        orgs: ORGS,
        tasks_per_org: TASKS_PER_ORG,
        min_recording_bytes: 40_044,
        max_recording_bytes: 400_044,
        ..DatasetSpec::small()
    }
    .with_large_recording(LARGE_BYTES);
    let env = Env::start_with(
        SimConfig {
            dataset,
            seed: SEED,
            rate_limit_per_minute: None,
            realtime_clock: false,
            ..SimConfig::default()
        },
        Some(FLEET_CONFIG),
    )
    .await;
    let cfg = std::fs::read_to_string(&env.config_path)
        .expect("config")
        .replace("sqlite://state/wxvault.db", pg.url());
    std::fs::write(&env.config_path, cfg).expect("config");
    use_s3(&env, &s3.endpoint());

    let h = env.handle();
    let started = h.now_ms();
    let mut expected = BTreeMap::new();
    for (i, o) in h.orgs().iter().enumerate() {
        env.add_org(&format!("org{i}"), &o.org_id).await;
        let want = expected_recordings(&h, &o.org_id, started - 72 * 3_600_000, started);
        assert!(!want.is_empty(), "org {i} has recordings to archive");
        expected.insert(o.org_id.clone(), want);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        expected
            .values()
            .flatten()
            .any(|r| r.size_bytes == LARGE_BYTES),
        "the large recording is in the window"
    );
    h.set_faults(Faults {
        error_5xx_rate: 0.05,
        rate_429_rate: 0.03,
        truncate_rate: 0.05,
        latency_ms: 120,
        ..Faults::default()
    });
    let vault = Vault::open(pg.url(), vault::testing::random_keyring())
        .await
        .expect("vault on the test database");

    // The controller: random kills on a seeded schedule, plus one kill of the whole fleet while a
    // multipart upload is in flight.
    let mut rng = Rng(SEED);
    let mut fleet = Fleet::start(&env, &s3);
    let mut next_kill = Instant::now() + Duration::from_millis(rng.below(1_000) + KILL_GAP_MS.0);
    let mut upload_kills = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let mut work_done_at = None;
    let mut kills_mid_job = 0;
    let mut last_look = Instant::now();
    let bucket = s3_root.path().join("recordings");
    let mut large_archived = false;
    // The random kills may end before the large recording's turn: the loop goes on (without
    // more random kills) until its upload was interrupted, or it is archived without having
    // been seen (bounded).
    while fleet.kills < MIN_KILLS
        || (upload_kills == 0 && !large_archived && t0.elapsed() < UPLOAD_KILL_LIMIT)
    {
        tick.tick().await;
        fleet.check_alive();
        if last_look.elapsed() >= Duration::from_secs(1) {
            last_look = Instant::now();
            if work_done_at.is_none() && finished(&vault, &expected).await {
                work_done_at = Some(t0.elapsed());
            }
            large_archived = large_archived || holds_file_of_size(&bucket, LARGE_BYTES);
        }
        if upload_kills == 0 && !multipart_uploads(s3_root.path()).is_empty() {
            for i in 0..WORKERS {
                fleet.kill_and_restart(i);
            }
            upload_kills += 1;
        }
        if fleet.kills < MIN_KILLS && Instant::now() >= next_kill {
            let victim = usize::try_from(rng.below(WORKERS as u64)).expect("index");
            let pid = i64::from(fleet.slots[victim].child.id());
            if let Ok(q) = vault.queue_status(now_ms()).await
                && q.in_flight.iter().any(|p| p.pid == pid)
            {
                kills_mid_job += 1;
            }
            fleet.kill_and_restart(victim);
            next_kill = Instant::now()
                + Duration::from_millis(KILL_GAP_MS.0 + rng.below(KILL_GAP_MS.1 - KILL_GAP_MS.0));
        }
    }
    let chaos_took = t0.elapsed();
    assert!(
        upload_kills > 0 || large_archived,
        "the large recording was neither seen uploading nor archived within {UPLOAD_KILL_LIMIT:?}"
    );

    // The fleet finishes on its own (faults stay on).
    let deadline = Instant::now() + FINISH_LIMIT;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut done = false;
    while Instant::now() < deadline {
        poll.tick().await;
        fleet.check_alive();
        if finished(&vault, &expected).await {
            done = true;
            break;
        }
    }
    let kills = fleet.kills;
    let starts: usize = fleet.slots.iter().map(|s| s.starts).sum();
    let q = vault.queue_status(now_ms()).await.expect("queue status");
    assert!(
        done,
        "the fleet did not finish within {FINISH_LIMIT:?} after the kills: {q:#?}\n{}",
        fleet
            .slots
            .iter()
            .map(|s| tail(&s.log))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    println!(
        "chaos: {kills} SIGKILLs ({kills_mid_job} of a worker running a job, {upload_kills} of the \
         whole fleet mid-upload), {starts} worker starts, {total} recordings in {ORGS} orgs; kills took {:.1}s (work first seen done at \
         {work_done_at:?}), all done after {:.1}s",
        chaos_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    fleet.stop().await;

    // The queue: nothing running or failed; no lease held by anyone. (The planners go on
    // planning every minute, so a harvest planned after the work was done may wait, untouched,
    // for the next worker: the fleet was stopped, not drained.)
    let q = vault.queue_status(now_ms()).await.expect("queue status");
    assert_eq!((q.running, q.failed), (0, 0), "{q:#?}");
    assert!(q.done > 0, "{q:#?}");
    let leases = vault.leases().await.expect("leases");
    assert!(leases.is_empty(), "org leases left held: {leases:#?}");
    let planner = vault
        .singleton(engine::queue::PLANNER)
        .await
        .expect("planner");
    assert!(
        planner.as_ref().is_some_and(|p| p.holder.is_none()),
        "the planner lease was left held: {planner:#?}"
    );

    // The ledger: every expected recording done, nothing failed or half-way.
    for org in vault.orgs().await.expect("orgs") {
        let c = vault.counts(&org).await.expect("counts");
        let want = expected
            .get(&org.org_id)
            .expect("org in the manifest")
            .len();
        assert_eq!(
            (usize::try_from(c.archived).ok(), c.in_progress, c.failed),
            (Some(want), 0, 0),
            "ledger of {}: {c:#?}",
            org.name
        );
    }

    // Uploads the kills interrupted are found through their markers and aborted by the sweep
    // every worker runs at start (and every few minutes) once a marker is stale. The run is far
    // shorter than the stale age, so run that sweep now, as a worker restarted later would, with
    // nothing running: every interrupted upload must be traceable, none may be left.
    let config = engine::Config::load(Some(&env.config_path)).expect("config");
    let archive = archive::Archive::open_s3_with_keys(
        &config.storage_config(),
        s3.access_key(),
        s3.secret_key(),
    )
    .expect("archive");
    archive
        .remove_stale_staging(std::time::Duration::ZERO)
        .await
        .expect("the sweep of interrupted uploads");

    // The store: each recording once, byte-exact, with its sidecar, and nothing else — no
    // staging object left by an interrupted upload.
    let bucket_root = s3_root.path().join("recordings").join("wx");
    let objects = files(&bucket_root);
    for (org_id, want) in &expected {
        assert_archive_matches(&objects, org_id, want);
    }
    let strays: Vec<&String> = objects
        .keys()
        .filter(|k| !expected.keys().any(|o| k.starts_with(&format!("{o}/"))))
        .collect();
    assert!(strays.is_empty(), "objects outside the layout: {strays:?}");

    // No multipart upload left behind by the killed workers.
    let orphans = multipart_uploads(s3_root.path());
    assert!(
        orphans.is_empty(),
        "multipart uploads left in the store (never completed nor aborted): {orphans:?}"
    );
}
