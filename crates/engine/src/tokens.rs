//! Keeps one org's access token usable: proactive refresh before expiry, one reactive refresh
//! after a 401, never two refreshes in flight for the same org, and every token-endpoint answer
//! persisted (encrypted) before the new token is used (webex-api.md §1.5, "the safe rule").

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use vault::{Org, OrgStatus, Vault};
use webex::oauth::{ClientAuth, ClientCredentials, OAuthClient, TokenResponse};
use webex::{Error as WebexError, ErrorClass, TokenProvider};

use crate::clock::SharedClock;

/// Never refresh proactively more often than this (Webex may hand back the same token).
const MIN_PROACTIVE_INTERVAL_MS: i64 = 60 * 60 * 1000;
/// Refresh when less than this share of the access token's lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 0.25;
/// ... and always when less than this is left, whatever the lifetime.
const REFRESH_MARGIN_MS: i64 = 10 * 60 * 1000;

/// Plain-words explanation shown when Webex refuses a grant (webex-api.md §1.9).
pub const REAUTH_CAUSES: &str = "the authorizing user's password changed (non-SSO), the user was \
deactivated or lost the admin role, an admin revoked the integration or reset the user's access in \
Control Hub, or the refresh token lapsed after about 90 idle days";

struct State {
    org: Org,
    access: Option<SecretString>,
    refresh: Option<SecretString>,
    /// The access token obtained by the last refresh that a 401 forced. If Webex rejects that
    /// one too, the grant no longer authorizes the call: refreshing again would only loop.
    forced: Option<SecretString>,
}

/// [`TokenProvider`] for one org, backed by the vault.
pub struct OrgTokens {
    vault: Vault,
    oauth: OAuthClient,
    creds: ClientCredentials,
    clock: SharedClock,
    state: Mutex<State>,
}

impl OrgTokens {
    /// Loads the org's secrets from the vault.
    ///
    /// # Errors
    /// Vault errors (database unreachable, wrong master key).
    pub async fn load(
        vault: Vault,
        oauth: OAuthClient,
        org: Org,
        clock: SharedClock,
    ) -> Result<Arc<OrgTokens>, vault::VaultError> {
        let secrets = vault.org_secrets(&org).await?;
        let auth = if org.client_auth.eq_ignore_ascii_case("basic") {
            ClientAuth::Basic
        } else {
            ClientAuth::Form
        };
        let creds = ClientCredentials {
            client_id: org.client_id.clone(),
            client_secret: secrets.client_secret,
            auth,
        };
        Ok(Arc::new(OrgTokens {
            vault,
            oauth,
            creds,
            clock,
            state: Mutex::new(State {
                org,
                access: secrets.access_token,
                refresh: secrets.refresh_token,
                forced: None,
            }),
        }))
    }

    /// The org as last persisted (token health fields included).
    pub async fn org(&self) -> Org {
        self.state.lock().await.org.clone()
    }

    fn needs_proactive_refresh(&self, st: &State) -> bool {
        let Some(_) = st.access else { return true };
        let now = self.clock.now_ms();
        let Some(exp) = st.org.access_expires_at_ms else {
            // Unknown expiry (tokens imported without one): trust it until a 401 says otherwise.
            return false;
        };
        let left = exp - now;
        if left <= REFRESH_MARGIN_MS {
            return true;
        }
        let issued = st.org.last_refresh_at_ms.unwrap_or(st.org.created_at_ms);
        let lifetime = (exp - issued).max(1);
        let since = now - issued;
        (left as f64) < (lifetime as f64) * REFRESH_WHEN_LEFT && since >= MIN_PROACTIVE_INTERVAL_MS
    }

    /// Whether the current access token has more than the safety margin left.
    fn still_valid(&self, st: &State) -> bool {
        st.access.is_some()
            && st
                .org
                .access_expires_at_ms
                .is_none_or(|exp| exp - self.clock.now_ms() > REFRESH_MARGIN_MS)
    }

    /// Refreshes under the lock held by the caller, persisting before returning the new token.
    async fn refresh_locked(&self, st: &mut State) -> Result<SecretString, WebexError> {
        if let OrgStatus::NeedsReauth { reason } = &st.org.status {
            // Already refused in this process: asking Webex again would only repeat the refusal.
            return Err(WebexError::TokenSource {
                reason: reason.clone(),
                class: ErrorClass::Reauth,
            });
        }
        let Some(refresh) = st.refresh.clone() else {
            let reason = format!(
                "org {} has no refresh token stored; reconnect it (wxvault org add or connect)",
                st.org.name
            );
            self.mark_reauth(st, &reason).await;
            return Err(WebexError::TokenSource {
                reason,
                class: ErrorClass::Reauth,
            });
        };
        let sent_at = self.clock.now_ms();
        match self.oauth.refresh(&self.creds, &refresh).await {
            Ok(resp) => {
                self.persist(st, &resp, sent_at).await?;
                Ok(resp.access_token)
            }
            Err(e) => {
                if e.class() == ErrorClass::Reauth {
                    let reason = format!(
                        "Webex refused to refresh the token for org {} ({e}). Likely causes: {REAUTH_CAUSES}. \
                         Fix: have an admin of that org reconnect it.",
                        st.org.name
                    );
                    self.mark_reauth(st, &reason).await;
                }
                Err(e)
            }
        }
    }

