//! The operator's side: sign-in, the dashboard (one row per org with token health and counts,
//! a banner for orgs that need re-authorization), invites, and one-click re-connect.

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use engine::OrgStatusView;
use engine::lifecycle::REFRESH_WARNING_MS;
use maud::{Markup, html};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use vault::{Invite, InviteStatus, NewInvite, OrgStatus};

use crate::connect::KNOWN_REGIONS;
use crate::pages::{layout, relative, when};
use crate::security::{self, CONNECT, Current, OPERATOR};
use crate::{AppState, WebError};

/// How long a re-connect invite made from the dashboard stays usable.
const RECONNECT_INVITE_MS: i64 = 24 * 60 * 60 * 1000;

async fn operator(app: &AppState, jar: &CookieJar) -> Result<Current, WebError> {
    security::current(app, jar, OPERATOR, "operator")
        .await?
        .ok_or(WebError::SignIn)
}

pub(crate) async fn login_page(State(app): State<AppState>) -> Markup {
    login_view(&app, None)
}

fn login_view(app: &AppState, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.card {
                h1 { "Operator sign-in" }
                @if let Some(p) = problem { p id="problem" .health.bad { (p) } }
                @if app.settings.operator_password_hash.is_none() {
                    p id="problem" .health.bad { "No operator password is set: add [serve] operator_password_hash to wxvault.toml (create it with wxvault hash-password) and restart." }
                }
                form method="post" action="/login" {
                    label for="password" { "Password" }
                    input id="password" type="password" name="password" autocomplete="current-password" required;
                    p { button id="sign-in" type="submit" { "Sign in" } }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    password: String,
}

/// `POST /login`: argon2id verification off the async threads; always lands on `/`.
pub(crate) async fn login(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = app.now_ms();
    // Reserved before the argon2id permit and counted until the password proves right, so
    // concurrent guesses and abandoned requests all count against the window.
    let Some(attempt) = app.logins.reserve(now) else {
        return Ok(sign_in_paused(&app));
    };
    let password = SecretString::from(form.password);
    let ok = match app.settings.operator_password_hash.clone() {
        Some(hash) if !password.expose_secret().is_empty() => {
            let _permit = app.logins.checks.acquire().await;
            if !app.logins.still_allowed(attempt, app.now_ms()) {
                return Ok(sign_in_paused(&app));
            }
            tokio::task::spawn_blocking(move || vault::verify_password(&password, &hash))
                .await
                .unwrap_or(false)
        }
        _ => false,
    };
    if !ok {
        tracing::warn!("operator sign-in refused: wrong password");
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_view(&app, Some("That password is not right.")),
        )
            .into_response());
    }
    app.logins.succeeded(attempt);
    let issued = app
        .engine
        .vault
        .create_session("operator", "operator", app.settings.session_ttl_ms, now)
        .await?;
    // Best effort housekeeping: expired sessions and pending authorizations go.
    if let Err(e) = app.engine.vault.purge_expired(now).await {
        tracing::warn!(error = %e, "purging expired sessions failed");
    }
    tracing::info!("operator signed in");
    let jar = security::set_session(jar, &app.settings, OPERATOR, &issued);
    Ok((jar, Redirect::to("/")).into_response())
}

