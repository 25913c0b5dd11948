//! The keep-alive pass, run by `serve` on a timer: refreshes what is due (the engine decides:
//! an access token running out, or a grant idle for days), sends notices, and purges expired
//! sessions and pending authorizations. A separate, more frequent purge runs beside it.
//!
//! The same notice (org, event) is sent again only after a day, so an org that needs
//! re-authorization does not page someone every pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;
use tokio::sync::watch;

use crate::AppState;

const RESEND_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// Purges expired sessions and pending authorizations, and forgets per-address counters whose
/// window ended, every `every` until `stop` turns true. Separate from the keep-alive pass,
/// which runs hourly by default and talks to Webex first: rows one invite link can create are
/// bounded, and this keeps them from lingering past their expiry.
pub(crate) async fn purge_loop(
    app: AppState,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    passes: Option<watch::Sender<u64>>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let now = app.now_ms();
        if let Err(e) = app.engine.vault.purge_expired(now).await {
            tracing::warn!(error = %e, "purging expired sessions failed; retrying next time");
        }
        app.addresses.prune(now);
        if let Some(p) = &passes {
            p.send_modify(|n| *n += 1);
        }
    }
}

/// Runs one pass now and then every `every`, until `stop` turns true. `passes`, when given,
/// counts finished passes, so a caller (a test) can wait for one instead of for time.
pub async fn keep_alive_loop(
    engine: Arc<Engine>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    passes: Option<watch::Sender<u64>>,
) {
    let mut sent: HashMap<(String, String), i64> = HashMap::new();
    loop {
        run_pass(&engine, &mut sent).await;
        if let Some(p) = &passes {
            p.send_modify(|n| *n += 1);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One pass. Failures are logged; the loop carries on.
async fn run_pass(engine: &Engine, sent: &mut HashMap<(String, String), i64>) {
    let now = engine.clock.now_ms();
    match engine.keep_alive().await {
        Ok(results) => {
            let refreshed = results.iter().filter(|r| r.refreshed).count();
            let fresh: Vec<_> = results
                .iter()
                .flat_map(|r| r.notices.iter())
                .filter(|n| {
                    let key = (n.org.clone(), n.event.clone());
                    match sent.get(&key) {
                        Some(at) if now - at < RESEND_AFTER_MS => false,
                        _ => {
                            sent.insert(key, now);
                            true
                        }
                    }
                })
                .cloned()
                .collect();
            // A problem that cleared may come back later: forget it so it is sent at once then.
            sent.retain(|(org, event), _| {
                results
                    .iter()
                    .any(|r| &r.org == org && r.notices.iter().any(|n| &n.event == event))
            });
            if !fresh.is_empty() {
                engine.notify(&fresh).await;
            }
            tracing::info!(
                orgs = results.len(),
                refreshed,
                notices = fresh.len(),
                "keep-alive pass"
            );
        }
        Err(e) => tracing::error!(error = %e, "keep-alive pass failed; retrying next pass"),
    }
    if let Err(e) = engine.vault.purge_expired(now).await {
        tracing::warn!(error = %e, "purging expired sessions failed");
    }
}
