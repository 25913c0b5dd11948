//! The customer admin's path: invite link → connect page → Webex → callback → success page.
//!
//! The invite token only ever appears in the link the operator sends. Opening it starts a
//! connect session (cookie) bound to the invite and redirects to the token-less `/connect`, so
//! the token leaves the address bar and history at once. The OAuth `state` is stored hashed and
//! bound to that session; the callback takes it once (vault), so a replayed or foreign answer
//! finds nothing. Order at the callback: take the pending authorization, exchange the code,
//! consume the invite, store the org — an invite is used up only by a connection that worked.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use engine::onboard::{ConnectTarget, explain_refusal, scopes_for};
use maud::{Markup, html};
use secrecy::SecretString;
use serde::Deserialize;
use vault::{Invite, InviteStatus, NewPendingAuth, Org};

use crate::outcome;
use crate::pages::{layout, when};
use crate::security::{self, CONNECT};
use crate::throttle::ClientAddr;
use crate::{AppState, WebError};

/// How long a browser may take from the connect page to the callback.
const CONNECT_SESSION_MS: i64 = 60 * 60 * 1000;
/// How long Webex's consent may take.
const PENDING_AUTH_MS: i64 = 15 * 60 * 1000;

/// Regions offered when the invite does not fix one: the list the CLI checks `--region` against.
pub(crate) use engine::regions::KNOWN_REGIONS;

/// Charges one stored connect record to the client's address, or refuses: the page says to use
/// the connect page already open rather than open the link again.
fn charge_address(app: &AppState, addr: ClientAddr) -> Result<(), WebError> {
    if app.addresses.charge(addr, app.now_ms()) {
        return Ok(());
    }
    tracing::warn!(client = ?addr.0, "connect refused: too many connect attempts from one address");
    Err(WebError::refused(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many connection attempts came from your network in the last hour, so this one was not started.",
        "Use the connect page already open in your browser, or try again in an hour.",
    ))
}

fn start_again(app: &AppState) -> String {
    format!(
        "Open the invitation link again in this browser, or ask {} for a new one.",
        app.settings.vendor_name
    )
}

/// `GET /connect?invite=…` starts a connect session for an open invite; `GET /connect` shows
/// the page for the session's invite.
pub(crate) async fn connect_page(
    State(app): State<AppState>,
    addr: ClientAddr,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let now = app.now_ms();
    if let Some(token) = q.get("invite") {
        let invite = app.engine.vault.invite_by_token(token.trim(), now).await?;
        let invite = usable(&app, invite)?;
        // Opening the same link again (a second tab, a refresh) keeps the browser's session, so
        // a connection already under way in another tab is not broken.
        if let Some(current) = security::current(&app, &jar, CONNECT, "connect").await?
            && current.session.subject == invite.id.to_string()
        {
            return Ok(Redirect::to("/connect").into_response());
        }
        charge_address(&app, addr)?;
        let issued = app
            .engine
            .vault
            .create_session(
                "connect",
                &invite.id.to_string(),
                CONNECT_SESSION_MS.min(invite.expires_at_ms - now),
                now,
            )
            .await?;
        let jar = security::set_session(jar, &app.settings, CONNECT, &issued);
        return Ok((jar, Redirect::to("/connect")).into_response());
    }
    let (current, invite) = connect_session(&app, &jar).await?;
    let existing = app.engine.vault.org_by_name(&invite.org_name).await?;
    Ok(connect_view(&app, &invite, existing.as_ref(), &current.csrf)?.into_response())
}

/// The invite of this browser's connect session, still open.
async fn connect_session(
    app: &AppState,
    jar: &CookieJar,
) -> Result<(security::Current, Invite), WebError> {
    let Some(current) = security::current(app, jar, CONNECT, "connect").await? else {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Invitation needed",
            "This browser has no invitation open, or it was opened more than an hour ago.",
            start_again(app),
        ));
    };
    let invite_id: i64 = current
        .session
        .subject
        .parse()
        .map_err(|_| WebError::Internal("a connect session names no invite".into()))?;
    let invite = app
        .engine
        .vault
        .invite_by_id(invite_id, app.now_ms())
        .await?;
    let invite = usable(app, invite)?;
    Ok((current, invite))
}

