//! Items that settle and are looked at again: tasks Webex never said a capture was requested
//! for, captures that appear after the grace period, a task the captures query refuses, storage
//! that refuses writes, and `wxvault retry`. All on the simulator's clock.

use std::time::Duration;

use engine::{OrgOutcome, SyncOptions};
use webex_sim::{DatasetSpec, ExpectedTask, Faults};

use crate::harness::*;

const DAY: i64 = 86_400_000;

fn window(from_ms: i64, to_ms: i64) -> SyncOptions {
    SyncOptions {
        orgs: vec![],
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        rescan: false,
    }
}

/// Telephony tasks of the org created before `before_ms`, with whether they have a recording
/// a default captures query lists.
fn telephony(env: &Env, org_id: &str, before_ms: i64) -> Vec<(ExpectedTask, bool)> {
    let m = env.handle().manifest(org_id);
    m.tasks
        .iter()
        .filter(|t| t.channel_type == "telephony" && t.created_ms < before_ms)
        .map(|t| {
            let has = m.recordings.iter().any(|r| r.task_id == t.task_id);
            (t.clone(), has)
        })
        .collect()
}

/// The simulator with the small dataset, the engine on its clock, and its first org as "acme".
async fn acme_on_sim_clock() -> (Env, engine::Engine, webex_sim::SimOrg) {
    let env = Env::start(DatasetSpec::small()).await;
    let engine = engine_on_sim_clock(&env).await;
    let org = env.handle().orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &org.org_id).await;
    (env, engine, org)
}

/// A task created before `before_ms` whose `captureRequested` is null and that never gets a
/// capture.
fn never_requested_uncaptured(env: &Env, org_id: &str, before_ms: i64) -> ExpectedTask {
    telephony(env, org_id, before_ms)
        .into_iter()
        .find(|(t, has)| t.capture_requested.is_none() && !has)
        .map(|(t, _)| t)
        .expect("the small dataset has a task with captureRequested null and no capture")
}

