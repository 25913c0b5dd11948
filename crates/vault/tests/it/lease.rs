//! Per-org sync leases on both backends: acquire / renew / release, contention between holders
//! (also many at once, through separate pools as separate processes would), expiry takeover.

use vault::{LeaseAcquire, LeaseHolder, LeaseRenewal, Org, Vault, VaultError};

use crate::common::{TestDb, backends, new_org};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 120_000;
const SCOPE: &str = "sync";

fn holder(id: &str, pid: i64) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        host: format!("host-{id}"),
        pid,
    }
}

async fn org(db: &TestDb, name: &str, org_id: &str) -> Org {
    db.vault.add_org(new_org(name, org_id)).await.unwrap()
}

#[tokio::test]
async fn acquire_renew_release() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme", "org-acme").await;
        let a = holder("a", 11);
        assert_eq!(db.vault.lease(&acme, SCOPE).await.unwrap(), None, "{b}");

        let got = db
            .vault
            .acquire_lease(&acme, SCOPE, &a, NOW, TTL)
            .await
            .unwrap();
        let LeaseAcquire::Acquired(lease) = got else {
            panic!("{b}: a free lease is taken: {got:?}");
        };
        assert_eq!(lease.expires_at_ms, NOW + TTL, "{b}");
        let stored = db.vault.lease(&acme, SCOPE).await.unwrap().unwrap();
        assert_eq!(stored, lease, "{b}");
        assert_eq!((stored.host.as_str(), stored.pid), ("host-a", 11), "{b}");

        // Renewing moves the expiry; so does taking it again as the same holder.
        let r = db
            .vault
            .renew_lease(&acme, SCOPE, "a", NOW + 30_000, TTL)
            .await
            .unwrap();
        assert_eq!(
            r,
            LeaseRenewal::Renewed {
                expires_at_ms: NOW + 30_000 + TTL
            },
            "{b}"
        );
        let again = db
            .vault
            .acquire_lease(&acme, SCOPE, &a, NOW + 40_000, TTL)
            .await
            .unwrap();
        assert!(matches!(again, LeaseAcquire::Acquired(_)), "{b}: {again:?}");

        // Released: gone, and free for anyone.
        assert!(
            db.vault.release_lease(&acme, SCOPE, "a").await.unwrap(),
            "{b}"
        );
        assert_eq!(db.vault.lease(&acme, SCOPE).await.unwrap(), None, "{b}");
        assert!(
            !db.vault.release_lease(&acme, SCOPE, "a").await.unwrap(),
            "{b}: releasing twice is a no-op"
        );
        let r = db
            .vault
            .renew_lease(&acme, SCOPE, "a", NOW + 50_000, TTL)
            .await
            .unwrap();
        assert_eq!(
            r,
            LeaseRenewal::Lost(None),
            "{b}: a released lease is not renewed"
        );
        let other = db
            .vault
            .acquire_lease(&acme, SCOPE, &holder("b", 12), NOW + 50_000, TTL)
            .await
            .unwrap();
        assert!(matches!(other, LeaseAcquire::Acquired(_)), "{b}: {other:?}");

        // Bad input is refused before touching the database.
        for (scope, id, ttl) in [("", "a", TTL), (SCOPE, "", TTL), (SCOPE, "a", 0)] {
            let err = db
                .vault
                .acquire_lease(&acme, scope, &holder(id, 1), NOW, ttl)
                .await
                .unwrap_err();
            assert!(matches!(err, VaultError::Invalid(_)), "{b}: {err}");
        }
    }
}

