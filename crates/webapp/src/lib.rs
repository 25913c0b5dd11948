//! `wxvault serve`: the self-service connect pages a customer admin opens from an invite link,
//! and the operator dashboard.
//!
//! The OAuth work (state, PKCE, exchange, storing the org, scope check) is the engine's; the
//! persistence of invites, pending authorizations and sessions is the vault's. This crate is
//! the web surface: pages, cookies, CSRF, security headers, and the keep-alive loop that runs
//! while the app is up.
//!
//! Security rules kept here (ARCHITECTURE.md, "serve"):
//! - No secret in a page, a URL the app generates, or a log line. Request logs carry the path,
//!   never the query (invite tokens, codes and states travel in queries).
//! - Every cookie is `HttpOnly` and `SameSite=Lax`, and `Secure` with the `__Host-` prefix when
//!   the public URL is https.
//! - State-changing forms carry a per-session CSRF token; cross-site POSTs are refused on the
//!   `Origin` / `Sec-Fetch-Site` headers as well.
//! - The OAuth `state` is bound to the browser's connect session and used once (vault).
//! - Redirect targets are fixed paths or the authorize URL built from configuration, never
//!   request input.

mod connect;
mod dashboard;
mod error;
mod health;
mod keepalive;
mod outcome;
mod pages;
mod security;
mod server;
mod throttle;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use engine::Engine;
use secrecy::SecretString;
use url::Url;
use webex::oauth::ClientAuth;

pub use error::WebError;
pub use health::{CHECK_TIMEOUT, PartStatus, Readiness, health_routes, readiness, serve_health};
pub use keepalive::keep_alive_loop;
pub use server::ConnectionLimits;

/// The integration new orgs connect through (`[serve] client_id` + `WXVAULT_CLIENT_SECRET`).
#[derive(Clone)]
pub struct Integration {
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What the app needs beyond the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The origin browsers use; the redirect URI is `<public_url>/oauth/callback`.
    pub public_url: Url,
    /// Shown to customer admins as who is asking.
    pub vendor_name: String,
    /// argon2id hash of the operator password; `None` refuses every login.
    pub operator_password_hash: Option<String>,
    /// The default integration; `None` means invites can only re-connect existing orgs.
    pub integration: Option<Integration>,
    /// Lifetime of an operator login.
    pub session_ttl_ms: i64,
    /// Lifetime of an invite created from the dashboard.
    pub invite_ttl_ms: i64,
    /// Header-read timeout and connection cap of the server.
    pub limits: ConnectionLimits,
    /// How often expired sessions and pending authorizations are purged while serving.
    pub purge_every: std::time::Duration,
    /// Counts finished purge passes when set, so a caller (a test) can wait for one instead of
    /// for time.
    pub purge_passes: Option<tokio::sync::watch::Sender<u64>>,
}

/// Default of [`Settings::purge_every`]: well under the 15 minutes a pending authorization
/// lives, so expired rows do not linger.
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl Settings {
    /// Settings from `[serve]`: `bound` is the address actually listened on (the public URL's
    /// default), `client_secret` the secret of `[serve] client_id`.
    ///
    /// # Errors
    /// [`WebError::Config`] naming the key: a bad public URL, or a client id without a secret.
    pub fn from_config(
        config: &engine::config::ServeConfig,
        bound: std::net::SocketAddr,
        client_secret: Option<SecretString>,
    ) -> Result<Settings, WebError> {
        let public_url = public_url(config, bound)?;
        let integration = match (&config.client_id, client_secret) {
            (Some(id), Some(secret)) => Some(Integration {
                client_id: id.trim().to_string(),
                client_auth: if config.client_auth == "basic" {
                    ClientAuth::Basic
                } else {
                    ClientAuth::Form
                },
                client_secret: secret,
            }),
            (Some(_), None) => {
                return Err(WebError::Config(
                    "[serve] client_id is set but WXVAULT_CLIENT_SECRET is not; set it in the service's environment".into(),
                ));
            }
            (None, _) => None,
        };
        let hours = |h: u64| i64::try_from(h).unwrap_or(8760) * 3_600_000;
        Ok(Settings {
            public_url,
            vendor_name: config.vendor_name.clone(),
            operator_password_hash: config.operator_password_hash.clone(),
            integration,
            session_ttl_ms: hours(config.session_hours),
            invite_ttl_ms: hours(config.invite_ttl_hours),
            limits: ConnectionLimits {
                header_read_timeout: std::time::Duration::from_secs(
                    config.header_read_timeout_secs.max(1),
                ),
                max_connections: usize::try_from(config.max_connections.max(1))
                    .unwrap_or(usize::MAX),
            },
            purge_every: PURGE_EVERY,
            purge_passes: None,
        })
    }

    /// The OAuth redirect URI to register on the integration.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/oauth/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    /// The link a customer admin opens for an invite token.
    pub fn invite_link(&self, token: &str) -> String {
        invite_link(&self.public_url, token)
    }

    fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// The link a customer admin opens for an invite token, on the app at `public_url`.
pub fn invite_link(public_url: &Url, token: &str) -> String {
    let mut u = public_url.clone();
    u.set_path("/connect");
    u.query_pairs_mut().clear().append_pair("invite", token);
    u.to_string()
}

/// `[serve] public_url`, or `http://` + the bound address.
///
/// # Errors
/// [`WebError::Config`] when the configured URL does not parse.
pub fn public_url(
    config: &engine::config::ServeConfig,
    bound: std::net::SocketAddr,
) -> Result<Url, WebError> {
    let text = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    Url::parse(&text).map_err(|e| WebError::Config(format!("[serve] public_url {text:?}: {e}")))
}

pub(crate) struct Inner {
    pub engine: Arc<Engine>,
    pub settings: Settings,
    pub logins: throttle::LoginGuard,
    pub addresses: throttle::AddressBudget,
}

/// Shared state of every handler.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.engine.clock.now_ms()
    }
}

