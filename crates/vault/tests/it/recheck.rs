//! Re-checking settled tasks, a window's problems, and putting failed items back.

use vault::{RetryCounts, TaskState as T};

use crate::common::{backends, org, rec_at as rec, task};

#[tokio::test]
async fn only_settled_tasks_without_a_capture_are_rechecked_once_per_interval() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        for (id, created, cap) in [
            ("missing", 5_000, Some(true)),
            ("never", 5_000, None),
            ("declined", 5_000, Some(false)),
            ("old-missing", 1_000, Some(true)),
            ("pending", 5_000, Some(true)),
        ] {
            v.upsert_task(&o, "wxcc", &task(id, created, cap))
                .await
                .unwrap();
        }
        for (id, state) in [
            ("missing", T::Missing),
            ("never", T::Absent),
            ("declined", T::Absent),
            ("old-missing", T::Missing),
        ] {
            v.set_task_state(&o, "wxcc", id, state, Some("why"))
                .await
                .unwrap();
        }
        let o = &o;
        let due = |since, before| async move {
            let mut ids: Vec<String> = v
                .tasks_due_for_recheck(o, "wxcc", since, before)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.task_id)
                .collect();
            ids.sort();
            ids
        };
        // Never checked: both settled tasks inside the rescan span; not the declined one, not
        // the one created before the span, not the pending one.
        assert_eq!(due(2_000, 100_000).await, ["missing", "never"], "{b}");
        v.note_capture_checks_at(o, "wxcc", &["missing".into(), "never".into()], 50_000)
            .await
            .unwrap();
        assert!(due(2_000, 50_000).await.is_empty(), "{b}: checked recently");
        assert_eq!(due(2_000, 50_001).await, ["missing", "never"], "{b}");
        // A late capture re-opens a never-requested absent task; a declined one stays final.
        let moved = v
            .reopen_never_requested(o, "wxcc", &["never".into(), "declined".into()], 60_000)
            .await
            .unwrap();
        assert_eq!(moved, 1, "{b}");
        v.set_task_state(o, "wxcc", "never", T::Captured, None)
            .await
            .unwrap();
        let absent = v.tasks_in_states(o, "wxcc", &[T::Absent]).await.unwrap();
        assert_eq!(absent.len(), 1, "{b}");
        assert_eq!(absent[0].task_id, "declined", "{b}");
        assert_eq!(due(2_000, 100_000).await, ["missing"], "{b}");
    }
}

#[tokio::test]
async fn window_problems_and_retry_put_back_only_what_failed_in_the_window() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        for (id, created) in [("t-in", 10_000), ("t-out", 90_000), ("t-miss", 20_000)] {
            v.upsert_task(&o, "wxcc", &task(id, created, Some(true)))
                .await
                .unwrap();
        }
        v.set_task_state(&o, "wxcc", "t-miss", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        for (id, t, created) in [
            ("r-in", "t-in", 10_000),
            ("r-ok", "t-in", 10_000),
            ("r-out", "t-out", 90_000),
        ] {
            v.upsert_recording(&o, "wxcc", &rec(id, t, created))
                .await
                .unwrap();
        }
        v.set_task_state(&o, "wxcc", "t-in", T::Captured, None)
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t-out", T::Captured, None)
            .await
            .unwrap();
        v.mark_recording_failed(&o, "wxcc", "r-in", "gave up")
            .await
            .unwrap();
        v.mark_recording_failed(&o, "wxcc", "r-out", "gave up")
            .await
            .unwrap();

        let p = v.problems_in_window(&o, 0, 50_000, 10).await.unwrap();
        assert_eq!(p.total, 2, "{b}: {p:?}");
        let mut items: Vec<_> = p.items.iter().map(|f| f.item.as_str()).collect();
        items.sort_unstable();
        assert_eq!(items, ["recording r-in", "task t-miss"], "{b}");
        assert_eq!(
            v.problems_in_window(&o, 0, 50_000, 1)
                .await
                .unwrap()
                .items
                .len(),
            1,
            "{b}: the list is limited, the total is not"
        );

        let put_back = v
            .retry_failed(&o, Some(0), Some(50_000), 60_000)
            .await
            .unwrap();
        assert_eq!(
            put_back,
            RetryCounts {
                recordings: 1,
                tasks: 1
            },
            "{b}"
        );
        let r = v.recording(&o, "wxcc", "r-in").await.unwrap().unwrap();
        assert_eq!(r.state, vault::RecordingState::Ready, "{b}");
        assert_eq!((r.attempts, r.reason.as_deref()), (0, None), "{b}");
        let out = v.recording(&o, "wxcc", "r-out").await.unwrap().unwrap();
        assert_eq!(out.state, vault::RecordingState::Failed, "{b}: outside");
        assert_eq!(
            v.problems_in_window(&o, 0, 50_000, 10).await.unwrap().total,
            0,
            "{b}"
        );
        // Without bounds, everything else goes back too.
        let rest = v.retry_failed(&o, None, None, 70_000).await.unwrap();
        assert_eq!(rest.recordings, 1, "{b}");
    }
}
