//! The outcome of a callback once the code is exchanged: whether storing it would conflict,
//! whether a failed store had already written the connection, and the success page.

use maud::{Markup, html};
use secrecy::{ExposeSecret as _, SecretString};
use vault::Org;

use crate::pages::layout;
use crate::{AppState, WebError};

/// Whether a failed `store_connected` had already written this connection: a new org row for
/// `webex_org` under `name`, or (re-connect) an access token other than `before`. When that
/// cannot be read, it counts as written: keeping a used invite used is the safe mistake.
pub(crate) async fn org_written(
    app: &AppState,
    name: &str,
    webex_org: &str,
    before: Option<Option<SecretString>>,
) -> bool {
    let org = match app.engine.vault.org_by_name(name).await {
        Ok(Some(org)) => org,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(org = %name, error = %e, "cannot tell whether the org was stored");
            return true;
        }
    };
    let Some(before) = before else {
        return org.org_id.eq_ignore_ascii_case(webex_org);
    };
    match app.engine.vault.org_secrets(&org).await {
        Ok(now) => {
            let token =
                |t: &Option<SecretString>| t.as_ref().map(|t| t.expose_secret().to_string());
            token(&now.access_token) != token(&before)
        }
        Err(e) => {
            tracing::error!(org = %name, error = %e, "cannot tell whether the org's tokens were stored");
            true
        }
    }
}

/// Why this Webex org cannot be stored under this name, in words for the customer admin: a
/// re-connect must be the same Webex org, and a Webex org is connected at most once.
pub(crate) async fn conflict(
    app: &AppState,
    existing: Option<&Org>,
    webex_org: &str,
) -> Result<Option<String>, WebError> {
    if let Some(org) = existing {
        if !org.org_id.eq_ignore_ascii_case(webex_org) {
            return Ok(Some(format!(
                "You signed in to a different Webex organization than the one being re-connected ({}). Nothing was stored.",
                org.name
            )));
        }
        return Ok(None);
    }
    let taken = app
        .engine
        .vault
        .orgs()
        .await?
        .into_iter()
        .any(|o| o.org_id.eq_ignore_ascii_case(webex_org));
    Ok(taken.then(|| {
        format!(
            "This Webex organization is already connected to {}, so nothing was stored. If its connection needs renewing, {} will send a re-connect link.",
            app.settings.vendor_name, app.settings.vendor_name
        )
    }))
}

pub(crate) fn success(app: &AppState, c: &engine::onboard::Connected) -> Markup {
    let vendor = &app.settings.vendor_name;
    let org = &c.org;
    let body = html! {
        section.card.(if c.missing.is_empty() { "ok" } else { "bad" }) {
            h1 id="result" { @if c.reconnected { "Re-connected" } @else { "Connected" } }
            p { "Your Webex organization is connected to " (vendor) ". You can close this page." }
            dl.facts {
                dt { "Name" } dd id="org-name" { (org.name) }
                dt { "Webex org id" } dd { code id="org-id" { (org.org_id) } }
                dt { "Region" } dd { code id="region" { (org.region) } }
                dt { "Granted scopes" }
                dd id="granted" {
                    @match &c.granted {
                        Some(g) => { @for s in g { code { (s) } " " } }
                        None => { span.muted { "Webex did not list them" } }
                    }
                }
            }
            @if !c.missing.is_empty() {
                p id="missing" {
                    strong { "Missing: " }
                    @for s in &c.missing { code { (s) } " " }
                    "— Webex granted less than " (vendor) " needs, so those recordings cannot be archived. "
                    "The integration must be given these scopes in the Webex developer portal, then this org connected again."
                }
            }
            h2 { "What happens next" }
            ul {
                li { (vendor) " archives the org's recordings on its next run; nothing else is needed from you." }
                li { "The authorization is kept alive automatically. If Webex ever stops it (a password change, a removed admin role, access withdrawn in Control Hub), " (vendor) " is told at once and will send you a new link." }
                li { "To withdraw access: Control Hub → Management → Apps → Integrations." }
            }
        }
    };
    layout("Connected", None, body)
}