/// The app's routes with its security layers.
pub fn router(engine: Arc<Engine>, settings: Settings) -> Router {
    router_with_state(engine, settings).0
}

fn router_with_state(engine: Arc<Engine>, settings: Settings) -> (Router, AppState) {
    let state = AppState(Arc::new(Inner {
        engine,
        settings,
        logins: throttle::LoginGuard::default(),
        addresses: throttle::AddressBudget::default(),
    }));
    let router = Router::new()
        .route("/", get(dashboard::dashboard))
        .route("/login", get(dashboard::login_page).post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/invites", post(dashboard::create_invite))
        .route("/invites/revoke", post(dashboard::revoke_invite))
        .route("/orgs/reconnect", post(dashboard::reconnect))
        .route("/connect", get(connect::connect_page))
        .route("/connect/start", post(connect::start))
        .route("/oauth/callback", get(connect::callback))
        .route("/static/app.css", get(pages::stylesheet))
        .merge(health::health_routes(
            state.engine.clone(),
            health::CHECK_TIMEOUT,
        ))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state.clone());
    (router, state)
}

/// `wxvault serve`: the app on `listener` and, with `workers`, the planner and workers of the
/// queue beside it (engine::queue), until `stop` turns true (SIGTERM). The web server stops
/// accepting at once; running jobs get `[serve] shutdown_grace_seconds` to stop or are handed back.
///
/// # Errors
/// As [`serve`].
pub async fn run_service(
    engine: Arc<Engine>,
    settings: Settings,
    listener: tokio::net::TcpListener,
    keepalive_every: std::time::Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    workers: bool,
) -> Result<engine::queue::WorkerSummary, WebError> {
    let worker_task = workers.then(|| {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            engine::queue::run_workers(engine, &engine::queue::WorkerOptions { plan: true }, stop)
                .await
        })
    });
    let grace = std::time::Duration::from_secs(engine.config.serve.shutdown_grace_seconds);
    let mut web_stop = stop.clone();
    let shutdown = async move {
        let _ = web_stop.wait_for(|s| *s).await;
    };
    // Slow clients and a keep-alive pass under Retry-After backoff must not hold the process past
    // its grace: after it, the web side is dropped.
    let mut deadline_stop = stop;
    let deadline = async move {
        let _ = deadline_stop.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve(engine, settings, listener, keepalive_every, shutdown) => served?,
        () = deadline => tracing::warn!("the web server did not stop within the grace; closing it"),
    }
    Ok(match worker_task {
        Some(t) => t.await.unwrap_or_else(|e| {
            tracing::error!("the worker loop ended abnormally: {e}");
            engine::queue::WorkerSummary::default()
        }),
        None => engine::queue::WorkerSummary::default(),
    })
}

/// Serves the app on `listener` until `shutdown` resolves, with the keep-alive loop running
/// beside it every `keepalive_every` and the purge of expired connect records (sessions,
/// pending authorizations, per-address counters) every `settings.purge_every`. The server
/// enforces `settings.limits` (header-read timeout, connection cap).
///
/// # Errors
/// None at present: accept errors are logged and retried. The `Result` is kept so a caller
/// that adds fallible start-up work does not change its signature.
pub async fn serve(
    engine: Arc<Engine>,
    settings: Settings,
    listener: tokio::net::TcpListener,
    keepalive_every: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let limits = settings.limits;
    let purge_every = settings.purge_every;
    let purge_passes = settings.purge_passes.clone();
    let (app, state) = router_with_state(engine.clone(), settings);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(keep_alive_loop(
        engine.clone(),
        keepalive_every,
        stop_rx.clone(),
        None,
    ));
    let purge_task = tokio::spawn(keepalive::purge_loop(
        state,
        purge_every,
        stop_rx,
        purge_passes,
    ));
    server::run(listener, app, limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    let _ = purge_task.await;
    Ok(())
}
