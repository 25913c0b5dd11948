//! Connecting an org with the OAuth authorization-code flow (PKCE): the authorize URL, the
//! callback, the code exchange, storing (or re-connecting) the org, and the scope check.
//!
//! The browser part is the caller's (the CLI's loopback listener or a pasted URL; the web app
//! later). Everything that must be right for security lives here: an unguessable `state` compared
//! in constant time and used once, PKCE S256, and a redirect URI fixed before the flow starts.

use secrecy::{ExposeSecret, SecretString};
use url::Url;
use vault::{NewOrg, Org, OrgStatus, TokenUpdate};
use webex::oauth::{ClientAuth, ClientCredentials, Pkce, TokenResponse};

use crate::Engine;
use crate::error::EngineError;

/// Scopes a set of sources needs, with the reason shown to whoever consents (from each
/// source's registration, [`crate::source::REGISTRY`]).
///
/// # Errors
/// [`EngineError::Usage`] naming an unknown source.
pub fn scopes_for(sources: &[String]) -> Result<Vec<(&'static str, &'static str)>, EngineError> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for s in sources {
        let spec = crate::source::spec(s).ok_or_else(|| {
            EngineError::Usage(format!(
                "unknown source {s:?}; wxvault archives: {}",
                crate::source::known_names().join(", ")
            ))
        })?;
        for scope in spec.scopes {
            if !out.iter().any(|(have, _)| have == scope) {
                out.push((scope, spec.consent_reason));
            }
        }
    }
    Ok(out)
}

/// What to do about `missing` scopes of an org with `sources`: one line per source that needs
/// one of them.
pub fn missing_scope_advice(sources: &[String], missing: &[String]) -> Vec<String> {
    sources
        .iter()
        .filter_map(|s| crate::source::spec(s))
        .filter(|spec| spec.scopes.iter().any(|sc| missing.iter().any(|m| m == sc)))
        .map(|spec| {
            let lacking: Vec<&str> = spec
                .scopes
                .iter()
                .copied()
                .filter(|sc| missing.iter().any(|m| m == sc))
                .collect();
            format!(
                "{} needs {}: {}",
                spec.label,
                lacking.join(", "),
                spec.missing_scope_hint
            )
        })
        .collect()
}

/// One authorization in progress. Holds the PKCE verifier; dropped after one callback.
pub struct PendingConnect {
    pub authorize_url: Url,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    state: String,
    verifier: SecretString,
}

impl PendingConnect {
    /// Whether an answer's `state` belongs to this attempt (constant-time comparison).
    pub fn state_matches(&self, state: Option<&str>) -> bool {
        state.is_some_and(|s| constant_time_eq(s.as_bytes(), self.state.as_bytes()))
    }

    /// The `state` and PKCE verifier, for a caller that keeps the attempt elsewhere (the web
    /// app stores them in the vault, bound to the browser session) and finishes it with
    /// [`Engine::exchange_code`] and [`Engine::store_connected`].
    pub fn into_secrets(self) -> (SecretString, SecretString) {
        (SecretString::from(self.state), self.verifier)
    }
}

/// The plain-words explanation of an authorization Webex refused (`error=…` on the redirect).
pub fn explain_refusal(error: &str, description: Option<&str>, asked: &[String]) -> String {
    let mut msg = format!(
        "Webex did not authorize the connection: {}",
        webex::oauth::explain_authorize_error(error, description)
    );
    if error == "invalid_scope" {
        msg.push_str(&format!(" wxvault asked for: {}.", asked.join(" ")));
    }
    msg
}

/// An authorization code exchanged at Webex whose tokens are not stored yet.
pub struct Exchanged {
    tokens: TokenResponse,
    org_id: String,
    sent_at: i64,
}

impl Exchanged {
    /// The Webex org the tokens belong to (from the token's last segment).
    pub fn org_id(&self) -> &str {
        &self.org_id
    }
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callback::Code { state, .. } => f
                .debug_struct("Code")
                .field("code", &"[redacted]")
                .field("state", state)
                .finish(),
            Callback::Error {
                error,
                description,
                state,
            } => f
                .debug_struct("Error")
                .field("error", error)
                .field("description", description)
                .field("state", state)
                .finish(),
        }
    }
}

impl Callback {
    /// The `state` the answer carries.
    pub fn state(&self) -> Option<&str> {
        match self {
            Callback::Code { state, .. } | Callback::Error { state, .. } => state.as_deref(),
        }
    }
}

