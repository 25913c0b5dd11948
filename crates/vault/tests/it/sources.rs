//! Items keyed by (org, source, id): the same id under two sources is two independent rows;
//! org-wide views span every source and say which one an item is from. And the `absent`
//! recording state.

use std::collections::BTreeMap;

use vault::{Archived, Counts, Org, RecordingState as R, TaskState as T, Vault, VaultError};

use crate::common::{backends, org, rec_at, task};

const WXCC: &str = "wxcc";
const CALLING: &str = "calling";

/// Ids of the tasks of `source` due for a re-check, not checked since `before`.
async fn due(v: &Vault, o: &Org, source: &str, before: i64) -> Vec<String> {
    let mut ids: Vec<String> = v
        .tasks_due_for_recheck(o, source, 0, before)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_same_task_id_under_two_sources_is_two_independent_rows() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        let t = v
            .upsert_task(&o, WXCC, &task("t1", 1_000, Some(true)))
            .await
            .unwrap();
        let c = v
            .upsert_task(&o, CALLING, &task("t1", 2_000, None))
            .await
            .unwrap();
        assert_eq!((t.created_ms, c.created_ms), (1_000, 2_000), "{b}");
        assert_eq!(
            (t.capture_requested, c.capture_requested),
            (Some(true), None),
            "{b}: neither upsert overwrote the other"
        );

        v.note_capture_check(&o, WXCC, "t1").await.unwrap();
        v.note_capture_checks(&o, WXCC, &["t1".into()])
            .await
            .unwrap();
        v.set_task_state(&o, WXCC, "t1", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        let wxcc = v.tasks_in_states(&o, WXCC, T::ALL).await.unwrap();
        let calling = v.tasks_in_states(&o, CALLING, T::ALL).await.unwrap();
        assert_eq!((wxcc.len(), calling.len()), (1, 1), "{b}");
        assert_eq!((wxcc[0].state, wxcc[0].checks), (T::Missing, 2), "{b}");
        assert_eq!(
            (
                calling[0].state,
                calling[0].checks,
                calling[0].reason.as_deref()
            ),
            (T::Discovered, 0, None),
            "{b}: the other source's row is untouched"
        );

        // Batch moves and re-checks stay within their source too.
        v.set_tasks_state(&o, CALLING, &["t1".into()], T::Captured, None)
            .await
            .unwrap();
        assert_eq!(
            v.tasks_in_states(&o, WXCC, &[T::Missing])
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );
        for source in [WXCC, CALLING] {
            v.upsert_task(&o, source, &task("t3", 3_000, Some(true)))
                .await
                .unwrap();
            v.set_task_state(&o, source, "t3", T::Missing, Some("none"))
                .await
                .unwrap();
        }
        v.note_capture_checks_at(&o, CALLING, &["t3".into()], 10)
            .await
            .unwrap();
        // wxcc: t1 was checked just now, t3 never; calling: t1 is captured, t3 checked at 10.
        assert_eq!(due(v, &o, WXCC, 10).await, ["t3"], "{b}");
        assert!(due(v, &o, CALLING, 10).await.is_empty(), "{b}");
        assert_eq!(due(v, &o, CALLING, 11).await, ["t3"], "{b}");
        assert_eq!(due(v, &o, WXCC, i64::MAX).await, ["t1", "t3"], "{b}");

        // A task known only under one source is unknown under the other.
        v.upsert_task(&o, WXCC, &task("only-wxcc", 1, Some(true)))
            .await
            .unwrap();
        for res in [
            v.set_task_state(&o, CALLING, "only-wxcc", T::Captured, None)
                .await,
            v.note_capture_check(&o, CALLING, "only-wxcc").await,
        ] {
            let err = res.unwrap_err();
            assert!(matches!(err, VaultError::NotFound(_)), "{b}: {err:?}");
            assert!(
                err.to_string().contains("calling task only-wxcc"),
                "{b}: {err}"
            );
        }
        // A never-requested absent task re-opens only under its own source.
        v.upsert_task(&o, WXCC, &task("n", 1, None)).await.unwrap();
        v.upsert_task(&o, CALLING, &task("n", 1, None))
            .await
            .unwrap();
        for source in [WXCC, CALLING] {
            v.set_task_state(&o, source, "n", T::Absent, Some("capture_never_requested"))
                .await
                .unwrap();
        }
        assert_eq!(
            v.reopen_never_requested(&o, CALLING, &["n".into()], 20)
                .await
                .unwrap(),
            1,
            "{b}"
        );
        let n_wxcc = v.tasks_in_states(&o, WXCC, &[T::Absent]).await.unwrap();
        assert_eq!(n_wxcc.len(), 1, "{b}: still absent under wxcc");
        let n_calling = v
            .tasks_in_states(&o, CALLING, &[T::PendingCapture])
            .await
            .unwrap();
        assert_eq!(n_calling.len(), 1, "{b}");
    }
}

