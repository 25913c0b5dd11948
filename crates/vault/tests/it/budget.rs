//! Request budgets: one upsert per slot, atomic across handles, pauses never shortened.

use std::collections::BTreeSet;

use vault::BudgetSlot;

use crate::common::backends;

const CLIENT: &str = "C0ffee-client";

#[tokio::test]
async fn slots_follow_the_schedule_and_pauses() {
    for db in backends().await {
        let v = &db.vault;
        let name = db.name();
        assert_eq!(
            v.requests_paused_until(CLIENT).await.unwrap(),
            None,
            "{name}"
        );
        // A new client id starts one interval after now.
        let s = v.reserve_request(CLIENT, 1_000, 100).await.unwrap();
        assert_eq!(
            s,
            BudgetSlot {
                tat_ms: 1_100,
                paused_until_ms: 0
            },
            "{name}"
        );
        // Slots taken at the same instant queue up one interval apart.
        assert_eq!(
            v.reserve_request(CLIENT, 1_000, 100).await.unwrap().tat_ms,
            1_200
        );
        // After a quiet spell the schedule starts again from now.
        assert_eq!(
            v.reserve_request(CLIENT, 9_000, 100).await.unwrap().tat_ms,
            9_100
        );
        // Another client id has its own schedule.
        assert_eq!(
            v.reserve_request("C-other", 9_000, 100)
                .await
                .unwrap()
                .tat_ms,
            9_100
        );

        // A pause pushes the schedule behind it and is never shortened.
        v.pause_requests(CLIENT, 9_000, 20_000).await.unwrap();
        v.pause_requests(CLIENT, 9_001, 15_000).await.unwrap();
        assert_eq!(v.requests_paused_until(CLIENT).await.unwrap(), Some(20_000));
        let s = v.reserve_request(CLIENT, 9_002, 100).await.unwrap();
        assert_eq!(
            s,
            BudgetSlot {
                tat_ms: 20_100,
                paused_until_ms: 20_000
            },
            "{name}"
        );
        // A pause noted for a client id never seen creates its row.
        v.pause_requests("C-new", 5, 500).await.unwrap();
        assert_eq!(v.requests_paused_until("C-new").await.unwrap(), Some(500));
        assert!(v.reserve_request("", 1, 1).await.is_err());
        assert!(v.reserve_request(CLIENT, 1, 0).await.is_err());
    }
}

#[tokio::test]
async fn concurrent_handles_never_get_the_same_slot() {
    for db in backends().await {
        let other = db.reopen(db.keyring.clone()).await;
        let mut calls = Vec::new();
        for i in 0..40 {
            let v = if i % 2 == 0 {
                db.vault.clone()
            } else {
                other.clone()
            };
            calls.push(tokio::spawn(async move {
                v.reserve_request(CLIENT, 1_000, 10).await.unwrap().tat_ms
            }));
        }
        let mut slots = BTreeSet::new();
        for c in calls {
            slots.insert(c.await.unwrap());
        }
        let expected: BTreeSet<i64> = (1..=40).map(|k| 1_000 + k * 10).collect();
        assert_eq!(slots, expected, "{}", db.name());
    }
}
