//! Running unattended (issue 9 §1): `serve` started once keeps two orgs archived as the
//! simulator's clock moves, one planner across processes, the daily rescan finds a capture
//! Webex added late, and a job's retries and final failure. All on the simulator's clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use engine::queue::{PLANNER, plan_if_due, run_workers, work_until_done};
use vault::{Job, KIND_HARVEST, KIND_RESCAN, NewJob, OrgStatus};
use webex::http::RetryPolicy;
use webex_sim::{DatasetSpec, Faults, SimConfig};

use crate::harness::*;

const DAY: i64 = 86_400_000;
const MINUTE: i64 = 60_000;

/// Planning every 15 minutes, workers looking at the queue every second, a first harvest
/// covering the whole small dataset.
const CONFIG: &str = "\n[sync]\nfirst_lookback_hours = 72\n\n[schedule]\ninterval_minutes = 15\nrescan_days = 3\n\n[worker]\npoll_seconds = 1\nlease_seconds = 1800\n";

fn sim_config(dataset: DatasetSpec) -> SimConfig {
    SimConfig {
        dataset,
        rate_limit_per_minute: None,
        realtime_clock: false,
        ..SimConfig::default()
    }
}

/// Retries of one request that fail fast: a test that makes every call fail must not wait for
/// the production backoff.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

fn media_requests(env: &Env) -> u64 {
    env.handle()
        .stats()
        .by_endpoint
        .get("media")
        .copied()
        .unwrap_or(0)
}

