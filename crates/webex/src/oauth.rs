//! Webex OAuth 2.0: authorization code with PKCE, refresh, admin revocation of an
//! integration's grants, and plain-words explanations of authorize-redirect errors
//! (webex-api.md §1).
//!
//! Hand-rolled rather than built on the `oauth2` crate because Webex adds a non-standard
//! `refresh_token_expires_in`, sometimes omits `token_type`, and answers errors in router-shaped
//! bodies; classifying from the raw bytes is simpler than undoing a generic parser.

use std::time::Duration;

use base64::Engine as _;
use rand::Rng;
use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::api::{build_request, guarded_execute, network_error, server_retry_after, tracking_id};
use crate::error::{ErrorBody, redact_body, status_is_transient, summarize_body};
use crate::http::{RateGates, RetryPolicy};
use crate::retry::{Attempt, Driver};
use crate::{Error, ReauthKind, json};

const TOKEN_ENDPOINT: &str = "POST /v1/access_token";

/// How the client authenticates to the token endpoint (webex-api.md §1.2).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields (what every official sample does).
    #[default]
    Form,
    /// HTTP Basic (what OIDC discovery advertises).
    Basic,
}

/// An integration's client credentials.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The integration's client id (begins with `C`).
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// How to present them.
    pub auth: ClientAuth,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("auth", &self.auth)
            .finish()
    }
}

/// A PKCE verifier/challenge pair (RFC 7636, `S256`).
#[derive(Debug, Clone)]
pub struct Pkce {
    /// Sent with the token request; keep it secret until then.
    pub verifier: SecretString,
    /// `BASE64URL(SHA256(verifier))`, unpadded; goes into the authorize URL.
    pub challenge: String,
}

const PKCE_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

impl Pkce {
    /// A fresh 64-character verifier from the OS RNG and its S256 challenge.
    pub fn generate() -> Pkce {
        let mut rng = rand::rngs::OsRng;
        let verifier: String = (0..64)
            .map(|_| PKCE_ALPHABET[rng.gen_range(0..PKCE_ALPHABET.len())] as char)
            .collect();
        let challenge = pkce_challenge(&verifier);
        Pkce {
            verifier: SecretString::from(verifier),
            challenge,
        }
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))` without padding.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `base` joined with a relative `path`, treating `base` as a directory even without a
/// trailing slash, so a simulator mounted at `http://127.0.0.1:9/sim` works.
pub(crate) fn endpoint_url(base: &Url, path: &str) -> Result<Url, Error> {
    let mut dir = base.clone();
    if !dir.path().ends_with('/') {
        let p = format!("{}/", dir.path());
        dir.set_path(&p);
    }
    dir.set_query(None);
    dir.join(path)
        .map_err(|e| Error::Config(format!("cannot join {path:?} onto base URL {base}: {e}")))
}

/// The browser URL that starts the consent flow: `GET {api_base}v1/authorize` with
/// `response_type=code`, space-separated scopes and an `S256` PKCE challenge.
pub fn authorize_url(
    api_base: &Url,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[&str],
    state: &str,
    code_challenge: &str,
) -> Url {
    let mut url = endpoint_url(api_base, "v1/authorize").unwrap_or_else(|_| api_base.clone());
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("code_challenge", code_challenge)
        .append_pair("code_challenge_method", "S256");
    // Form encoding writes spaces as '+'; Webex documents %20 ("space-separated, then
    // URL-encoded"). A literal '+' is always encoded as %2B, so every '+' here is a space.
    if let Some(q) = url.query().map(|q| q.replace('+', "%20")) {
        url.set_query(Some(&q));
    }
    url
}

/// A token-endpoint success response. `Debug` redacts the tokens.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: SecretString,
    /// Seconds until the access token expires, if stated.
    pub expires_in: Option<u64>,
    /// A (possibly rotated) refresh token; absent means "keep the one you have".
    pub refresh_token: Option<SecretString>,
    /// Seconds left on the refresh token (Webex extension).
    pub refresh_token_expires_in: Option<u64>,
    /// Token type; `Bearer` when the server omits it.
    pub token_type: String,
    /// Granted scopes, space-separated, when the server says.
    pub scope: Option<String>,
}

