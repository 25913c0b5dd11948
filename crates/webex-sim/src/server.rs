//! The server, its handle, and the `/_sim` control API.
// Handler helpers return the finished error `Response` as `Err`; it goes
// straight back to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use crate::calling_data::calling_manifest;
use crate::calling_media::SERVLET;
use crate::config::{ConsentMode, Faults, SimConfig};
use crate::dataset::Dataset;
use crate::http::parse_pairs;
use crate::media::BUCKET;
use crate::model::{CallingManifest, ExpectedRecording, GrantTokens, Manifest, SimOrg, Stats};
use crate::oauth::grantable;
use crate::state::{Shared, lock};
use crate::{admin, calling, calling_media, late, media, oauth, wxcc};

/// A running simulator bound to a loopback port.
#[derive(Debug)]
pub struct SimServer {
    handle: SimHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Generates the dataset, binds `addr` (port 0 picks a free port) and starts serving.
    ///
    /// # Errors
    /// Returns the I/O error if the address cannot be bound.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else if local.is_ipv6() {
            format!("[{}]", local.ip())
        } else {
            local.ip().to_string()
        };
        let base_url = Url::parse(&format!("http://{host}:{}/", local.port()))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let media_listener = bind_media_host(local).await?;
        let media_local = media_listener.local_addr()?;
        let media_host = if media_local.is_ipv6() {
            format!("[{}]", media_local.ip())
        } else {
            media_local.ip().to_string()
        };
        let calling_media_url = Url::parse(&format!("http://{media_host}:{}/", media_local.port()))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let start_ms = config.start_ms.unwrap_or_else(|| {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            now * 1_000
        });
        let spec = config.dataset.clone();
        let seed = config.seed;
        let data = tokio::task::spawn_blocking(move || Dataset::generate(&spec, seed, start_ms))
            .await
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared::new(
            config,
            data,
            start_ms,
            base_url,
            calling_media_url,
        ));
        let app = router(Arc::clone(&shared));
        let media_app = Router::new()
            .route(SERVLET, get(calling_media::media_ticket))
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let (media_tx, media_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
                let _ = media_tx.send(());
            });
            let media = axum::serve(media_listener, media_app).with_graceful_shutdown(async move {
                let _ = media_rx.await;
            });
            let (main, media) = tokio::join!(serve, media);
            if let Err(e) = main.and(media) {
                tracing::warn!(error = %e, "webex-sim server stopped with an error");
            }
        });
        tracing::info!(url = %shared.base_url, media = %shared.calling_media_url, "webex-sim listening");
        Ok(SimServer {
            handle: SimHandle { shared },
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Base URL of the Webex Calling media host (ticket-only download links),
    /// e.g. `http://127.0.0.2:41234/`.
    #[must_use]
    pub fn calling_media_url(&self) -> Url {
        self.handle.shared.calling_media_url.clone()
    }

    /// Base URL of every simulated host, e.g. `http://127.0.0.1:41234/`.
    #[must_use]
    pub fn base_url(&self) -> Url {
        self.handle.shared.base_url.clone()
    }

    /// A cloneable control handle.
    #[must_use]
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops accepting connections and waits (at most 5 s) for in-flight
    /// requests; then aborts whatever is left (e.g. an idle keep-alive).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds the Calling media host: 127.0.0.2 on the main port if free, else on a
/// free port; where 127.0.0.2 is not a local address (e.g. macOS without an
/// alias), a second port on the main address.
async fn bind_media_host(main: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let alt = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for port in [main.port(), 0] {
        if let Ok(l) = tokio::net::TcpListener::bind((alt, port)).await {
            return Ok(l);
        }
    }
    let ip = if main.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        main.ip()
    };
    tokio::net::TcpListener::bind((ip, 0)).await
}

/// Cloneable handle for tests and tools to steer the simulator.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// Simulator clock, epoch milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.shared.now_ms()
    }

    /// Moves the simulator clock forward: captures appear, links, codes and tokens expire.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock
            .advance(i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4));
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, f: Faults) {
        *lock(&self.shared.faults) = f;
    }

    /// Current fault knobs.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Changes what the consent page answers.
    pub fn set_consent(&self, c: ConsentMode) {
        *lock(&self.shared.consent) = c;
    }

    /// The simulated orgs.
    #[must_use]
    pub fn orgs(&self) -> Vec<SimOrg> {
        self.shared.data.sim_orgs()
    }

    /// Mints a grant as if consent had happened elsewhere. Scopes are
    /// intersected with the registered ones, like a real consent.
    #[must_use]
    pub fn issue_grant(&self, client_id: &str, org_id: &str, scopes: &[&str]) -> GrantTokens {
        let s = &self.shared;
        let granted = grantable(s, scopes);
        let now = s.now_ms();
        let (_, i) = lock(&s.auth).mint(
            client_id,
            org_id,
            granted,
            now,
            s.cfg.access_ttl_secs,
            s.cfg.refresh_ttl_secs,
        );
        GrantTokens {
            access_token: i.access_token,
            refresh_token: i.refresh_token,
            expires_in: i.expires_in,
            refresh_token_expires_in: i.refresh_token_expires_in,
        }
    }

    /// Revokes every grant of the org: refresh gets `invalid_grant`, APIs 401.
    pub fn revoke_grants(&self, org_id: &str) {
        lock(&self.shared.auth).revoke_org(org_id);
    }

    /// Ground truth for one org (empty for unknown orgs). The first call
    /// hashes every recording of the org, which takes a moment for big datasets.
    #[must_use]
    pub fn manifest(&self, org_id: &str) -> Manifest {
        let mut m = self.shared.data.manifest(org_id);
        m.recordings
            .extend(late::expected_of_org(&self.shared, org_id));
        m
    }

    /// Adds a capture of about `bytes` to task `task_id`, listed by captures queries from now
    /// on (as when Webex produces a capture late, after the task's first ones); it joins the
    /// manifest. `None` for an unknown task.
    #[must_use]
    pub fn add_late_recording(&self, task_id: &str, bytes: u64) -> Option<ExpectedRecording> {
        late::add(&self.shared, task_id, bytes)
    }

    /// Ground truth of one org's Webex Calling recordings (empty for unknown orgs).
    /// The first call hashes every recording of the org.
    #[must_use]
    pub fn calling_manifest(&self, org_id: &str) -> CallingManifest {
        match self.shared.data.org(org_id) {
            Some((oi, _)) => calling_manifest(&self.shared.data.calling[oi]),
            None => CallingManifest {
                recordings: Vec::new(),
            },
        }
    }

    /// Turns the org's Prevent Downloading setting on or off: while on, Calling
    /// details carry no `temporaryDirectDownloadLinks` (links already handed out keep working).
    pub fn set_prevent_downloading(&self, org_id: &str, on: bool) {
        let mut set = lock(&self.shared.prevent_downloading);
        if on {
            set.insert(org_id.to_owned());
        } else {
            set.remove(org_id);
        }
    }

    /// Base URL of the Webex Calling media host.
    #[must_use]
    pub fn calling_media_url(&self) -> Url {
        self.shared.calling_media_url.clone()
    }

    /// Request counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// When (simulator clock, epoch ms, in arrival order) each API request of `client_id` that
    /// the rate limit let through arrived — the requests that count against the limit,
    /// including those then answered with an injected 429 or 5xx. Token and media requests are
    /// not API requests here. Lets a test compute the rate a fleet actually sustained over any
    /// span, not only the busiest window.
    #[must_use]
    pub fn accepted_request_times(&self, client_id: &str) -> Vec<i64> {
        self.shared.accepted_times(client_id)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/authorize", get(oauth::authorize))
        .route("/v1/authorize/decision", post(oauth::authorize_decision))
        .route("/v1/authorizations", delete(admin::delete_authorizations))
        .route("/v1/access_token", post(oauth::access_token))
        .route(
            "/v1/.well-known/openid-configuration",
            get(oauth::discovery),
        )
        .route("/v1/tasks", get(wxcc::tasks))
        .route("/v1/captures/query", post(wxcc::captures))
        .route(
            "/organization/{org}/user/by-ci-user-id/{ci}",
            get(wxcc::user_by_ci),
        )
        .route("/organization/{org}/user/{id}", get(wxcc::user_by_id))
        .route("/organization/{org}/v2/user", get(wxcc::users_v2))
        .route(
            &format!("/{BUCKET}/{{org}}/{{task}}/{{rec}}/{{file}}"),
            get(media::media),
        )
        .route("/v1/admin/convergedRecordings", get(calling::list))
        .route("/v1/convergedRecordings/{id}", get(calling::details))
        .route(
            "/v1/convergedRecordings/{id}/metadata",
            get(calling::metadata),
        )
        .route(SERVLET, get(calling_media::media_bearer))
        .route("/_sim/calling/manifest", get(ctl_calling_manifest))
        .route(
            "/_sim/calling/prevent_downloading",
            post(ctl_prevent_downloading),
        )
        .route("/_sim/orgs", get(ctl_orgs))
        .route("/_sim/manifest", get(ctl_manifest))
        .route("/_sim/late_recording", post(ctl_late_recording))
        .route("/_sim/stats", get(ctl_stats))
        .route("/_sim/clock", get(ctl_clock))
        .route("/_sim/clock/advance", post(ctl_advance))
        .route("/_sim/faults", get(ctl_get_faults).post(ctl_faults))
        .route("/_sim/grant", post(ctl_grant))
        .route("/_sim/revoke", post(ctl_revoke))
        .route("/_sim/consent", post(ctl_consent))
        .with_state(shared)
}

