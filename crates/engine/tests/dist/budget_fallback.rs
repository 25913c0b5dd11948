//! The shared budget without its database: a process whose state database stops answering
//! spaces its requests by a schedule of its own at a quarter of the limit (other processes are
//! still sending) — not unlimited, not the whole limit, not stuck — and still honours the last
//! `Retry-After` pause it saw.

use std::time::Duration;

use engine::budget::BudgetPolicy;
use tokio::time::Instant;
use webex::http::SharedBudget;
use webex_sim::{SimClient, SimConfig, SimServer};

use crate::common::{Process, add_org, backends};

/// The simulator's limit per window, and the budget's policy.
const LIMIT: u32 = 100;
const WINDOW: Duration = Duration::from_secs(4);
const CALLS: usize = 10;
/// A 429 pause noted while the database still answered.
const PAUSE: Duration = Duration::from_secs(1);
/// Slack for a request's own latency when comparing send times.
const SLACK_MS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_its_database_a_process_sends_at_a_quarter_of_the_limit() {
    for backend in backends().await {
        let name = backend.name();
        let sim = SimServer::start(
            SimConfig {
                rate_limit_per_minute: Some(LIMIT),
                rate_limit_window_secs: WINDOW.as_secs(),
                realtime_clock: true,
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let org = add_org(&backend.open().await, &sim).await;
        let policy = BudgetPolicy::per_window(LIMIT, WINDOW);
        let p = Process::start(&backend, &sim, &org, policy).await;

        p.budget.pause(SimClient::DEMO_CLIENT_ID, PAUSE).await;
        // This process's database is gone (its pool closed); the token it holds is still good.
        p.vault.close().await;
        let started = Instant::now();
        let mut done = Vec::new();
        let calls = async {
            for i in 0..CALLS {
                p.call(sim.handle().now_ms())
                    .await
                    .unwrap_or_else(|e| panic!("{name}: call {i}: {e}"));
                done.push(started.elapsed());
            }
        };
        // Not stuck: the pause plus the fallback schedule, with room for a slow machine.
        let fallback_ms = policy.interval_ms as u64 * 4;
        let bound = PAUSE + Duration::from_millis(fallback_ms * CALLS as u64) * 3;
        tokio::time::timeout(bound, calls)
            .await
            .unwrap_or_else(|_| panic!("{name}: {CALLS} calls took over {bound:?}"));

        assert!(
            done[0] + Duration::from_millis(SLACK_MS) >= PAUSE,
            "{name}: the first request went {:?} into a {PAUSE:?} pause",
            done[0]
        );
        // From the second request on (the first may carry the pause's jitter) the spacing is
        // four times the shared schedule's: a quarter of the limit.
        let span = done[CALLS - 1] - done[1];
        let quarter = Duration::from_millis(fallback_ms * (CALLS as u64 - 2) - SLACK_MS);
        assert!(
            span >= quarter,
            "{name}: {} requests in {span:?}, faster than a quarter of the limit ({quarter:?})",
            CALLS - 1
        );
        let stats = sim.handle().stats();
        assert_eq!(stats.rate_limited_429, 0, "{name}");
        sim.shutdown().await;
    }
}