/// A window holding exactly this task (no other task was created in the same millisecond).
fn only(env: &Env, org_id: &str, t: &ExpectedTask) -> SyncOptions {
    let m = env.handle().manifest(org_id);
    assert_eq!(
        m.tasks
            .iter()
            .filter(|o| o.created_ms == t.created_ms)
            .count(),
        1,
        "the dataset has two tasks at one instant"
    );
    window(t.created_ms, t.created_ms + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_never_said_to_be_captured_ends_absent_and_its_window_syncs_clean() {
    let (env, engine, org) = acme_on_sim_clock().await;
    let t0 = env.handle().now_ms();
    let never = never_requested_uncaptured(&env, &org.org_id, t0);
    env.handle().advance_clock(Duration::from_secs(49 * 3600));

    for run in 0..2 {
        let report = engine.sync(&only(&env, &org.org_id, &never)).await.unwrap();
        let o = &report.orgs[0];
        assert_eq!(o.outcome, OrgOutcome::Ok, "{o:?}");
        assert!(o.missing.is_empty(), "run {run}: {o:?}");
        assert_eq!(report.exit_code(), 0, "run {run}: {o:?}");
        if run == 0 {
            assert_eq!((o.absent, o.capture_never_requested), (1, 1), "{o:?}");
        }
    }
    let status = engine.status().await.unwrap();
    assert_eq!(status[0].counts.capture_never_requested, 1);
    assert_eq!(status[0].counts.absent, 1);
    assert_eq!(status[0].counts.missing, 0);
    // The same count in `status --json`, from the binary.
    let out = env.run(&["status", "--json"], &[]).await;
    assert_ok(&out, "status --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["counts"]["capture_never_requested"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_that_appear_after_the_grace_period_are_still_archived() {
    let (env, engine, org) = acme_on_sim_clock().await;
    let t0 = env.handle().now_ms();
    let tasks = telephony(&env, &org.org_id, t0 - DAY);
    // One whose capture was requested, one Webex never said about; both do get a capture.
    let late: Vec<ExpectedTask> = [Some(true), None]
        .into_iter()
        .map(|flag| {
            tasks
                .iter()
                .find(|(t, has)| t.capture_requested == flag && *has)
                .map(|(t, _)| t.clone())
                .expect("a captured task of each kind")
        })
        .collect();
    env.handle().set_faults(Faults {
        withheld_task_ids: late.iter().map(|t| t.task_id.clone()).collect(),
        ..Faults::default()
    });
    env.handle().advance_clock(Duration::from_secs(49 * 3600));
    for t in &late {
        let r = engine.sync(&only(&env, &org.org_id, t)).await.unwrap();
        let o = &r.orgs[0];
        if t.capture_requested == Some(true) {
            assert_eq!(o.missing.len(), 1, "{o:?}");
            assert_eq!(r.exit_code(), 2);
        } else {
            assert_eq!(o.capture_never_requested, 1, "{o:?}");
            assert_eq!(r.exit_code(), 0);
        }
    }
    // Checked a moment ago: the next run does not ask again, and the missing one still counts.
    let captures = || {
        env.handle()
            .stats()
            .by_endpoint
            .get("captures")
            .copied()
            .unwrap_or(0)
    };
    let before = captures();
    let r = engine
        .sync(&only(&env, &org.org_id, &late[0]))
        .await
        .unwrap();
    assert_eq!(captures(), before, "re-checked at most once a day");
    assert_eq!(r.orgs[0].window_problems, 1, "{:?}", r.orgs[0]);
    assert_eq!(
        r.exit_code(),
        2,
        "a missing task keeps its window at exit 2"
    );

    // Webex produces them after all; a day later the re-check finds and archives them.
    env.handle().set_faults(Faults::default());
    env.handle().advance_clock(Duration::from_secs(25 * 3600));
    let r = engine
        .sync(&only(&env, &org.org_id, &late[0]))
        .await
        .unwrap();
    let o = &r.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:?}");
    let want: Vec<_> = expected_recordings(&env.handle(), &org.org_id, 0, env.handle().now_ms())
        .into_iter()
        .filter(|x| late.iter().any(|t| t.task_id == x.task_id))
        .collect();
    assert!(want.len() >= 2, "{want:?}");
    assert_eq!(o.archived, want.len() as u64, "{o:?}");
    let archive = files(&env.archive_dir());
    for x in &want {
        let (sha, size) = archive
            .get(&audio_key(&org.org_id, x))
            .unwrap_or_else(|| panic!("{} archived", x.recording_id));
        assert_eq!((sha, *size), (&x.sha256, x.size_bytes));
    }
    assert_eq!(r.exit_code(), 0, "nothing is missing any more: {o:?}");
    let counts = &engine.status().await.unwrap()[0].counts;
    assert_eq!((counts.missing, counts.capture_never_requested), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_captures_query_refuses_fails_alone_until_retried() {
    let (env, engine, org) = acme_on_sim_clock().await;
    let t0 = env.handle().now_ms();
    let from = t0 - 3 * DAY;
    let poison = telephony(&env, &org.org_id, t0)
        .into_iter()
        .find(|(t, has)| *has && t.created_ms >= from)
        .map(|(t, _)| t)
        .expect("a captured task");
    env.handle().set_faults(Faults {
        refused_task_ids: vec![poison.task_id.clone()],
        ..Faults::default()
    });
    let r = engine.sync(&window(from, t0)).await.unwrap();
    let o = &r.orgs[0];
    assert_eq!(
        o.outcome,
        OrgOutcome::Ok,
        "one bad task must not fail the org: {o:?}"
    );
    assert_eq!(o.failed.len(), 1, "{o:?}");
    assert!(
        o.failed[0].contains(&poison.task_id) && o.failed[0].contains("refuses this task"),
        "{o:?}"
    );
    assert_eq!(r.exit_code(), 2);
    let expected: Vec<_> = expected_recordings(&env.handle(), &org.org_id, from, t0)
        .into_iter()
        .filter(|x| x.task_id != poison.task_id && x.task_created_ms < t0)
        .collect();
    check_archive_exactly(&env, &org.org_id, &expected);

    // The failed task stays visible and keeps the window at exit 2, with no new queries for it.
    let again = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(again.exit_code(), 2);
    assert!(
        again.orgs[0]
            .window_problem_items
            .iter()
            .any(|i| i.contains(&poison.task_id)),
        "{:?}",
        again.orgs[0]
    );

    // Webex answers for it again; `wxvault retry` puts it back and the next sync archives it.
    env.handle().set_faults(Faults::default());
    let out = env.run(&["retry", "--org", "acme", "--json"], &[]).await;
    assert_ok(&out, "retry");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["org"], "acme", "{v}");
    assert_eq!(v[0]["tasks"], 1, "{v}");
    let r = engine.sync(&window(from, t0)).await.unwrap();
    assert!(
        !r.orgs[0]
            .window_problem_items
            .iter()
            .any(|i| i.contains(&poison.task_id)),
        "{:?}",
        r.orgs[0]
    );
    let expected: Vec<_> = expected_recordings(&env.handle(), &org.org_id, from, t0)
        .into_iter()
        .filter(|x| x.task_created_ms < t0)
        .collect();
    check_archive_exactly(&env, &org.org_id, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_refuses_writes_stops_the_org_and_uses_up_no_attempts() {
    let env = Env::start_with(small_with_client(), Some("\n[sync]\nmax_attempts = 2\n")).await;
    let engine = engine_on_sim_clock(&env).await;
    let org = env.handle().orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &org.org_id).await;
    let t0 = env.handle().now_ms();
    // The org's folder is a file: every write under it fails (even for root).
    std::fs::create_dir_all(env.archive_dir()).unwrap();
    let blocker = env.archive_dir().join(&org.org_id);
    std::fs::write(&blocker, b"not a folder").unwrap();
    for run in 0..4 {
        let r = engine.sync(&window(t0 - 2 * DAY, t0)).await.unwrap();
        let o = &r.orgs[0];
        let OrgOutcome::Failed(msg) = &o.outcome else {
            panic!("run {run}: storage trouble must stop the org: {o:?}");
        };
        assert!(msg.contains("storage"), "{msg}");
        assert!(!msg.contains("invalid configuration"), "{msg}");
        assert!(o.failed.is_empty(), "run {run}: no item is blamed: {o:?}");
        assert_eq!(r.exit_code(), 2);
    }
    let counts = &engine.status().await.unwrap()[0].counts;
    assert_eq!(counts.failed, 0, "{counts:?}");
    // Storage back: everything is archived, nothing was given up.
    std::fs::remove_file(&blocker).unwrap();
    let r = engine.sync(&window(t0 - 2 * DAY, t0)).await.unwrap();
    assert_eq!(r.orgs[0].outcome, OrgOutcome::Ok, "{:?}", r.orgs[0]);
    assert!(r.orgs[0].failed.is_empty(), "{:?}", r.orgs[0]);
    let expected: Vec<_> = expected_recordings(&env.handle(), &org.org_id, t0 - 2 * DAY, t0)
        .into_iter()
        .filter(|x| x.task_created_ms < t0)
        .collect();
    check_archive_exactly(&env, &org.org_id, &expected);
}

/// The archive holds exactly `expected` (the sim clock stands still, so nothing else appears).
fn check_archive_exactly(env: &Env, org_id: &str, expected: &[webex_sim::ExpectedRecording]) {
    assert_archive_matches(&files(&env.archive_dir()), org_id, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captures_query_refused_for_every_task_stops_the_org_and_fails_no_task() {
    let (env, engine, org) = acme_on_sim_clock().await;
    let t0 = env.handle().now_ms();
    let tasks = telephony(&env, &org.org_id, t0);
    // Webex refuses the query whatever task it names (a bad parameter, not a bad task).
    env.handle().set_faults(Faults {
        refused_task_ids: env
            .handle()
            .manifest(&org.org_id)
            .tasks
            .iter()
            .map(|t| t.task_id.clone())
            .collect(),
        ..Faults::default()
    });
    let r = engine.sync(&window(t0 - 3 * DAY, t0)).await.unwrap();
    let o = &r.orgs[0];
    let OrgOutcome::Failed(msg) = &o.outcome else {
        panic!("the org must stop: {o:?}");
    };
    assert!(msg.contains("400"), "{msg}");
    assert!(o.failed.is_empty(), "no task is blamed: {o:?}");
    assert!(tasks.len() > 1);
    assert_eq!(engine.status().await.unwrap()[0].counts.failed, 0);
}

/// wxvault before this change recorded a never-requested task as `missing`; the re-check
/// settles it as absent, and its window comes back clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_requested_task_left_missing_by_an_older_version_becomes_absent() {
    let (env, engine, org) = acme_on_sim_clock().await;
    let t0 = env.handle().now_ms();
    let never = never_requested_uncaptured(&env, &org.org_id, t0);
    let acme = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    engine
        .vault
        .upsert_task(
            &acme,
            "wxcc",
            &vault::TaskUpsert {
                task_id: never.task_id.clone(),
                created_ms: never.created_ms,
                capture_requested: None,
                attributes_json: "{}".into(),
            },
        )
        .await
        .unwrap();
    engine
        .vault
        .set_task_state(
            &acme,
            "wxcc",
            &never.task_id,
            vault::TaskState::Missing,
            Some("Webex never said whether a capture was requested, and none appeared within 48 h"),
        )
        .await
        .unwrap();
    env.handle().advance_clock(Duration::from_secs(49 * 3600));
    let r = engine.sync(&only(&env, &org.org_id, &never)).await.unwrap();
    assert_eq!(r.exit_code(), 0, "{:?}", r.orgs[0]);
    let counts = &engine.status().await.unwrap()[0].counts;
    assert_eq!((counts.missing, counts.capture_never_requested), (0, 1));
}
