//! Token refresh race: 8 processes on one database keep calling the API while the access token
//! expires twice; the simulator rotates refresh tokens and revokes the old one on every
//! refresh. Exactly one refresh per expiry, and never an `invalid_grant`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::budget::BudgetPolicy;
use tokio::sync::mpsc;
use webex_sim::{SimConfig, SimServer};

use crate::common::{Process, add_org, backends};

const PROCESSES: usize = 8;
const TASKS_PER_PROCESS: usize = 3;
/// Calls every process completes between two clock advances.
const CALLS_PER_PHASE: usize = 6;
const ACCESS_TTL_SECS: u64 = 3_600;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_per_expiry_across_processes() {
    for backend in backends().await {
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
        let org = add_org(&backend.open().await, &sim).await;
        let mut procs = Vec::new();
        for _ in 0..PROCESSES {
            procs.push(Arc::new(
                Process::start(&backend, &sim, &org, BudgetPolicy::per_minute(60_000)).await,
            ));
        }

        // Every task calls until told to stop, reporting each outcome with its process.
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<(), String>)>();
        let mut tasks = Vec::new();
        for (i, p) in procs.iter().enumerate() {
            for _ in 0..TASKS_PER_PROCESS {
                let (p, tx, stop, sim) = (p.clone(), tx.clone(), stop.clone(), sim.handle());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = p.call(sim.now_ms()).await.map_err(|e| e.to_string());
                        if tx.send((i, r)).is_err() {
                            break;
                        }
                    }
                }));
            }
        }
        drop(tx);

        let mut errors = Vec::new();
        // Phase 0 on the first token; then the token expires outright (in-flight requests get
        // 401s, others see it expired: both refresh paths), then it gets within the refresh
        // margin (proactive path only); a last phase runs on the third token.
        let advances = [
            Duration::from_secs(ACCESS_TTL_SECS + 60),
            Duration::from_secs(ACCESS_TTL_SECS - 600),
        ];
        'phases: for phase in 0..=advances.len() {
            let mut done = [0usize; PROCESSES];
            while done.iter().any(|&n| n < CALLS_PER_PHASE) {
                let (i, r) = rx.recv().await.expect("callers run until stopped");
                match r {
                    Ok(()) => done[i] += 1,
                    // A process whose grant died would never finish its phase: stop and report.
                    Err(e) => {
                        errors.push(format!("process {i}, phase {phase}: {e}"));
                        break 'phases;
                    }
                }
            }
            if let Some(by) = advances.get(phase) {
                sim.handle().advance_clock(*by);
            }
        }
        stop.store(true, Ordering::SeqCst);
        while let Some((i, r)) = rx.recv().await {
            if let Err(e) = r {
                errors.push(format!("process {i}, end: {e}"));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }

        let stats = sim.handle().stats();
        let name = backend.name();
        assert!(errors.is_empty(), "{name}: calls failed: {errors:#?}");
        assert_eq!(
            stats.invalid_grant, 0,
            "{name}: a rotated-away refresh token was used"
        );
        assert_eq!(
            stats.refresh_grants,
            advances.len() as u64,
            "{name}: exactly one refresh per expiry"
        );
        // Everyone ends on the token of the last refresh, read from the vault.
        let last = procs[0].tokens.org().await;
        for p in &procs {
            assert_eq!(
                p.tokens.org().await.access_expires_at_ms,
                last.access_expires_at_ms,
                "{name}"
            );
        }
        sim.shutdown().await;
    }
}