#[tokio::test]
async fn the_same_recording_id_under_two_sources_is_two_independent_rows() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        for source in [WXCC, CALLING] {
            v.upsert_task(&o, source, &task("t1", 1_000, Some(true)))
                .await
                .unwrap();
            v.upsert_recordings(
                &o,
                source,
                &[rec_at("r1", "t1", 1_000), rec_at("r2", "t1", 1_000)],
            )
            .await
            .unwrap();
        }
        v.note_recording_attempt(&o, CALLING, "r1", "HTTP 503")
            .await
            .unwrap();
        v.mark_recording_stored(&o, WXCC, "r1", "w/r1.wav", "aa", 1)
            .await
            .unwrap();
        v.mark_recording_done(&o, WXCC, "r1", "w/r1.json")
            .await
            .unwrap();
        v.mark_recording_failed(&o, CALLING, "r1", "HTTP 403")
            .await
            .unwrap();
        v.mark_recordings_archived(
            &o,
            CALLING,
            &[Archived {
                recording_id: "r2".into(),
                object_key: "c/r2.wav".into(),
                sha256: "cc".into(),
                size: 2,
                sidecar_key: "c/r2.json".into(),
            }],
        )
        .await
        .unwrap();
        v.mark_recording_archived(&o, WXCC, "r2", "w/r2.wav", "bb", 3, "w/r2.json")
            .await
            .unwrap();
        // Re-listing under one source never touches the other's rows.
        v.upsert_recording(&o, CALLING, &rec_at("r1", "t1", 1_000))
            .await
            .unwrap();

        let w1 = v.recording(&o, WXCC, "r1").await.unwrap().unwrap();
        let c1 = v.recording(&o, CALLING, "r1").await.unwrap().unwrap();
        assert_eq!(
            (w1.state, w1.object_key.as_deref(), w1.attempts, w1.reason),
            (R::Done, Some("w/r1.wav"), 0, None),
            "{b}"
        );
        assert_eq!(
            (c1.state, c1.object_key, c1.attempts, c1.reason.as_deref()),
            (R::Failed, None, 1, Some("HTTP 403")),
            "{b}"
        );
        let w2 = v.recording(&o, WXCC, "r2").await.unwrap().unwrap();
        let c2 = v.recording(&o, CALLING, "r2").await.unwrap().unwrap();
        assert_eq!(
            (w2.state, w2.sha256.as_deref()),
            (R::Done, Some("bb")),
            "{b}"
        );
        assert_eq!(
            (c2.state, c2.sha256.as_deref()),
            (R::Done, Some("cc")),
            "{b}"
        );
        assert_eq!(
            v.recordings_in_states(&o, CALLING, &[R::Failed])
                .await
                .unwrap()
                .len(),
            1,
            "{b}"
        );
        assert!(
            v.recordings_in_states(&o, WXCC, &[R::Failed])
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        // A recording known only under one source is unknown under the other.
        v.upsert_recording(&o, WXCC, &rec_at("only-wxcc", "t1", 1_000))
            .await
            .unwrap();
        assert!(
            v.recording(&o, CALLING, "only-wxcc")
                .await
                .unwrap()
                .is_none()
        );
        for res in [
            v.mark_recording_stored(&o, CALLING, "only-wxcc", "k", "s", 1)
                .await,
            v.mark_recording_done(&o, CALLING, "only-wxcc", "k").await,
            v.mark_recording_failed(&o, CALLING, "only-wxcc", "x").await,
            v.mark_recording_absent(&o, CALLING, "only-wxcc", "x").await,
            v.mark_recording_archived(&o, CALLING, "only-wxcc", "k", "s", 1, "j")
                .await,
            v.note_recording_attempt(&o, CALLING, "only-wxcc", "x")
                .await
                .map(|_| ()),
        ] {
            let err = res.unwrap_err();
            assert!(matches!(err, VaultError::NotFound(_)), "{b}: {err:?}");
            assert!(
                err.to_string().contains("calling recording only-wxcc"),
                "{b}: {err}"
            );
        }
        let only = v.recording(&o, WXCC, "only-wxcc").await.unwrap().unwrap();
        assert_eq!((only.state, only.attempts), (R::Ready, 0), "{b}");
    }
}