impl TokenResponse {
    /// Parses a token response body. Never echoes body values: it contains secrets.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the body is not a JSON object with a non-empty `access_token`.
    pub fn parse(body: &[u8]) -> Result<TokenResponse, Error> {
        let decode = |detail: String| Error::Decode {
            what: "token response".to_owned(),
            location: TOKEN_ENDPOINT.to_owned(),
            detail,
        };
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| decode(format!("body is not JSON ({} bytes)", body.len())))?;
        let Value::Object(o) = &v else {
            return Err(decode(format!("body is {}, not an object", json::kind(&v))));
        };
        let access_token = match o.get("access_token") {
            Some(Value::String(s)) if !s.trim().is_empty() => SecretString::from(s.trim()),
            Some(other) => {
                return Err(decode(format!(
                    "access_token is {}, not a non-empty string",
                    json::kind(other)
                )));
            }
            None => return Err(decode("access_token is missing".to_owned())),
        };
        let seconds = |name: &str| -> Result<Option<u64>, Error> {
            match o.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => json::epoch_ms(Some(v))
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        decode(format!(
                            "{name} is {}, not a non-negative integer",
                            json::kind(v)
                        ))
                    }),
            }
        };
        let refresh_token = match o.get("refresh_token") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(SecretString::from(s.trim())),
            _ => None,
        };
        Ok(TokenResponse {
            access_token,
            expires_in: seconds("expires_in")?,
            refresh_token,
            refresh_token_expires_in: seconds("refresh_token_expires_in")?,
            token_type: json::string(o.get("token_type")).unwrap_or_else(|| "Bearer".to_owned()),
            scope: json::string(o.get("scope")),
        })
    }
}

/// The `<cluster>` and `<orgId>` suffix of a Webex token or authorization code (§1.10).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenAnatomy {
    /// Common Identity cluster, e.g. `PF84` (not a WxCC region).
    pub cluster: String,
    /// The org's UUID, lowercased.
    pub org_id: String,
}

/// Splits `<opaque>_<cluster>_<orgId>` from the right; `None` unless the last part is a UUID.
pub fn token_anatomy(token: &str) -> Option<TokenAnatomy> {
    let mut parts = token.trim().rsplitn(3, '_');
    let org = parts.next()?;
    let cluster = parts.next()?;
    let opaque = parts.next()?;
    if opaque.is_empty() || cluster.is_empty() || !is_uuid(org) {
        return None;
    }
    Some(TokenAnatomy {
        cluster: cluster.to_owned(),
        org_id: org.to_ascii_lowercase(),
    })
}

/// The org UUID from a Webex REST org id (base64 of `ciscospark://us/ORGANIZATION/<uuid>`);
/// a bare UUID passes through. Always lowercased.
pub fn org_uuid_from_rest_id(id: &str) -> Option<String> {
    let id = id.trim();
    if is_uuid(id) {
        return Some(id.to_ascii_lowercase());
    }
    let trimmed = id.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let rest = text.strip_prefix("ciscospark://")?;
    let mut segs = rest.split('/');
    let _region = segs.next()?;
    if segs.next()? != "ORGANIZATION" {
        return None;
    }
    let uuid = segs.next()?;
    if segs.next().is_some() || !is_uuid(uuid) {
        return None;
    }
    Some(uuid.to_ascii_lowercase())
}

/// 8-4-4-4-12 hex digits.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Classifies a non-2xx token-endpoint response (webex-api.md §1.6 table).
pub(crate) fn classify_token_error(
    status: u16,
    tracking: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
    secrets: &[&str],
) -> Error {
    let parsed = ErrorBody::parse(body);
    let tracking = tracking.or_else(|| parsed.tracking_id.clone());
    if status == 429 {
        return Error::RateLimited {
            endpoint: TOKEN_ENDPOINT.to_owned(),
            retry_after: retry_after.unwrap_or_default(),
            tracking_id: tracking,
        };
    }
    if status_is_transient(status) || !(400..500).contains(&status) {
        return Error::Http {
            endpoint: TOKEN_ENDPOINT.to_owned(),
            status,
            tracking_id: tracking,
            body: summarize_body(body, &parsed, secrets),
            retry_after,
        };
    }
    let code = parsed.oauth_error.clone();
    let description = parsed
        .description
        .as_deref()
        .map(|d| summarize_body(d.as_bytes(), &ErrorBody::default(), secrets));
    let mentions_client = parsed
        .description
        .as_deref()
        .is_some_and(|d| d.to_ascii_lowercase().contains("client"));
    let kind = match code.as_deref() {
        Some("invalid_grant" | "access_denied") => ReauthKind::GrantRevoked,
        Some("invalid_client" | "unauthorized_client") => ReauthKind::ClientCredentials,
        None if mentions_client => ReauthKind::ClientCredentials,
        _ => ReauthKind::Setup,
    };
    Error::Grant {
        kind,
        code: code
            .map(|c| redact_body(&c, secrets))
            .unwrap_or_else(|| format!("http_{status}")),
        description,
        status,
        tracking_id: tracking,
    }
}

/// The scope the admin revocation API needs (webex-api.md §1.7).
pub const TOKENS_WRITE_SCOPE: &str = "identity:tokens_write";

const AUTHORIZATIONS_ENDPOINT: &str = "DELETE /v1/authorizations";
const TOKENS_ADMIN_ROLE: &str =
    "a Full, User or Device administrator (for partners: a Full administrator)";

