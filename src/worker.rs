//! `wxvault worker` and `wxvault queue`, and the shutdown signal `serve` shares.

use anyhow::{Context, Result};
use engine::Config;
use tokio::sync::watch;

use crate::cli::WorkerArgs;

/// Turns true on SIGTERM or SIGINT (Ctrl-C): the process stops claiming work, lets running jobs
/// stop or hands them back within [serve] shutdown_grace_seconds, and exits 0.
///
/// The SIGTERM handler is installed before this returns (not inside the spawned task), so a
/// SIGTERM that arrives while the process is still starting is not met by the default action
/// (killed by the signal, no clean exit).
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match sigterm {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM ({e}); stop with Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

pub async fn run(config: Config, args: WorkerArgs) -> Result<()> {
    let stop = shutdown_signal();
    let engine = crate::commands::open_engine(config).await?;
    eprintln!(
        "wxvault worker: up to {} job(s) at once{}",
        engine.config.worker.concurrency,
        if args.plan {
            format!(
                ", planning every {} min",
                engine.config.schedule.interval_minutes
            )
        } else {
            String::new()
        }
    );
    let summary = engine::queue::run_workers(
        std::sync::Arc::new(engine),
        &engine::queue::WorkerOptions { plan: args.plan },
        stop,
    )
    .await;
    eprintln!(
        "wxvault worker: stopped ({} job(s) done, {} to retry, {} failed, {} handed back)",
        summary.jobs_done, summary.jobs_retried, summary.jobs_failed, summary.jobs_released
    );
    Ok(())
}

pub async fn queue(config: &Config, json: bool) -> Result<()> {
    let engine = crate::commands::open_engine(config.clone()).await?;
    let view = engine.queue_view().await.context("reading the queue")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        crate::output::print_queue(&view, engine.clock.now_ms());
    }
    Ok(())
}