    async fn persist(
        &self,
        st: &mut State,
        resp: &TokenResponse,
        sent_at: i64,
    ) -> Result<(), WebexError> {
        let update = crate::onboard::token_update(resp, sent_at);
        let org = self
            .vault
            .save_tokens(&st.org, &update)
            .await
            .map_err(|e| WebexError::TokenSource {
                reason: format!(
                    "refreshed the token for org {} but could not save it ({e}); not using it",
                    st.org.name
                ),
                class: ErrorClass::Transient,
            })?;
        if let OrgStatus::NeedsReauth { .. } = org.status {
            // A successful refresh proves the grant works again.
            let _ = self.vault.set_org_status(&org, OrgStatus::Active).await;
        }
        st.org = org;
        st.org.status = OrgStatus::Active;
        st.access = Some(resp.access_token.clone());
        if let Some(r) = &resp.refresh_token {
            st.refresh = Some(r.clone());
        }
        tracing::info!(org = %st.org.name, "access token refreshed");
        Ok(())
    }

    async fn mark_reauth(&self, st: &mut State, reason: &str) {
        tracing::error!(org = %st.org.name, "needs re-authorization: {reason}");
        let status = OrgStatus::NeedsReauth {
            reason: reason.to_string(),
        };
        if let Err(e) = self.vault.set_org_status(&st.org, status.clone()).await {
            tracing::error!(org = %st.org.name, "could not record needs_reauth: {e}");
        }
        let _ = self
            .vault
            .record_event(Some(&st.org), "needs_reauth", reason)
            .await;
        st.org.status = status;
    }

    /// Refreshes now if the proactive rule says so (used by long runs and keep-alive).
    ///
    /// # Errors
    /// The token endpoint's classified error.
    pub async fn ensure_fresh(&self) -> Result<(), WebexError> {
        let mut st = self.state.lock().await;
        if self.needs_proactive_refresh(&st) {
            self.refresh_locked(&mut st).await?;
        }
        Ok(())
    }

    /// Refreshes now if the proactive rule says so or `force` is set (keep-alive of an idle
    /// grant). Returns whether a refresh happened; the org as persisted is in [`Self::org`].
    ///
    /// # Errors
    /// The token endpoint's classified error (a refused grant also marks the org `needs_reauth`).
    pub async fn refresh_if(&self, force: bool) -> Result<bool, WebexError> {
        let mut st = self.state.lock().await;
        if force || self.needs_proactive_refresh(&st) {
            self.refresh_locked(&mut st).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[async_trait]
impl TokenProvider for OrgTokens {
    async fn access_token(&self) -> Result<SecretString, WebexError> {
        let mut st = self.state.lock().await;
        if self.needs_proactive_refresh(&st) {
            match self.refresh_locked(&mut st).await {
                Ok(token) => return Ok(token),
                // A proactive refresh that fails transiently must not fail a call the current
                // token can still make; the next call tries the refresh again.
                Err(e) if e.class() == ErrorClass::Transient && self.still_valid(&st) => {
                    tracing::warn!(org = %st.org.name, "proactive token refresh failed, using the current token: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        st.access.clone().ok_or_else(|| WebexError::TokenSource {
            reason: "no access token stored".into(),
            class: ErrorClass::Reauth,
        })
    }

    async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, WebexError> {
        let mut st = self.state.lock().await;
        if let Some(current) = &st.access
            && current.expose_secret() != rejected.expose_secret()
        {
            // Someone else refreshed while this request was in flight: single flight.
            return Ok(current.clone());
        }
        if st
            .forced
            .as_ref()
            .is_some_and(|f| f.expose_secret() == rejected.expose_secret())
        {
            let reason = format!(
                "Webex rejects even a freshly refreshed token for org {}: the grant no longer authorizes this call. \
                 Likely causes: {REAUTH_CAUSES}. Fix: have an admin of that org reconnect it.",
                st.org.name
            );
            self.mark_reauth(&mut st, &reason).await;
            return Err(WebexError::TokenSource {
                reason,
                class: ErrorClass::Reauth,
            });
        }
        let token = self.refresh_locked(&mut st).await?;
        st.forced = Some(token.clone());
        Ok(token)
    }
}