/// Classifies a non-2xx answer of `DELETE /v1/authorizations`.
fn classify_admin_error(
    status: u16,
    tracking: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
    secrets: &[&str],
) -> Error {
    let parsed = ErrorBody::parse(body);
    let tracking_id = tracking.or_else(|| parsed.tracking_id.clone());
    let endpoint = AUTHORIZATIONS_ENDPOINT.to_owned();
    let body = summarize_body(body, &parsed, secrets);
    match status {
        429 => Error::RateLimited {
            endpoint,
            retry_after: retry_after.unwrap_or_default(),
            tracking_id,
        },
        401 => Error::TokenRejected {
            endpoint,
            tracking_id,
            body,
        },
        403 => Error::AdminForbidden {
            endpoint,
            scope: TOKENS_WRITE_SCOPE,
            role: TOKENS_ADMIN_ROLE,
            tracking_id,
            body,
        },
        _ => Error::Http {
            endpoint,
            status,
            tracking_id,
            body,
            retry_after,
        },
    }
}

/// The Control Hub remedy for a blocked integration (webex-api.md §1.9).
const ALLOW_INTEGRATION_FIX: &str = "In Control Hub: Management → Apps → Integrations, allow this \
     integration by its client id, or turn access on for the user; then connect again.";

/// Plain-words explanation of the `error` (and optional `error_description`) that Webex put on
/// the authorize redirect (webex-api.md §1.1, §1.9), for operators and customer admins.
///
/// * `access_denied`: the user declined, or a Webex administrator blocked the integration, with
///   the Control Hub remedy; when the description carries the "Your administrator denied
///   access" page text, the admin block is named first.
/// * `invalid_scope`: names the scopes found in the description, and says to add them to the
///   integration in the developer portal.
/// * `server_error` / `temporarily_unavailable`: retry later.
/// * Anything else: `Webex answered <error>: <description>`.
///
/// Control characters are removed, whitespace runs collapse to one space, invisible
/// direction-changing characters are dropped and over-long values are cut, so the result is
/// safe to print on a terminal or log line. Never panics.
pub fn explain_authorize_error(error: &str, description: Option<&str>) -> String {
    let code = clean_text(error, 80);
    let desc = description
        .map(|d| clean_text(d, 300))
        .filter(|d| !d.is_empty());
    let said = desc
        .as_deref()
        .map(|d| format!(" Webex said: \"{d}\"."))
        .unwrap_or_default();
    match code.to_ascii_lowercase().as_str() {
        "access_denied" => {
            if desc.as_deref().is_some_and(is_blocked_page_text) {
                format!(
                    "A Webex administrator has blocked this integration for this organization or \
                     user (access_denied).{said} {ALLOW_INTEGRATION_FIX} If no administrator \
                     blocked it, the user declined: connect again and choose Accept."
                )
            } else {
                format!(
                    "Webex answered access_denied: the user declined, or a Webex administrator \
                     has blocked this integration.{said} {ALLOW_INTEGRATION_FIX} If the user \
                     declined, connect again and choose Accept."
                )
            }
        }
        "invalid_scope" => {
            let scopes = desc.as_deref().map(scopes_in).unwrap_or_default();
            if scopes.is_empty() {
                format!(
                    "Webex answered invalid_scope: the integration is not registered for a scope \
                     wxvault asks for.{said} In the Webex developer portal (developer.webex.com → \
                     My Webex Apps → this integration), add every scope wxvault requests, save, \
                     then connect again."
                )
            } else {
                format!(
                    "Webex answered invalid_scope: the integration is not registered for {}. In \
                     the Webex developer portal (developer.webex.com → My Webex Apps → this \
                     integration), add {} to its scopes, save, then connect again.",
                    scopes.join(", "),
                    if scopes.len() == 1 { "it" } else { "them" },
                )
            }
        }
        "server_error" | "temporarily_unavailable" => format!(
            "Webex answered {code}: a temporary problem on the Webex side, not in the setup.{said} \
             Try connecting again in a few minutes."
        ),
        "" => match desc {
            Some(d) => format!("Webex answered an error without a code: {d}"),
            None => "Webex answered an error without a code or description.".to_owned(),
        },
        _ => match desc {
            Some(d) => format!("Webex answered {code}: {d}"),
            None => format!("Webex answered {code}"),
        },
    }
}

/// Whether `text` is (or contains) the page Webex shows when an admin blocked the integration.
fn is_blocked_page_text(text: &str) -> bool {
    let normalized = text
        .replace('+', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    normalized.contains("administrator denied access to the integration")
}

/// Scope-shaped words (`prefix:name`, e.g. `spark-admin:recordings_read`) in a description,
/// in order and without duplicates.
fn scopes_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || ",;()[]{}<>\"'`".contains(c)) {
        let word = word.trim_end_matches(['.', ':', '!', '?']);
        let Some((prefix, name)) = word.split_once(':') else {
            continue;
        };
        let ok = |part: &str, extra: &[char]| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c)
                })
        };
        if ok(prefix, &[]) && ok(name, &[':', '.']) && !out.iter().any(|s| s == word) {
            out.push(word.to_owned());
        }
    }
    out
}

