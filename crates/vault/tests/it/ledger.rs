use vault::{Counts, RecordingState as R, RecordingUpsert, TaskState as T, TaskUpsert, VaultError};

use crate::common::{backends, org, rec_at, task};

fn rec(id: &str, task: &str) -> RecordingUpsert {
    rec_at(id, task, 1_000)
}

#[tokio::test]
async fn tasks_are_idempotent_and_never_regress() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;

        let first = v
            .upsert_task(&o, "wxcc", &task("t1", 1_000, Some(true)))
            .await
            .unwrap();
        assert_eq!(first.state, T::Discovered, "{b}");
        assert_eq!(first.capture_requested, Some(true), "{b}");
        assert_eq!(first.checks, 0, "{b}");
        // Again, with the flag unknown and new attributes: one row, flag kept, attrs updated.
        let mut again = task("t1", 1_000, None);
        again.attributes_json = r#"{"id":"t1","v":2}"#.into();
        let second = v.upsert_task(&o, "wxcc", &again).await.unwrap();
        assert_eq!(
            second.capture_requested,
            Some(true),
            "{b}: known flag not forgotten"
        );
        assert_eq!(second.attributes_json, r#"{"id":"t1","v":2}"#, "{b}");
        assert_eq!(
            v.tasks_in_states(&o, "wxcc", T::ALL).await.unwrap().len(),
            1,
            "{b}: one row"
        );

        v.note_capture_check(&o, "wxcc", "t1").await.unwrap();
        v.note_capture_check(&o, "wxcc", "t1").await.unwrap();
        v.set_task_state(&o, "wxcc", "t1", T::PendingCapture, None)
            .await
            .unwrap();
        let rows = v
            .tasks_in_states(&o, "wxcc", &[T::PendingCapture])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{b}");
        assert_eq!(rows[0].checks, 2, "{b}");

        v.set_task_state(&o, "wxcc", "t1", T::Captured, None)
            .await
            .unwrap();
        // Backwards moves and re-upserts leave it captured.
        v.set_task_state(&o, "wxcc", "t1", T::PendingCapture, None)
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t1", T::Discovered, None)
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t1", T::Missing, Some("late"))
            .await
            .unwrap();
        let row = v
            .upsert_task(&o, "wxcc", &task("t1", 1_000, Some(false)))
            .await
            .unwrap();
        assert_eq!(row.state, T::Captured, "{b}");
        assert_eq!(
            row.capture_requested,
            Some(false),
            "{b}: a new known flag replaces the old"
        );
        assert_eq!(row.reason, None, "{b}");

        // Missing can still become captured; absent is final.
        v.upsert_task(&o, "wxcc", &task("t2", 2_000, Some(true)))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t2", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t2", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t2", T::Captured, None)
            .await
            .unwrap();
        v.upsert_task(&o, "wxcc", &task("t3", 3_000, Some(false)))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t3", T::Absent, Some("capture not requested"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "t3", T::Captured, None)
            .await
            .unwrap();
        let t3 = v.tasks_in_states(&o, "wxcc", &[T::Absent]).await.unwrap();
        assert_eq!(t3.len(), 1, "{b}");
        assert_eq!(
            t3[0].reason.as_deref(),
            Some("capture not requested"),
            "{b}"
        );
        let captured: Vec<_> = v
            .tasks_in_states(&o, "wxcc", &[T::Captured])
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        assert_eq!(captured, ["t1", "t2"], "{b}: oldest first");
        assert!(
            v.tasks_in_states(&o, "wxcc", &[]).await.unwrap().is_empty(),
            "{b}"
        );

        // Unknown tasks are errors, not silent no-ops.
        assert!(matches!(
            v.set_task_state(&o, "wxcc", "nope", T::Captured, None)
                .await,
            Err(VaultError::NotFound(_))
        ));
        assert!(matches!(
            v.note_capture_check(&o, "wxcc", "nope").await,
            Err(VaultError::NotFound(_))
        ));

        // Another org sees none of it, and may use the same task id.
        let o2 = org(v, "two").await;
        assert!(
            v.tasks_in_states(&o2, "wxcc", T::ALL)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert_eq!(
            v.upsert_task(&o2, "wxcc", &task("t1", 5, None))
                .await
                .unwrap()
                .state,
            T::Discovered
        );
    }
}

