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
    // The handlers first: a SIGTERM while the engine opens still ends in a clean exit.
    let mut stop = shutdown_signal();
    let Some(engine) = crate::commands::open_engine_until_stopped(config, &mut stop).await? else {
        eprintln!("wxvault worker: stopped before it started");
        return Ok(());
    };
    let engine = std::sync::Arc::new(engine);
    // /healthz and /readyz for the orchestrator's probes, when [worker] listen is set.
    let health = match engine.config.worker.listen.clone() {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("[worker] listen {listen:?}: cannot listen there"))?;
            eprintln!(
                "wxvault worker: health probes on http://{}/healthz and /readyz",
                listener.local_addr()?
            );
            let mut probe_stop = stop.clone();
            Some(tokio::spawn(webapp::serve_health(
                engine.clone(),
                listener,
                async move {
                    let _ = probe_stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
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
        engine.clone(),
        &engine::queue::WorkerOptions { plan: args.plan },
        stop,
    )
    .await;
    if let Some(h) = health {
        // The probes stop with the workers; a slow probe client must not hold the exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), h).await;
    }
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
