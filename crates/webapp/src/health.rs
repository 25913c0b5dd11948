//! `/healthz` and `/readyz`: the probes a supervisor (Kubernetes, a load balancer, a monitor)
//! asks before sending traffic or restarting a process.
//!
//! - `/healthz` answers `200 ok` whenever the process serves HTTP at all. It checks nothing
//!   else on purpose: a liveness probe that failed on a database outage would restart every
//!   process of the fleet for a problem a restart cannot fix.
//! - `/readyz` answers `200` when the state database and the archive both answer, `503`
//!   otherwise, with a JSON body naming each part and, for a part that is down, the error
//!   (URLs redacted: no userinfo, query strings or fragments; wxvault's own errors never carry a
//!   credential). Each check is bounded by a timeout, so a hung database makes the probe answer
//!   `503` instead of hanging with it.
//!
//! The same routes serve inside the web app (`serve`, behind its security layer, which leaves
//! GET requests alone and never consults the sign-in throttle) and on their own through
//! [`serve_health`] for processes without the web app (`wxvault worker`, `[worker] listen`).
//! Neither needs a session or a CSRF token.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::Engine;
use serde::Serialize;

use crate::server::{self, ConnectionLimits};

/// How long each readiness check may take before its part counts as down. Kubernetes probes
/// need a `timeoutSeconds` above it (the manifests in `deploy/kubernetes` use 10).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The state behind the two routes.
#[derive(Clone)]
struct Health {
    engine: Arc<Engine>,
    timeout: Duration,
    /// Whether the last `/readyz` found everything up; a change is logged once, not every probe.
    was_ready: Arc<AtomicBool>,
}

/// One part's answer in the `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartStatus {
    /// `"ok"` or `"down"`.
    pub status: &'static str,
    /// Which database or archive is down (never with credentials); absent when it is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why the part is down (redacted); absent when it is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/readyz` found: the body it answers with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// `"ready"` or `"not ready"`.
    pub status: &'static str,
    /// The state database ([`vault::Vault::ping`]).
    pub database: PartStatus,
    /// The archive (`Archive::check`), with its location when it is down.
    pub storage: PartStatus,
}

impl Readiness {
    /// Whether every part answered.
    pub fn is_ready(&self) -> bool {
        self.database.error.is_none() && self.storage.error.is_none()
    }
}

/// Checks the state database and the archive side by side, each bounded by `timeout`.
pub async fn readiness(engine: &Engine, timeout: Duration) -> Readiness {
    let (database, storage) = tokio::join!(
        bounded(timeout, engine.vault.ping()),
        bounded(timeout, engine.archive.check()),
    );
    let storage = PartStatus {
        location: storage.error.is_some().then(|| engine.archive.describe()),
        ..storage
    };
    let ready = database.error.is_none() && storage.error.is_none();
    Readiness {
        status: if ready { "ready" } else { "not ready" },
        database,
        storage,
    }
}

/// Runs one check under `timeout`; the error text goes through the URL redaction.
async fn bounded<E: std::fmt::Display>(
    timeout: Duration,
    check: impl Future<Output = Result<(), E>>,
) -> PartStatus {
    let error = match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(redact::redact_urls_in(&e.to_string())),
        Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
    };
    PartStatus {
        status: if error.is_none() { "ok" } else { "down" },
        location: None,
        error,
    }
}

/// `/healthz` and `/readyz` for `engine`, each readiness check bounded by `timeout`
/// ([`CHECK_TIMEOUT`] in `serve` and [`serve_health`]). The router carries its own state, so it
/// merges into a router of any state type.
pub fn health_routes<S>(engine: Arc<Engine>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Health {
            engine,
            timeout,
            was_ready: Arc::new(AtomicBool::new(true)),
        })
}

/// Whether `path` is one of the probe routes (the request log keeps them at debug level, so a
/// probe every few seconds does not drown the log).
pub(crate) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

async fn healthz() -> Response {
    no_store((StatusCode::OK, "ok").into_response())
}

async fn readyz(State(health): State<Health>) -> Response {
    let found = readiness(&health.engine, health.timeout).await;
    let ready = found.is_ready();
    if health.was_ready.swap(ready, Ordering::Relaxed) != ready {
        if ready {
            tracing::info!("ready again: the state database and the archive answer");
        } else {
            tracing::warn!(
                database = found.database.error.as_deref().unwrap_or("ok"),
                storage = found.storage.error.as_deref().unwrap_or("ok"),
                "not ready: /readyz answers 503 until both answer"
            );
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store((status, axum::Json(found)).into_response())
}

/// Probe answers must never come from a cache.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serves only `/healthz` and `/readyz` on `listener` until `shutdown` resolves: the health
/// endpoint of a process without the web app (`wxvault worker` with `[worker] listen`). Other
/// paths answer 404. The server has the web app's header-read timeout and connection cap
/// ([`ConnectionLimits::default`]), so a stalled client cannot hold it.
pub async fn serve_health(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = health_routes(engine, CHECK_TIMEOUT)
        .fallback(|| async { no_store((StatusCode::NOT_FOUND, "not found\n").into_response()) });
    server::run(listener, app, ConnectionLimits::default(), shutdown).await;
}
