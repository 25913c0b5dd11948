//! The per-org sync lease end to end: a second sync skips an org another process holds (and the
//! other orgs go on), a dead holder's lease is taken over after it expires, two concurrent
//! `wxvault sync` processes download every recording exactly once, and a run that loses its
//! lease stops before starting more work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use engine::lease::{LEASE_LOST_EVENT, SYNC_SCOPE};
use engine::progress::{Progress, ProgressEvent};
use engine::{Config, OrgOutcome, SyncOptions};
use serde_json::{Value, json};
use vault::{Keyring, LeaseAcquire, LeaseHolder, Org, Vault};
use webex_sim::{DatasetSpec, Faults, SimConfig, SimHandle};

use crate::harness::*;

/// Default `[sync] lease_ttl_secs`.
const TTL_MS: i64 = 120_000;

fn other_process() -> LeaseHolder {
    LeaseHolder {
        id: "run-of-another-process".into(),
        host: "elsewhere".into(),
        pid: 4242,
    }
}

fn media_requests(h: &SimHandle) -> u64 {
    h.stats().by_endpoint.get("media").copied().unwrap_or(0)
}

async fn org(vault: &Vault, name: &str) -> Org {
    vault.org_by_name(name).await.unwrap().unwrap()
}

/// A second handle on the binary's state database, as another process would have.
async fn open_state_db(env: &Env) -> Vault {
    let url = format!("sqlite://{}", env.db_path().display());
    Vault::open(&url, Keyring::from_base64(MASTER_KEY).unwrap())
        .await
        .unwrap()
}

