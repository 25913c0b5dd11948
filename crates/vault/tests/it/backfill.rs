//! Backfill on both backends: chunk jobs on lanes of their own, the open-backfill queries, and
//! harvest windows recorded ahead of the cursor that move it only once the gap before them is
//! harvested — whatever order the chunks finish in.

use vault::{KIND_BACKFILL, KIND_HARVEST, LeaseHolder, NewJob, VaultError};

use crate::common::{backends, org};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;

fn holder(id: &str) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        host: format!("host-{id}"),
        pid: 7,
    }
}

fn job(kind: &str, from: Option<i64>, to: Option<i64>) -> NewJob {
    NewJob {
        kind: kind.into(),
        from_ms: from,
        to_ms: to,
        requested_by: "test".into(),
        max_attempts: 3,
    }
}

#[tokio::test]
async fn chunks_of_one_org_run_side_by_side_and_beside_its_harvest() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let acme = org(v, "acme").await;
        assert_eq!(v.open_backfill_end(&acme).await.unwrap(), None, "{b}");
        let chunks = [
            job(KIND_BACKFILL, Some(0), Some(100)),
            job(KIND_BACKFILL, Some(100), Some(200)),
            job(KIND_BACKFILL, Some(200), Some(250)),
        ];
        let ids = v.enqueue_jobs(&acme, &chunks, NOW).await.unwrap();
        assert_eq!(ids.len(), 3, "{b}");
        assert_eq!(v.open_backfill_end(&acme).await.unwrap(), Some(250), "{b}");
        assert!(v.has_open_job(&acme, KIND_BACKFILL).await.unwrap(), "{b}");
        assert!(!v.has_open_job(&acme, KIND_HARVEST).await.unwrap(), "{b}");
        let harvest = v
            .enqueue_job(&acme, &job(KIND_HARVEST, Some(250), None), NOW)
            .await
            .unwrap();
        let second = v
            .enqueue_job(&acme, &job(KIND_HARVEST, None, None), NOW)
            .await
            .unwrap();

        // Four claimers: every chunk and the org's harvest run at once; the org's second harvest
        // waits for its lane.
        let mut claimed = Vec::new();
        for h in ["a", "b", "c", "d", "e"] {
            if let Some(j) = v.claim_job(&holder(h), NOW, TTL, None, 3).await.unwrap() {
                claimed.push(j);
            }
        }
        let got: Vec<i64> = claimed.iter().map(|j| j.id).collect();
        assert_eq!(got, [ids[0], ids[1], ids[2], harvest], "{b}");
        let lanes: std::collections::HashSet<&str> =
            claimed.iter().map(|j| j.lane.as_str()).collect();
        assert_eq!(lanes.len(), 4, "{b}: {lanes:?}");
        assert_eq!(
            claimed[1].lane,
            format!("org:{}/100", acme.id),
            "{b}: a chunk's lane is under the org's"
        );
        assert_eq!(claimed[3].lane, format!("org:{}", acme.id), "{b}");
        // `queue` lists what is open, with windows.
        let q = v.queue_status(NOW).await.unwrap();
        let open: Vec<(i64, Option<i64>, Option<i64>)> = q
            .open_jobs
            .iter()
            .map(|j| (j.id, j.from_ms, j.to_ms))
            .collect();
        assert_eq!(
            open,
            [
                (ids[0], Some(0), Some(100)),
                (ids[1], Some(100), Some(200)),
                (ids[2], Some(200), Some(250)),
                (harvest, Some(250), None),
                (second, None, None),
            ],
            "{b}"
        );

        // The newest chunk ends: the open backfill now ends at the newest one still open.
        assert!(
            v.finish_job(ids[2], "c", NOW + 1, "{}").await.unwrap(),
            "{b}"
        );
        assert_eq!(v.open_backfill_end(&acme).await.unwrap(), Some(200), "{b}");
        for (id, h) in [(ids[0], "a"), (ids[1], "b")] {
            v.finish_job(id, h, NOW + 2, "{}").await.unwrap();
        }
        assert_eq!(v.open_backfill_end(&acme).await.unwrap(), None, "{b}");

        // A chunk needs a window; nothing of a refused batch is queued.
        let before = v.queue_status(NOW).await.unwrap().queued;
        let bad = [
            job(KIND_BACKFILL, Some(0), Some(10)),
            job(KIND_BACKFILL, Some(10), None),
        ];
        assert!(
            matches!(
                v.enqueue_jobs(&acme, &bad, NOW).await,
                Err(VaultError::Invalid(_))
            ),
            "{b}"
        );
        assert_eq!(v.queue_status(NOW).await.unwrap().queued, before, "{b}");
    }
}

#[tokio::test]
async fn windows_recorded_ahead_move_the_cursor_only_once_the_gap_is_harvested() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = org(v, "acme").await;
        // The backfill's anchor, then chunks 3 and 2 finish before chunk 1.
        v.window_done(&o, "wxcc", 0, 0).await.unwrap();
        v.window_done_ahead(&o, "wxcc", 200, 300).await.unwrap();
        assert_eq!(v.promote_windows(&o, "wxcc").await.unwrap(), 0, "{b}");
        v.window_done_ahead(&o, "wxcc", 100, 150).await.unwrap();
        v.window_done_ahead(&o, "wxcc", 150, 200).await.unwrap();
        assert_eq!(v.promote_windows(&o, "wxcc").await.unwrap(), 0, "{b}");
        assert_eq!(
            v.last_window_end(&o, "wxcc").await.unwrap(),
            Some(0),
            "{b}: chunk 1 still runs"
        );
        // How far harvesting reaches without a gap: from the anchor, nowhere; from chunk 2's
        // start, past chunk 3; from inside a window, to its end.
        assert_eq!(v.windows_reach(&o, "wxcc", 0).await.unwrap(), 0, "{b}");
        assert_eq!(v.windows_reach(&o, "wxcc", 100).await.unwrap(), 300, "{b}");
        assert_eq!(v.windows_reach(&o, "wxcc", 120).await.unwrap(), 300, "{b}");
        assert_eq!(v.windows_reach(&o, "wxcc", 300).await.unwrap(), 300, "{b}");
        assert_eq!(
            v.windows_reach(&o, "calling", 100).await.unwrap(),
            100,
            "{b}"
        );
        // A window far ahead, behind a second gap, stays ahead.
        v.window_done_ahead(&o, "wxcc", 400, 500).await.unwrap();

        // Chunk 1 ends: the cursor jumps over chunks 2 and 3, not over the second gap.
        v.window_done(&o, "wxcc", 0, 100).await.unwrap();
        assert_eq!(v.promote_windows(&o, "wxcc").await.unwrap(), 3, "{b}");
        assert_eq!(
            v.last_window_end(&o, "wxcc").await.unwrap(),
            Some(300),
            "{b}"
        );

        // A window recorded ahead and then in line is in line; in line never goes back ahead.
        v.window_done_ahead(&o, "wxcc", 350, 400).await.unwrap();
        v.window_done(&o, "wxcc", 300, 350).await.unwrap();
        v.window_done(&o, "wxcc", 350, 400).await.unwrap();
        v.window_done_ahead(&o, "wxcc", 350, 400).await.unwrap();
        assert_eq!(v.promote_windows(&o, "wxcc").await.unwrap(), 1, "{b}");
        assert_eq!(
            v.last_window_end(&o, "wxcc").await.unwrap(),
            Some(500),
            "{b}"
        );
        // Other sources and orgs are untouched.
        assert_eq!(v.last_window_end(&o, "calling").await.unwrap(), None, "{b}");
    }
}
