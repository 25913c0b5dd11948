//! `GET /v1/authorize` and `POST /v1/access_token` (webex-api.md §1.1–§1.3).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use url::Url;

use crate::config::{BLOCKED_PAGE_TEXT, ConsentMode, SimClient};
use crate::dataset::Org;
use crate::http::{escape_html, html, injected_5xx, latency, oauth_error, parse_pairs, too_many};
use crate::state::{Challenge, CodeEntry, GrantError, Issued, PendingConsent, Shared, lock};

fn redirect(mut target: Url, pairs: &[(&str, &str)], body: Option<&str>) -> Response {
    {
        let mut q = target.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    let mut resp = match body {
        Some(text) => html(StatusCode::FOUND, "Access denied", text),
        None => StatusCode::FOUND.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(target.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Scopes granted: requested ∩ registered, in request order.
pub(crate) fn grantable(shared: &Shared, requested: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in requested {
        if shared.cfg.registered_scopes.iter().any(|r| r == s) && !out.iter().any(|o| o == s) {
            out.push((*s).to_owned());
        }
    }
    out
}

/// The consent page: decides at once according to the configured [`ConsentMode`], or
/// (interactive) shows a page whose buttons post to [`authorize_decision`].
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Response {
    shared.count("authorize");
    latency(&shared).await;
    let p = parse_pairs(q.as_deref());
    let get = |k: &str| p.get(k).map(String::as_str);

    let Some(client) = get("client_id").and_then(|id| find_client(&shared, id)) else {
        return html(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Client Id is invalid",
        );
    };
    let redirect_uri = match get("redirect_uri") {
        Some(uri)
            if client.redirect_uris.is_empty() || client.redirect_uris.iter().any(|r| r == uri) =>
        {
            uri.to_owned()
        }
        Some(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "redirect_uri is not registered for this integration",
            );
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return html(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "redirect_uri is required",
            );
        }
    };
    let Ok(target) = Url::parse(&redirect_uri) else {
        return html(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "redirect_uri is not an absolute URI",
        );
    };
    let state = get("state");
    let fail = |error: &str, description: &str| {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        redirect(target.clone(), &pairs, None)
    };
    if get("response_type") != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    let requested: Vec<&str> = get("scope").unwrap_or("").split_whitespace().collect();
    let scopes = grantable(&shared, &requested);
    if scopes.is_empty() {
        return fail("invalid_scope", "The requested scope is invalid.");
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some(Challenge {
            value: c.to_owned(),
            method_s256: false,
        }),
        (Some(c), Some("S256")) => Some(Challenge {
            value: c.to_owned(),
            method_s256: true,
        }),
        (Some(_), Some(_)) => {
            return fail("invalid_request", "Unsupported code_challenge_method");
        }
    };
    let mode = *lock(&shared.consent);
    match mode {
        ConsentMode::Deny => fail("access_denied", "The user denied the request."),
        ConsentMode::Blocked => {
            let mut pairs = vec![
                ("error", "access_denied"),
                ("error_description", BLOCKED_PAGE_TEXT),
            ];
            if let Some(s) = state {
                pairs.push(("state", s));
            }
            redirect(target, &pairs, Some(BLOCKED_PAGE_TEXT))
        }
        ConsentMode::Approve | ConsentMode::Interactive => {
            let Some(org) = pick_org(&shared, get("login_hint")) else {
                return fail("server_error", "No organization is available.");
            };
            let now = shared.now_ms();
            if mode == ConsentMode::Interactive {
                let request = lock(&shared.auth).new_consent(
                    PendingConsent {
                        client_id: client.client_id.clone(),
                        org_id: org.id.clone(),
                        redirect_uri: get("redirect_uri").map(str::to_owned),
                        target,
                        state: state.map(str::to_owned),
                        scopes: scopes.clone(),
                        challenge,
                        expires_ms: 0,
                    },
                    now,
                );
                return consent_page(&client.client_id, &scopes, org, &request);
            }
            let code = lock(&shared.auth).new_code(
                CodeEntry {
                    client_id: client.client_id.clone(),
                    org_id: org.id.clone(),
                    redirect_uri: get("redirect_uri").map(str::to_owned),
                    scopes,
                    challenge,
                    expires_ms: 0,
                    redeemed: None,
                },
                now,
            );
            let mut pairs = vec![("code", code.as_str())];
            if let Some(s) = state {
                pairs.push(("state", s));
            }
            redirect(target, &pairs, None)
        }
    }
}

/// The org a consent connects: the `login_hint` (org id or name) when it names
/// one, otherwise the first org, as if the first org's admin signed in.
fn pick_org<'a>(shared: &'a Shared, hint: Option<&str>) -> Option<&'a Org> {
    hint.and_then(|hint| {
        shared
            .data
            .orgs
            .iter()
            .find(|o| o.id == hint || o.name.eq_ignore_ascii_case(hint))
    })
    .or_else(|| shared.data.orgs.first())
}

/// The interactive consent page ([`ConsentMode::Interactive`]): what is asked, for
/// which org, and a form posting the single-use `request` id with the clicked button.
fn consent_page(client_id: &str, scopes: &[String], org: &Org, request: &str) -> Response {
    let items: String = scopes
        .iter()
        .map(|s| format!("<li class=\"scope\">{}</li>", escape_html(s)))
        .collect();
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Webex \u{2014} Authorize</title></head><body>\
         <h1>Webex \u{2014} Authorize</h1>\
         <p>The integration <code id=\"client-id\">{client}</code> asks for access to:</p>\
         <ul id=\"scopes\">{items}</ul>\
         <p>It will connect the organization <strong id=\"org-name\">{org_name}</strong> \
         (<code id=\"org-id\">{org_id}</code>).</p>\
         <form method=\"post\" action=\"/v1/authorize/decision\">\
         <input type=\"hidden\" name=\"request\" value=\"{request}\">\
         <button type=\"submit\" id=\"accept\" name=\"decision\" value=\"accept\">Accept</button> \
         <button type=\"submit\" id=\"decline\" name=\"decision\" value=\"decline\">Decline</button>\
         </form></body></html>",
        client = escape_html(client_id),
        org_name = escape_html(&org.name),
        org_id = escape_html(&org.id),
        request = escape_html(request),
    );
    let mut resp = (StatusCode::OK, axum::response::Html(page)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    resp
}

/// `POST /v1/authorize/decision` (form `request`, `decision=accept|decline`): the
/// interactive consent page's buttons. Accept redirects with `code` and `state`,
/// Decline with `error=access_denied`; an unknown, used or expired request is a 400 page.
pub(crate) async fn authorize_decision(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.count("authorize_decision");
    latency(&shared).await;
    let form = parse_pairs(std::str::from_utf8(&body).ok());
    let accept = match form.get("decision").map(String::as_str) {
        Some("accept") => true,
        Some("decline") => false,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "decision must be accept or decline",
            );
        }
    };
    let now = shared.now_ms();
    let pending = form
        .get("request")
        .and_then(|id| lock(&shared.auth).take_consent(id));
    let Some(pending) = pending else {
        return html(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "This authorization request is unknown or has already been answered. Start again from the application.",
        );
    };
    if now >= pending.expires_ms {
        return html(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "This authorization request has expired. Start again from the application.",
        );
    }
    let state = pending.state.as_deref();
    if !accept {
        let mut pairs = vec![
            ("error", "access_denied"),
            ("error_description", "The user denied the request."),
        ];
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        return redirect(pending.target.clone(), &pairs, None);
    }
    let code = lock(&shared.auth).new_code(
        CodeEntry {
            client_id: pending.client_id.clone(),
            org_id: pending.org_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            scopes: pending.scopes.clone(),
            challenge: pending.challenge.clone(),
            expires_ms: 0,
            redeemed: None,
        },
        now,
    );
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect(pending.target.clone(), &pairs, None)
}