/// `text` without control or invisible formatting characters, whitespace runs as one space,
/// trimmed, and cut to `max_chars` characters (plus `…`).
fn clean_text(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_invisible_format(c) {
            continue;
        }
        if count + usize::from(space) >= max_chars {
            out.push('…');
            break;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Bidirectional overrides, zero-width characters and the BOM: invisible, but able to make a
/// printed line read differently from its bytes.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Client for the token endpoint `{api_base}v1/access_token` and the admin revocation API
/// `{api_base}v1/authorizations`.
///
/// Like every Webex call, token and revocation requests wait at the rate gate of their client
/// id, close it for the `Retry-After` of a 429, and report to the gates' host breaker; share
/// the run's [`RateGates`] with [`OAuthClient::with_gates`].
#[derive(Debug, Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    api_base: Url,
    retry: RetryPolicy,
    gates: RateGates,
}

impl OAuthClient {
    /// `api_base` is the Webex API root, normally `https://webexapis.com/`. The client starts
    /// with rate gates of its own; see [`OAuthClient::with_gates`].
    pub fn new(http: reqwest::Client, api_base: Url, retry: RetryPolicy) -> Self {
        OAuthClient {
            http,
            api_base,
            retry,
            gates: RateGates::default(),
        }
    }

    /// Uses `gates` (the registry the API clients of this run use), so token calls and API
    /// calls of one client id share one rate gate and one host breaker.
    #[must_use]
    pub fn with_gates(mut self, gates: RateGates) -> Self {
        self.gates = gates;
        self
    }

    /// Waits until no 429 pause (of this process, or shared through the budget) holds back
    /// requests of `client_id`, without taking a request slot.
    pub async fn wait_unpaused(&self, client_id: &str) {
        self.gates.gate(client_id).wait_unpaused().await;
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    ///
    /// # Errors
    ///
    /// [`Error::Grant`] (Reauth) for any 4xx, e.g. a reused or expired code or a redirect URI
    /// mismatch; transient errors only after retries that could not have consumed the code;
    /// [`Error::Decode`] for an unreadable success body.
    pub async fn exchange_code(
        &self,
        creds: &ClientCredentials,
        code: &str,
        redirect_uri: &str,
        code_verifier: &SecretString,
    ) -> Result<TokenResponse, Error> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier.expose_secret()),
        ];
        self.token_request(creds, &form, &[code, code_verifier.expose_secret()])
            .await
    }

    /// Refreshes an access token. Retries only what cannot have reached Webex (a connection
    /// never made) or was refused unprocessed (429, 423): Webex may rotate the refresh token
    /// and revoke the old one, so resending after a read timeout or a 502/504 could spend the
    /// grant. Never retries a grant error.
    ///
    /// # Errors
    ///
    /// [`Error::Grant`] with a [`ReauthKind`] when the token endpoint refuses (any 4xx);
    /// [`Error::Network`] / [`Error::Http`] / [`Error::RateLimited`] (Transient) when retries
    /// ran out; [`Error::Decode`] for an unreadable success body.
    pub async fn refresh(
        &self,
        creds: &ClientCredentials,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, Error> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        self.token_request(creds, &form, &[refresh_token.expose_secret()])
            .await
    }

    /// Admin revocation (webex-api.md §1.7): `DELETE {api_base}v1/authorizations?clientId=…&orgId=…`
    /// with `Authorization: Bearer <access_token>`. Revokes every grant (refresh and access
    /// tokens) of integration `client_id` in org `org_id` (a bare UUID or the Webex REST id,
    /// base64 of `ciscospark://us/ORGANIZATION/<uuid>`). Webex requires the token to carry
    /// [`TOKENS_WRITE_SCOPE`] and to belong to a Full, User or Device administrator of that org.
    ///
    /// 204 or any other 2xx is success. Network errors, 5xx, 423 and 429 (after its
    /// `Retry-After`) are retried per the [`RetryPolicy`]: the call is idempotent. The token is
    /// never logged and is redacted from error messages.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidRequest`] (Permanent) when `client_id` or `org_id` is empty; nothing is sent.
    /// * [`Error::TokenRejected`] (Reauth) for a 401: the token is expired, revoked or invalid.
    /// * [`Error::AdminForbidden`] (Permanent) for a 403: no `identity:tokens_write` scope, no
    ///   admin role, or a token of another org.
    /// * [`Error::Http`] (Permanent) for other 4xx; [`Error::Http`] / [`Error::RateLimited`] /
    ///   [`Error::Network`] (Transient) when the retries ran out.
    /// * [`Error::Config`] when the base URL cannot be joined.
    pub async fn revoke_authorizations(
        &self,
        access_token: &SecretString,
        client_id: &str,
        org_id: &str,
    ) -> Result<(), Error> {
        let (client_id, org_id) = (client_id.trim(), org_id.trim());
        for (name, value) in [("clientId", client_id), ("orgId", org_id)] {
            if value.is_empty() {
                return Err(Error::InvalidRequest {
                    endpoint: AUTHORIZATIONS_ENDPOINT.to_owned(),
                    reason: format!("{name} is empty"),
                });
            }
        }
        let mut url = endpoint_url(&self.api_base, "v1/authorizations")?;
        url.query_pairs_mut()
            .append_pair("clientId", client_id)
            .append_pair("orgId", org_id);
        let token = access_token.expose_secret();
        let secrets = [token];
        let gate_arc = self.gates.gate(client_id);
        let (gate, url): (&crate::http::RateGate, &Url) = (&gate_arc, &url);
        let driver = Driver {
            what: AUTHORIZATIONS_ENDPOINT,
            gate: Some(gate),
            policy: &self.retry,
            warn_on_failure: true,
        };
        driver
            .run_simple(|_| async move {
                let req = match build_request(
                    self.http
                        .delete(url.clone())
                        .bearer_auth(token)
                        .header(reqwest::header::ACCEPT, "application/json"),
                    AUTHORIZATIONS_ENDPOINT,
                ) {
                    Ok(r) => r,
                    Err(e) => return Attempt::Fail(e),
                };
                let resp = match guarded_execute(&self.http, gate.health(), req).await {
                    Err(e) => return Attempt::Fail(e),
                    Ok(Err(e)) => {
                        return Attempt::Retry(network_error(AUTHORIZATIONS_ENDPOINT, &e));
                    }
                    Ok(Ok(resp)) => resp,
                };
                if resp.status().is_success() {
                    // Done server-side; a body (there should be none) does not matter.
                    let _ = resp.bytes().await;
                    tracing::info!(
                        client_id,
                        org_id,
                        "revoked the integration's authorizations"
                    );
                    return Attempt::Done(());
                }
                let status = resp.status().as_u16();
                let (tracking, wait) = answer_meta(&self.retry, &resp);
                let err = match resp.bytes().await {
                    Err(e) => network_error(AUTHORIZATIONS_ENDPOINT, &e),
                    Ok(body) => classify_admin_error(status, tracking, wait, &body, &secrets),
                };
                if err.class() == crate::ErrorClass::Transient {
                    Attempt::Retry(err)
                } else {
                    Attempt::Fail(err)
                }
            })
            .await
    }

    async fn token_request(
        &self,
        creds: &ClientCredentials,
        form: &[(&str, &str)],
        request_secrets: &[&str],
    ) -> Result<TokenResponse, Error> {
        let url = endpoint_url(&self.api_base, "v1/access_token")?;
        let mut secrets: Vec<&str> = request_secrets.to_vec();
        secrets.push(creds.client_secret.expose_secret());
        let gate_arc = self.gates.gate(&creds.client_id);
        let (gate, url, secrets): (&crate::http::RateGate, &Url, &[&str]) =
            (&gate_arc, &url, &secrets);
        let driver = Driver {
            what: TOKEN_ENDPOINT,
            gate: Some(gate),
            policy: &self.retry,
            warn_on_failure: true,
        };
        let retry_if = |retryable: bool, err: Error| {
            if retryable {
                Attempt::Retry(err)
            } else {
                Attempt::Fail(err)
            }
        };
        driver
            .run_simple(|_| async move {
                let mut fields: Vec<(&str, &str)> = form.to_vec();
                let mut req = self.http.post(url.clone());
                match creds.auth {
                    ClientAuth::Form => {
                        fields.push(("client_id", &creds.client_id));
                        fields.push(("client_secret", creds.client_secret.expose_secret()));
                    }
                    ClientAuth::Basic => {
                        req = req.basic_auth(
                            &creds.client_id,
                            Some(creds.client_secret.expose_secret()),
                        );
                    }
                }
                let req = match build_request(
                    req.header(reqwest::header::ACCEPT, "application/json")
                        .form(&fields),
                    TOKEN_ENDPOINT,
                ) {
                    Ok(r) => r,
                    Err(e) => return Attempt::Fail(e),
                };
                let resp = match guarded_execute(&self.http, gate.health(), req).await {
                    Err(e) => return Attempt::Fail(e),
                    // A code is consumed, and a refresh token may be rotated (and the old one
                    // revoked), only by a request that reached the server: only a connection
                    // never made is safe to send again.
                    Ok(Err(e)) => {
                        return retry_if(e.is_connect(), network_error(TOKEN_ENDPOINT, &e));
                    }
                    Ok(Ok(resp)) => resp,
                };
                let status = resp.status().as_u16();
                let (tracking, wait) = answer_meta(&self.retry, &resp);
                match resp.bytes().await {
                    // The server answered: the request was processed.
                    Err(e) => Attempt::Fail(network_error(TOKEN_ENDPOINT, &e)),
                    Ok(body) if (200..300).contains(&status) => match TokenResponse::parse(&body) {
                        Ok(t) => Attempt::Done(t),
                        Err(e) => Attempt::Fail(e),
                    },
                    Ok(body) => {
                        let err = classify_token_error(status, tracking, wait, &body, secrets);
                        // 429 and 423 refuse the request before processing it; a 5xx may
                        // come after the server rotated the refresh token.
                        let retryable = matches!(status, 423 | 429);
                        retry_if(retryable, err)
                    }
                }
            })
            .await
    }
}