/// An open invite, or the page saying why the link no longer works.
fn usable(app: &AppState, invite: Option<Invite>) -> Result<Invite, WebError> {
    let vendor = &app.settings.vendor_name;
    let Some(invite) = invite else {
        return Err(WebError::refused(
            StatusCode::NOT_FOUND,
            "Invitation not valid",
            "This invitation link is not valid.",
            format!("Check that you opened the whole link, or ask {vendor} for a new one."),
        ));
    };
    let gone = |problem: String| {
        Err(WebError::refused(
            StatusCode::GONE,
            "Invitation no longer valid",
            problem,
            format!("Ask {vendor} for a new invitation link."),
        ))
    };
    match invite.status {
        InviteStatus::Open => Ok(invite),
        InviteStatus::Expired => gone(format!(
            "This invitation expired on {}.",
            when(invite.expires_at_ms)
        )),
        InviteStatus::Used => gone(format!(
            "This invitation was already used to connect {} on {}. Nothing more is needed unless the connection has to be renewed.",
            invite.org_name,
            invite.used_at_ms.map(when).unwrap_or_default()
        )),
        InviteStatus::Revoked => gone("This invitation was withdrawn.".to_string()),
    }
}

fn connect_view(
    app: &AppState,
    invite: &Invite,
    existing: Option<&Org>,
    csrf: &str,
) -> Result<Markup, WebError> {
    let scopes = scopes_for(&invite.sources)?;
    let vendor = &app.settings.vendor_name;
    let region = invite
        .region
        .as_deref()
        .or(existing.map(|o| o.region.as_str()));
    let body = html! {
        section.card {
            @if existing.is_some() {
                h1 { "Re-connect your Webex organization" }
                p { strong { (vendor) } " needs you to renew its access to the Webex recordings of "
                    strong id="org-name" { (invite.org_name) } ". The previous authorization stopped working." }
            } @else {
                h1 { "Connect your Webex organization" }
                p { strong { (vendor) } " asks for read access to archive the Webex recordings of "
                    strong id="org-name" { (invite.org_name) } " into storage it controls for you." }
            }
            h2 { "What you allow" }
            ul.scopes id="scopes" {
                @for (scope, why) in &scopes {
                    li { code { (scope) } " — to " (why) "." }
                }
            }
            p.muted { "Read access only: nothing in your Webex configuration is changed. You can withdraw it at any time in Control Hub (Management → Apps → Integrations)." }
            h2 { "Before you continue" }
            p { "Sign in to Webex as an administrator of your organization's Contact Center. No password or key is shared with " (vendor) ": Webex asks you to accept, then sends you back here." }
            form method="post" action="/connect/start" {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(r) = region {
                    p.muted { "Region: " code id="region" { (r) } }
                } @else {
                    label for="region" { "Your Contact Center region" }
                    select id="region" name="region" required {
                        @for (code, name) in KNOWN_REGIONS {
                            option value=(code) { (name) }
                        }
                    }
                }
                p { button id="connect" type="submit" { "Connect with Webex" } }
            }
            p.muted { small { "This invitation works once and expires " (when(invite.expires_at_ms)) "." } }
        }
    };
    Ok(layout("Connect", None, body))
}

#[derive(Deserialize)]
pub(crate) struct StartForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    region: Option<String>,
}

/// `POST /connect/start`: stores the pending authorization bound to this browser and sends the
/// browser to Webex's authorize page (built from configuration only).
pub(crate) async fn start(
    State(app): State<AppState>,
    addr: ClientAddr,
    jar: CookieJar,
    Form(form): Form<StartForm>,
) -> Result<Response, WebError> {
    let (current, invite) = connect_session(&app, &jar).await?;
    security::check_csrf(&current, &form.csrf)?;
    let existing = app.engine.vault.org_by_name(&invite.org_name).await?;
    let region = match (&existing, &invite.region, form.region.as_deref()) {
        (Some(org), _, _) => org.region.clone(),
        (None, Some(r), _) => r.clone(),
        (None, None, Some(r)) if KNOWN_REGIONS.iter().any(|(code, _)| *code == r.trim()) => {
            r.trim().to_string()
        }
        (None, None, _) => {
            return Err(WebError::refused(
                StatusCode::BAD_REQUEST,
                "Region needed",
                "Choose your Contact Center region before connecting.",
                "Go back and pick the region from the list.",
            ));
        }
    };
    let client_id = match &existing {
        Some(org) => org.client_id.clone(),
        None => match (&invite.client_id, &app.settings.integration) {
            (Some(id), Some(i)) if *id != i.client_id => {
                return Err(WebError::Config(format!(
                    "invite #{} asks for integration {id}, but serve only holds the secret of {}",
                    invite.id, i.client_id
                )));
            }
            (_, Some(i)) => i.client_id.clone(),
            (_, None) => {
                return Err(WebError::Config(
                    "no integration is configured for new orgs: set [serve] client_id and WXVAULT_CLIENT_SECRET".into(),
                ));
            }
        },
    };
    let redirect_uri = app.settings.redirect_uri();
    let pending = app
        .engine
        .begin_connect(&client_id, &redirect_uri, &invite.sources)?;
    let authorize_url = pending.authorize_url.clone();
    let scopes = pending.scopes.clone();
    let (state, verifier) = pending.into_secrets();
    charge_address(&app, addr)?;
    app.engine
        .vault
        .put_pending_auth(
            NewPendingAuth {
                state,
                browser_session: SecretString::from(current.id.clone()),
                invite_id: Some(invite.id),
                org_name: invite.org_name.clone(),
                client_id,
                region: Some(region),
                redirect_uri,
                code_verifier: verifier,
                scopes,
                ttl_ms: PENDING_AUTH_MS,
            },
            app.now_ms(),
        )
        .await?;
    tracing::info!(invite = invite.id, org = %invite.org_name, "sending the browser to Webex to authorize");
    Ok(hand_off(authorize_url.as_str()).into_response())
}

