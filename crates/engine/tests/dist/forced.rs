//! Keep-alive's forced refresh across processes: an idle grant is refreshed every
//! [`KEEP_ALIVE_EVERY_MS`], and the decision to force is taken from an org row each process read
//! earlier. A forced refresh counts as done when the vault shows a refresh within that interval,
//! so processes deciding from one stale snapshot refresh once (ARCHITECTURE.md, "Token refresh
//! is single-flight across processes").

use std::sync::Arc;
use std::time::Duration;

use engine::budget::BudgetPolicy;
use engine::lifecycle::KEEP_ALIVE_EVERY_MS;
use webex_sim::{SimConfig, SimServer};

use crate::common::{Process, add_org, backends, stored_tokens};

const PROCESSES: usize = 4;
/// Integration-like lifetime (14 days): after the idle spell below the access token is far
/// from expiry, so only the keep-alive rule can refresh.
const ACCESS_TTL_SECS: u64 = 14 * 24 * 3_600;
/// Longer than the keep-alive interval.
const IDLE: Duration = Duration::from_millis(KEEP_ALIVE_EVERY_MS as u64 + 24 * 3_600_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_keep_alive_refresh_happens_once_across_processes() {
    for backend in backends().await {
        let name = backend.name();
        let sim = SimServer::start(
            SimConfig {
                rotate_refresh_tokens: true,
                access_ttl_secs: ACCESS_TTL_SECS,
                rate_limit_per_minute: None,
                realtime_clock: false,
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        let policy = BudgetPolicy::per_minute(60_000);
        sim.handle().advance_clock(IDLE);

        // Several processes find the grant idle at once: one refresh among them.
        let mut procs = Vec::new();
        for _ in 0..PROCESSES {
            procs.push(Arc::new(Process::start(&backend, &sim, &org, policy).await));
        }
        let forced: Vec<_> = procs
            .iter()
            .map(|p| {
                let tokens = p.tokens.clone();
                tokio::spawn(async move { tokens.refresh_if(Some(KEEP_ALIVE_EVERY_MS)).await })
            })
            .collect();
        for f in forced {
            let did = f.await.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(did, "{name}: every process reports the grant refreshed");
        }
        let stats = sim.handle().stats();
        assert_eq!(
            stats.refresh_grants, 1,
            "{name}: one refresh among {PROCESSES}"
        );
        assert_eq!(stats.invalid_grant, 0, "{name}");
        let (t1, _) = stored_tokens(&db, &org).await;

        // Idle again. Process B read the org row (last refresh: a keep-alive interval ago)
        // before process A's forced refresh, and loads the tokens after it: B's snapshot says
        // "force", the vault says "just done".
        sim.handle().advance_clock(IDLE);
        let stale = db.org_by_id(org.id).await.unwrap().unwrap();
        assert!(
            procs[0]
                .tokens
                .refresh_if(Some(KEEP_ALIVE_EVERY_MS))
                .await
                .unwrap()
        );
        assert_eq!(
            sim.handle().stats().refresh_grants,
            2,
            "{name}: A refreshed"
        );
        let (t2, _) = stored_tokens(&db, &org).await;
        assert_ne!(t2, t1, "{name}");
        let b = Process::start(&backend, &sim, &stale, policy).await;
        let did = b
            .tokens
            .refresh_if(Some(KEEP_ALIVE_EVERY_MS))
            .await
            .unwrap_or_else(|e| panic!("{name}: B: {e}"));
        assert!(did, "{name}: B reports the grant refreshed (by A)");
        let stats = sim.handle().stats();
        assert_eq!(
            stats.refresh_grants, 2,
            "{name}: B refreshed again although the vault showed A's refresh"
        );
        assert_eq!(stats.invalid_grant, 0, "{name}");
        assert_eq!(
            b.tokens.org().await.last_refresh_at_ms,
            db.org_by_id(org.id)
                .await
                .unwrap()
                .unwrap()
                .last_refresh_at_ms,
            "{name}: B ends on the org as A stored it"
        );
        sim.shutdown().await;
    }
}
