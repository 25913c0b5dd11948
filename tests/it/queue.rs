//! The work queue through the binary: `worker --plan` archives every org without `sync`, SIGTERM
//! hands unfinished jobs back and exits 0, `sync` goes through the same queue, `queue` and
//! `status` show it.

use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use webex_sim::DatasetSpec;

use crate::harness::{Env, assert_ok, check_archive, sigterm, tail, text, wait_exit, wait_until};

const WORKER_CONFIG: &str = "\n[sync]\nfirst_lookback_hours = 72\n\n[worker]\npoll_seconds = 1\n";

async fn queue(env: &Env) -> Value {
    let out = env.run(&["queue", "--json"], &[]).await;
    assert_ok(&out, "queue --json");
    serde_json::from_slice(&out.stdout).expect("queue --json is JSON")
}

async fn wait_for_exit(mut child: Child, limit: Duration) -> std::process::Output {
    let exited = wait_until(limit, || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    assert!(exited, "the process did not exit within {limit:?}");
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("output"))
        .await
        .expect("join")
}

#[tokio::test]
async fn a_worker_that_plans_archives_every_org_on_its_own_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!("{WORKER_CONFIG}listen = \"127.0.0.1:{port}\"\n");
    let env = Env::start_with(crate::harness::small_with_client(), Some(&config)).await;
    let h = env.handle();
    let orgs = h.orgs();
    env.add_org("acme", &orgs[0].org_id).await;
    env.add_org("globex", &orgs[1].org_id).await;
    let started = h.now_ms();

    let worker = env.spawn(&["-v", "worker", "--plan"]);
    // The worker's probes answer on [worker] listen.
    let probe = |path: &'static str| async move {
        reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || async {
            probe("/healthz").await == 200
        })
        .await,
        "the worker's /healthz never answered"
    );
    assert_eq!(probe("/readyz").await, 200);
    // Both orgs' planned harvests end, without any `sync`.
    let seen = std::sync::Mutex::new(Value::Null);
    let finished = wait_until(Duration::from_secs(120), || {
        let (env, seen) = (&env, &seen);
        async move {
            let q = queue(env).await;
            let ok = q["done"].as_i64() == Some(2) && q["running"].as_i64() == Some(0);
            *seen.lock().unwrap() = q;
            ok
        }
    })
    .await;
    let last = seen.lock().unwrap().clone();
    assert!(finished, "the planned jobs never finished: {last:#}");
    let planner = &last["planner"];
    assert!(planner["last_run_ms"].as_i64().is_some(), "{last:#}");
    assert!(
        planner["last_summary"]
            .as_str()
            .is_some_and(|s| s.contains("queued 2 harvest(s)")),
        "{last:#}"
    );
    assert_eq!(last["failed"], 0, "{last:#}");
    for o in &orgs[..2] {
        check_archive(&env, &o.org_id, started - 72 * 3_600_000, started);
    }
    // `status` shows the queue and the planner under the org table.
    let status = env.run(&["status"], &[]).await;
    assert_ok(&status, "status");
    let shown = text(&status);
    assert!(shown.contains("queue: 0 queued"), "{shown}");
    assert!(shown.contains("planner: held by"), "{shown}");

    sigterm(&worker);
    let out = wait_for_exit(worker, Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("wxvault worker: stopped"),
        "{}",
        text(&out)
    );
    // The planner lease was given up: another process may plan at once.
    let after = queue(&env).await;
    assert!(after["planner"]["holder"].is_null(), "{after:#}");
}