fn find_client<'a>(shared: &'a Shared, id: &str) -> Option<&'a SimClient> {
    shared.cfg.clients.iter().find(|c| c.client_id == id)
}

/// Client credentials from `Authorization: Basic` (preferred) or the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Option<(String, String, bool)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
        };
        return Some((dec(id), dec(secret), true));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
        false,
    ))
}

fn issued_json(shared: &Shared, i: &Issued) -> Response {
    let mut body = json!({
        "access_token": i.access_token,
        "expires_in": i.expires_in,
        "refresh_token": i.refresh_token,
        "refresh_token_expires_in": i.refresh_token_expires_in,
        "scope": i.scopes.join(" "),
    });
    if !shared.faults().omit_token_type {
        body["token_type"] = json!("Bearer");
    }
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Token endpoint: `authorization_code` and `refresh_token` grants.
pub(crate) async fn access_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count("access_token");
    latency(&shared).await;
    let token_latency = shared.faults().token_latency_ms;
    if token_latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(token_latency)).await;
    }
    if shared.roll(shared.faults().error_5xx_rate) {
        return injected_5xx(&shared);
    }
    let bad = |status, code: &str, desc: &str, basic: bool| {
        oauth_error(&shared, status, code, desc, basic)
    };
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_type {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
            false,
        );
    }
    let form = parse_pairs(std::str::from_utf8(&body).ok());
    let Some((client_id, secret, basic)) = client_credentials(&headers, &form) else {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
            true,
        );
    };
    match find_client(&shared, &client_id) {
        Some(c) if c.client_secret == secret => {}
        _ => {
            return bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed.",
                basic,
            );
        }
    }
    if shared.cfg.rate_limit_token_endpoint {
        if let Err(secs) = shared.rate_check(&client_id) {
            return too_many(&shared, &client_id, secs);
        }
        if shared.roll(shared.faults().rate_429_rate) {
            let secs = 1 + shared.pick_index(5);
            return too_many(&shared, &client_id, secs);
        }
    }
    let cfg = &shared.cfg;
    let now = shared.now_ms();
    let result: Result<Issued, GrantError> = match form.get("grant_type").map(String::as_str) {
        None => Err(GrantError::new(
            "invalid_request",
            "grant_type is required.",
        )),
        Some("authorization_code") => match form.get("code") {
            None => Err(GrantError::new("invalid_request", "code is required.")),
            Some(code) => lock(&shared.auth).redeem_code(
                &client_id,
                code,
                form.get("redirect_uri").map(String::as_str),
                form.get("code_verifier").map(String::as_str),
                now,
                cfg.access_ttl_secs,
                cfg.refresh_ttl_secs,
            ),
        },
        Some("refresh_token") => match form.get("refresh_token") {
            None => Err(GrantError::new(
                "invalid_request",
                "refresh_token is required.",
            )),
            Some(rt) => lock(&shared.auth).refresh(
                &client_id,
                rt,
                now,
                cfg.access_ttl_secs,
                cfg.refresh_ttl_secs,
                cfg.rotate_refresh_tokens,
            ),
        },
        Some(_) => Err(GrantError::new(
            "unsupported_grant_type",
            "The grant type is not supported.",
        )),
    };
    let refresh = form.get("grant_type").map(String::as_str) == Some("refresh_token");
    match result {
        Ok(issued) => {
            if refresh {
                lock(&shared.stats).refresh_grants += 1;
            }
            issued_json(&shared, &issued)
        }
        Err(e) => {
            if e.code == "invalid_grant" {
                lock(&shared.stats).invalid_grant += 1;
            }
            bad(StatusCode::BAD_REQUEST, e.code, e.description, false)
        }
    }
}

/// OIDC discovery document, pointing at this simulator.
pub(crate) async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let base = shared.base_url.as_str().trim_end_matches('/');
    axum::Json(json!({
        "issuer": format!("{base}/idb"),
        "authorization_endpoint": format!("{base}/v1/authorize"),
        "token_endpoint": format!("{base}/v1/access_token"),
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "response_types_supported": ["code", "token", "id_token", "id_token token"],
    }))
    .into_response()
}