#[tokio::test]
async fn recordings_follow_ready_stored_done() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        v.upsert_task(&o, "wxcc", &task("t1", 1_000, Some(true)))
            .await
            .unwrap();

        let r = v
            .upsert_recording(&o, "wxcc", &rec("r1", "t1"))
            .await
            .unwrap();
        assert_eq!((r.state, r.attempts), (R::Ready, 0), "{b}");
        let mut again = rec("r1", "t1");
        again.file_name = None;
        again.attributes_json = r#"{"id":"r1","v":2}"#.into();
        let r = v.upsert_recording(&o, "wxcc", &again).await.unwrap();
        assert_eq!(
            r.file_name.as_deref(),
            Some("r1.wav"),
            "{b}: known file name kept"
        );
        assert_eq!(r.attributes_json, r#"{"id":"r1","v":2}"#, "{b}");
        assert_eq!(
            v.recordings_in_states(&o, "wxcc", R::ALL)
                .await
                .unwrap()
                .len(),
            1,
            "{b}: one row"
        );

        // Sidecar before audio is refused.
        let err = v
            .mark_recording_done(&o, "wxcc", "r1", "k.json")
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::Transition { .. }), "{b}: {err:?}");
        assert!(err.to_string().contains("recording r1"), "{b}: {err}");

        assert_eq!(
            v.note_recording_attempt(&o, "wxcc", "r1", "HTTP 503")
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            v.note_recording_attempt(&o, "wxcc", "r1", "HTTP 503")
                .await
                .unwrap(),
            2
        );
        v.mark_recording_stored(&o, "wxcc", "r1", "k.wav", "ab12", 42)
            .await
            .unwrap();
        v.mark_recording_stored(&o, "wxcc", "r1", "k.wav", "ab12", 42)
            .await
            .unwrap();
        let r = v
            .upsert_recording(&o, "wxcc", &rec("r1", "t1"))
            .await
            .unwrap();
        assert_eq!(r.state, R::Stored, "{b}: upsert never regresses");
        assert_eq!(
            (
                r.object_key.as_deref(),
                r.sha256.as_deref(),
                r.size_bytes,
                r.attempts
            ),
            (Some("k.wav"), Some("ab12"), Some(42), 2),
            "{b}"
        );
        v.mark_recording_done(&o, "wxcc", "r1", "k.json")
            .await
            .unwrap();
        v.mark_recording_done(&o, "wxcc", "r1", "k.json")
            .await
            .unwrap();
        // Done is final: failing or re-storing it changes nothing.
        v.mark_recording_failed(&o, "wxcc", "r1", "purged")
            .await
            .unwrap();
        v.mark_recording_stored(&o, "wxcc", "r1", "other.wav", "ff", 1)
            .await
            .unwrap();
        let r = v.recording(&o, "wxcc", "r1").await.unwrap().unwrap();
        assert_eq!(r.state, R::Done, "{b}");
        assert_eq!(r.object_key.as_deref(), Some("k.wav"), "{b}");
        assert_eq!(r.reason, None, "{b}");
        assert_eq!(
            v.upsert_recording(&o, "wxcc", &rec("r1", "t1"))
                .await
                .unwrap()
                .state,
            R::Done
        );

        // Failed records its reason; a later successful store recovers it.
        v.upsert_recording(&o, "wxcc", &rec("r2", "t1"))
            .await
            .unwrap();
        v.mark_recording_failed(&o, "wxcc", "r2", "HTTP 404 on download")
            .await
            .unwrap();
        let r2 = v
            .recordings_in_states(&o, "wxcc", &[R::Failed])
            .await
            .unwrap();
        assert_eq!(r2.len(), 1, "{b}");
        assert_eq!(r2[0].reason.as_deref(), Some("HTTP 404 on download"), "{b}");
        assert_eq!(
            v.upsert_recording(&o, "wxcc", &rec("r2", "t1"))
                .await
                .unwrap()
                .state,
            R::Failed
        );
        v.mark_recording_stored(&o, "wxcc", "r2", "k2.wav", "cd34", 7)
            .await
            .unwrap();
        let r2 = v.recording(&o, "wxcc", "r2").await.unwrap().unwrap();
        assert_eq!((r2.state, r2.reason), (R::Stored, None), "{b}");

        for res in [
            v.mark_recording_stored(&o, "wxcc", "nope", "k", "s", 1)
                .await,
            v.mark_recording_done(&o, "wxcc", "nope", "k").await,
            v.mark_recording_failed(&o, "wxcc", "nope", "x").await,
        ] {
            assert!(matches!(res, Err(VaultError::NotFound(_))), "{b}: {res:?}");
        }
        assert!(matches!(
            v.note_recording_attempt(&o, "wxcc", "nope", "x").await,
            Err(VaultError::NotFound(_))
        ));
        assert!(v.recording(&o, "wxcc", "nope").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn concurrent_upserts_make_one_row() {
    for db in backends().await {
        let b = db.name();
        let o = org(&db.vault, "one").await;
        let mut handles = Vec::new();
        for i in 0..8 {
            let v = db.vault.clone();
            let o = o.clone();
            handles.push(tokio::spawn(async move {
                v.upsert_task(&o, "wxcc", &task("t1", 1_000, Some(i % 2 == 0)))
                    .await?;
                v.upsert_recording(&o, "wxcc", &rec("r1", "t1")).await
            }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let c = db.vault.counts(&o).await.unwrap();
        assert_eq!((c.tasks, c.recordings), (1, 1), "{b}");
    }
}

#[tokio::test]
async fn counts_and_failures_reflect_the_ledger() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        assert_eq!(v.counts(&o).await.unwrap(), Counts::default(), "{b}");

        // Tasks: discovered(unknown), pending(true), discovered(false: not pending),
        // missing, absent, failed, captured.
        for (id, cap) in [
            ("d", None),
            ("p", Some(true)),
            ("f0", Some(false)),
            ("m", Some(true)),
            ("a", Some(false)),
            ("x", Some(true)),
            ("c", Some(true)),
            ("n", None),
        ] {
            v.upsert_task(&o, "wxcc", &task(id, 1_000, cap))
                .await
                .unwrap();
        }
        v.set_task_state(&o, "wxcc", "n", T::Absent, Some("capture_never_requested"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "p", T::PendingCapture, None)
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "m", T::Missing, Some("none within 48 h"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "a", T::Absent, Some("not requested"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "x", T::Failed, Some("bad data"))
            .await
            .unwrap();
        v.set_task_state(&o, "wxcc", "c", T::Captured, None)
            .await
            .unwrap();
        // Recordings: ready, stored, done x2, failed.
        for id in ["r-ready", "r-stored", "r-done1", "r-done2", "r-failed"] {
            v.upsert_recording(&o, "wxcc", &rec(id, "c")).await.unwrap();
        }
        for id in ["r-stored", "r-done1", "r-done2"] {
            v.mark_recording_stored(&o, "wxcc", id, "k", "s", 1)
                .await
                .unwrap();
        }
        for id in ["r-done1", "r-done2"] {
            v.mark_recording_done(&o, "wxcc", id, "k.json")
                .await
                .unwrap();
        }
        v.mark_recording_failed(&o, "wxcc", "r-failed", "HTTP 403")
            .await
            .unwrap();

        let expected = Counts {
            tasks: 8,
            recordings: 5,
            archived: 2,
            in_progress: 2,
            pending_capture: 2,
            missing: 1,
            absent: 2,
            capture_never_requested: 1,
            failed: 2,
            recordings_absent: 0,
        };
        assert_eq!(v.counts(&o).await.unwrap(), expected, "{b}");
        // Other orgs are counted separately.
        let o2 = org(v, "two").await;
        assert_eq!(v.counts(&o2).await.unwrap(), Counts::default(), "{b}");

        let f = v.failures(&o, 10).await.unwrap();
        let mut items: Vec<_> = f
            .iter()
            .map(|f| (f.item.as_str(), f.state.as_str(), f.reason.as_str()))
            .collect();
        items.sort();
        assert_eq!(
            items,
            [
                ("recording r-failed", "failed", "HTTP 403"),
                ("task m", "missing", "none within 48 h"),
                ("task x", "failed", "bad data"),
            ],
            "{b}"
        );
        assert!(
            f.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
            "{b}: newest first"
        );
        assert!(f.iter().all(|f| f.at_ms > 0), "{b}");
        assert_eq!(v.failures(&o, 1).await.unwrap().len(), 1, "{b}: limit");
    }
}

#[tokio::test]
async fn windows_and_events() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "one").await;
        assert_eq!(v.last_window_end(&o, "wxcc").await.unwrap(), None, "{b}");
        v.window_done(&o, "wxcc", 0, 100).await.unwrap();
        v.window_done(&o, "wxcc", 100, 250).await.unwrap();
        v.window_done(&o, "wxcc", 100, 250).await.unwrap();
        v.window_done(&o, "calling", 0, 999).await.unwrap();
        assert_eq!(
            v.last_window_end(&o, "wxcc").await.unwrap(),
            Some(250),
            "{b}"
        );
        assert_eq!(
            v.last_window_end(&o, "calling").await.unwrap(),
            Some(999),
            "{b}"
        );
        assert!(matches!(
            v.window_done(&o, "wxcc", 5, 1).await,
            Err(VaultError::Invalid(_))
        ));
        let o2 = org(v, "two").await;
        assert_eq!(v.last_window_end(&o2, "wxcc").await.unwrap(), None, "{b}");

        v.record_event(Some(&o), "needs_reauth", "org one: invalid_grant")
            .await
            .unwrap();
        v.record_event(None, "started", "wxvault serve started")
            .await
            .unwrap();
        let all = v.recent_events(None, 10).await.unwrap();
        assert_eq!(all.len(), 2, "{b}");
        assert_eq!(all[0].kind, "started", "{b}: newest first");
        assert_eq!(all[0].org, None, "{b}");
        let mine = v.recent_events(Some(&o), 10).await.unwrap();
        assert_eq!(mine.len(), 1, "{b}");
        assert_eq!(
            (mine[0].org, mine[0].message.as_str()),
            (Some(o.id), "org one: invalid_grant")
        );
    }
}

#[tokio::test]
async fn batch_upserts_and_transitions_match_the_single_row_rules() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "batch").await;
        // 450 tasks span three statements; within one batch a duplicate id keeps its last
        // occurrence.
        let mut tasks: Vec<TaskUpsert> = (0..450)
            .map(|i| task(&format!("t{i}"), 1_000 + i, Some(i % 3 != 0)))
            .collect();
        tasks.push(task("t3", 1_003, Some(true)));
        let rows = v.upsert_tasks(&o, "wxcc", &tasks).await.unwrap();
        assert_eq!(rows.len(), 450, "{b}");
        let t3 = rows.iter().find(|r| r.task_id == "t3").unwrap();
        assert_eq!(
            t3.capture_requested,
            Some(true),
            "{b}: last occurrence wins"
        );
        // A later batch with the flag unknown keeps the known flag and takes the new attributes.
        let mut later = task("t7", 1_007, None);
        later.attributes_json = r#"{"id":"t7","v":9}"#.into();
        let rows2 = v.upsert_tasks(&o, "wxcc", &[later]).await.unwrap();
        assert_eq!(rows2[0].attributes_json, r#"{"id":"t7","v":9}"#, "{b}");
        assert_eq!(
            rows2[0].capture_requested,
            Some(true),
            "{b}: a known flag is not forgotten"
        );
        assert!(rows.iter().all(|r| r.state == T::Discovered), "{b}");

        let ids: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        v.note_capture_checks(&o, "wxcc", &ids).await.unwrap();
        v.set_tasks_state(&o, "wxcc", &ids, T::Captured, None)
            .await
            .unwrap();
        // Captured is final: a later batch move back to pending is ignored.
        v.set_tasks_state(&o, "wxcc", &ids, T::PendingCapture, None)
            .await
            .unwrap();
        v.set_tasks_state(
            &o,
            "wxcc",
            &["t20".to_string()],
            T::Absent,
            Some("no capture requested"),
        )
        .await
        .unwrap();
        let captured = v.tasks_in_states(&o, "wxcc", &[T::Captured]).await.unwrap();
        assert_eq!(captured.len(), 10, "{b}");
        assert!(captured.iter().all(|t| t.checks == 1), "{b}");
        let absent = v.tasks_in_states(&o, "wxcc", &[T::Absent]).await.unwrap();
        assert_eq!(absent.len(), 1, "{b}");
        assert_eq!(
            absent[0].reason.as_deref(),
            Some("no capture requested"),
            "{b}"
        );

        let recs: Vec<RecordingUpsert> = (0..250)
            .map(|i| rec(&format!("r{i}"), &format!("t{}", i % 10)))
            .collect();
        let rows = v.upsert_recordings(&o, "wxcc", &recs).await.unwrap();
        assert_eq!(rows.len(), 250, "{b}");
        assert!(rows.iter().all(|r| r.state == R::Ready), "{b}");
        v.mark_recording_archived(&o, "wxcc", "r1", "k/r1.wav", "abc", 10, "k/r1.json")
            .await
            .unwrap();
        // Upserting again never regresses a done recording.
        let again = v.upsert_recordings(&o, "wxcc", &recs[..5]).await.unwrap();
        let r1 = again.iter().find(|r| r.recording_id == "r1").unwrap();
        assert_eq!(r1.state, R::Done, "{b}");
        assert_eq!(r1.sha256.as_deref(), Some("abc"), "{b}");
        assert_eq!(r1.object_key.as_deref(), Some("k/r1.wav"), "{b}");
        let counts = v.counts(&o).await.unwrap();
        assert_eq!(counts.archived, 1, "{b}");
        assert_eq!(counts.recordings, 250, "{b}");
    }
}