fn sign_in_paused(app: &AppState) -> Response {
    tracing::warn!("operator sign-in paused after repeated failures");
    (
        StatusCode::TOO_MANY_REQUESTS,
        login_view(
            app,
            Some("Too many failed sign-ins. Wait a few minutes, then try again."),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    let current = operator(&app, &jar).await?;
    security::check_csrf(&current, &form.csrf)?;
    app.engine.vault.end_session(&current.id).await?;
    let jar = security::clear_session(jar, &app.settings, OPERATOR);
    Ok((jar, Redirect::to("/login")).into_response())
}

/// `GET /`: the dashboard.
pub(crate) async fn dashboard(
    State(app): State<AppState>,
    jar: CookieJar,
) -> Result<Markup, WebError> {
    let current = operator(&app, &jar).await?;
    let views = app.engine.status().await?;
    let invites = app.engine.vault.invites().await?;
    Ok(dashboard_view(
        &app,
        &views,
        &invites,
        &current.csrf,
        app.now_ms(),
    ))
}

/// Token health in a few words and a class: `ok`, `warn` or `bad`.
fn health(org: &vault::Org, now: i64) -> (&'static str, String) {
    match &org.status {
        OrgStatus::NeedsReauth { .. } => ("bad", "needs re-authorization".into()),
        OrgStatus::Active => match org.refresh_expires_at_ms {
            Some(exp) if exp <= now => ("bad", "refresh token expired".into()),
            Some(exp) if exp - now < REFRESH_WARNING_MS => (
                "warn",
                format!("refresh token expires {}", relative(now, exp)),
            ),
            _ => ("ok", "healthy".into()),
        },
    }
}

fn dashboard_view(
    app: &AppState,
    views: &[OrgStatusView],
    invites: &[Invite],
    csrf: &str,
    now: i64,
) -> Markup {
    let attention: Vec<&OrgStatusView> = views
        .iter()
        .filter(|v| matches!(v.org.status, OrgStatus::NeedsReauth { .. }))
        .collect();
    let body = html! {
        h1 { "Organizations" }
        @if !attention.is_empty() {
            section.banner id="attention" {
                h2 { (attention.len()) " org(s) need re-authorization" }
                p { "Webex no longer accepts their authorization, so nothing is archived for them until an administrator of that org connects it again." }
                ul {
                    @for v in &attention {
                        li data-org=(v.org.name) {
                            strong { (v.org.name) } ": "
                            @if let OrgStatus::NeedsReauth { reason } = &v.org.status { (reason) }
                            " "
                            form.inline method="post" action="/orgs/reconnect" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="org" value=(v.org.name);
                                button type="submit" name="how" value="now" { "Re-connect now" }
                                " "
                                button.secondary type="submit" name="how" value="link" { "Link for their admin" }
                            }
                        }
                    }
                }
            }
        }
        @if views.is_empty() {
            section.card { p id="no-orgs" { "No org is connected yet. Create an invitation below and send the link to the customer's Webex administrator." } }
        } @else {
            table id="orgs" {
                thead { tr {
                    th { "Org" } th { "Region" } th { "Sources" } th { "Token health" }
                    th { "Access token" } th { "Refresh token" } th { "Last refresh" } th { "Synced up to" }
                    th { "Archived" } th { "Pending" } th { "Missing" } th { "Failed" }
                } }
                tbody {
                    @for v in views {
                        @let (class, text) = health(&v.org, now);
                        tr data-org=(v.org.name) {
                            td { strong { (v.org.name) } br; small { code.orgid { (v.org.org_id) } } }
                            td { (v.org.region) }
                            td { (v.org.sources.join(", ")) }
                            td { span class=(format!("health {class}")) { (text) } }
                            td { (v.org.access_expires_at_ms.map(|t| if t > now { format!("expires {}", relative(now, t)) } else { "expired (renewed on use)".to_string() }).unwrap_or_else(|| "unknown".into())) }
                            td.refresh { (v.org.refresh_expires_at_ms.map(|t| format!("expires {}", relative(now, t))).unwrap_or_else(|| "unknown".into())) }
                            td { (v.org.last_refresh_at_ms.map(|t| relative(now, t)).unwrap_or_else(|| "never".into())) }
                            td { (v.last_window_end.as_deref().map(crate::pages::when_rfc3339).unwrap_or_else(|| "not yet".into())) }
                            td.num.archived { (v.counts.archived) }
                            td.num { (v.counts.in_progress + v.counts.pending_capture) }
                            td.num { (v.counts.missing) }
                            td.num { (v.counts.failed) }
                        }
                    }
                }
            }
        }
        h2 { "Invite an organization" }
        section.card.wide {
            form method="post" action="/invites" {
                input type="hidden" name="csrf" value=(csrf);
                div.row {
                    div { label for="invite-org" { "Org name" } input id="invite-org" type="text" name="org" required; }
                    div {
                        label for="invite-region" { "Region" }
                        select id="invite-region" name="region" {
                            option value="" { "the admin chooses" }
                            @for (code, name) in KNOWN_REGIONS { option value=(code) { (name) } }
                        }
                    }
                    div { button id="create-invite" type="submit" { "Create invitation link" } }
                }
                p.muted { small { "Sources: Contact Center (wxcc). The link works once and expires after " (app.settings.invite_ttl_ms / 3_600_000) " h." } }
            }
        }
        @if !invites.is_empty() {
            table id="invites" {
                thead { tr { th { "Org" } th { "Status" } th { "Created" } th { "Expires" } th {} } }
                tbody {
                    @for i in invites.iter().take(20) {
                        tr {
                            td { (i.org_name) }
                            td { (i.status.as_str()) }
                            td { (when(i.created_at_ms)) " by " (i.created_by) }
                            td { (when(i.expires_at_ms)) }
                            td {
                                @if i.status == InviteStatus::Open {
                                    form.inline method="post" action="/invites/revoke" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="invite" value=(i.id);
                                        button.link type="submit" { "Withdraw" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { small { "Redirect URI to register on the integration: " code { (app.settings.redirect_uri()) } } }
    };
    layout("Dashboard", Some(csrf), body)
}

#[derive(Deserialize)]
pub(crate) struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    region: String,
}

/// `POST /invites`: a new invite; its link is shown once.
pub(crate) async fn create_invite(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<InviteForm>,
) -> Result<Markup, WebError> {
    let current = operator(&app, &jar).await?;
    security::check_csrf(&current, &form.csrf)?;
    let name = form.org.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Invitation not created",
            "The org name must be 1 to 100 characters.",
            "Go back and enter a name.",
        ));
    }
    let region = Some(form.region.trim().to_string()).filter(|r| !r.is_empty());
    if let Some(r) = &region
        && !KNOWN_REGIONS.iter().any(|(code, _)| code == r)
    {
        return Err(WebError::refused(
            StatusCode::BAD_REQUEST,
            "Invitation not created",
            format!("{r:?} is not a region wxvault knows."),
            "Go back and pick one from the list.",
        ));
    }
    let invite = new_invite(&app, name, vec!["wxcc".into()], region, None, None).await?;
    Ok(invite_created(&app, &invite.0, &invite.1, &current.csrf))
}

async fn new_invite(
    app: &AppState,
    org: &str,
    sources: Vec<String>,
    region: Option<String>,
    client_id: Option<String>,
    ttl_ms: Option<i64>,
) -> Result<(Invite, SecretString), WebError> {
    let issued = app
        .engine
        .vault
        .create_invite(
            NewInvite {
                org_name: org.to_string(),
                sources,
                created_by: "operator (dashboard)".into(),
                ttl_ms: ttl_ms.unwrap_or(app.settings.invite_ttl_ms),
                client_id,
                region,
            },
            app.now_ms(),
        )
        .await?;
    Ok((issued.invite, issued.token))
}

fn invite_created(app: &AppState, invite: &Invite, token: &SecretString, csrf: &str) -> Markup {
    let link = app.settings.invite_link(token.expose_secret());
    layout(
        "Invitation",
        Some(csrf),
        html! {
            section.card.ok {
                h1 { "Invitation for " (invite.org_name) }
                p { "Send this link to an administrator of the org's Webex Contact Center. It works once and expires " (when(invite.expires_at_ms)) ". It is shown only now." }
                input.link id="invite-link" type="text" readonly value=(link);
                p { a href="/" { "Back to the dashboard" } }
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    invite: i64,
}

pub(crate) async fn revoke_invite(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<RevokeForm>,
) -> Result<Response, WebError> {
    let current = operator(&app, &jar).await?;
    security::check_csrf(&current, &form.csrf)?;
    app.engine
        .vault
        .revoke_invite(form.invite)
        .await
        .map_err(|e| {
            WebError::refused(
                StatusCode::BAD_REQUEST,
                "Not withdrawn",
                e.to_string(),
                "Go back to the dashboard.",
            )
        })?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
pub(crate) struct ReconnectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    how: String,
}

/// `POST /orgs/reconnect`: a fresh invite for an existing org; `how=now` takes this browser
/// straight into the connect flow (the operator is the org's admin), `how=link` shows the link
/// to send to the org's admin.
pub(crate) async fn reconnect(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<ReconnectForm>,
) -> Result<Response, WebError> {
    let current = operator(&app, &jar).await?;
    security::check_csrf(&current, &form.csrf)?;
    let Some(org) = app.engine.vault.org_by_name(form.org.trim()).await? else {
        return Err(WebError::refused(
            StatusCode::NOT_FOUND,
            "Unknown org",
            format!("There is no org named {:?}.", form.org),
            "Go back to the dashboard.",
        ));
    };
    let (invite, token) = new_invite(
        &app,
        &org.name,
        org.sources.clone(),
        Some(org.region.clone()),
        Some(org.client_id.clone()),
        Some(RECONNECT_INVITE_MS),
    )
    .await?;
    if form.how == "link" {
        return Ok(invite_created(&app, &invite, &token, &current.csrf).into_response());
    }
    let now = app.now_ms();
    let issued = app
        .engine
        .vault
        .create_session("connect", &invite.id.to_string(), 60 * 60 * 1000, now)
        .await?;
    let jar = security::set_session(jar, &app.settings, CONNECT, &issued);
    Ok((jar, Redirect::to("/connect")).into_response())
}