#[tokio::test]
async fn org_views_span_sources_and_say_which_one_an_item_is_from() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        assert!(v.counts_by_source(&o).await.unwrap().is_empty(), "{b}");
        for source in [WXCC, CALLING] {
            v.upsert_task(&o, source, &task("t1", 1_000, Some(true)))
                .await
                .unwrap();
            v.upsert_recording(&o, source, &rec_at("r1", "t1", 1_000))
                .await
                .unwrap();
        }
        v.upsert_task(&o, CALLING, &task("t2", 1_000, Some(true)))
            .await
            .unwrap();
        v.set_task_state(&o, WXCC, "t1", T::Captured, None)
            .await
            .unwrap();
        v.set_task_state(&o, CALLING, "t1", T::Captured, None)
            .await
            .unwrap();
        v.set_task_state(&o, CALLING, "t2", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        v.mark_recording_archived(&o, WXCC, "r1", "k", "s", 1, "k.json")
            .await
            .unwrap();
        v.mark_recording_failed(&o, CALLING, "r1", "HTTP 403")
            .await
            .unwrap();
        // A source with only a finished window is listed, all zeros; another org's rows never.
        v.window_done(&o, "quiet", 0, 10).await.unwrap();
        v.window_done(&o, "quiet", 10, 20).await.unwrap();
        let o2 = org(v, "two").await;
        v.upsert_task(&o2, "elsewhere", &task("t1", 1_000, Some(true)))
            .await
            .unwrap();

        let wxcc = Counts {
            tasks: 1,
            recordings: 1,
            archived: 1,
            ..Counts::default()
        };
        let calling = Counts {
            tasks: 2,
            recordings: 1,
            missing: 1,
            failed: 1,
            ..Counts::default()
        };
        let expected: BTreeMap<String, Counts> = [
            (CALLING.to_string(), calling),
            ("quiet".to_string(), Counts::default()),
            (WXCC.to_string(), wxcc),
        ]
        .into();
        assert_eq!(v.counts_by_source(&o).await.unwrap(), expected, "{b}");
        assert_eq!(
            v.counts(&o).await.unwrap(),
            Counts {
                tasks: 3,
                recordings: 2,
                archived: 1,
                missing: 1,
                failed: 1,
                ..Counts::default()
            },
            "{b}: the org total is the sum over sources"
        );

        let mut failures: Vec<_> = v
            .failures(&o, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.source, f.item, f.state))
            .collect();
        failures.sort();
        let expected_failures = [
            (
                CALLING.to_string(),
                "recording r1".to_string(),
                "failed".to_string(),
            ),
            (
                CALLING.to_string(),
                "task t2".to_string(),
                "missing".to_string(),
            ),
        ];
        assert_eq!(failures, expected_failures, "{b}");
        let p = v.problems_in_window(&o, 0, 5_000, 10).await.unwrap();
        assert_eq!(p.total, 2, "{b}");
        assert!(p.items.iter().all(|f| f.source == CALLING), "{b}: {p:?}");
        let json = serde_json::to_value(&p.items[0]).unwrap();
        assert_eq!(json["source"], CALLING, "{b}");
        assert!(
            json["item"].is_string() && json["reason"].is_string(),
            "{b}"
        );

        let back = v.retry_failed(&o, None, None, 30).await.unwrap();
        assert_eq!((back.recordings, back.tasks), (1, 1), "{b}");
        assert_eq!(
            v.recording(&o, CALLING, "r1").await.unwrap().unwrap().state,
            R::Ready,
            "{b}"
        );
        assert_eq!(
            v.recording(&o, WXCC, "r1").await.unwrap().unwrap().state,
            R::Done,
            "{b}"
        );
    }
}