#[tokio::test]
async fn batch_archived_marks_set_done_with_hashes_and_skip_done_rows() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "marks").await;
        v.upsert_task(&o, "wxcc", &task("t1", 1_000, Some(true)))
            .await
            .unwrap();
        let recs: Vec<RecordingUpsert> = (0..3).map(|i| rec(&format!("r{i}"), "t1")).collect();
        v.upsert_recordings(&o, "wxcc", &recs).await.unwrap();
        v.mark_recording_archived(&o, "wxcc", "r0", "k/r0.wav", "first", 1, "k/r0.json")
            .await
            .unwrap();
        let items: Vec<vault::Archived> = (0..3)
            .map(|i| vault::Archived {
                recording_id: format!("r{i}"),
                object_key: format!("k/r{i}.wav"),
                sha256: format!("sha{i}"),
                size: 1_000 + i,
                sidecar_key: format!("k/r{i}.json"),
            })
            .collect();
        v.mark_recordings_archived(&o, "wxcc", &items)
            .await
            .unwrap();
        let done = v
            .recordings_in_states(&o, "wxcc", &[R::Done])
            .await
            .unwrap();
        assert_eq!(done.len(), 3, "{b}");
        let get = |id: &str| done.iter().find(|r| r.recording_id == id).unwrap().clone();
        assert_eq!(
            get("r0").sha256.as_deref(),
            Some("first"),
            "{b}: a done row is never rewritten"
        );
        assert_eq!(get("r2").sha256.as_deref(), Some("sha2"), "{b}");
        assert_eq!(get("r2").size_bytes, Some(1_002), "{b}");
        assert_eq!(get("r2").object_key.as_deref(), Some("k/r2.wav"), "{b}");
    }
}
