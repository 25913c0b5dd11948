//! Error type and classification.
//!
//! Every failure is classified exactly once, here, next to the code that produced it, so the
//! engine never has to re-interpret HTTP statuses: it only asks [`Error::class`].
//!
//! | Class | Produced by | Engine action |
//! |---|---|---|
//! | [`ErrorClass::Transient`] | network errors and timeouts, an unreachable host ([`Error::HostUnreachable`], which stops the org's run), 5xx, 408, 423, 429, truncated bodies, expired media links, unexpected media content | retry later, honouring [`Error::retry_after`] |
//! | [`ErrorClass::Reauth`] | token-endpoint grant errors (any 4xx), a 401 that survives one refresh-and-retry, a 401 on a caller-supplied token ([`Error::TokenRejected`]) | mark the org `needs_reauth` |
//! | [`ErrorClass::Permanent`] | 403 (missing scope/role, [`Error::AdminForbidden`] on admin APIs), other 4xx, media links refused by policy ([`Error::MediaLinkRefused`]), undecodable data, invalid requests or configuration | record the reason, do not retry |
//!
//! Messages never contain secrets: response bodies echoed into errors pass through
//! [`redact_body`], which removes anything token-shaped.

use std::fmt;
use std::time::Duration;

/// What the caller should do about an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth retrying later (with backoff, honouring `retry_after`).
    Transient,
    /// The org's grant or the client credentials no longer work: an admin must reconnect.
    Reauth,
    /// Will not change by retrying: record the reason against the item or org.
    Permanent,
}

/// Why a token-endpoint call needs re-authorization (webex-api.md §1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReauthKind {
    /// `invalid_grant` / `access_denied`: the grant is dead (password change, user deactivated,
    /// admin revoked, refresh token expired).
    GrantRevoked,
    /// `invalid_client` / `unauthorized_client` or a body blaming the client: bad client id or
    /// secret, integration deleted or blocked.
    ClientCredentials,
    /// Anything else the token endpoint refused (`invalid_scope`, `invalid_request`, an
    /// unparseable 4xx, ...): the integration setup needs attention.
    Setup,
}

impl fmt::Display for ReauthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReauthKind::GrantRevoked => "grant revoked or expired",
            ReauthKind::ClientCredentials => "client credentials rejected",
            ReauthKind::Setup => "integration setup rejected",
        })
    }
}

impl ReauthKind {
    fn advice(self) -> &'static str {
        match self {
            ReauthKind::GrantRevoked => {
                "the org must be reconnected by an admin (causes: password changed, user \
                 deactivated, admin role removed, integration revoked or blocked by an admin, \
                 refresh token expired)"
            }
            ReauthKind::ClientCredentials => {
                "check the integration's client id and client secret (the integration may have \
                 been deleted, regenerated or blocked)"
            }
            ReauthKind::Setup => {
                "check the integration's registered scopes and redirect URI, then reconnect the org"
            }
        }
    }
}

/// The scope every WxCC endpoint wxvault uses requires (webex-api.md §2.2).
pub const WXCC_READ_SCOPE: &str = "cjp:config_read";

/// The scope that lists every user's converged recordings and gets their download links: the
/// authorizing user must be a compliance officer (webex-api.md §3.1).
pub const CALLING_COMPLIANCE_SCOPE: &str = "spark-compliance:recordings_read";

/// The admin scope for converged recordings: lists and reads metadata but never gets download
/// links (webex-api.md §3.1).
pub const CALLING_ADMIN_SCOPE: &str = "spark-admin:recordings_read";

/// What an endpoint needs from the grant: the scope and, in words, the user's role. A 403
/// names both ([`Error::Forbidden`]), so the operator knows whom to reconnect the org with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The OAuth scope, e.g. [`WXCC_READ_SCOPE`].
    pub scope: &'static str,
    /// The role the authorizing user must hold, e.g. `a compliance officer`.
    pub role: &'static str,
}