#[tokio::test]
async fn absent_recordings_are_final_with_a_reason() {
    assert_eq!(R::Absent.as_str(), "absent");
    assert!(R::ALL.contains(&R::Absent));
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        v.upsert_task(&o, CALLING, &task("t1", 1_000, Some(true)))
            .await
            .unwrap();
        let ids = ["from-ready", "from-stored", "from-failed", "done", "plain"];
        let recs: Vec<_> = ids.iter().map(|id| rec_at(id, "t1", 1_000)).collect();
        v.upsert_recordings(&o, CALLING, &recs).await.unwrap();
        v.mark_recording_stored(&o, CALLING, "from-stored", "k/s.wav", "ss", 5)
            .await
            .unwrap();
        v.mark_recording_failed(&o, CALLING, "from-failed", "HTTP 500")
            .await
            .unwrap();
        v.mark_recording_archived(&o, CALLING, "done", "k/d.wav", "dd", 9, "k/d.json")
            .await
            .unwrap();

        // ready, stored and failed may become absent; the reason is kept.
        for id in ["from-ready", "from-stored", "from-failed"] {
            v.mark_recording_absent(&o, CALLING, id, "purged: HTTP 404 since listed")
                .await
                .unwrap();
        }
        // Repeating only refreshes the reason.
        v.mark_recording_absent(&o, CALLING, "from-ready", "zero bytes")
            .await
            .unwrap();
        let absent = v
            .recordings_in_states(&o, CALLING, &[R::Absent])
            .await
            .unwrap();
        let reasons: BTreeMap<_, _> = absent
            .iter()
            .map(|r| (r.recording_id.as_str(), r.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("from-failed", Some("purged: HTTP 404 since listed")),
                ("from-ready", Some("zero bytes")),
                ("from-stored", Some("purged: HTTP 404 since listed")),
            ]
            .into(),
            "{b}"
        );
        let stored = absent
            .iter()
            .find(|r| r.recording_id == "from-stored")
            .unwrap();
        assert_eq!(
            (stored.object_key.as_deref(), stored.sha256.as_deref()),
            (Some("k/s.wav"), Some("ss")),
            "{b}: what is in the archive stays recorded"
        );

        // Done is never declared absent.
        v.mark_recording_absent(&o, CALLING, "done", "purged")
            .await
            .unwrap();
        let done = v.recording(&o, CALLING, "done").await.unwrap().unwrap();
        assert_eq!((done.state, done.reason), (R::Done, None), "{b}");

        // Absent is final: failing, storing, re-listing and batch archiving change nothing;
        // a sidecar for it is refused.
        v.mark_recording_failed(&o, CALLING, "from-ready", "late error")
            .await
            .unwrap();
        v.mark_recording_stored(&o, CALLING, "from-ready", "k", "s", 1)
            .await
            .unwrap();
        v.upsert_recording(&o, CALLING, &rec_at("from-ready", "t1", 1_000))
            .await
            .unwrap();
        v.mark_recordings_archived(
            &o,
            CALLING,
            &[Archived {
                recording_id: "from-ready".into(),
                object_key: "k".into(),
                sha256: "s".into(),
                size: 1,
                sidecar_key: "k.json".into(),
            }],
        )
        .await
        .unwrap();
        for res in [
            v.mark_recording_done(&o, CALLING, "from-ready", "k.json")
                .await,
            v.mark_recording_archived(&o, CALLING, "from-ready", "k", "s", 1, "k.json")
                .await,
        ] {
            let err = res.unwrap_err();
            assert!(matches!(err, VaultError::Transition { .. }), "{b}: {err:?}");
            assert!(err.to_string().contains("absent"), "{b}: {err}");
        }
        let r = v
            .recording(&o, CALLING, "from-ready")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.state, r.reason.as_deref(), r.object_key),
            (R::Absent, Some("zero bytes"), None),
            "{b}"
        );

        // Counted apart, not a failure, not a problem, not retried.
        let c = v.counts(&o).await.unwrap();
        assert_eq!(
            (
                c.recordings,
                c.recordings_absent,
                c.archived,
                c.in_progress,
                c.failed
            ),
            (5, 3, 1, 1, 0),
            "{b}"
        );
        assert!(v.failures(&o, 10).await.unwrap().is_empty(), "{b}");
        assert_eq!(
            v.problems_in_window(&o, 0, 5_000, 10).await.unwrap().total,
            0,
            "{b}"
        );
        let back = v.retry_failed(&o, None, None, 40).await.unwrap();
        assert_eq!(back.recordings, 0, "{b}");
        assert_eq!(
            v.recordings_in_states(&o, CALLING, &[R::Absent])
                .await
                .unwrap()
                .len(),
            3,
            "{b}"
        );
        assert!(
            serde_json::to_value(&c).unwrap()["recordings_absent"] == 3,
            "{b}"
        );
    }
}
