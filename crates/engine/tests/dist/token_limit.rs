//! Token requests under the client id's limit (the simulator's opt-in
//! `rate_limit_token_endpoint`): a refresh answered 429 waits out the `Retry-After` — no token
//! request of the client id arrives before it elapses — and then succeeds.

use std::time::Duration;

use engine::budget::BudgetPolicy;
use secrecy::{ExposeSecret, SecretString};
use webex::TokenProvider;
use webex_sim::{SimConfig, SimServer};

use crate::common::{Process, add_org, backends, stored_tokens, token_requests};

/// The simulator's limit: this many requests (API and token) per client id in any window...
const LIMIT: u32 = 5;
/// ... of this length.
const WINDOW_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_answered_429_waits_out_retry_after_and_succeeds() {
    for backend in backends().await {
        let name = backend.name();
        let sim = SimServer::start(
            SimConfig {
                rotate_refresh_tokens: true,
                rate_limit_per_minute: Some(LIMIT),
                rate_limit_window_secs: WINDOW_SECS,
                rate_limit_token_endpoint: true,
                realtime_clock: true,
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        // A budget far above the simulator's limit: the simulator's 429 is what paces here.
        let p = Process::start(&backend, &sim, &org, BudgetPolicy::per_minute(60_000)).await;
        for i in 0..LIMIT {
            p.call(sim.handle().now_ms())
                .await
                .unwrap_or_else(|e| panic!("{name}: call {i}: {e}"));
        }
        let (t0, r0) = stored_tokens(&db, &org).await;

        // The window is full: the token endpoint answers 429 with Retry-After.
        let refreshed = tokio::time::timeout(
            Duration::from_secs(WINDOW_SECS * 5),
            p.tokens
                .refresh_after_unauthorized(&SecretString::from(t0.clone())),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the refresh never finished"))
        .unwrap_or_else(|e| panic!("{name}: the refresh failed: {e}"));

        let stats = sim.handle().stats();
        assert!(
            stats.rate_limited_429 >= 1 && token_requests(&sim) >= 2,
            "{name}: the token endpoint was not throttled ({stats:?})"
        );
        assert_eq!(
            stats.retry_after_violations, 0,
            "{name}: a request arrived before the Retry-After had elapsed"
        );
        assert_eq!(stats.refresh_grants, 1, "{name}");
        assert_eq!(stats.invalid_grant, 0, "{name}");
        let (t1, r1) = stored_tokens(&db, &org).await;
        assert_eq!(t1, refreshed.expose_secret(), "{name}");
        assert_ne!(t1, t0, "{name}");
        assert_ne!(r1, r0, "{name}");
        p.call(sim.handle().now_ms())
            .await
            .unwrap_or_else(|e| panic!("{name}: call with the new token: {e}"));
        sim.shutdown().await;
    }
}