impl Access {
    /// Every WxCC endpoint wxvault uses (webex-api.md §2.2).
    pub const WXCC: Access = Access {
        scope: WXCC_READ_SCOPE,
        role: "a Contact Center administrator or supervisor",
    };

    /// The converged-recordings endpoints wxvault uses (webex-api.md §3.1).
    pub const CALLING_COMPLIANCE: Access = Access {
        scope: CALLING_COMPLIANCE_SCOPE,
        role: "a compliance officer",
    };
}

/// Errors from the Webex client. See the module docs for the classification table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be sent or its response could not be read (DNS, connect, TLS,
    /// timeout, reset).
    #[error(
        "network error calling {endpoint}: {message}; check connectivity to the Webex host (retryable)"
    )]
    Network {
        /// Logical endpoint name, e.g. `GET /v1/tasks`.
        endpoint: String,
        /// Description of the transport failure (contains no URL query or secret).
        message: String,
        /// Whether the failure was a timeout.
        timeout: bool,
    },

    /// A host failed [`crate::health::DEFAULT_THRESHOLD`] connection attempts in a row; the
    /// breaker stops calling it (see [`crate::health::HostHealth`]).
    #[error(
        "cannot reach {host}: {attempts} consecutive connection attempts failed over {:.1} s (last: {last_error}); stopped calling it — check the network and firewall, [webex] api_base / [wxcc] api_base and the org's region",
        spent.as_secs_f64()
    )]
    HostUnreachable {
        /// `host[:port]` that could not be reached.
        host: String,
        /// Consecutive failed connection attempts.
        attempts: u32,
        /// Time from the first of those failures to this error.
        spent: Duration,
        /// The last transport error (contains no URL query or secret).
        last_error: String,
    },

    /// A media link was not fetched because of where it points (webex-api.md §2.5 links are
    /// `https` to public hosts): plain `http`, a private/loopback/link-local address, or a
    /// redirect.
    #[error(
        "refused media link to host {host}: {reason}; the link was not fetched (not retryable)"
    )]
    MediaLinkRefused {
        /// Host of the link (never its signed query string).
        host: String,
        /// What was wrong.
        reason: String,
    },

    /// A non-success HTTP status not covered by a more specific variant.
    #[error("{endpoint} returned HTTP {status}{}: {body}{}", fmt_tracking(tracking_id.as_deref()), status_advice(*status))]
    Http {
        /// Logical endpoint name.
        endpoint: String,
        /// HTTP status code (the source of truth for classification).
        status: u16,
        /// `TrackingId` header or body field, for Cisco support.
        tracking_id: Option<String>,
        /// Short, redacted summary of the response body.
        body: String,
        /// `Retry-After` sent with a 423/503, if any.
        retry_after: Option<Duration>,
    },

    /// HTTP 429 still returned after the retry budget was spent.
    #[error("{endpoint} is rate limited (HTTP 429{}); retry after {:.1}s — the per-client-id budget is shared by every org using this integration", fmt_tracking_inner(tracking_id.as_deref()), retry_after.as_secs_f64())]
    RateLimited {
        /// Logical endpoint name.
        endpoint: String,
        /// How long the server asked us to wait (clamped).
        retry_after: Duration,
        /// Tracking id, if any.
        tracking_id: Option<String>,
    },

    /// HTTP 401 again after refreshing the access token once and retrying.
    #[error("{endpoint} still returned 401 Unauthorized after refreshing the access token{}: the grant no longer authorizes this call; reconnect the org", fmt_tracking(tracking_id.as_deref()))]
    Unauthorized {
        /// Logical endpoint name.
        endpoint: String,
        /// Tracking id, if any.
        tracking_id: Option<String>,
        /// Short, redacted body.
        body: String,
    },

    /// HTTP 403: the grant lacks a scope or the authorizing user lacks a role.
    #[error("{endpoint} returned 403 Forbidden{}: the grant lacks scope {scope} or the authorizing user is not {role}; reconnect the org with a user who is {role} and grant {scope} ({body})", fmt_tracking(tracking_id.as_deref()))]
    Forbidden {
        /// Logical endpoint name.
        endpoint: String,
        /// The scope this endpoint needs.
        scope: &'static str,
        /// The role the authorizing user needs, in words (see [`Access`]).
        role: &'static str,
        /// Tracking id, if any.
        tracking_id: Option<String>,
        /// Short, redacted body.
        body: String,
    },

    /// HTTP 401 from a call made with a caller-supplied access token, where this crate does
    /// not refresh (e.g. [`crate::oauth::OAuthClient::revoke_authorizations`]).
    #[error("{endpoint} returned 401 Unauthorized{}: the access token is expired, revoked or invalid; refresh it or reconnect the org, then try again ({body})", fmt_tracking(tracking_id.as_deref()))]
    TokenRejected {
        /// Logical endpoint name.
        endpoint: String,
        /// Tracking id, if any.
        tracking_id: Option<String>,
        /// Short, redacted body.
        body: String,
    },

    /// HTTP 403 from a Webex admin API: the token lacks an admin scope, its user lacks an
    /// admin role, or the token belongs to another org.
    #[error("{endpoint} returned 403 Forbidden{}: the grant lacks scope {scope}, or the authorizing user is not {role} of the target org; connect with such an admin and that scope ({body})", fmt_tracking(tracking_id.as_deref()))]
    AdminForbidden {
        /// Logical endpoint name.
        endpoint: String,
        /// The scope the endpoint needs, e.g. `identity:tokens_write`.
        scope: &'static str,
        /// The admin role the endpoint needs, in words.
        role: &'static str,
        /// Tracking id, if any.
        tracking_id: Option<String>,
        /// Short, redacted body.
        body: String,
    },

    /// The OAuth token endpoint refused the grant or the client.
    #[error("token endpoint refused the request (HTTP {status}, OAuth error {code}{}): {kind}; {}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default(), kind.advice(), fmt_tracking(tracking_id.as_deref()))]
    Grant {
        /// Which kind of re-authorization is needed.
        kind: ReauthKind,
        /// OAuth `error` code, or `http_<status>` when the body had none.
        code: String,
        /// Redacted `error_description` / router message, if any.
        description: Option<String>,
        /// HTTP status.
        status: u16,
        /// Tracking id, if any.
        tracking_id: Option<String>,
    },

    /// A 2xx response whose content could not be understood.
    #[error("could not understand {what} from {location}: {detail}")]
    Decode {
        /// What was being decoded, e.g. `token response`.
        what: String,
        /// Where: endpoint and item.
        location: String,
        /// What was wrong (never contains body values of secret-bearing responses).
        detail: String,
    },

    /// The media host refused a link (400/401/403; 410 for Calling): get a fresh link and retry.
    #[error(
        "media link for {location} was refused with HTTP {status} (expired or invalid link); get a fresh one (WxCC: query the captures again; Calling: request the recording details again)"
    )]
    LinkExpired {
        /// Host and path of the link (never the signed query string).
        location: String,
        /// HTTP status.
        status: u16,
    },

    /// A body ended before its declared `Content-Length`.
    #[error(
        "download of {location} ended early: received {received} of {expected} bytes (retryable)"
    )]
    Truncated {
        /// Host and path (no query string).
        location: String,
        /// Declared length.
        expected: u64,
        /// Bytes actually received.
        received: u64,
    },

    /// A media host answered 200 with an error-page content type instead of audio.
    #[error(
        "media download of {location} returned content type {content_type:?} instead of audio; refusing to store it (a proxy or error page answered)"
    )]
    UnexpectedContentType {
        /// Host and path (no query string).
        location: String,
        /// The offending `Content-Type`.
        content_type: String,
    },

    /// A more-than-pageSize run of tasks with one `createdTime` cannot be paged by re-query.
    #[error(
        "{endpoint}: a full page of {page_size} tasks all have createdTime {created_time_ms}; /v1/tasks cannot page past them (use /search for this window)"
    )]
    PageOverflow {
        /// Logical endpoint name.
        endpoint: String,
        /// The shared `createdTime`.
        created_time_ms: i64,
        /// Page size used.
        page_size: u32,
    },

    /// The caller asked for something the API cannot do; no request was sent.
    #[error("invalid request to {endpoint}: {reason}")]
    InvalidRequest {
        /// Logical endpoint name.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Bad configuration (URL template, region, base URL).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A [`crate::TokenProvider`] could not produce a token (e.g. no grant stored, store down).
    #[error("no usable access token: {reason}")]
    TokenSource {
        /// Why (must not contain the token).
        reason: String,
        /// How the implementation classified it.
        class: ErrorClass,
    },
}