/// The tracking id and the wait a non-2xx answer asks for: a 429's `Retry-After` (defaulted
/// when absent or garbage), or a 423/503's when present.
fn answer_meta(
    policy: &RetryPolicy,
    resp: &reqwest::Response,
) -> (Option<String>, Option<Duration>) {
    let tracking = tracking_id(resp.headers(), None);
    let header = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    let wait = if resp.status().as_u16() == 429 {
        Some(policy.retry_after_from_header(header))
    } else {
        server_retry_after(policy, header)
    };
    (tracking, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_example_and_shape() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::generate();
        let v = p.verifier.expose_secret();
        assert_eq!(v.len(), 64);
        assert!(v.bytes().all(|b| PKCE_ALPHABET.contains(&b)));
        assert_eq!(p.challenge, pkce_challenge(v));
        assert_ne!(Pkce::generate().verifier.expose_secret(), v);
        assert!(!format!("{p:?}").contains(v));
    }

    #[test]
    fn authorize_url_shape() {
        let base = Url::parse("https://webexapis.com/").unwrap();
        let u = authorize_url(
            &base,
            "C123",
            "https://vault.example/callback?x=1",
            &["cjp:config_read", "spark:people_read"],
            "st+ate",
            "chal",
        );
        assert_eq!(u.path(), "/v1/authorize");
        let q = u.query().unwrap();
        assert!(
            q.contains("scope=cjp%3Aconfig_read%20spark%3Apeople_read"),
            "{q}"
        );
        assert!(q.contains("state=st%2Bate"), "{q}");
        let pairs: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], "C123");
        assert_eq!(pairs["redirect_uri"], "https://vault.example/callback?x=1");
        assert_eq!(pairs["scope"], "cjp:config_read spark:people_read");
        assert_eq!(pairs["state"], "st+ate");
        assert_eq!(pairs["code_challenge"], "chal");
        assert_eq!(pairs["code_challenge_method"], "S256");
        // A base without trailing slash is treated as a directory.
        let sim = Url::parse("http://127.0.0.1:9/sim").unwrap();
        assert_eq!(
            authorize_url(&sim, "C", "r", &[], "s", "c").path(),
            "/sim/v1/authorize"
        );
    }

    #[test]
    fn token_response_tolerates_missing_and_string_fields() {
        let t = TokenResponse::parse(
            br#"{"access_token":"ZDI3abc","expires_in":"1209600","refresh_token":"MDEy","refresh_token_expires_in":7776000}"#,
        )
        .unwrap();
        assert_eq!(t.access_token.expose_secret(), "ZDI3abc");
        assert_eq!(t.expires_in, Some(1_209_600));
        assert_eq!(t.refresh_token.as_ref().unwrap().expose_secret(), "MDEy");
        assert_eq!(t.refresh_token_expires_in, Some(7_776_000));
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.scope, None);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("ZDI3abc") && !dbg.contains("MDEy"), "{dbg}");

        let min =
            TokenResponse::parse(br#"{"access_token":"A","token_type":"bearer","scope":"a b"}"#)
                .unwrap();
        assert!(min.refresh_token.is_none() && min.expires_in.is_none());
        assert_eq!(min.token_type, "bearer");
        assert_eq!(min.scope.as_deref(), Some("a b"));
    }

    #[test]
    fn token_response_errors_never_echo_values() {
        for body in [
            &br#"{"access_token":""}"#[..],
            br#"{"refresh_token":"SECRETVALUE"}"#,
            br#"{"access_token":"SECRETVALUE","expires_in":"soon"}"#,
            br#"SECRETVALUE"#,
            br#"["SECRETVALUE"]"#,
        ] {
            let e = TokenResponse::parse(body).unwrap_err();
            assert!(matches!(e, Error::Decode { .. }));
            assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
        }
    }

    #[test]
    fn anatomy_splits_from_the_right() {
        let a = token_anatomy("ZDA4_x_y_PF84_1EB65FDF-9643-417F-9974-AD72CAE0E10F").unwrap();
        assert_eq!(a.cluster, "PF84");
        assert_eq!(a.org_id, "1eb65fdf-9643-417f-9974-ad72cae0e10f");
        assert_eq!(token_anatomy("abc_PF84_not-a-uuid"), None);
        assert_eq!(
            token_anatomy("PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f"),
            None
        );
        assert_eq!(
            token_anatomy("abc__1eb65fdf-9643-417f-9974-ad72cae0e10f"),
            None
        );
        assert_eq!(token_anatomy("opaque"), None);
    }

    #[test]
    fn org_uuid_conversion() {
        let uuid = "1eb65fdf-9643-417f-9974-ad72cae0e10f";
        let rest = base64::engine::general_purpose::STANDARD
            .encode(format!("ciscospark://us/ORGANIZATION/{uuid}"));
        assert_eq!(org_uuid_from_rest_id(&rest).as_deref(), Some(uuid));
        let unpadded = rest.trim_end_matches('=');
        assert_eq!(org_uuid_from_rest_id(unpadded).as_deref(), Some(uuid));
        assert_eq!(
            org_uuid_from_rest_id(&uuid.to_uppercase()).as_deref(),
            Some(uuid)
        );
        let person = base64::engine::general_purpose::STANDARD
            .encode(format!("ciscospark://us/PEOPLE/{uuid}"));
        assert_eq!(org_uuid_from_rest_id(&person), None);
        assert_eq!(org_uuid_from_rest_id("not base64 !"), None);
    }

    const BLOCKED: &str = "Access denied - Your administrator denied access to the integration you selected. We captured your request and will let them know";

    #[test]
    fn explains_access_denied_with_and_without_the_blocked_page() {
        let plain = explain_authorize_error("access_denied", None);
        assert!(
            plain.contains(
                "the user declined, or a Webex administrator has blocked this integration"
            ),
            "{plain}"
        );
        assert!(plain.contains(ALLOW_INTEGRATION_FIX), "{plain}");
        assert!(plain.contains("Management → Apps → Integrations"));
        let described =
            explain_authorize_error("access_denied", Some("The user denied the request."));
        assert!(
            described.contains("Webex said: \"The user denied the request.\""),
            "{described}"
        );

        for desc in [
            BLOCKED.to_owned(),
            BLOCKED.replace(' ', "+"),
            format!("  {}\n", BLOCKED.to_uppercase()),
        ] {
            let blocked = explain_authorize_error("access_denied", Some(&desc));
            assert!(
                blocked.starts_with("A Webex administrator has blocked this integration"),
                "{blocked}"
            );
            assert!(blocked.contains(ALLOW_INTEGRATION_FIX));
            assert!(blocked.contains("client id"));
            assert!(
                blocked.contains("declined"),
                "still mentions the other cause"
            );
        }
        // Error codes are matched case-insensitively and trimmed.
        assert!(explain_authorize_error(" ACCESS_DENIED\n", None).contains("declined"));
    }

    #[test]
    fn explains_invalid_scope_naming_the_scopes() {
        let e = explain_authorize_error(
            "invalid_scope",
            Some(
                "Invalid scope(s): spark-admin:recordings_read, cjp:config_read. See https://developer.webex.com/docs",
            ),
        );
        assert!(
            e.contains("not registered for spark-admin:recordings_read, cjp:config_read."),
            "{e}"
        );
        assert!(
            e.contains("developer portal") && e.contains("add them"),
            "{e}"
        );
        assert!(!e.contains("https"), "{e}");
        let one = explain_authorize_error(
            "invalid_scope",
            Some("scope cjp:config_read cjp:config_read is invalid"),
        );
        assert!(
            one.contains("registered for cjp:config_read. ") && one.contains("add it"),
            "{one}"
        );
        let none =
            explain_authorize_error("invalid_scope", Some("The requested scope is invalid."));
        assert!(none.contains("add every scope wxvault requests"), "{none}");
        assert!(none.contains("The requested scope is invalid."), "{none}");
        assert!(explain_authorize_error("invalid_scope", None).contains("developer portal"));
    }

    #[test]
    fn explains_temporary_and_unknown_errors() {
        for code in ["server_error", "temporarily_unavailable"] {
            let e = explain_authorize_error(code, Some("busy"));
            assert!(
                e.contains(code) && e.contains("again in a few minutes"),
                "{e}"
            );
            assert!(e.contains("busy"));
        }
        assert_eq!(
            explain_authorize_error("login_required", Some("The user is not signed in.")),
            "Webex answered login_required: The user is not signed in."
        );
        assert_eq!(
            explain_authorize_error("unsupported_response_type", None),
            "Webex answered unsupported_response_type"
        );
        assert_eq!(
            explain_authorize_error("", Some("")),
            "Webex answered an error without a code or description."
        );
        assert_eq!(
            explain_authorize_error("\t", Some("odd")),
            "Webex answered an error without a code: odd"
        );
    }

    #[test]
    fn explanations_strip_control_characters_and_survive_odd_input() {
        let e = explain_authorize_error(
            "weird\u{1b}[31m\u{0}code\u{202E}",
            Some("line one\r\nline\ttwo\u{7}\u{200B}!"),
        );
        assert_eq!(e, "Webex answered weird[31mcode: line one line two!");
        assert!(!e.chars().any(char::is_control), "{e:?}");
        let long = "é".repeat(10_000);
        let e = explain_authorize_error(&long, Some(&"ü ".repeat(10_000)));
        assert!(e.chars().count() < 500, "{}", e.chars().count());
        assert!(e.ends_with('…'));
        for (code, desc) in [
            ("access_denied", Some("\u{0}\u{0}")),
            ("invalid_scope", Some(":::: a: :b a:: ::b \u{FEFF}x:y")),
            ("💥", Some("🙂")),
            ("", None),
        ] {
            let e = explain_authorize_error(code, desc);
            assert!(!e.is_empty() && !e.chars().any(char::is_control), "{e:?}");
        }
        assert!(
            explain_authorize_error("invalid_scope", Some(":::: a: :b a:: ::b \u{FEFF}x:y"))
                .contains("registered for x:y.")
        );
        assert_eq!(clean_text("  a  b  ", 10), "a b");
        assert_eq!(clean_text("abcdef", 3), "abc…");
        assert_eq!(clean_text("abc", 3), "abc");
    }

    #[test]
    fn admin_error_classification() {
        let e = classify_admin_error(
            401,
            None,
            None,
            br#"{"message":"bad token tok-secret-1"}"#,
            &["tok-secret-1"],
        );
        assert!(matches!(e, Error::TokenRejected { .. }));
        assert_eq!(e.class(), crate::ErrorClass::Reauth);
        assert_eq!(e.reauth_kind(), Some(ReauthKind::GrantRevoked));
        assert_eq!(e.status(), Some(401));
        assert!(!e.to_string().contains("tok-secret-1"), "{e}");
        let e = classify_admin_error(
            403,
            Some("ROUTER_1".into()),
            None,
            br#"{"message":"missing scopes","trackingId":"ROUTER_2"}"#,
            &[],
        );
        assert_eq!(e.class(), crate::ErrorClass::Permanent);
        assert_eq!(e.tracking_id(), Some("ROUTER_1"));
        assert_eq!(e.status(), Some(403));
        let msg = e.to_string();
        assert!(
            msg.contains(TOKENS_WRITE_SCOPE) && msg.contains("Full, User or Device administrator"),
            "{msg}"
        );
        assert!(msg.contains("missing scopes"), "{msg}");
        for (status, class) in [
            (400, crate::ErrorClass::Permanent),
            (404, crate::ErrorClass::Permanent),
            (423, crate::ErrorClass::Transient),
            (429, crate::ErrorClass::Transient),
            (500, crate::ErrorClass::Transient),
            (503, crate::ErrorClass::Transient),
        ] {
            assert_eq!(
                classify_admin_error(status, None, None, b"", &[]).class(),
                class,
                "{status}"
            );
        }
    }

    #[test]
    fn token_error_classification_table() {
        let grant = |status: u16, body: &str| {
            classify_token_error(status, None, None, body.as_bytes(), &[])
        };
        let kind = |e: &Error| match e {
            Error::Grant { kind, .. } => Some(*kind),
            _ => None,
        };
        for (status, body, want) in [
            (
                400,
                r#"{"error":"invalid_grant"}"#,
                ReauthKind::GrantRevoked,
            ),
            (
                401,
                r#"{"error":"access_denied"}"#,
                ReauthKind::GrantRevoked,
            ),
            (
                401,
                r#"{"error":"invalid_client"}"#,
                ReauthKind::ClientCredentials,
            ),
            (
                400,
                r#"{"error":"unauthorized_client"}"#,
                ReauthKind::ClientCredentials,
            ),
            (
                400,
                r#"{"message":"bad","errors":[{"description":"Client Id is invalid"}],"trackingId":"ROUTER_1"}"#,
                ReauthKind::ClientCredentials,
            ),
            (400, r#"{"error":"invalid_scope"}"#, ReauthKind::Setup),
            (
                400,
                r#"{"error":"unsupported_grant_type"}"#,
                ReauthKind::Setup,
            ),
            (400, r#"{"error":"invalid_request"}"#, ReauthKind::Setup),
            (400, r#"{"error":"tokenlimit_reached"}"#, ReauthKind::Setup),
            (404, "", ReauthKind::Setup),
            (400, "<html>nope</html>", ReauthKind::Setup),
        ] {
            let e = grant(status, body);
            assert_eq!(kind(&e), Some(want), "{status} {body}");
            assert_eq!(e.class(), crate::ErrorClass::Reauth);
        }
        let routed = grant(
            400,
            r#"{"message":"bad","errors":[{"description":"Client Id is invalid"}],"trackingId":"ROUTER_1"}"#,
        );
        assert_eq!(routed.tracking_id(), Some("ROUTER_1"));
        match grant(400, "") {
            Error::Grant { code, .. } => assert_eq!(code, "http_400"),
            other => panic!("{other:?}"),
        }
        for status in [500, 502, 503, 504, 423, 429] {
            assert_eq!(
                grant(status, "").class(),
                crate::ErrorClass::Transient,
                "{status}"
            );
        }
        // Echoed secrets are redacted.
        let e = classify_token_error(
            400,
            None,
            None,
            br#"{"error":"invalid_grant","error_description":"refresh token rt-123456 expired"}"#,
            &["rt-123456"],
        );
        assert!(!e.to_string().contains("rt-123456"), "{e}");
        assert!(e.to_string().contains("invalid_grant"));
    }
}
