//! One org's long backfill spread over workers: the planner splits a catch-up longer than two
//! `[schedule] backfill_chunk_days` into chunks on lanes of their own; chunks of the one org run in
//! two `wxvault worker` processes at once; chunks that finish out of order never make the cursor
//! or the org's regular harvest skip a period; `sync --from` far back splits the same way and
//! keeps its one report per org.

use std::process::Child;
use std::time::Duration;

use engine::OrgOutcome;
use engine::queue::{plan_if_due, work_until_done};
use serde_json::Value;
use vault::{Job, KIND_BACKFILL, KIND_HARVEST, Vault};
use webex_sim::{DatasetSpec, Faults, SimConfig};

use crate::harness::{
    Env, add_org_to_engine, assert_ok, check_archive, engine_on_sim_clock, rfc3339, sigterm, text,
    wait_exit, wait_until,
};

const DAY: i64 = 86_400_000;
/// 22 days of lookback over 21 days of history, in chunks of 7 days: four chunks.
const LOOKBACK_HOURS: i64 = 22 * 24;
const BACKFILL_CONFIG: &str = "\n[sync]\nfirst_lookback_hours = 528\n\n[schedule]\n\
    backfill_chunk_days = 7\ninterval_minutes = 60\n\n[worker]\nconcurrency = 1\npoll_seconds = 1\n";

fn history() -> SimConfig {
    SimConfig {
        dataset: DatasetSpec {
            orgs: 1,
            days: 21,
            tasks_per_org: 60,
            pending_tasks_per_org: 0,
            edge_cases: false,
            ..DatasetSpec::small()
        },
        rate_limit_per_minute: None,
        realtime_clock: false,
        ..SimConfig::default()
    }
}

/// Every job of a fresh test database (ids start at 1).
async fn all_jobs(vault: &Vault) -> Vec<Job> {
    let ids: Vec<i64> = (1..=500).collect();
    vault.jobs(&ids).await.expect("jobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_finishing_out_of_order_leave_no_gap_and_the_regular_harvest_follows_them() {
    let env = Env::start_with(history(), Some(BACKFILL_CONFIG)).await;
    let engine = engine_on_sim_clock(&env).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &sim_org.org_id).await;
    let org = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    let t0 = h.now_ms();
    let planner = engine::lease::holder_for_this_run();

    let first = plan_if_due(&engine, &planner).await.unwrap().unwrap();
    assert_eq!((first.harvests, first.backfill_chunks), (0, 4), "{first:?}");
    let chunks = all_jobs(&engine.vault).await;
    let start = t0 - LOOKBACK_HOURS * 3_600_000;
    let end = t0 - engine::sync::SETTLE_LAG_MS;
    let windows: Vec<(i64, i64)> = chunks
        .iter()
        .map(|j| (j.from_ms.unwrap(), j.to_ms.unwrap()))
        .collect();
    assert_eq!(
        windows,
        [
            (start, start + 7 * DAY),
            (start + 7 * DAY, start + 14 * DAY),
            (start + 14 * DAY, start + 21 * DAY),
            (start + 21 * DAY, end)
        ]
    );
    assert!(chunks.iter().all(|j| j.kind == KIND_BACKFILL));
    // The new org's cursor is anchored at the backfill's start.
    assert_eq!(
        engine.vault.last_window_end(&org, "wxcc").await.unwrap(),
        Some(start)
    );

    // The last three chunks finish, newest first; the first is still queued.
    for c in chunks[1..].iter().rev() {
        let done = work_until_done(&engine, &[c.id]).await.unwrap();
        assert_eq!(done[0].state, "done", "{:?}", done[0]);
    }
    assert_eq!(
        engine.vault.last_window_end(&org, "wxcc").await.unwrap(),
        Some(start),
        "chunks ahead of an unfinished one do not move the cursor"
    );
    // The next pass (the planner's interval later) queues the org's regular harvest after the
    // newest chunk, not at the cursor: the finished chunks are not listed again.
    h.advance_clock(Duration::from_secs(3600));
    let second = plan_if_due(&engine, &planner).await.unwrap().unwrap();
    assert_eq!(
        (second.harvests, second.backfill_chunks),
        (1, 0),
        "{second:?}"
    );
    let harvest = all_jobs(&engine.vault)
        .await
        .into_iter()
        .find(|j| j.kind == KIND_HARVEST)
        .expect("a harvest was queued");
    assert_eq!((harvest.from_ms, harvest.to_ms), (Some(end), None));
    let ran = work_until_done(&engine, &[harvest.id]).await.unwrap();
    assert_eq!(ran[0].state, "done", "{:?}", ran[0]);
    let harvest_end = h.now_ms() - engine::sync::SETTLE_LAG_MS;
    assert_eq!(
        engine.vault.last_window_end(&org, "wxcc").await.unwrap(),
        Some(start),
        "still waiting for the first chunk"
    );

    // The first chunk ends last: the cursor jumps over every finished window at once.
    let done = work_until_done(&engine, &[chunks[0].id]).await.unwrap();
    assert_eq!(done[0].state, "done", "{:?}", done[0]);
    assert_eq!(
        engine.vault.last_window_end(&org, "wxcc").await.unwrap(),
        Some(harvest_end)
    );
    check_archive(&env, &sim_org.org_id, start, t0);

    // With no chunk open, the next pass is a plain harvest from the cursor.
    h.advance_clock(Duration::from_secs(3600));
    let third = plan_if_due(&engine, &planner).await.unwrap().unwrap();
    assert_eq!((third.harvests, third.backfill_chunks), (1, 0), "{third:?}");
    let next = all_jobs(&engine.vault)
        .await
        .into_iter()
        .filter(|j| j.kind == KIND_HARVEST)
        .max_by_key(|j| j.id)
        .unwrap();
    assert_eq!((next.from_ms, next.to_ms), (None, None));
    let ran = work_until_done(&engine, &[next.id]).await.unwrap();
    let report = engine::queue::job_report(&org, &ran[0]);
    assert_eq!(report.outcome, OrgOutcome::Ok, "{report:?}");
    assert_eq!(report.window_from, rfc3339(harvest_end));
}