#[tokio::test]
async fn a_held_lease_is_busy_for_others_and_leases_are_per_org_and_scope() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme", "org-acme").await;
        let globex = org(&db, "globex", "org-globex").await;
        let a = holder("a", 11);
        let other = holder("b", 22);
        db.vault
            .acquire_lease(&acme, SCOPE, &a, NOW, TTL)
            .await
            .unwrap();

        // Up to the last millisecond before expiry, another holder is told who has it.
        let busy = db
            .vault
            .acquire_lease(&acme, SCOPE, &other, NOW + TTL - 1, TTL)
            .await
            .unwrap();
        let LeaseAcquire::Busy(current) = busy else {
            panic!("{b}: a held lease must not be taken: {busy:?}");
        };
        assert_eq!(
            (current.holder.as_str(), current.host.as_str(), current.pid),
            ("a", "host-a", 11),
            "{b}"
        );
        assert_eq!(current.expires_at_ms, NOW + TTL, "{b}");

        // The loser can neither renew nor release the winner's lease.
        let r = db
            .vault
            .renew_lease(&acme, SCOPE, "b", NOW + 1, TTL)
            .await
            .unwrap();
        assert!(
            matches!(&r, LeaseRenewal::Lost(Some(l)) if l.holder == "a"),
            "{b}: {r:?}"
        );
        assert!(
            !db.vault.release_lease(&acme, SCOPE, "b").await.unwrap(),
            "{b}"
        );
        assert_eq!(
            db.vault.lease(&acme, SCOPE).await.unwrap().unwrap().holder,
            "a",
            "{b}"
        );

        // Another org, or another scope of the same org, is a separate lease.
        for (o, scope) in [(&globex, SCOPE), (&acme, "calling")] {
            let got = db
                .vault
                .acquire_lease(o, scope, &other, NOW + 1, TTL)
                .await
                .unwrap();
            assert!(
                matches!(got, LeaseAcquire::Acquired(_)),
                "{b}: {scope}: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_loses_it() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme", "org-acme").await;
        db.vault
            .acquire_lease(&acme, SCOPE, &holder("dead", 11), NOW, TTL)
            .await
            .unwrap();
        // The holder was killed: nobody renews. At its expiry time another takes over.
        let got = db
            .vault
            .acquire_lease(&acme, SCOPE, &holder("next", 22), NOW + TTL, TTL)
            .await
            .unwrap();
        let LeaseAcquire::Acquired(lease) = got else {
            panic!("{b}: an expired lease is taken over: {got:?}");
        };
        assert_eq!(
            (lease.holder.as_str(), lease.expires_at_ms),
            ("next", NOW + 2 * TTL),
            "{b}"
        );
        // The old holder comes back (it was only paused): its renewal says the lease is lost
        // and who has it now; its release leaves the new holder's lease alone.
        let r = db
            .vault
            .renew_lease(&acme, SCOPE, "dead", NOW + TTL + 1, TTL)
            .await
            .unwrap();
        let LeaseRenewal::Lost(Some(now_held)) = r else {
            panic!("{b}: the old holder must learn it lost the lease: {r:?}");
        };
        assert_eq!(
            (
                now_held.holder.as_str(),
                now_held.host.as_str(),
                now_held.pid
            ),
            ("next", "host-next", 22),
            "{b}"
        );
        assert!(
            !db.vault.release_lease(&acme, SCOPE, "dead").await.unwrap(),
            "{b}"
        );
        assert_eq!(
            db.vault.lease(&acme, SCOPE).await.unwrap().unwrap().holder,
            "next",
            "{b}"
        );

        // A holder that is late but not overtaken still renews (nobody else wrote the row).
        db.vault
            .acquire_lease(&acme, SCOPE, &holder("late", 33), NOW + 3 * TTL, TTL)
            .await
            .unwrap();
        let r = db
            .vault
            .renew_lease(&acme, SCOPE, "late", NOW + 5 * TTL, TTL)
            .await
            .unwrap();
        assert_eq!(
            r,
            LeaseRenewal::Renewed {
                expires_at_ms: NOW + 6 * TTL
            },
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_concurrent_attempts_exactly_one_wins() {
    const CONTENDERS: usize = 8;
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme", "org-acme").await;
        // One pool per contender, as separate processes would have (a SQLite vault has a single
        // connection, which would otherwise queue the attempts one after the other).
        let mut vaults: Vec<Vault> = Vec::new();
        for _ in 0..CONTENDERS {
            vaults.push(db.reopen(db.keyring.clone()).await);
        }
        // Round 1: a free lease. Round 2: an expired one, all contenders at the same instant.
        for (round, now) in [(1, NOW), (2, NOW + 10 * TTL)] {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONTENDERS));
            let tasks: Vec<_> = vaults
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = v.clone();
                    let acme = acme.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let h = holder(&format!("r{round}-h{i}"), i as i64);
                        v.acquire_lease(&acme, SCOPE, &h, now, TTL).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap().unwrap() {
                    LeaseAcquire::Acquired(l) => winners.push(l.holder),
                    LeaseAcquire::Busy(l) => {
                        assert!(l.holder.starts_with(&format!("r{round}-")), "{b}: {l:?}");
                    }
                }
            }
            assert_eq!(winners.len(), 1, "{b} round {round}: {winners:?}");
            let stored = db.vault.lease(&acme, SCOPE).await.unwrap().unwrap();
            assert_eq!(stored.holder, winners[0], "{b} round {round}");
        }
        for v in vaults {
            v.close().await;
        }
    }
}

#[tokio::test]
async fn removing_an_org_removes_its_leases() {
    for db in backends().await {
        let b = db.name();
        let acme = org(&db, "acme", "org-acme").await;
        db.vault
            .acquire_lease(&acme, SCOPE, &holder("a", 1), NOW, TTL)
            .await
            .unwrap();
        db.vault.remove_org(&acme).await.unwrap();
        let raw = db.raw().await;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
            .fetch_one(&raw)
            .await
            .unwrap();
        raw.close().await;
        assert_eq!(left, 0, "{b}");
    }
}
