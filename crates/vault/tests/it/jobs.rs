//! The work queue on both backends: claim order and lanes, many claimers through separate pools
//! (as separate processes), leases that expire, retries with backoff, failing for good, release,
//! and the planner's singleton lease.

use std::collections::HashSet;

use vault::{KIND_HARVEST, KIND_RESCAN, LeaseHolder, NewJob, Org, VaultError};

use crate::common::{TestDb, backends, new_org};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;
const MAX_LOST: i64 = 3;

fn holder(id: &str, pid: i64) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        host: format!("host-{id}"),
        pid,
    }
}

fn harvest(attempts: i64) -> NewJob {
    NewJob {
        kind: KIND_HARVEST.into(),
        from_ms: None,
        to_ms: Some(NOW),
        requested_by: "test".into(),
        max_attempts: attempts,
    }
}

async fn org(db: &TestDb, name: &str) -> Org {
    db.vault
        .add_org(new_org(name, &format!("org-{name}")))
        .await
        .unwrap()
}

#[tokio::test]
async fn one_job_per_org_runs_at_a_time_and_jobs_go_in_order() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme").await;
        let globex = org(&db, "globex").await;
        let v = &db.vault;
        let a1 = v.enqueue_job(&acme, &harvest(3), NOW).await.unwrap();
        let a2 = v.enqueue_job(&acme, &harvest(3), NOW).await.unwrap();
        let g1 = v.enqueue_job(&globex, &harvest(3), NOW + 1).await.unwrap();
        let (a, c) = (holder("a", 1), holder("c", 2));

        let first = v
            .claim_job(&a, NOW + 5, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.id, first.state.as_str(), first.attempts),
            (a1, "running", 1),
            "{b}"
        );
        assert_eq!(first.holder.as_deref(), Some("a"), "{b}");
        assert_eq!(first.lease_expires_ms, Some(NOW + 5 + TTL), "{b}");
        // acme's second job waits for its first: the next claim gets globex's.
        let second = v
            .claim_job(&c, NOW + 5, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.id, g1, "{b}");
        assert!(
            v.claim_job(&c, NOW + 5, TTL, None, MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );

        // Done frees the lane; the result is kept with the job.
        assert!(
            v.finish_job(a1, "a", NOW + 10, "{\"org\":\"acme\"}")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !v.finish_job(a1, "a", NOW + 10, "{}").await.unwrap(),
            "{b}: only once"
        );
        let next = v
            .claim_job(&c, NOW + 11, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.id, a2, "{b}");
        let done = v.jobs(&[a1]).await.unwrap();
        assert_eq!(done[0].state, "done", "{b}");
        assert_eq!(done[0].result.as_deref(), Some("{\"org\":\"acme\"}"), "{b}");
        assert!(done[0].is_final(), "{b}");

        // A job not yet due is not claimed.
        let later = NewJob {
            kind: KIND_RESCAN.into(),
            ..harvest(1)
        };
        let r = v.enqueue_job(&globex, &later, NOW + 60_000).await.unwrap();
        assert!(v.finish_job(g1, "c", NOW + 12, "{}").await.unwrap(), "{b}");
        assert!(
            v.claim_job(&a, NOW + 13, TTL, None, MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let got = v
            .claim_job(&a, NOW + 60_000, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.id, got.kind.as_str()), (r, KIND_RESCAN), "{b}");
    }
}