/// Claims every due job as a stand-in worker and marks it done; returns them.
async fn drain(engine: &engine::Engine) -> Vec<Job> {
    let holder = engine::lease::holder_for_this_run();
    let mut jobs = Vec::new();
    let now = engine.clock.now_ms();
    while let Some(job) = engine
        .vault
        .claim_job(&holder, now, 60_000, None, 50)
        .await
        .expect("claim")
    {
        assert!(
            engine
                .vault
                .finish_job(job.id, &holder.id, now, "{}")
                .await
                .expect("finish"),
            "a job just claimed can be finished"
        );
        jobs.push(job);
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_once_archives_the_new_recordings_of_two_orgs_without_sync() {
    let env = Env::start_with(
        sim_config(DatasetSpec::small().with_future_tasks(6, 2)),
        Some(CONFIG),
    )
    .await;
    let h = env.handle();
    let engine = Arc::new(engine_on_sim_clock(&env).await);
    let orgs = h.orgs();
    add_org_to_engine(&env, &engine, "acme", &orgs[0].org_id).await;
    add_org_to_engine(&env, &engine, "globex", &orgs[1].org_id).await;
    let start = h.now_ms();
    for org in &orgs {
        let m = h.manifest(&org.org_id);
        let later = m
            .recordings
            .iter()
            .filter(|r| r.task_created_ms > start)
            .count();
        assert_eq!(later, 6, "six recordings appear after the start");
    }

    // The same function `wxvault serve` calls: web app, planner and workers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bound = listener.local_addr().expect("addr");
    let settings =
        webapp::Settings::from_config(&engine.config.serve, bound, None).expect("settings");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service = tokio::spawn(webapp::run_service(
        engine.clone(),
        settings,
        listener,
        Duration::from_secs(3600),
        stopped,
        true,
    ));

    // Each step: wait for the planner's pass at this simulator time and for the queue to be
    // idle (leases are on this clock: a running job must never see it jump), then move on.
    let end = start + 2 * 3_600_000 + 40 * MINUTE;
    let mut passes = BTreeSet::new();
    loop {
        let now = h.now_ms();
        let seen = std::sync::Mutex::new(String::new());
        let idle = wait_until(Duration::from_secs(120), || {
            let (engine, seen) = (&engine, &seen);
            async move {
                let v = engine.queue_view().await.expect("queue view");
                let ok = v.planner.as_ref().and_then(|p| p.last_run_ms) == Some(now)
                    && v.queue.queued == 0
                    && v.queue.running == 0;
                *seen.lock().unwrap() = format!("{:?} {:?}", v.planner, v.queue);
                ok
            }
        })
        .await;
        assert!(
            idle,
            "no planning pass at {now} followed by an idle queue: {}",
            seen.lock().unwrap()
        );
        passes.insert(now);
        if now >= end {
            break;
        }
        h.advance_clock(Duration::from_secs(16 * 60));
    }
    assert!(passes.len() >= 10, "the planner ran on every step");

    let archive = files(&env.archive_dir());
    for org in &orgs {
        let expected = expected_recordings(&h, &org.org_id, start - 3 * DAY, h.now_ms());
        assert_eq!(
            expected
                .iter()
                .filter(|r| r.task_created_ms > start)
                .count(),
            6,
            "every later recording is due by the end"
        );
        assert_archive_matches(&archive, &org.org_id, &expected);
    }

    stop.send(true).expect("service listens");
    let summary = tokio::time::timeout(Duration::from_secs(60), service)
        .await
        .expect("the service stops")
        .expect("join")
        .expect("run_service");
    // One harvest per org per pass, all done; nothing was left to hand back.
    assert_eq!(summary.jobs_done, 2 * passes.len() as u64, "{summary:?}");
    assert_eq!(
        (
            summary.jobs_failed,
            summary.jobs_retried,
            summary.jobs_released
        ),
        (0, 0, 0)
    );
    let view = engine.queue_view().await.expect("queue view");
    assert_eq!((view.queue.running, view.queue.failed), (0, 0));
    let planner = view.planner.expect("planner record");
    assert_eq!(planner.holder, None, "the planner's lease is released");
    assert_eq!(planner.last_run_ms, Some(end.max(h.now_ms())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_planner_at_a_time_across_processes_one_harvest_per_org_per_interval() {
    let env = Env::start_with(sim_config(DatasetSpec::small()), Some(CONFIG)).await;
    let h = env.handle();
    // Two "processes": two engines on one state database.
    let a = engine_on_sim_clock(&env).await;
    let b = engine_on_sim_clock(&env).await;
    let orgs = h.orgs();
    add_org_to_engine(&env, &a, "acme", &orgs[0].org_id).await;
    add_org_to_engine(&env, &a, "globex", &orgs[1].org_id).await;
    let (pa, pb) = (
        engine::lease::holder_for_this_run(),
        engine::lease::holder_for_this_run(),
    );
    let t0 = h.now_ms();

    let first = plan_if_due(&a, &pa).await.unwrap().expect("a plans first");
    assert_eq!((first.harvests, first.rescans), (2, 0));
    assert_eq!(
        plan_if_due(&b, &pb).await.unwrap(),
        None,
        "a holds the lease"
    );
    assert_eq!(
        plan_if_due(&a, &pa).await.unwrap(),
        None,
        "not due again yet"
    );
    let jobs = drain(&a).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        jobs.iter().map(|j| j.org).collect::<BTreeSet<_>>().len(),
        2,
        "one harvest per org"
    );
    assert!(jobs.iter().all(|j| j.kind == KIND_HARVEST));

    // A slow org: its harvest is still queued at the next pass, so none is added.
    h.advance_clock(Duration::from_secs(16 * 60));
    assert_eq!(
        plan_if_due(&b, &pb).await.unwrap(),
        None,
        "a still holds it"
    );
    let second = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!((second.harvests, second.already_pending), (2, 0));
    h.advance_clock(Duration::from_secs(16 * 60));
    let third = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!((third.harvests, third.already_pending), (0, 2));
    assert_eq!(drain(&a).await.len(), 2, "still one per org");

    // The holder stops (releases): the other takes over at the next pass.
    a.vault.release_singleton(PLANNER, &pa.id).await.unwrap();
    h.advance_clock(Duration::from_secs(16 * 60));
    let by_b = plan_if_due(&b, &pb).await.unwrap().expect("b takes over");
    assert_eq!(by_b.harvests, 2);
    assert_eq!(plan_if_due(&a, &pa).await.unwrap(), None, "b holds it now");
    assert_eq!(drain(&a).await.len(), 2);

    // The holder dies (never renews): once its lease ran out, the other plans.
    h.advance_clock(Duration::from_secs(16 * 60));
    assert_eq!(
        plan_if_due(&a, &pa).await.unwrap(),
        None,
        "b's lease (30 min) still runs"
    );
    h.advance_clock(Duration::from_secs(16 * 60));
    let by_a = plan_if_due(&a, &pa).await.unwrap().expect("a takes over");
    assert_eq!(by_a.harvests, 2);
    let record = a.vault.singleton(PLANNER).await.unwrap().unwrap();
    assert_eq!(record.holder.as_deref(), Some(pa.id.as_str()));
    assert_eq!(record.last_run_ms, Some(h.now_ms()));
    assert_eq!(drain(&a).await.len(), 2);

    // An org that needs re-authorization gets nothing.
    let globex = a.vault.org_by_name("globex").await.unwrap().unwrap();
    a.vault
        .set_org_status(
            &globex,
            OrgStatus::NeedsReauth {
                reason: "test: grant revoked".into(),
            },
        )
        .await
        .unwrap();
    h.advance_clock(Duration::from_secs(16 * 60));
    let skip = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!((skip.harvests, skip.needs_reauth), (1, 1));
    let jobs = drain(&a).await;
    assert_eq!(jobs.len(), 1);
    assert_ne!(jobs[0].org, globex.id);

    // The first rescan comes a day after the first pass, and covers [schedule] rescan_days.
    let before_day = t0 + DAY - 1 - h.now_ms();
    h.advance_clock(Duration::from_millis(u64::try_from(before_day).unwrap()));
    let not_yet = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!(not_yet.rescans, 0, "less than a day after the first pass");
    let record = a.vault.singleton(PLANNER).await.unwrap().unwrap();
    assert_eq!(
        (record.first_run_ms, record.last_rescan_ms),
        (Some(t0), None),
        "no rescan is recorded before one is queued"
    );
    drain(&a).await;
    h.advance_clock(Duration::from_secs(16 * 60));
    let day = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!((day.harvests, day.rescans), (1, 1));
    let now = h.now_ms();
    let record = a.vault.singleton(PLANNER).await.unwrap().unwrap();
    assert_eq!(record.last_rescan_ms, Some(now));
    let jobs = drain(&a).await;
    let rescan = jobs
        .iter()
        .find(|j| j.kind == KIND_RESCAN)
        .expect("a rescan job");
    assert_eq!(rescan.from_ms, Some(now - 3 * DAY));
    assert_eq!(rescan.to_ms, Some(now - engine::sync::SETTLE_LAG_MS));
    // Not again the same day.
    h.advance_clock(Duration::from_secs(16 * 60));
    let after = plan_if_due(&a, &pa).await.unwrap().expect("due");
    assert_eq!(after.rescans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_archives_a_capture_added_to_an_archived_task_exactly_once() {
    let env = Env::start_with(sim_config(DatasetSpec::small()), Some(CONFIG)).await;
    let h = env.handle();
    let engine = engine_on_sim_clock(&env).await;
    let sim_org = h.orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &sim_org.org_id).await;
    let t0 = h.now_ms();
    h.advance_clock(Duration::from_secs(3600));
    let window = |from: i64, to: i64| engine::SyncOptions {
        orgs: vec![],
        from_ms: Some(from),
        to_ms: Some(to),
        rescan: false,
    };
    let report = engine
        .sync(&window(t0 - 3 * DAY, h.now_ms()))
        .await
        .unwrap();
    assert_eq!(report.orgs[0].outcome, engine::OrgOutcome::Ok);

    // A task whose recordings are all archived gets one more capture.
    let before = expected_recordings(&h, &sim_org.org_id, t0 - 3 * DAY, h.now_ms());
    let task = before[0].task_id.clone();
    let late = h.add_late_recording(&task, 8_044).expect("known task");
    assert_eq!(late.task_id, task);

    // An ordinary harvest does not ask about finished tasks again.
    let captures = |env: &Env| env.handle().stats().by_endpoint["captures"];
    let (c0, m0) = (captures(&env), media_requests(&env));
    let report = engine
        .sync(&window(t0 - 3 * DAY, h.now_ms()))
        .await
        .unwrap();
    assert_eq!(report.orgs[0].outcome, engine::OrgOutcome::Ok);
    // (Waiting tasks are still asked about; the archived one is not.)
    let ordinary = captures(&env) - c0;
    assert_eq!(media_requests(&env), m0, "the late capture is not found");
    assert_archive_matches(&files(&env.archive_dir()), &sim_org.org_id, &before);

    // The rescan job (as the planner queues it) finds it and archives it alone.
    let org = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    let now = h.now_ms();
    let rescan = NewJob {
        kind: KIND_RESCAN.into(),
        from_ms: Some(now - 3 * DAY),
        to_ms: Some(now - engine::sync::SETTLE_LAG_MS),
        requested_by: "test".into(),
        max_attempts: 3,
    };
    for round in 0..2 {
        let c0 = captures(&env);
        let id = engine.vault.enqueue_job(&org, &rescan, now).await.unwrap();
        let jobs = work_until_done(&engine, &[id]).await.unwrap();
        assert_eq!(jobs[0].state, "done", "{:?}", jobs[0]);
        let media = media_requests(&env) - m0;
        assert_eq!(
            media, 1,
            "round {round}: only the late capture is downloaded"
        );
        let c1 = captures(&env);
        assert!(
            c1 - c0 > ordinary,
            "the rescan asks about archived tasks too: {} vs {ordinary}",
            c1 - c0
        );
        let after = expected_recordings(&h, &sim_org.org_id, t0 - 3 * DAY, h.now_ms());
        assert!(after.iter().any(|r| r.recording_id == late.recording_id));
        assert_eq!(after.len(), before.len() + 1);
        assert_archive_matches(&files(&env.archive_dir()), &sim_org.org_id, &after);
    }
    let counts = engine.vault.counts(&org).await.unwrap();
    assert_eq!(counts.failed, 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_org_failure_is_retried_with_backoff_and_a_refused_grant_fails_the_job() {
    let env = Env::start_with(sim_config(DatasetSpec::small()), Some(CONFIG)).await;
    let h = env.handle();
    let mut engine = engine_on_sim_clock(&env).await;
    engine.retry = quick_retries();
    let engine = Arc::new(engine);
    let orgs = h.orgs();
    add_org_to_engine(&env, &engine, "acme", &orgs[0].org_id).await;
    let grant = add_org_to_engine(&env, &engine, "globex", &orgs[1].org_id).await;
    let acme = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    let globex = engine.vault.org_by_name("globex").await.unwrap().unwrap();
    let t0 = h.now_ms();
    let job = |kind: &str| NewJob {
        kind: kind.into(),
        from_ms: Some(t0 - 3 * DAY),
        to_ms: Some(t0),
        requested_by: "test".into(),
        max_attempts: 5,
    };

    // Webex answers 5xx to everything for a while.
    h.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let id = engine
        .vault
        .enqueue_job(&acme, &job(KIND_HARVEST), t0)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(run_workers(
        engine.clone(),
        &engine::queue::WorkerOptions { plan: false },
        stopped,
    ));
    let state = |engine: Arc<engine::Engine>| async move {
        engine.vault.jobs(&[id]).await.unwrap().remove(0)
    };
    let retried = wait_until(Duration::from_secs(120), || {
        let engine = engine.clone();
        async move {
            let j = state(engine).await;
            j.state == "queued" && j.attempts == 1
        }
    })
    .await;
    let j = state(engine.clone()).await;
    assert!(retried, "the job was not queued again: {j:?}");
    assert!(j.next_attempt_ms > h.now_ms(), "a backoff: {j:?}");
    assert!(
        j.last_error.as_deref().is_some_and(|e| e.contains("acme")),
        "{j:?}"
    );
    // Not retried before its time (the clock stands still): still one attempt.
    let again = wait_until(Duration::from_secs(3), || {
        let engine = engine.clone();
        async move { state(engine).await.attempts > 1 }
    })
    .await;
    assert!(!again, "retried before its backoff ran out");

    // The fault clears and the backoff runs out: the job is done on its second run.
    h.set_faults(Faults::default());
    h.advance_clock(Duration::from_millis(
        u64::try_from(j.next_attempt_ms - h.now_ms() + 1).unwrap(),
    ));
    let done = wait_until(Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { state(engine).await.state == "done" }
    })
    .await;
    let j = state(engine.clone()).await;
    assert!(done, "the job never finished: {j:?}");
    assert_eq!(j.attempts, 2);
    let required = expected_recordings(&h, &acme.org_id, t0 - 3 * DAY, t0);
    let allowed = expected_recordings(&h, &acme.org_id, t0 - 3 * DAY, h.now_ms());
    assert_archive_matches_allowing(
        &files(&env.archive_dir()),
        &acme.org_id,
        &required,
        &allowed,
    );

    // A refused grant fails the job for good, with the reason, at once.
    h.revoke_grants(&globex.org_id);
    let id = engine
        .vault
        .enqueue_job(&globex, &job(KIND_HARVEST), h.now_ms())
        .await
        .unwrap();
    let failed = wait_until(Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.vault.jobs(&[id]).await.unwrap()[0].state == "failed" }
    })
    .await;
    let j = engine.vault.jobs(&[id]).await.unwrap().remove(0);
    assert!(failed, "{j:?}");
    assert_eq!(j.attempts, 1, "no retry for a refused grant");
    stop.send(true).unwrap();
    let summary = workers.await.unwrap();
    assert_eq!(
        (summary.jobs_done, summary.jobs_retried, summary.jobs_failed),
        (1, 1, 1)
    );

    // `wxvault queue` and `status` show it with the reason.
    let out = env.run(&["queue", "--json"], &[]).await;
    assert_ok(&out, "queue --json");
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(q["failed"].as_i64(), Some(1), "{q:#}");
    let reason = q["failed_jobs"][0]["last_error"].as_str().unwrap_or("");
    assert!(reason.contains("globex"), "{q:#}");
    for secret in [&grant.refresh_token, &grant.access_token] {
        assert!(
            !out_text_has(&q.to_string(), secret),
            "a token in queue --json"
        );
    }
    let out = env.run(&["status"], &[]).await;
    let shown = text(&out);
    for secret in [&grant.refresh_token, &grant.access_token] {
        assert!(!out_text_has(&shown, secret), "a token in status");
    }
    assert!(shown.contains("globex"), "{shown}");
    assert!(
        shown.to_ascii_lowercase().contains("failed"),
        "status names the failed job: {shown}"
    );
}

fn out_text_has(text: &str, secret: &str) -> bool {
    !secret.is_empty() && text.contains(secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_of_an_archived_window_downloads_nothing_again_for_either_source() {
    use crate::calling::{COMPLIANCE, WXCC, acme};
    let a = acme(
        2,
        8,
        Faults::default(),
        CONFIG,
        &["wxcc", "calling"],
        &[WXCC, COMPLIANCE],
    )
    .await;
    let h = a.env.handle();
    let t0 = h.now_ms();
    h.advance_clock(Duration::from_secs(3600));
    let report = a
        .engine
        .sync(&engine::SyncOptions {
            orgs: vec![],
            from_ms: Some(t0 - 3 * DAY),
            to_ms: Some(h.now_ms()),
            rescan: false,
        })
        .await
        .unwrap();
    assert_eq!(report.orgs[0].outcome, engine::OrgOutcome::Ok);
    let archived = files(&a.env.archive_dir());
    assert!(
        archived.keys().any(|k| k.contains("/calling/")),
        "both sources archived something"
    );
    let before = h.stats().by_endpoint;

    let now = h.now_ms();
    let rescan = NewJob {
        kind: KIND_RESCAN.into(),
        from_ms: Some(now - 3 * DAY),
        to_ms: Some(now - engine::sync::SETTLE_LAG_MS),
        requested_by: "test".into(),
        max_attempts: 3,
    };
    let id = a
        .engine
        .vault
        .enqueue_job(&a.org, &rescan, now)
        .await
        .unwrap();
    let jobs = work_until_done(&a.engine, &[id]).await.unwrap();
    assert_eq!(jobs[0].state, "done", "{:?}", jobs[0]);

    let after = h.stats().by_endpoint;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    // Nothing fetched or written again: no media, no Calling details or metadata.
    for k in [
        "media",
        "calling_media",
        "calling_details",
        "calling_metadata",
    ] {
        assert_eq!(delta(k), 0, "{k} asked again by the rescan");
    }
    // Cheap: the window listed again (three days, one list per day and service type at most a
    // page each), WxCC's archived tasks asked about 10 at a time.
    assert!(
        (1..=6).contains(&delta("calling_list")),
        "{}",
        delta("calling_list")
    );
    assert!(delta("captures") > 0);
    assert_eq!(
        files(&a.env.archive_dir()),
        archived,
        "the archive is untouched"
    );
}