/// The page that moves the browser on to Webex (see `security::CSP` for why this is not a
/// redirect): a meta refresh, and a link for browsers that do not follow it.
fn hand_off(url: &str) -> Markup {
    let body = html! {
        section.card {
            h1 { "On to Webex" }
            p { "Webex asks you to sign in and accept. If nothing happens, "
                a id="to-webex" href=(url) { "continue to Webex" } "." }
        }
    };
    html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0;url={url}"));
                title { "On to Webex · wxvault" }
                link rel="stylesheet" href="/static/app.css";
            }
            body { main { (body) } }
        }
    }
}

/// `GET /oauth/callback`: Webex's answer.
pub(crate) async fn callback(
    State(app): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let retry = start_again(&app);
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The answer from Webex carries no state, so it cannot be matched to a connection started here. Nothing was stored.",
            retry,
        ));
    };
    let Some(browser) = jar.get(&security::cookie_name(&app.settings, CONNECT)) else {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "This browser did not start a connection here (no connect session), so the answer from Webex was not accepted. Nothing was stored.",
            retry,
        ));
    };
    let browser = browser.value().to_string();
    let now = app.now_ms();
    let Some(pending) = app
        .engine
        .vault
        .take_pending_auth(state, &browser, now)
        .await?
    else {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "This answer from Webex was already used, has expired, or belongs to another browser. Nothing was stored.",
            retry,
        ));
    };
    if let Some(error) = q.get("error") {
        let msg = explain_refusal(
            error,
            q.get("error_description").map(String::as_str),
            &pending.scopes,
        );
        return Err(WebError::refused(
            StatusCode::FORBIDDEN,
            "Not connected",
            msg,
            format!(
                "The integration's client id is {}. When that is fixed, open the invitation link again and click Connect with Webex.",
                pending.client_id
            ),
        ));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The answer from Webex carries neither a code nor an error. Nothing was stored.",
            retry,
        ));
    };

    let invite = match pending.invite_id {
        Some(id) => app.engine.vault.invite_by_id(id, now).await?,
        None => None,
    };
    // Withdrawn or expired while the admin was at Webex: stop before the code becomes a grant.
    if let Some(i) = &invite
        && i.status != InviteStatus::Open
    {
        return Err(usable(&app, Some(i.clone())).err().unwrap_or_else(|| {
            WebError::Internal("an invite is not open but has no reason".into())
        }));
    }
    let sources = invite
        .as_ref()
        .map(|i| i.sources.clone())
        .unwrap_or_else(|| vec!["wxcc".into()]);
    let existing = app.engine.vault.org_by_name(&pending.org_name).await?;
    // A re-connected org's access token before this connection, to tell afterwards whether
    // this connection's tokens were written.
    let mut stored_before = None;
    let (target, secret) = match &existing {
        Some(org) => {
            if org.client_id != pending.client_id {
                return Err(WebError::refused(
                    StatusCode::CONFLICT,
                    "Not connected",
                    format!(
                        "{} is connected through another integration than this authorization used. Nothing was stored.",
                        org.name
                    ),
                    retry,
                ));
            }
            let secrets = app.engine.vault.org_secrets(org).await?;
            stored_before = Some(secrets.access_token);
            let mut target = ConnectTarget::for_org(org);
            if let Some(i) = &invite {
                // The operator's re-connect link may name other sources: the org takes them
                // once Webex grants the connection.
                target.sources = i.sources.clone();
            }
            (target, secrets.client_secret)
        }
        None => {
            let Some(integration) = app
                .settings
                .integration
                .as_ref()
                .filter(|i| i.client_id == pending.client_id)
            else {
                return Err(WebError::Config(
                    "the integration this authorization used is no longer configured ([serve] client_id)".into(),
                ));
            };
            let region = pending.region.clone().ok_or_else(|| {
                WebError::Internal("a pending authorization for a new org has no region".into())
            })?;
            (
                ConnectTarget {
                    name: pending.org_name.clone(),
                    region,
                    client_id: integration.client_id.clone(),
                    client_auth: integration.client_auth,
                    sources,
                },
                integration.client_secret.clone(),
            )
        }
    };
    let exchanged = match app
        .engine
        .exchange_code(
            &target,
            &secret,
            code,
            &pending.redirect_uri,
            &pending.code_verifier,
        )
        .await
    {
        Ok(x) => x,
        Err(engine::EngineError::Webex(e)) => {
            tracing::warn!(org = %target.name, error = %e, "code exchange refused");
            return Err(WebError::refused(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                format!(
                    "Webex did not accept the authorization ({}). An authorization code works once and only for a few minutes. Nothing was stored.",
                    e
                ),
                retry,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Refuse what storing would refuse before the invite is used up.
    if let Some(problem) = outcome::conflict(&app, existing.as_ref(), exchanged.org_id()).await? {
        tracing::warn!(org = %target.name, webex_org = %exchanged.org_id(), %problem, "connect refused");
        return Err(WebError::refused(
            StatusCode::CONFLICT,
            "Not connected",
            problem,
            "Open the invitation link again and sign in as an administrator of the right Webex organization.",
        ));
    }
    if let Some(invite_id) = pending.invite_id
        && app
            .engine
            .vault
            .consume_invite(invite_id, now)
            .await
            .is_err()
    {
        return Err(WebError::refused(
            StatusCode::GONE,
            "Not connected",
            "This invitation was used up or withdrawn while you were at Webex. Nothing was stored.",
            format!(
                "Ask {} for a new invitation link.",
                app.settings.vendor_name
            ),
        ));
    }
    let webex_org = exchanged.org_id().to_string();
    let connected = match app
        .engine
        .store_connected(
            &target,
            secret,
            exchanged,
            &pending.scopes,
            "the connect page",
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let written = outcome::org_written(&app, &target.name, &webex_org, stored_before).await;
            if !written {
                // Nothing stored: give the invite back so the same link works again.
                if let Some(invite_id) = pending.invite_id
                    && let Err(r) = app.engine.vault.release_invite(invite_id).await
                {
                    tracing::error!(invite = invite_id, error = %r, "cannot release the invite");
                }
                return Err(e.into());
            }
            // The org row holds this connection: the invite stays used (releasing it would
            // reopen a link that already connected), and the failure is reported as it is.
            tracing::error!(
                org = %target.name,
                webex_org = %webex_org,
                invite = ?pending.invite_id,
                error = %e,
                "the org was stored but finishing the connection failed; the invite stays used"
            );
            return Err(WebError::refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Connected, with a problem",
                format!(
                    "Your Webex organization was connected to {}, but wxvault could not finish recording the connection. The invitation is used up.",
                    app.settings.vendor_name
                ),
                format!(
                    "Nothing more is needed from you now; tell {} so they can check the service's log.",
                    app.settings.vendor_name
                ),
            ));
        }
    };
    if !connected.missing.is_empty() {
        let notice = app.engine.notice(
            &connected.org,
            "missing_scope",
            &format!(
                "connected, but Webex did not grant {}; add the scope to the integration in the developer portal, then re-connect. {}",
                connected.missing.join(", "),
                engine::onboard::missing_scope_advice(&connected.org.sources, &connected.missing)
                    .join(" ")
            ),
        );
        app.engine.notify(&[notice]).await;
    }
    app.engine.vault.end_session(&browser).await?;
    let jar = security::clear_session(jar, &app.settings, CONNECT);
    tracing::info!(
        org = %connected.org.name,
        org_id = %connected.org.org_id,
        reconnected = connected.reconnected,
        "org connected through the connect page"
    );
    Ok((jar, outcome::success(&app, &connected)).into_response())
}