fn system_now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A lease left by a process of this host that no longer runs (kill -9 a moment ago) is taken
/// over at once: a resume right after a crash must not skip the org for the lease's lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once() {
    let env = Env::start(DatasetSpec::small()).await;
    let engine = engine_on_sim_clock(&env).await;
    let h = env.handle();
    add_org_to_engine(&env, &engine, "acme", &h.orgs()[0].org_id).await;
    let acme = org(&engine.vault, "acme").await;
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    // As the killed process would have taken it: same host and pid namespace, its own pid.
    let mut dead = engine::lease::holder_for_this_run();
    dead.pid = i64::from(gone.id());
    // Another namespace (a container sharing the host name) is not ours to judge.
    let mut foreign = dead.clone();
    foreign.id = "run-in-another-pid-namespace@boot/pid:[1]".into();
    let t0 = h.now_ms();
    let window = SyncOptions {
        orgs: vec![],
        from_ms: Some(t0 - 86_400_000),
        to_ms: Some(t0),
        rescan: false,
    };
    engine
        .vault
        .acquire_lease(&acme, SYNC_SCOPE, &foreign, t0, TTL_MS)
        .await
        .unwrap();
    let r = engine.sync(&window).await.unwrap();
    assert!(
        matches!(r.orgs[0].outcome, OrgOutcome::Skipped(_)),
        "{:?}",
        r.orgs[0]
    );
    engine
        .vault
        .release_lease(&acme, SYNC_SCOPE, &foreign.id)
        .await
        .unwrap();
    engine
        .vault
        .acquire_lease(&acme, SYNC_SCOPE, &dead, t0, TTL_MS)
        .await
        .unwrap();
    let r = engine.sync(&window).await.unwrap();
    assert_eq!(r.orgs[0].outcome, OrgOutcome::Ok, "{:?}", r.orgs[0]);
    assert!(r.orgs[0].tasks_seen > 0, "{:?}", r.orgs[0]);
    // Released at the end of the run, like any lease of ours.
    assert!(
        engine
            .vault
            .lease(&acme, SYNC_SCOPE)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_org_is_skipped_others_go_on_and_an_expired_lease_is_taken_over() {
    let env = Env::start(DatasetSpec::small()).await;
    let engine = engine_on_sim_clock(&env).await;
    let h = env.handle();
    let sim_orgs = h.orgs();
    add_org_to_engine(&env, &engine, "acme", &sim_orgs[0].org_id).await;
    add_org_to_engine(&env, &engine, "globex", &sim_orgs[1].org_id).await;
    let acme = org(&engine.vault, "acme").await;
    let globex = org(&engine.vault, "globex").await;
    let t0 = h.now_ms();
    let window = SyncOptions {
        orgs: vec![],
        from_ms: Some(t0 - 3 * 86_400_000),
        to_ms: Some(t0),
        rescan: false,
    };

    // Another process holds acme (it took the lease just now, on the same clock).
    let held = engine
        .vault
        .acquire_lease(&acme, SYNC_SCOPE, &other_process(), t0, TTL_MS)
        .await
        .unwrap();
    assert!(matches!(held, LeaseAcquire::Acquired(_)), "{held:?}");

    let first = engine.sync(&window).await.unwrap();
    let a = first.orgs.iter().find(|o| o.org == "acme").unwrap();
    let g = first.orgs.iter().find(|o| o.org == "globex").unwrap();
    let line = format!(
        "org acme is being synced by another wxvault process (host elsewhere, pid 4242) until {}; skipped",
        engine::wxcc::rfc3339(t0 + TTL_MS)
    );
    assert_eq!(a.outcome, OrgOutcome::Skipped(line.clone()));
    assert!(!a.has_problems(), "a skipped org did not fail");
    assert_eq!((a.tasks_seen, a.archived, a.api_calls), (0, 0, 0), "{a:?}");
    let json = serde_json::to_value(&first).unwrap();
    let acme_json = json["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org"] == "acme")
        .unwrap();
    assert_eq!(
        acme_json["outcome"],
        json!({"state": "skipped", "reason": line})
    );
    // The other org went on.
    assert_eq!(g.outcome, OrgOutcome::Ok, "{g:?}");
    assert!(g.archived > 0, "{g:?}");
    assert_eq!(media_requests(&h), g.archived, "only globex downloaded");
    assert_eq!(engine.vault.counts(&acme).await.unwrap().tasks, 0);
    assert_eq!(
        engine.vault.last_window_end(&acme, "wxcc").await.unwrap(),
        None
    );
    // The holder's lease is untouched; ours for globex was released.
    let lease = engine
        .vault
        .lease(&acme, SYNC_SCOPE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.holder, other_process().id);
    assert_eq!(engine.vault.lease(&globex, SYNC_SCOPE).await.unwrap(), None);
    assert_eq!(
        first.exit_code(),
        if g.has_problems() { 2 } else { 0 },
        "the skip alone does not change the exit code"
    );

    // The holder died (it never renews): one millisecond before expiry acme is still skipped,
    // at expiry it is taken over.
    h.advance_clock(Duration::from_millis(u64::try_from(TTL_MS - 1).unwrap()));
    let still = engine.sync(&window).await.unwrap();
    let a = still.orgs.iter().find(|o| o.org == "acme").unwrap();
    assert!(
        matches!(a.outcome, OrgOutcome::Skipped(_)),
        "{:?}",
        a.outcome
    );
    h.advance_clock(Duration::from_millis(1));
    let before = media_requests(&h);
    let second = engine.sync(&window).await.unwrap();
    let a = second.orgs.iter().find(|o| o.org == "acme").unwrap();
    let g2 = second.orgs.iter().find(|o| o.org == "globex").unwrap();
    assert_eq!(a.outcome, OrgOutcome::Ok, "{a:?}");
    assert!(a.archived > 0, "{a:?}");
    assert_eq!(media_requests(&h) - before, a.archived + g2.archived);
    assert_eq!(engine.vault.lease(&acme, SYNC_SCOPE).await.unwrap(), None);

    // Every recording was downloaded exactly once over all runs.
    let done = engine.vault.counts(&acme).await.unwrap().archived
        + engine.vault.counts(&globex).await.unwrap().archived;
    assert_eq!(media_requests(&h), u64::try_from(done).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_skips_a_held_org_with_one_line_and_exit_code_0() {
    let env = Env::start(DatasetSpec::small()).await;
    let sim_org = env.handle().orgs()[0].clone();
    env.add_org("acme", &sim_org.org_id).await;
    let db = open_state_db(&env).await;
    let acme = org(&db, "acme").await;
    let until = system_now_ms() + 600_000;
    db.acquire_lease(
        &acme,
        SYNC_SCOPE,
        &other_process(),
        until - 600_000,
        600_000,
    )
    .await
    .unwrap();
    let line = format!(
        "org acme is being synced by another wxvault process (host elsewhere, pid 4242) until {}; skipped",
        rfc3339(until)
    );

    let out = env.sync_all(3, &["--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json report ({e}):\n{}", text(&out)));
    assert_eq!(
        report["orgs"][0]["outcome"],
        json!({"state": "skipped", "reason": line}),
        "{report:#}"
    );

    let out = env.sync_all(3, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| *l == line).count(),
        1,
        "one clear line:\n{}",
        text(&out)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("acme") && l.contains("skipped")),
        "summary row:\n{stdout}"
    );
    assert_eq!(media_requests(&env.handle()), 0);

    // Once the other process releases it, the org is harvested.
    assert!(
        db.release_lease(&acme, SYNC_SCOPE, &other_process().id)
            .await
            .unwrap()
    );
    db.close().await;
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["orgs"][0]["outcome"]["state"], "ok", "{report:#}");
    assert!(report["orgs"][0]["archived"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_syncs_download_every_recording_once() {
    let env = Env::start_with(small_with_client(), None).await;
    let sim_org = env.handle().orgs()[0].clone();
    env.add_org("acme", &sim_org.org_id).await;
    // Slow answers keep the first run busy for seconds, far longer than the second needs to
    // start and find the lease.
    env.handle().set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let db = open_state_db(&env).await;
    let acme = org(&db, "acme").await;

    let first = env.sync_all(3, &["--json"]);
    let second = async {
        // Start the second once the first holds the lease (a condition, not a delay).
        let held = wait_until(Duration::from_secs(60), || async {
            db.lease(&acme, SYNC_SCOPE).await.unwrap().is_some()
        })
        .await;
        assert!(held, "the first sync never took the lease");
        env.sync_all(3, &["--json"]).await
    };
    let (first, second) = tokio::join!(first, second);
    let parse = |out: &std::process::Output| -> Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("json report ({e}):\n{}", text(out)))
    };
    let (r1, r2) = (parse(&first), parse(&second));
    assert_eq!(r1["orgs"][0]["outcome"]["state"], "ok", "{r1:#}");
    // The second is started only once the first holds the lease, and the first is slowed to
    // seconds, so it is skipped; should a loaded machine still let the first finish before the
    // second looks, the second must find everything archived and download nothing.
    match r2["orgs"][0]["outcome"]["state"].as_str() {
        Some("skipped") => {}
        Some("ok") => assert_eq!(r2["orgs"][0]["archived"], 0, "{r2:#}"),
        _ => panic!("{r2:#}"),
    }
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let archived = r1["orgs"][0]["archived"].as_u64().unwrap();
    assert!(archived > 0);
    assert_eq!(
        media_requests(&env.handle()),
        archived,
        "each recording once"
    );
    assert_eq!(
        db.counts(&acme).await.unwrap().archived,
        i64::try_from(archived).unwrap()
    );
    assert_eq!(db.lease(&acme, SYNC_SCOPE).await.unwrap(), None, "released");
    db.close().await;
}