fn spawn_worker(env: &Env, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).expect("worker log");
    env.command(&["-v", "worker", "--plan"])
        .stdout(out.try_clone().expect("worker log"))
        .stderr(out)
        .spawn()
        .expect("binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_orgs_backfill_and_archive_it_once() {
    let pg = vault::testing::TempPostgres::create().await;
    let env = Env::start_with(history(), Some(BACKFILL_CONFIG)).await;
    let url = env.use_postgres_if_any(pg.as_ref(), "backfill");
    let h = env.handle();
    let sim_org = h.orgs()[0].org_id.clone();
    env.add_org("acme", &sim_org).await;
    let started = h.now_ms();
    // Slow answers: each chunk takes seconds, so both workers are busy at once.
    h.set_faults(Faults {
        latency_ms: 150,
        ..h.faults()
    });
    let vault = Vault::open(&url, vault::testing::random_keyring())
        .await
        .expect("vault");
    let logs: Vec<_> = (0..2)
        .map(|i| env.dir.path().join(format!("worker-{i}.log")))
        .collect();
    let workers: Vec<Child> = logs.iter().map(|l| spawn_worker(&env, l)).collect();
    let finished = wait_until(Duration::from_secs(240), || {
        let vault = &vault;
        async move {
            let jobs = all_jobs(vault).await;
            jobs.len() >= 4 && jobs.iter().all(Job::is_final)
        }
    })
    .await;
    for w in &workers {
        sigterm(w);
    }
    for mut w in workers {
        let status = wait_exit(&mut w, Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "a worker exits 0 on SIGTERM: {status:?}"
        );
    }
    let jobs = all_jobs(&vault).await;
    let logs_text = || {
        logs.iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        finished,
        "the backfill never finished: {jobs:#?}\n{}",
        logs_text()
    );
    let chunks: Vec<&Job> = jobs.iter().filter(|j| j.kind == KIND_BACKFILL).collect();
    assert_eq!(chunks.len(), 4, "{jobs:#?}");
    assert!(
        jobs.iter().all(|j| j.state == "done"),
        "no job failed: {jobs:#?}"
    );
    // Chunks of the one org ran in both processes, and two of them at the same time.
    let pids: std::collections::BTreeSet<i64> = chunks.iter().filter_map(|j| j.pid).collect();
    assert_eq!(pids.len(), 2, "{chunks:#?}\n{}", logs_text());
    let overlapping = chunks.iter().any(|a| {
        chunks.iter().any(|b| {
            a.pid != b.pid
                && a.started_ms.unwrap() < b.finished_ms.unwrap()
                && b.started_ms.unwrap() < a.finished_ms.unwrap()
        })
    });
    assert!(overlapping, "no two chunks ran at once: {chunks:#?}");

    // Every recording of the 22 days archived once, byte-exact, nothing else.
    let from = started - LOOKBACK_HOURS * 3_600_000;
    check_archive(&env, &sim_org, from, started);
    let org = vault.org_by_name("acme").await.unwrap().unwrap();
    let counts = vault.counts(&org).await.unwrap();
    let expected = crate::harness::expected_recordings(&h, &sim_org, from, started).len();
    assert_eq!(usize::try_from(counts.archived).unwrap(), expected);
    // The cursor ends where the backfill was planned to, and the next harvest starts there.
    let planned_end = chunks.iter().filter_map(|j| j.to_ms).max().unwrap();
    assert_eq!(
        vault.last_window_end(&org, "wxcc").await.unwrap(),
        Some(planned_end)
    );
    h.set_faults(Faults {
        latency_ms: 0,
        ..h.faults()
    });
    let out = env.run(&["sync", "--json"], &[]).await;
    assert_ok(&out, "sync");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["orgs"][0]["window_from"].as_str(),
        Some(rfc3339(planned_end).as_str()),
        "{report:#}"
    );
    assert_eq!(report["orgs"][0]["archived"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_far_back_splits_into_chunks_and_reports_once_per_org() {
    let env = Env::start_with(history(), Some(BACKFILL_CONFIG)).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].org_id.clone();
    env.add_org("acme", &sim_org).await;
    let t0 = h.now_ms();
    let out = env.sync_all(22, &["--json"]).await;
    assert_ok(&out, "sync");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let orgs = report["orgs"].as_array().expect("orgs");
    assert_eq!(orgs.len(), 1, "{report:#}");
    let o = &orgs[0];
    assert_eq!(o["outcome"]["state"], "ok", "{report:#}");
    assert_eq!(
        o["window_from"].as_str(),
        Some(rfc3339(t0 - 22 * DAY).as_str())
    );
    assert_eq!(o["window_to"].as_str(), Some(rfc3339(t0 + 1).as_str()));
    let expected = crate::harness::expected_recordings(&h, &sim_org, t0 - 22 * DAY, t0).len();
    assert_eq!(o["archived"].as_u64(), Some(expected as u64), "{report:#}");
    assert_eq!(o["sources"].as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(o["sources"][0]["archived"].as_u64(), Some(expected as u64));
    check_archive(&env, &sim_org, t0 - 22 * DAY, t0);
    // The queue ran four chunks for it, all done; `queue` shows nothing open.
    let q = env.run(&["queue", "--json"], &[]).await;
    assert_ok(&q, "queue");
    let q: Value = serde_json::from_slice(&q.stdout).expect("json");
    assert_eq!(
        (q["done"].as_i64(), q["queued"].as_i64()),
        (Some(4), Some(0)),
        "{q:#}"
    );
    assert_eq!(q["open_jobs"].as_array().map(Vec::len), Some(0), "{q:#}");
    let shown = text(&env.run(&["queue"], &[]).await);
    assert!(shown.contains("queue: 0 queued"), "{shown}");
}

/// Unfinished items created before a backfill's start (downloads that failed in an earlier
/// run) are resumed by the earliest chunk: while the chunks run, no regular harvest does it, and
/// a `sync` over a long window runs chunks only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earliest_chunk_resumes_items_left_unfinished_before_the_backfill() {
    let env = Env::start_with(history(), Some(BACKFILL_CONFIG)).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].org_id.clone();
    env.add_org("acme", &sim_org).await;
    let t0 = h.now_ms();
    let (old_from, old_to) = (t0 - 21 * DAY, t0 - 20 * DAY);
    assert!(
        !crate::harness::expected_recordings(&h, &sim_org, old_from, old_to).is_empty(),
        "the old day has recordings"
    );
    // Every download of the old day breaks off: its recordings stay unfinished.
    let faults = h.faults();
    h.set_faults(Faults {
        truncate_rate: 1.0,
        ..faults.clone()
    });
    let first = env
        .run(
            &[
                "sync",
                "--from",
                &rfc3339(old_from),
                "--to",
                &rfc3339(old_to),
            ],
            &[],
        )
        .await;
    assert_ne!(first.status.code(), Some(0), "{}", text(&first));
    assert!(
        crate::harness::files(&env.archive_dir())
            .keys()
            .all(|k| !k.ends_with(".wav")),
        "nothing of the old day archived yet"
    );
    h.set_faults(faults);

    // 19 days from a day after the old one: three chunks, none covering the old day.
    let out = env
        .run(&["sync", "--from", &rfc3339(t0 - 19 * DAY), "--json"], &[])
        .await;
    assert_ok(&out, "sync");
    let jobs = all_jobs(
        &Vault::open(
            &format!("sqlite://{}", env.db_path().display()),
            vault::testing::random_keyring(),
        )
        .await
        .expect("vault"),
    )
    .await;
    assert_eq!(
        jobs.iter().filter(|j| j.kind == KIND_BACKFILL).count(),
        3,
        "{jobs:#?}"
    );
    let mut required = crate::harness::expected_recordings(&h, &sim_org, old_from, old_to);
    required.extend(crate::harness::expected_recordings(
        &h,
        &sim_org,
        t0 - 19 * DAY,
        t0,
    ));
    let allowed = crate::harness::expected_recordings(&h, &sim_org, t0 - 19 * DAY, h.now_ms());
    crate::harness::assert_archive_matches_allowing(
        &crate::harness::files(&env.archive_dir()),
        &sim_org,
        &required,
        &allowed,
    );
}