impl std::fmt::Debug for PendingConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConnect")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// What came back to the redirect URI.
///
/// `Debug` is hand-written so a `{:?}` never prints the single-use authorization code.
#[derive(Clone, PartialEq, Eq)]
pub enum Callback {
    Code {
        code: String,
        state: Option<String>,
    },
    Error {
        error: String,
        description: Option<String>,
        state: Option<String>,
    },
}

impl Callback {
    /// Reads the query of a redirect (a whole URL or just `?code=…&state=…`).
    ///
    /// # Errors
    /// [`EngineError::Usage`] when it carries neither a code nor an error.
    pub fn parse(redirect: &str) -> Result<Callback, EngineError> {
        let trimmed = redirect.trim();
        let query = match Url::parse(trimmed) {
            Ok(u) => u.query().unwrap_or_default().to_string(),
            Err(_) => trimmed.trim_start_matches('?').to_string(),
        };
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if let Some(error) = get("error") {
            return Ok(Callback::Error {
                error,
                description: get("error_description"),
                state: get("state"),
            });
        }
        match get("code") {
            Some(code) if !code.is_empty() => Ok(Callback::Code { code, state: get("state") }),
            _ => Err(EngineError::Usage(
                "the redirect carries neither a code nor an error; paste the whole address the browser landed on".into(),
            )),
        }
    }
}

/// The result of a completed connect.
#[derive(Debug, Clone)]
pub struct Connected {
    pub org: Org,
    pub reconnected: bool,
    /// Scopes Webex reported as granted; `None` when the token response did not say.
    pub granted: Option<Vec<String>>,
    /// Needed scopes missing from `granted`.
    pub missing: Vec<String>,
}

/// The org being connected: a new one, or an existing one to re-authorize.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub name: String,
    pub region: String,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub sources: Vec<String>,
}

impl ConnectTarget {
    /// The target that re-authorizes an existing org (same name, region, integration, sources).
    pub fn for_org(org: &Org) -> ConnectTarget {
        ConnectTarget {
            name: org.name.clone(),
            region: org.region.clone(),
            client_id: org.client_id.clone(),
            client_auth: if org.client_auth == "basic" {
                ClientAuth::Basic
            } else {
                ClientAuth::Form
            },
            sources: org.sources.clone(),
        }
    }
}

impl Engine {
    /// Starts a connect: a fresh `state` and PKCE pair and the authorize URL.
    ///
    /// # Errors
    /// Unknown sources, or a bad `[webex] api_base`.
    pub fn begin_connect(
        &self,
        client_id: &str,
        redirect_uri: &str,
        sources: &[String],
    ) -> Result<PendingConnect, EngineError> {
        let scopes: Vec<String> = scopes_for(sources)?
            .into_iter()
            .map(|(s, _)| s.to_string())
            .collect();
        let base = Url::parse(&self.config.webex.api_base).map_err(|e| {
            EngineError::Config(format!(
                "[webex] api_base {:?}: {e}",
                self.config.webex.api_base
            ))
        })?;
        let pkce = Pkce::generate();
        let state = random_state();
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let authorize_url = webex::oauth::authorize_url(
            &base,
            client_id,
            redirect_uri,
            &scope_refs,
            &state,
            &pkce.challenge,
        );
        Ok(PendingConnect {
            authorize_url,
            redirect_uri: redirect_uri.to_string(),
            scopes,
            state,
            verifier: pkce.verifier,
        })
    }

    /// Finishes a connect from the callback: checks `state`, exchanges the code, stores the org
    /// (or re-authorizes the existing one of that name) and compares granted with needed scopes.
    ///
    /// # Errors
    /// [`EngineError::Usage`] with a plain explanation for a refused authorization or a wrong
    /// `state`; the token endpoint's classified error; vault errors.
    pub async fn complete_connect(
        &self,
        pending: PendingConnect,
        callback: Callback,
        target: &ConnectTarget,
        client_secret: SecretString,
    ) -> Result<Connected, EngineError> {
        let (code, state) = match callback {
            Callback::Error {
                error, description, ..
            } => {
                return Err(EngineError::Usage(explain_refusal(
                    &error,
                    description.as_deref(),
                    &pending.scopes,
                )));
            }
            Callback::Code { code, state } => (code, state),
        };
        if !pending.state_matches(state.as_deref()) {
            return Err(EngineError::Usage(
                "the authorization answer does not belong to this connect attempt (state mismatch); nothing was stored — start `wxvault connect` again".into(),
            ));
        }
        let exchanged = self
            .exchange_code(
                target,
                &client_secret,
                &code,
                &pending.redirect_uri,
                &pending.verifier,
            )
            .await?;
        self.store_connected(
            target,
            client_secret,
            exchanged,
            &pending.scopes,
            "wxvault connect",
        )
        .await
    }