#[tokio::test]
async fn sigterm_hands_a_running_job_back_within_the_grace_and_a_later_sync_finishes_it() {
    let env = Env::start_with(
        crate::harness::small_with_client(),
        Some(
            "\n[sync]\nfirst_lookback_hours = 72\nbatch_concurrency = 1\ndownloads_per_batch = 1\n\n\
             [worker]\npoll_seconds = 1\n\n[serve]\nshutdown_grace_seconds = 1\n",
        ),
    )
    .await;
    let h = env.handle();
    let org = h.orgs()[0].org_id.clone();
    env.add_org("acme", &org).await;
    let started = h.now_ms();
    // Slow answers: the harvest is still running when SIGTERM arrives.
    h.set_faults(webex_sim::Faults {
        latency_ms: 300,
        ..h.faults()
    });
    let worker = env.spawn(&["-v", "worker", "--plan"]);
    let running = wait_until(Duration::from_secs(60), || {
        let env = &env;
        async move { queue(env).await["running"].as_i64() == Some(1) }
    })
    .await;
    assert!(running, "the planned job never started");
    sigterm(&worker);
    let out = wait_for_exit(worker, Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("1 handed back"),
        "the running job was handed back: {}",
        text(&out)
    );
    let q = queue(&env).await;
    assert_eq!(
        (q["queued"].as_i64(), q["running"].as_i64()),
        (Some(1), Some(0)),
        "{q:#}"
    );

    // The handed-back job is anyone's: a sync works on it alongside its own and finishes both.
    h.set_faults(webex_sim::Faults {
        latency_ms: 0,
        ..h.faults()
    });
    let w = env.spawn(&["worker"]);
    let drained = wait_until(Duration::from_secs(120), || {
        let env = &env;
        async move {
            let q = queue(env).await;
            q["queued"].as_i64() == Some(0) && q["running"].as_i64() == Some(0)
        }
    })
    .await;
    assert!(drained, "the handed-back job never ran");
    sigterm(&w);
    let out = wait_for_exit(w, Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_archive(&env, &org, started - 72 * 3_600_000, started);
    let q = queue(&env).await;
    assert_eq!(q["failed"], 0, "{q:#}");
}

#[tokio::test]
async fn sync_goes_through_the_queue_and_keeps_its_report() {
    let env = Env::start(DatasetSpec::small()).await;
    let h = env.handle();
    let org = h.orgs()[0].org_id.clone();
    env.add_org("acme", &org).await;
    let out = env.sync_all(3, &["--json"]).await;
    assert_ok(&out, "sync");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["orgs"][0]["outcome"]["state"], "ok", "{report:#}");
    assert!(
        report["orgs"][0]["archived"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let q = queue(&env).await;
    assert_eq!(
        (q["done"].as_i64(), q["queued"].as_i64()),
        (Some(1), Some(0)),
        "{q:#}"
    );
    assert!(q["planner"].is_null(), "sync does not plan: {q:#}");
}

/// `serve` and `worker` started before their database answers (a boot where PostgreSQL comes up
/// later) keep trying and say so instead of exiting; a SIGTERM while they wait ends them with
/// exit 0, as at any other moment.
#[tokio::test]
async fn serve_and_worker_wait_for_an_unreachable_database_and_stop_cleanly() {
    let env = Env::start(DatasetSpec::small()).await;
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    // Port 1 on loopback: every connection is refused.
    let config = config.replace(
        "url = \"sqlite://state/wxvault.db\"",
        "url = \"postgres://wxvault@127.0.0.1:1/wxvault\"",
    );
    std::fs::write(&env.config_path, config).unwrap();
    for args in [
        &["worker", "--plan"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let log = env.dir.path().join(format!("{}.log", args[0]));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = env
            .command(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("binary starts");
        let retrying = wait_until(Duration::from_secs(30), || {
            let seen = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("not usable yet, trying again")
                .count()
                >= 2;
            async move { seen }
        })
        .await;
        assert!(retrying, "{}: keeps trying:\n{}", args[0], tail(&log));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "{}: still running while the database is down:\n{}",
            args[0],
            tail(&log)
        );
        sigterm(&child);
        let status = wait_exit(&mut child, Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: exit 0 on SIGTERM while waiting ({status:?}):\n{}",
            args[0],
            tail(&log)
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("stopped before it started"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "names the database: {text}");
    }
}