/// A source that stays far behind while another is current (a source that fails every run:
/// a missing scope, downloads withheld) does not put its org into backfill chunks again and
/// again: chunks are for an org whose every source is behind; the lagging source catches up in
/// the org's regular harvest, from its own cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_far_behind_does_not_chunk_an_org_whose_other_source_is_current() {
    let env = Env::start_with(history(), Some(BACKFILL_CONFIG)).await;
    let engine = engine_on_sim_clock(&env).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &sim_org.org_id).await;
    let org = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    engine
        .vault
        .set_org_sources(&org, &["wxcc".into(), "calling".into()])
        .await
        .unwrap();
    let t0 = h.now_ms();
    // WxCC is current; Calling has no cursor, so it starts 22 days back.
    engine
        .vault
        .window_done(&org, "wxcc", t0 - DAY, t0 - engine::sync::SETTLE_LAG_MS)
        .await
        .unwrap();
    let planner = engine::lease::holder_for_this_run();
    let pass = plan_if_due(&engine, &planner).await.unwrap().unwrap();
    assert_eq!((pass.harvests, pass.backfill_chunks), (1, 0), "{pass:?}");
    let jobs = all_jobs(&engine.vault).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(
        (jobs[0].kind.as_str(), jobs[0].from_ms, jobs[0].to_ms),
        (KIND_HARVEST, None, None),
        "the regular harvest, every source from its own cursor"
    );
}
