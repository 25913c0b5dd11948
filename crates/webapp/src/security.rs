//! Security headers, the cross-site POST guard, the request log, cookies and sessions.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::ExposeSecret as _;
use vault::{IssuedSession, Session, Vault};

use crate::{AppState, Settings, WebError};

/// Operator (dashboard) session cookie.
pub(crate) const OPERATOR: &str = "wxv_operator";
/// Connect (customer admin browser) session cookie.
pub(crate) const CONNECT: &str = "wxv_connect";

/// The CSP: nothing but our own stylesheet; no script at all; forms post only to ourselves.
/// Browsers apply `form-action` to every redirect after a submit, and Webex's authorize page
/// redirects on to its identity broker, so the connect form does not redirect to Webex: it
/// answers with a hand-off page that moves on by meta refresh (a new navigation).
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Runs around every request: refuses cross-site state changes, sets the security headers and
/// logs the method, path (never the query) and status.
pub(crate) async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut resp = if is_state_changing(&method) && !same_origin(req.headers(), &app.settings) {
        tracing::warn!(
            path,
            origin = ?req.headers().get(header::ORIGIN),
            public_url = %app.settings.public_url,
            "cross-origin form refused; if this is the operator's own browser, set [serve] public_url to the address it uses"
        );
        axum::response::IntoResponse::into_response(WebError::forbidden())
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    // Not `no-referrer`: with it browsers send `Origin: null` on our own form posts, which the
    // origin check must refuse. `same-origin` still sends nothing to other sites.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if app.settings.secure_cookies() {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    // Probes arrive every few seconds; their failures are logged by the probe itself.
    if crate::health::is_probe(&path) {
        tracing::debug!(%method, path, status, ms, "request");
    } else {
        tracing::info!(%method, path, status, ms, "request");
    }
    resp
}

fn is_state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A state-changing request must come from our own pages: `Sec-Fetch-Site` (when the browser
/// sends it) must not be cross-site, and `Origin` (when sent) must be the public origin. Both
/// absent (old clients, curl) falls through to the CSRF token, which every form carries.
fn same_origin(headers: &HeaderMap, settings: &Settings) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin == settings.public_url.origin().ascii_serialization(),
    }
}

/// The cookie name as sent: `__Host-` prefixed when served over https, which makes browsers
/// insist on `Secure`, `Path=/` and no `Domain`.
pub(crate) fn cookie_name(settings: &Settings, base: &str) -> String {
    if settings.secure_cookies() {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

fn csrf_cookie(base: &str) -> String {
    format!("{base}_csrf")
}

/// Adds a session's cookie and its CSRF cookie. The CSRF token sits in its own `HttpOnly`
/// cookie so pages can put it into their forms without the vault keeping it in plaintext.
pub(crate) fn set_session(
    jar: CookieJar,
    settings: &Settings,
    base: &str,
    issued: &IssuedSession,
) -> CookieJar {
    let make = |name: String, value: String| {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(settings.secure_cookies())
            .same_site(SameSite::Lax)
            .build()
    };
    jar.add(make(
        cookie_name(settings, base),
        issued.id.expose_secret().to_string(),
    ))
    .add(make(
        cookie_name(settings, &csrf_cookie(base)),
        issued.csrf.expose_secret().to_string(),
    ))
}

/// Removes a session's cookies (with the attributes they were set with: browsers ignore a
/// `__Host-` cookie without `Secure`, removal included).
pub(crate) fn clear_session(jar: CookieJar, settings: &Settings, base: &str) -> CookieJar {
    let gone = |name: String| {
        Cookie::build(name)
            .path("/")
            .http_only(true)
            .secure(settings.secure_cookies())
            .same_site(SameSite::Lax)
            .build()
    };
    jar.remove(gone(cookie_name(settings, base)))
        .remove(gone(cookie_name(settings, &csrf_cookie(base))))
}

/// A live session of `kind` found from its cookie, with the cookie value and its CSRF token.
pub(crate) struct Current {
    pub id: String,
    pub session: Session,
    pub csrf: String,
}

/// The live session of `kind` this browser holds, if any.
///
/// # Errors
/// Database failures.
pub(crate) async fn current(
    app: &AppState,
    jar: &CookieJar,
    base: &str,
    kind: &str,
) -> Result<Option<Current>, WebError> {
    let Some(id) = jar.get(&cookie_name(&app.settings, base)) else {
        return Ok(None);
    };
    let Some(session) = app.engine.vault.session(id.value(), app.now_ms()).await? else {
        return Ok(None);
    };
    if session.kind != kind {
        return Ok(None);
    }
    let csrf = jar
        .get(&cookie_name(&app.settings, &csrf_cookie(base)))
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    Ok(Some(Current {
        id: id.value().to_string(),
        session,
        csrf,
    }))
}

/// Whether a form's CSRF token is the session's (constant-time, in the vault).
pub(crate) fn check_csrf(current: &Current, presented: &str) -> Result<(), WebError> {
    if presented.is_empty() || !Vault::csrf_matches(&current.session, presented) {
        return Err(WebError::forbidden());
    }
    Ok(())
}