fn fmt_tracking(t: Option<&str>) -> String {
    t.map(|t| format!(" (trackingId {t})")).unwrap_or_default()
}

fn fmt_tracking_inner(t: Option<&str>) -> String {
    t.map(|t| format!(", trackingId {t}")).unwrap_or_default()
}

fn status_advice(status: u16) -> &'static str {
    match status {
        404 => " (not found)",
        408 | 423 | 500..=599 => " (server-side problem, retryable)",
        400 | 405 | 409 | 410 | 413 | 415 | 422 => " (request rejected; not retryable)",
        _ => "",
    }
}

/// Whether an HTTP status on a Webex API is worth retrying.
pub(crate) fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 423 | 429 | 500..=599)
}

impl Error {
    /// How the caller should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Network { .. }
            | Error::HostUnreachable { .. }
            | Error::RateLimited { .. }
            | Error::LinkExpired { .. }
            | Error::Truncated { .. }
            | Error::UnexpectedContentType { .. } => ErrorClass::Transient,
            Error::Http { status, .. } => {
                if status_is_transient(*status) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            Error::Unauthorized { .. } | Error::TokenRejected { .. } | Error::Grant { .. } => {
                ErrorClass::Reauth
            }
            Error::Forbidden { .. }
            | Error::AdminForbidden { .. }
            | Error::Decode { .. }
            | Error::PageOverflow { .. }
            | Error::InvalidRequest { .. }
            | Error::MediaLinkRefused { .. }
            | Error::Config(_) => ErrorClass::Permanent,
            Error::TokenSource { class, .. } => *class,
        }
    }

    /// How long the server asked us to wait, when it said so (429, or 423/503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when a pre-signed media link was refused: re-query for a fresh link.
    pub fn is_link_expired(&self) -> bool {
        matches!(self, Error::LinkExpired { .. })
    }

    /// True when a host's connection breaker is open: the whole org's run should stop (one
    /// line), not each item fail on its own.
    pub fn is_host_unreachable(&self) -> bool {
        matches!(self, Error::HostUnreachable { .. })
    }

    /// The Webex `TrackingId` of the failed response, for support cases.
    pub fn tracking_id(&self) -> Option<&str> {
        match self {
            Error::Http { tracking_id, .. }
            | Error::RateLimited { tracking_id, .. }
            | Error::Unauthorized { tracking_id, .. }
            | Error::Forbidden { tracking_id, .. }
            | Error::TokenRejected { tracking_id, .. }
            | Error::AdminForbidden { tracking_id, .. }
            | Error::Grant { tracking_id, .. } => tracking_id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status behind this error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. }
            | Error::Grant { status, .. }
            | Error::LinkExpired { status, .. } => Some(*status),
            Error::RateLimited { .. } => Some(429),
            Error::Unauthorized { .. } | Error::TokenRejected { .. } => Some(401),
            Error::Forbidden { .. } | Error::AdminForbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// The [`ReauthKind`] for errors that need re-authorization.
    ///
    /// A 401 that survived refresh-and-retry, or a rejected caller-supplied token, reports
    /// [`ReauthKind::GrantRevoked`].
    pub fn reauth_kind(&self) -> Option<ReauthKind> {
        match self {
            Error::Grant { kind, .. } => Some(*kind),
            Error::Unauthorized { .. } | Error::TokenRejected { .. } => {
                Some(ReauthKind::GrantRevoked)
            }
            _ => None,
        }
    }
}