/// On the first listed window of `org`, plays "this process was paused past its lease": moves the
/// clock past the expiry, lets another holder take the lease, and returns only once this run has
/// noticed (the heartbeat recorded the loss).
struct PausedPastExpiry {
    thief: Vault,
    org: Org,
    sim: SimHandle,
    fired: AtomicBool,
    /// Windows listed after the loss was noticed.
    listed_after: AtomicUsize,
}

impl Progress for PausedPastExpiry {
    fn event(&self, org: &str, event: ProgressEvent) {
        if org != self.org.name || !matches!(event, ProgressEvent::TasksListed(_)) {
            return;
        }
        if self.fired.swap(true, Ordering::SeqCst) {
            self.listed_after.fetch_add(1, Ordering::SeqCst);
            return;
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                self.sim
                    .advance_clock(Duration::from_millis(u64::try_from(TTL_MS).unwrap()));
                let thief = LeaseHolder {
                    id: "thief".into(),
                    host: "thief-host".into(),
                    pid: 999,
                };
                let got = self
                    .thief
                    .acquire_lease(&self.org, SYNC_SCOPE, &thief, self.sim.now_ms(), TTL_MS)
                    .await
                    .unwrap();
                assert!(matches!(got, LeaseAcquire::Acquired(_)), "{got:?}");
                let noticed = wait_until(Duration::from_secs(60), || async {
                    let events = self.thief.recent_events(Some(&self.org), 20).await.unwrap();
                    events.iter().any(|e| e.kind == LEASE_LOST_EVENT)
                })
                .await;
                assert!(noticed, "the heartbeat never noticed the lost lease");
            });
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_stops_before_starting_more_work() {
    let env = Env::start_with(
        SimConfig {
            dataset: DatasetSpec::small(),
            rate_limit_per_minute: None,
            realtime_clock: false,
            ..SimConfig::default()
        },
        Some("\n[sync]\nlease_renew_secs = 1\n"),
    )
    .await;
    let mut engine = engine_on_sim_clock(&env).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &sim_org.org_id).await;
    let acme = org(&engine.vault, "acme").await;
    let t0 = h.now_ms();
    let from = t0 - 3 * 86_400_000;
    assert!(
        !expected_recordings(&h, &sim_org.org_id, from, t0).is_empty(),
        "non-vacuous: the window has recordings a full run would download"
    );
    let url = Config::load(Some(&env.config_path)).unwrap().database.url;
    let thief = Vault::open(&url, engine.vault.keyring().clone())
        .await
        .unwrap();
    let paused = Arc::new(PausedPastExpiry {
        thief: thief.clone(),
        org: acme.clone(),
        sim: h.clone(),
        fired: AtomicBool::new(false),
        listed_after: AtomicUsize::new(0),
    });
    engine.progress = paused.clone();