#[tokio::test]
async fn a_claim_limited_to_some_ids_takes_only_those() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme").await;
        let globex = org(&db, "globex").await;
        let v = &db.vault;
        let _a = v.enqueue_job(&acme, &harvest(1), NOW).await.unwrap();
        let g = v.enqueue_job(&globex, &harvest(1), NOW).await.unwrap();
        let got = v
            .claim_job(&holder("s", 1), NOW, TTL, Some(&[g]), MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.id, g, "{b}");
        assert!(
            v.claim_job(&holder("s", 1), NOW, TTL, Some(&[g]), MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        assert!(
            v.claim_job(&holder("s", 1), NOW, TTL, Some(&[]), MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
    }
}

#[tokio::test]
async fn failures_retry_with_backoff_then_fail_for_good_and_release_does_not_count() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme").await;
        let v = &db.vault;
        let id = v.enqueue_job(&acme, &harvest(2), NOW).await.unwrap();
        let a = holder("a", 1);

        // Released at shutdown: queued at once, the attempt not counted.
        v.claim_job(&a, NOW, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert!(v.release_job(id, "a", NOW + 1).await.unwrap(), "{b}");
        assert!(!v.release_job(id, "a", NOW + 1).await.unwrap(), "{b}");
        let j = &v.jobs(&[id]).await.unwrap()[0];
        assert_eq!((j.state.as_str(), j.attempts), ("queued", 0), "{b}");

        // First failure: queued again for later, with the reason.
        v.claim_job(&a, NOW + 2, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        let state = v
            .fail_job(
                id,
                "a",
                NOW + 3,
                "Webex answered 503",
                "{}",
                Some(NOW + 30_000),
            )
            .await
            .unwrap();
        assert_eq!(state, Some("queued"), "{b}");
        assert!(
            v.claim_job(&a, NOW + 29_999, TTL, None, MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let j = v
            .claim_job(&a, NOW + 30_000, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (j.attempts, j.last_error.as_deref()),
            (2, Some("Webex answered 503")),
            "{b}"
        );

        // Second failure with no attempts left: failed for good, shown by the queue status.
        let state = v
            .fail_job(
                id,
                "a",
                NOW + 30_001,
                "Webex answered 503 again",
                "{}",
                Some(NOW + 90_000),
            )
            .await
            .unwrap();
        assert_eq!(state, Some("failed"), "{b}");
        let q = v.queue_status(NOW + 30_002).await.unwrap();
        assert_eq!((q.queued, q.running, q.failed), (0, 0, 1), "{b}: {q:?}");
        assert_eq!(
            q.failed_jobs[0].last_error.as_deref(),
            Some("Webex answered 503 again"),
            "{b}"
        );
        // Not ours: nothing changes.
        assert_eq!(
            v.fail_job(id, "a", NOW, "x", "{}", None).await.unwrap(),
            None,
            "{b}"
        );

        // A permanent failure fails at once.
        let p = v.enqueue_job(&acme, &harvest(5), NOW).await.unwrap();
        v.claim_job(&a, NOW + 40_000, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            v.fail_job(p, "a", NOW + 40_001, "grant refused", "{}", None)
                .await
                .unwrap(),
            Some("failed"),
            "{b}"
        );

        let err = v.enqueue_job(&acme, &harvest(0), NOW).await.unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{b}: {err}");
        let err = v
            .enqueue_job(
                &acme,
                &NewJob {
                    kind: "bogus".into(),
                    ..harvest(1)
                },
                NOW,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{b}: {err}");
    }
}

#[tokio::test]
async fn an_expired_lease_goes_back_to_the_queue_and_a_job_that_keeps_dying_fails() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme").await;
        let v = &db.vault;
        let id = v.enqueue_job(&acme, &harvest(5), NOW).await.unwrap();
        let dead = holder("dead", 1);
        let live = holder("live", 2);
        let mut t = NOW;
        for lost in 1..=MAX_LOST {
            let j = v
                .claim_job(&dead, t, TTL, None, MAX_LOST)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(j.id, id, "{b}");
            // Renewed while alive.
            assert!(v.renew_job(id, "dead", t + 1000, TTL).await.unwrap(), "{b}");
            assert!(
                !v.renew_job(id, "live", t + 1000, TTL).await.unwrap(),
                "{b}"
            );
            // Still leased: nobody else gets it.
            assert!(
                v.claim_job(&live, t + TTL, TTL, None, MAX_LOST)
                    .await
                    .unwrap()
                    .is_none(),
                "{b}"
            );
            t += 1000 + TTL;
            if lost < MAX_LOST {
                let n = v.requeue_expired_jobs(t, MAX_LOST).await.unwrap();
                assert_eq!(n, 1, "{b}");
                let j = &v.jobs(&[id]).await.unwrap()[0];
                assert_eq!(
                    (j.state.as_str(), j.attempts, j.lost_leases),
                    ("queued", 0, lost),
                    "{b}"
                );
                assert!(
                    j.last_error.as_deref().unwrap().contains("host-dead pid 1"),
                    "{b}: {j:?}"
                );
                // The dead holder cannot finish it any more.
                assert!(!v.finish_job(id, "dead", t, "{}").await.unwrap(), "{b}");
            }
        }
        // The last lost lease fails it with the reason.
        assert!(
            v.claim_job(&live, t, TTL, None, MAX_LOST)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let j = &v.jobs(&[id]).await.unwrap()[0];
        assert_eq!(j.state, "failed", "{b}");
        assert!(
            j.last_error.as_deref().unwrap().contains("3 times"),
            "{b}: {j:?}"
        );
    }
}

#[tokio::test]
async fn many_claimers_through_separate_pools_never_share_a_job_or_an_org() {
    for db in backends().await {
        let b = db.name();
        let mut orgs = Vec::new();
        for i in 0..6 {
            orgs.push(org(&db, &format!("org{i}")).await);
        }
        let mut ids = HashSet::new();
        for o in &orgs {
            for _ in 0..5 {
                ids.insert(db.vault.enqueue_job(o, &harvest(1), NOW).await.unwrap());
            }
        }
        let mut vaults = Vec::new();
        for _ in 0..4 {
            vaults.push(db.reopen(db.keyring.clone()).await);
        }
        // Each claimer loops: claim, check that no other job of its org runs, finish.
        let busy = std::sync::Mutex::new(HashSet::new());
        let busy = &busy;
        let tasks = vaults.into_iter().enumerate().map(|(n, v)| async move {
            let me = holder(&format!("w{n}"), i64::try_from(n).unwrap());
            let mut got = Vec::new();
            let mut idle = 0;
            while idle < 50 {
                match v.claim_job(&me, NOW, TTL, None, MAX_LOST).await.unwrap() {
                    Some(j) => {
                        idle = 0;
                        assert!(
                            busy.lock().unwrap().insert(j.org),
                            "two jobs of org {} ran at once",
                            j.org
                        );
                        // Let the other claimers try while this one holds the org.
                        tokio::task::yield_now().await;
                        let q = v.queue_status(NOW).await.unwrap();
                        assert!(q.running <= 6, "{q:?}");
                        got.push((j.id, j.org));
                        busy.lock().unwrap().remove(&j.org);
                        assert!(v.finish_job(j.id, &me.id, NOW, "{}").await.unwrap());
                    }
                    None => {
                        idle += 1;
                        tokio::task::yield_now().await;
                    }
                }
            }
            got
        });
        let all: Vec<(i64, i64)> = futures::future::join_all(tasks).await.concat();
        let claimed: HashSet<i64> = all.iter().map(|(id, _)| *id).collect();
        assert_eq!(all.len(), claimed.len(), "{b}: a job was claimed twice");
        assert_eq!(claimed, ids, "{b}: every job was claimed");
        let q = db.vault.queue_status(NOW).await.unwrap();
        assert_eq!((q.queued, q.running, q.done), (0, 0, 30), "{b}");
    }
}

#[tokio::test]
async fn the_planner_lease_is_held_by_one_process_and_its_runs_are_recorded() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let (a, c) = (holder("a", 1), holder("c", 2));
        assert!(v.singleton("planner").await.unwrap().is_none(), "{b}");
        assert!(
            v.acquire_singleton("planner", &a, NOW, TTL).await.unwrap(),
            "{b}"
        );
        assert!(
            !v.acquire_singleton("planner", &c, NOW + TTL - 1, TTL)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            v.acquire_singleton("planner", &a, NOW + 10, TTL)
                .await
                .unwrap(),
            "{b}: renewed"
        );
        assert!(
            v.record_singleton_run("planner", "a", NOW + 10, false, "queued 2")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !v.record_singleton_run("planner", "c", NOW + 10, true, "x")
                .await
                .unwrap(),
            "{b}"
        );
        let s = v.singleton("planner").await.unwrap().unwrap();
        assert_eq!(
            (s.last_run_ms, s.last_rescan_ms),
            (Some(NOW + 10), None),
            "{b}"
        );
        assert_eq!(s.last_summary.as_deref(), Some("queued 2"), "{b}");
        // Expired: another process takes it; the record stays.
        assert!(
            v.acquire_singleton("planner", &c, NOW + 10 + TTL, TTL)
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            v.record_singleton_run("planner", "c", NOW + 20 + TTL, true, "y")
                .await
                .unwrap(),
            "{b}"
        );
        let s = v.singleton("planner").await.unwrap().unwrap();
        assert_eq!(s.last_rescan_ms, Some(NOW + 20 + TTL), "{b}");
        assert_eq!(
            (s.first_run_ms, s.last_run_ms),
            (Some(NOW + 10), Some(NOW + 20 + TTL)),
            "{b}: the first run is kept"
        );
        assert_eq!(s.host.as_deref(), Some("host-c"), "{b}");
        // Released: free at once.
        assert!(v.release_singleton("planner", "c").await.unwrap(), "{b}");
        assert!(
            v.acquire_singleton("planner", &a, NOW + 21 + TTL, TTL)
                .await
                .unwrap(),
            "{b}"
        );
    }
}

#[tokio::test]
async fn the_planner_does_not_pile_up_jobs_behind_a_pending_one() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme").await;
        let v = &db.vault;
        let first = v
            .enqueue_job_unless_open(&acme, &harvest(3), NOW)
            .await
            .unwrap();
        assert!(first.is_some(), "{b}");
        assert!(
            v.enqueue_job_unless_open(&acme, &harvest(3), NOW)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        // Another kind is not blocked by it.
        let rescan = NewJob {
            kind: KIND_RESCAN.into(),
            ..harvest(3)
        };
        assert!(
            v.enqueue_job_unless_open(&acme, &rescan, NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        // Running still counts as pending; done does not.
        let j = v
            .claim_job(&holder("a", 1), NOW, TTL, None, MAX_LOST)
            .await
            .unwrap()
            .unwrap();
        assert!(
            v.enqueue_job_unless_open(&acme, &harvest(3), NOW)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        v.finish_job(j.id, "a", NOW + 1, "{}").await.unwrap();
        let pending_kind = if j.kind == KIND_HARVEST {
            &harvest(3)
        } else {
            &rescan
        };
        assert!(
            v.enqueue_job_unless_open(&acme, pending_kind, NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        // Old finished jobs are purged.
        assert_eq!(v.purge_finished_jobs(NOW + 2).await.unwrap(), 1, "{b}");
    }
}
