//! Shared request budget: 4 processes on one database against a simulator that limits the
//! client id (a short window, so the limit is reached in seconds): together they never exceed
//! the limit, run close under it, and once the simulator answers 429 none of them sends before
//! the `Retry-After` has elapsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::budget::BudgetPolicy;
use tokio::sync::mpsc;
use webex_sim::{Faults, SimConfig, SimServer};

use crate::common::{Process, add_org, backends};

const PROCESSES: usize = 4;
const TASKS_PER_PROCESS: usize = 3;
/// The simulator's limit: this many requests per client id in any rolling window...
const LIMIT: u32 = 100;
/// ... of this many seconds (Webex: 300 in 60 s; the shape is the same, the test is quicker).
const WINDOW_SECS: u64 = 10;
/// Requests arriving this soon after a 429 were already on their way when it was answered.
const IN_FLIGHT_GRACE_MS: u64 = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_share_the_limit_and_every_retry_after() {
    for backend in backends().await {
        let sim = SimServer::start(
            SimConfig {
                rate_limit_per_minute: Some(LIMIT),
                rate_limit_window_secs: WINDOW_SECS,
                retry_after_grace_ms: IN_FLIGHT_GRACE_MS,
                realtime_clock: true,
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let org = add_org(&backend.open().await, &sim).await;
        let policy = BudgetPolicy::per_window(LIMIT, Duration::from_secs(WINDOW_SECS));
        let mut procs = Vec::new();
        for _ in 0..PROCESSES {
            procs.push(Arc::new(Process::start(&backend, &sim, &org, policy).await));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tasks = Vec::new();
        for p in &procs {
            for _ in 0..TASKS_PER_PROCESS {
                let (p, tx, stop, sim) = (p.clone(), tx.clone(), stop.clone(), sim.handle());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = p.call(sim.now_ms()).await.map_err(|e| e.to_string());
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                }));
            }
        }
        drop(tx);
        let mut errors = Vec::new();
        let mut record = |r: Result<(), String>| match r {
            Ok(()) => 1u32,
            Err(e) => {
                errors.push(e);
                0
            }
        };

        // Phase 1: more requests than one window allows, without faults: the budget alone
        // must keep the processes under the limit (a per-process budget would give each one
        // the whole limit, four times too much).
        let mut ok = 0u32;
        while ok < LIMIT + LIMIT / 5 {
            ok += record(rx.recv().await.expect("callers run until stopped"));
        }
        let busy = sim.handle().stats();

        // Phase 2: the simulator answers some requests 429 with Retry-After 1–5 s; every
        // process must wait each of them out, whichever process got it.
        sim.handle().set_faults(Faults {
            rate_429_rate: 0.05,
            ..Faults::default()
        });
        let mut ok = 0u32;
        while ok < 40 || sim.handle().stats().throttled_429 < 3 {
            ok += record(rx.recv().await.expect("callers run until stopped"));
        }
        stop.store(true, Ordering::SeqCst);
        // Each caller finishes its request in progress, then drops its sender.
        while let Some(r) = rx.recv().await {
            record(r);
        }
        for t in tasks {
            t.await.unwrap();
        }

        let stats = sim.handle().stats();
        let name = backend.name();
        eprintln!(
            "{name}: peak {} requests in a {WINDOW_SECS} s window (limit {LIMIT}); {} 429s, \
             {} requests in flight during one, {} violations",
            busy.peak_requests_in_window,
            stats.throttled_429,
            stats.retry_after_in_flight,
            stats.retry_after_violations
        );
        assert!(errors.is_empty(), "{name}: calls failed: {errors:#?}");
        assert_eq!(
            busy.rate_limited_429, 0,
            "{name}: the processes exceeded the limit together"
        );
        assert_eq!(
            stats.rate_limited_429, 0,
            "{name}: the processes exceeded the limit together"
        );
        assert_eq!(
            stats.retry_after_violations, 0,
            "{name}: a request arrived before a Retry-After had elapsed"
        );
        // The budget is not starving anyone: in the busiest window the processes together
        // came close to the limit (the policy aims at 95 %).
        assert!(
            busy.peak_requests_in_window >= u64::from(LIMIT) * 3 / 4,
            "{name}: only {} requests in the busiest window",
            busy.peak_requests_in_window
        );
        sim.shutdown().await;
    }
}