/// The pieces of an error body we understand, whatever its shape (webex-api.md §1.6, §2.10).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// RFC 6749 `error` code (token endpoint).
    pub oauth_error: Option<String>,
    /// `error_description` / router `message` / WxCC `message[].description`, joined.
    pub description: Option<String>,
    /// `trackingId` body field.
    pub tracking_id: Option<String>,
    /// WxCC `error.key` / `errors[].key` as a string.
    pub key: Option<String>,
}

impl ErrorBody {
    /// Parses any known error shape; empty, non-JSON and unknown JSON give a mostly empty result.
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return ErrorBody::default();
        };
        let mut out = ErrorBody::default();
        let mut descriptions: Vec<String> = Vec::new();
        let obj = match &v {
            serde_json::Value::Object(o) => o,
            _ => return out,
        };
        out.tracking_id = obj
            .get("trackingId")
            .or_else(|| obj.get("trackingid"))
            .or_else(|| obj.get("tracking_id"))
            .and_then(scalar_string);
        match obj.get("error") {
            // RFC 6749: "error": "invalid_grant".
            Some(serde_json::Value::String(code)) => out.oauth_error = Some(code.clone()),
            // WxCC: "error": {"key": "401"|401, "message": [{"description": ".."}] | ".."}.
            Some(serde_json::Value::Object(e)) => {
                out.key = e.get("key").and_then(scalar_string);
                collect_messages(e.get("message"), &mut descriptions);
                collect_messages(e.get("description"), &mut descriptions);
            }
            _ => {}
        }
        if let Some(d) = obj.get("error_description").and_then(scalar_string) {
            descriptions.push(d);
        }
        // Router / gateway: "message": "..".
        collect_messages(obj.get("message"), &mut descriptions);
        // Router `errors[{description}]` and the WxCC `errors[{key, description|message}]` wrapper.
        if let Some(serde_json::Value::Array(errs)) = obj.get("errors") {
            for e in errs {
                match e {
                    serde_json::Value::Object(eo) => {
                        if out.key.is_none() {
                            out.key = eo.get("key").and_then(scalar_string);
                        }
                        collect_messages(eo.get("description"), &mut descriptions);
                        collect_messages(eo.get("message"), &mut descriptions);
                    }
                    other => collect_messages(Some(other), &mut descriptions),
                }
            }
        }
        descriptions.retain(|d| !d.trim().is_empty());
        descriptions.dedup();
        if !descriptions.is_empty() {
            out.description = Some(descriptions.join("; "));
        }
        out
    }
}