    /// Exchanges an authorization code (with its PKCE verifier and the redirect URI the
    /// authorization used) and identifies the org. Nothing is stored.
    ///
    /// # Errors
    /// The token endpoint's classified error (`invalid_grant` for a used or expired code), or
    /// [`EngineError::Usage`] when the token does not name its org.
    pub async fn exchange_code(
        &self,
        target: &ConnectTarget,
        client_secret: &SecretString,
        code: &str,
        redirect_uri: &str,
        verifier: &SecretString,
    ) -> Result<Exchanged, EngineError> {
        let creds = ClientCredentials {
            client_id: target.client_id.clone(),
            client_secret: client_secret.clone(),
            auth: target.client_auth,
        };
        let sent_at = self.clock.now_ms();
        let tokens = self
            .oauth()?
            .exchange_code(&creds, code, redirect_uri, verifier)
            .await?;
        let org_id = webex::oauth::token_anatomy(tokens.access_token.expose_secret())
            .or_else(|| tokens.refresh_token.as_ref().and_then(|r| webex::oauth::token_anatomy(r.expose_secret())))
            .map(|a| a.org_id)
            .ok_or_else(|| {
                EngineError::Usage("Webex's token does not end in _<cluster>_<orgId>, so the org cannot be identified; use `wxvault org add --org-id`".into())
            })?;
        Ok(Exchanged {
            tokens,
            org_id,
            sent_at,
        })
    }

    /// Stores exchanged tokens: a new org, or the existing org of that name re-authorized
    /// (same Webex org and integration only). Compares the granted scopes with `needed`;
    /// `via` names the path in the org's events ("wxvault connect", "the connect page").
    ///
    /// # Errors
    /// [`EngineError::Usage`] when the name belongs to another Webex org or integration;
    /// vault errors.
    pub async fn store_connected(
        &self,
        target: &ConnectTarget,
        client_secret: SecretString,
        exchanged: Exchanged,
        needed: &[String],
        via: &str,
    ) -> Result<Connected, EngineError> {
        let Exchanged {
            tokens,
            org_id,
            sent_at,
        } = exchanged;
        let update = token_update(&tokens, sent_at);
        let (org, reconnected) = match self.vault.org_by_name(&target.name).await? {
            Some(existing) => {
                if !existing.org_id.eq_ignore_ascii_case(&org_id) {
                    return Err(EngineError::Usage(format!(
                        "org {} is Webex org {}, but this authorization is for org {org_id}; sign in with an admin of the right org, or connect it under another name",
                        existing.name, existing.org_id
                    )));
                }
                if existing.client_id != target.client_id {
                    return Err(EngineError::Usage(format!(
                        "org {} is connected through client id {}; reconnect it with that integration",
                        existing.name, existing.client_id
                    )));
                }
                let mut org = self.vault.save_tokens(&existing, &update).await?;
                self.vault.set_org_status(&org, OrgStatus::Active).await?;
                // A re-connect for other sources (`--sources`, an invite naming them) changes
                // what the org is archived for, once Webex has granted the connection.
                if !target.sources.is_empty() && target.sources != org.sources {
                    self.vault.set_org_sources(&org, &target.sources).await?;
                    self.vault
                        .record_event(
                            Some(&org),
                            "sources",
                            &format!(
                                "sources changed from {} to {} through {via}",
                                org.sources.join(","),
                                target.sources.join(",")
                            ),
                        )
                        .await?;
                    org.sources = target.sources.clone();
                }
                self.vault
                    .record_event(
                        Some(&org),
                        "reconnected",
                        &format!("re-authorized through {via}"),
                    )
                    .await?;
                (
                    Org {
                        status: OrgStatus::Active,
                        ..org
                    },
                    true,
                )
            }
            None => {
                let org = self
                    .vault
                    .add_org(NewOrg {
                        name: target.name.clone(),
                        org_id,
                        region: target.region.clone(),
                        client_id: target.client_id.clone(),
                        client_secret,
                        client_auth: match target.client_auth {
                            ClientAuth::Basic => "basic".into(),
                            ClientAuth::Form => "form".into(),
                        },
                        sources: target.sources.clone(),
                        tokens: update,
                    })
                    .await?;
                self.vault
                    .record_event(Some(&org), "connected", &format!("connected through {via}"))
                    .await?;
                (org, false)
            }
        };
        let granted: Option<Vec<String>> = tokens
            .scope
            .as_ref()
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        let missing = match &granted {
            Some(g) => needed.iter().filter(|s| !g.contains(s)).cloned().collect(),
            None => Vec::new(),
        };
        if !missing.is_empty() {
            let msg = format!("granted scopes lack {}", missing.join(", "));
            self.vault
                .record_event(Some(&org), "missing_scope", &msg)
                .await?;
        }
        Ok(Connected {
            org,
            reconnected,
            granted,
            missing,
        })
    }
}