    let report = engine
        .sync(&SyncOptions {
            orgs: vec![],
            from_ms: Some(from),
            to_ms: Some(t0),
            rescan: false,
        })
        .await
        .unwrap();
    let a = &report.orgs[0];
    let OrgOutcome::Failed(why) = &a.outcome else {
        panic!("a lost lease is reported: {a:?}");
    };
    assert!(
        why.contains("lost its sync lease")
            && why.contains("(host thief-host, pid 999)")
            && why.starts_with("org acme:"),
        "{why}"
    );
    assert_eq!(report.exit_code(), 2);
    // Stopped after the window being listed: nothing downloaded, no window recorded, and the
    // new holder's lease left alone.
    assert_eq!(media_requests(&h), 0);
    assert!(paused.fired.load(Ordering::SeqCst));
    assert_eq!(
        paused.listed_after.load(Ordering::SeqCst),
        0,
        "no further window was listed (the window is three days): {a:?}"
    );
    assert_eq!(
        engine.vault.last_window_end(&acme, "wxcc").await.unwrap(),
        None
    );
    assert_eq!(
        engine
            .vault
            .lease(&acme, SYNC_SCOPE)
            .await
            .unwrap()
            .unwrap()
            .holder,
        "thief"
    );
    thief.close().await;
}

#[test]
fn lease_timing_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxvault.toml");
    for (text, ok) in [
        ("[sync]\nlease_ttl_secs = 60\nlease_renew_secs = 20\n", true),
        ("[sync]\nlease_renew_secs = 120\n", false),
        ("[sync]\nlease_ttl_secs = 30\n", false),
        ("[sync]\nlease_renew_secs = 0\n", false),
    ] {
        std::fs::write(&path, text).unwrap();
        match Config::load(Some(&path)) {
            Ok(c) => {
                assert!(ok, "{text} must be refused");
                assert_eq!((c.sync.lease_ttl_secs, c.sync.lease_renew_secs), (60, 20));
            }
            Err(e) => {
                assert!(!ok, "{text}: {e}");
                assert!(e.to_string().contains("sync.lease_renew_secs"), "{e}");
            }
        }
    }
    std::fs::write(&path, "").unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!((c.sync.lease_ttl_secs, c.sync.lease_renew_secs), (120, 30));
}