fn scalar_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn collect_messages(v: Option<&serde_json::Value>, out: &mut Vec<String>) {
    match v {
        Some(serde_json::Value::String(s)) => out.push(s.clone()),
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s.clone()),
                    serde_json::Value::Object(o) => {
                        if let Some(d) = o.get("description").and_then(scalar_string) {
                            out.push(d);
                        } else if let Some(m) = o.get("message").and_then(scalar_string) {
                            out.push(m);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Longest body summary kept in an error message.
const MAX_BODY_CHARS: usize = 300;

/// Produces a short, secret-free summary of a response body for error messages and logs.
///
/// Parsed descriptions are preferred over raw text; raw text is truncated. Either way, every
/// token-shaped run of characters is replaced with `[redacted]`, and so is every exact value in
/// `known_secrets` (e.g. the refresh token just sent), because some servers echo request fields.
pub(crate) fn summarize_body(bytes: &[u8], parsed: &ErrorBody, known_secrets: &[&str]) -> String {
    let text = match &parsed.description {
        Some(d) => d.clone(),
        None => {
            let raw = String::from_utf8_lossy(bytes);
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return "(empty body)".to_owned();
            }
            if looks_like_html(trimmed) {
                return "(HTML page, not an API response)".to_owned();
            }
            trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    let mut text = redact_body(&text, known_secrets);
    if text.chars().count() > MAX_BODY_CHARS {
        text = text.chars().take(MAX_BODY_CHARS).collect::<String>() + "…";
    }
    text
}

fn looks_like_html(s: &str) -> bool {
    let head: String = s.chars().take(64).collect::<String>().to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html") || head.contains("<head")
}

/// Replaces token-shaped substrings and the given known secrets with `[redacted]`.
///
/// A run of `[A-Za-z0-9._~+/=-]` characters at least 24 long is token-shaped unless it is
/// plainly an identifier: hex digits and dashes (UUIDs, tracking ids), optionally behind an
/// upper-case prefix like `ROUTER_` or `GTWY_`. Webex tokens end in `_<cluster>_<uuid>` after a
/// long base64 part, so they never pass as identifiers.
pub(crate) fn redact_body(text: &str, known_secrets: &[&str]) -> String {
    let mut s = text.to_owned();
    for secret in known_secrets {
        if secret.len() >= 4 {
            s = s.replace(secret, "[redacted]");
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 24 && !is_identifier(run) {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '+' | '/' | '=' | '-') {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn is_identifier(run: &str) -> bool {
    let body = match run.find('_') {
        Some(i) if run[..i].chars().all(|c| c.is_ascii_uppercase()) => &run[i + 1..],
        _ => run,
    };
    !body.is_empty() && body.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc6749_shape() {
        let b = ErrorBody::parse(
            br#"{"error":"invalid_grant","error_description":"The refresh token provided is expired","error_uri":"x"}"#,
        );
        assert_eq!(b.oauth_error.as_deref(), Some("invalid_grant"));
        assert_eq!(
            b.description.as_deref(),
            Some("The refresh token provided is expired")
        );
    }

    #[test]
    fn parses_router_shape() {
        let b = ErrorBody::parse(
            br#"{"message":"The request could not be understood","errors":[{"description":"Client Id is invalid"}],"trackingId":"ROUTER_62E068B0-1111"}"#,
        );
        assert_eq!(b.oauth_error, None);
        assert_eq!(b.tracking_id.as_deref(), Some("ROUTER_62E068B0-1111"));
        assert_eq!(
            b.description.as_deref(),
            Some("The request could not be understood; Client Id is invalid")
        );
    }

    #[test]
    fn parses_wxcc_shape_with_string_or_number_key() {
        for key in [r#""401""#, "401"] {
            let body = format!(
                r#"{{"trackingId":"c1a4fcef-aee2","error":{{"key":{key},"message":[{{"description":"Incorrect Credentials."}}]}}}}"#
            );
            let b = ErrorBody::parse(body.as_bytes());
            assert_eq!(b.key.as_deref(), Some("401"));
            assert_eq!(b.tracking_id.as_deref(), Some("c1a4fcef-aee2"));
            assert_eq!(b.description.as_deref(), Some("Incorrect Credentials."));
            assert_eq!(b.oauth_error, None);
        }
    }

    #[test]
    fn parses_errors_wrapper_and_gateway_shape() {
        let b = ErrorBody::parse(
            br#"{"errors":[{"key":400,"message":"from must be before to"},{"description":"range too large"}]}"#,
        );
        assert_eq!(b.key.as_deref(), Some("400"));
        assert_eq!(
            b.description.as_deref(),
            Some("from must be before to; range too large")
        );
        let g = ErrorBody::parse(
            br#"{"code":429,"message":"Too many requests. Rate limit exceeded.","trackingId":"GTWY_abc"}"#,
        );
        assert_eq!(g.tracking_id.as_deref(), Some("GTWY_abc"));
        assert_eq!(
            g.description.as_deref(),
            Some("Too many requests. Rate limit exceeded.")
        );
    }

    #[test]
    fn empty_and_non_json_bodies_parse_to_nothing() {
        assert_eq!(ErrorBody::parse(b""), ErrorBody::default());
        assert_eq!(
            ErrorBody::parse(b"<html><body>502 Bad Gateway</body></html>"),
            ErrorBody::default()
        );
        assert_eq!(ErrorBody::parse(b"[1,2]"), ErrorBody::default());
        assert_eq!(
            summarize_body(b"  ", &ErrorBody::default(), &[]),
            "(empty body)"
        );
        assert_eq!(
            summarize_body(
                b"<!DOCTYPE html><html>oops</html>",
                &ErrorBody::default(),
                &[]
            ),
            "(HTML page, not an API response)"
        );
        assert_eq!(
            summarize_body(b"upstream\n  timed out", &ErrorBody::default(), &[]),
            "upstream timed out"
        );
    }

    #[test]
    fn redacts_token_shapes_but_keeps_ids() {
        let token = "ZDA4YjM0MzktZjQ5Yy00ZWM1LWJhMzktYWQ5ZjQ0ZTQ0NjNhNjI4_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f";
        let text = format!(
            "bad token {token} for org 1eb65fdf-9643-417f-9974-ad72cae0e10f trackingId ROUTER_62E068B0-B6A6-4EAA-8F26-FCC9D3D0CDE3"
        );
        let r = redact_body(&text, &[]);
        assert!(!r.contains("ZDA4"), "{r}");
        assert!(r.contains("[redacted]"));
        assert!(r.contains("1eb65fdf-9643-417f-9974-ad72cae0e10f"));
        assert!(r.contains("ROUTER_62E068B0-B6A6-4EAA-8F26-FCC9D3D0CDE3"));
        assert_eq!(
            redact_body("secret=abc123xyz!", &["abc123xyz"]),
            "secret=[redacted]!"
        );
        assert_eq!(redact_body("short words stay", &[]), "short words stay");
    }

    #[test]
    fn classification_table() {
        let http = |status| Error::Http {
            endpoint: "GET /x".into(),
            status,
            tracking_id: None,
            body: String::new(),
            retry_after: None,
        };
        for s in [500, 502, 503, 504, 423, 429, 408] {
            assert_eq!(http(s).class(), ErrorClass::Transient, "{s}");
        }
        for s in [400, 404, 405, 409, 410, 413, 415, 422] {
            assert_eq!(http(s).class(), ErrorClass::Permanent, "{s}");
        }
        let grant = Error::Grant {
            kind: ReauthKind::Setup,
            code: "invalid_scope".into(),
            description: None,
            status: 400,
            tracking_id: Some("T1".into()),
        };
        assert_eq!(grant.class(), ErrorClass::Reauth);
        assert_eq!(grant.tracking_id(), Some("T1"));
        let unauthorized = Error::Unauthorized {
            endpoint: "GET /v1/tasks".into(),
            tracking_id: None,
            body: String::new(),
        };
        assert_eq!(unauthorized.class(), ErrorClass::Reauth);
        assert_eq!(unauthorized.reauth_kind(), Some(ReauthKind::GrantRevoked));
        let forbidden = Error::Forbidden {
            endpoint: "POST /v1/captures/query".into(),
            scope: WXCC_READ_SCOPE,
            role: Access::WXCC.role,
            tracking_id: None,
            body: String::new(),
        };
        assert_eq!(forbidden.class(), ErrorClass::Permanent);
        assert!(forbidden.to_string().contains("cjp:config_read"));
        assert!(
            forbidden
                .to_string()
                .contains("Contact Center administrator")
        );
        let expired = Error::LinkExpired {
            location: "h/p".into(),
            status: 403,
        };
        assert_eq!(expired.class(), ErrorClass::Transient);
        assert!(expired.is_link_expired());
        let rl = Error::RateLimited {
            endpoint: "e".into(),
            retry_after: Duration::from_secs(4),
            tracking_id: None,
        };
        assert_eq!(rl.class(), ErrorClass::Transient);
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(4)));
        assert_eq!(
            Error::Truncated {
                location: "l".into(),
                expected: 10,
                received: 5
            }
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            Error::Decode {
                what: "w".into(),
                location: "l".into(),
                detail: "d".into()
            }
            .class(),
            ErrorClass::Permanent
        );
    }
}