type St = State<Arc<Shared>>;

fn handle(s: &Arc<Shared>) -> SimHandle {
    SimHandle {
        shared: Arc::clone(s),
    }
}

fn bad_request(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": msg.to_string() })),
    )
        .into_response()
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(bad_request)
}

async fn ctl_orgs(State(s): St) -> Response {
    axum::Json(handle(&s).orgs()).into_response()
}

async fn ctl_manifest(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = parse_pairs(q.as_deref());
    let Some(org) = p.get("orgId").cloned() else {
        return bad_request("orgId is required");
    };
    if s.data.org(&org).is_none() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown orgId" })),
        )
            .into_response();
    }
    let h = handle(&s);
    match tokio::task::spawn_blocking(move || h.manifest(&org)).await {
        Ok(m) => axum::Json(m).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ctl_calling_manifest(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = parse_pairs(q.as_deref());
    let Some(org) = p.get("orgId").cloned() else {
        return bad_request("orgId is required");
    };
    if s.data.org(&org).is_none() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown orgId" })),
        )
            .into_response();
    }
    let h = handle(&s);
    match tokio::task::spawn_blocking(move || h.calling_manifest(&org)).await {
        Ok(m) => axum::Json(m).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreventReq {
    org_id: String,
    on: bool,
}

async fn ctl_prevent_downloading(State(s): St, body: axum::body::Bytes) -> Response {
    let req = match parse_json::<PreventReq>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if s.data.org(&req.org_id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown orgId" })),
        )
            .into_response();
    }
    handle(&s).set_prevent_downloading(&req.org_id, req.on);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LateReq {
    task_id: String,
    bytes: u64,
}

async fn ctl_late_recording(State(s): St, body: axum::body::Bytes) -> Response {
    let req = match parse_json::<LateReq>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let h = handle(&s);
    match tokio::task::spawn_blocking(move || h.add_late_recording(&req.task_id, req.bytes)).await {
        Ok(Some(rec)) => axum::Json(rec).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown taskId" })),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ctl_stats(State(s): St) -> Response {
    axum::Json(handle(&s).stats()).into_response()
}

async fn ctl_clock(State(s): St) -> Response {
    axum::Json(json!({ "nowMs": s.now_ms() })).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn ctl_advance(State(s): St, body: axum::body::Bytes) -> Response {
    match parse_json::<Advance>(&body) {
        Ok(a) => {
            handle(&s).advance_clock(Duration::from_secs(a.seconds));
            axum::Json(json!({ "nowMs": s.now_ms() })).into_response()
        }
        Err(r) => r,
    }
}

async fn ctl_get_faults(State(s): St) -> Response {
    axum::Json(s.faults()).into_response()
}

async fn ctl_faults(State(s): St, body: axum::body::Bytes) -> Response {
    match parse_json::<Faults>(&body) {
        Ok(f) => {
            handle(&s).set_faults(f.clone());
            axum::Json(f).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantReq {
    client_id: String,
    org_id: String,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn ctl_grant(State(s): St, body: axum::body::Bytes) -> Response {
    let g = match parse_json::<GrantReq>(&body) {
        Ok(g) => g,
        Err(r) => return r,
    };
    if s.data.org(&g.org_id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown orgId" })),
        )
            .into_response();
    }
    let scopes: Vec<&str> = g.scopes.iter().map(String::as_str).collect();
    axum::Json(handle(&s).issue_grant(&g.client_id, &g.org_id, &scopes)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeReq {
    org_id: String,
}

async fn ctl_revoke(State(s): St, body: axum::body::Bytes) -> Response {
    match parse_json::<RevokeReq>(&body) {
        Ok(r) => {
            handle(&s).revoke_grants(&r.org_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ConsentReq {
    mode: String,
}

async fn ctl_consent(State(s): St, body: axum::body::Bytes) -> Response {
    let req = match parse_json::<ConsentReq>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match req.mode.parse::<ConsentMode>() {
        Ok(m) => {
            handle(&s).set_consent(m);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e),
    }
}