impl Engine {
    /// Asks Webex to revoke every grant of the org's integration in that org
    /// (`DELETE /v1/authorizations?clientId=…&orgId=…`), with a fresh access token.
    ///
    /// # Errors
    /// The token could not be refreshed, or Webex refused (missing `identity:tokens_write` /
    /// admin role, network): the caller says so and carries on.
    pub async fn revoke_grant(&self, org: &Org) -> Result<(), EngineError> {
        let oauth = self.oauth()?;
        let tokens = crate::tokens::OrgTokens::load(
            self.vault.clone(),
            oauth.clone(),
            org.clone(),
            self.clock.clone(),
        )
        .await?;
        let token = webex::TokenProvider::access_token(tokens.as_ref()).await?;
        oauth
            .revoke_authorizations(&token, &org.client_id, &org.org_id)
            .await?;
        Ok(())
    }
}

impl Engine {
    /// Refreshes an imported grant once (`wxvault org add`), before anything is stored, and
    /// returns the tokens to store: the fresh access token, and the refresh token Webex returned
    /// (or the given one when Webex kept it).
    ///
    /// # Errors
    /// The token endpoint's classified answer (`invalid_grant`, `invalid_client`, …) or a network
    /// error after retries; the message never contains the secret or the tokens.
    pub async fn check_imported_grant(
        &self,
        client_id: &str,
        client_auth: ClientAuth,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> Result<TokenUpdate, EngineError> {
        let creds = ClientCredentials {
            client_id: client_id.to_string(),
            client_secret: client_secret.clone(),
            auth: client_auth,
        };
        let sent_at = self.clock.now_ms();
        let tokens = self.oauth()?.refresh(&creds, refresh_token).await?;
        let mut update = token_update(&tokens, sent_at);
        if update.refresh_token.is_none() {
            update.refresh_token = Some(refresh_token.clone());
        }
        Ok(update)
    }
}

/// What to store from a token response received at `sent_at` (expiries counted from the request).
pub fn token_update(tokens: &TokenResponse, sent_at: i64) -> TokenUpdate {
    let at = |s: u64| {
        sent_at.saturating_add(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 2000)
                .saturating_mul(1000),
        )
    };
    TokenUpdate {
        access_token: Some(tokens.access_token.clone()),
        access_expires_at_ms: tokens.expires_in.map(at),
        refresh_token: tokens.refresh_token.clone(),
        refresh_expires_at_ms: tokens.refresh_token_expires_in.map(at),
        scopes: tokens.scope.clone(),
        refreshed_at_ms: Some(sent_at),
    }
}

/// 128 random bits, URL-safe.
fn random_state() -> String {
    let mut a = uuid::Uuid::new_v4().simple().to_string();
    a.push_str(&uuid::Uuid::new_v4().simple().to_string());
    a
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_parses_codes_errors_and_bare_queries() {
        assert_eq!(
            Callback::parse("http://localhost:8765/callback?code=abc_PF84_x&state=s1").unwrap(),
            Callback::Code {
                code: "abc_PF84_x".into(),
                state: Some("s1".into())
            }
        );
        assert_eq!(
            Callback::parse("?error=access_denied&error_description=Access+denied&state=s")
                .unwrap(),
            Callback::Error {
                error: "access_denied".into(),
                description: Some("Access denied".into()),
                state: Some("s".into())
            }
        );
        assert!(Callback::parse("http://localhost:8765/callback?foo=bar").is_err());
        assert!(Callback::parse("http://localhost:8765/callback?code=&state=x").is_err());
    }

    #[test]
    fn callback_debug_never_prints_the_code() {
        let cb = Callback::parse("?code=CODESECRET_PF84_x&state=s1").unwrap();
        for out in [format!("{cb:?}"), format!("{cb:#?}")] {
            assert!(!out.contains("CODESECRET"), "{out}");
            assert!(out.contains("[redacted]") && out.contains("s1"), "{out}");
        }
    }

    #[test]
    fn scopes_follow_sources_and_unknown_sources_are_named() {
        let s = scopes_for(&["wxcc".into(), "wxcc".into()]).unwrap();
        assert_eq!(
            s.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec!["cjp:config_read"]
        );
        let e = scopes_for(&["fax".into()]).unwrap_err().to_string();
        assert!(e.contains("fax") && e.contains("wxcc"), "{e}");
    }

    #[test]
    fn state_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let a = random_state();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_state());
    }
}
