//! Keeps one org's access token usable: proactive refresh before expiry, one reactive refresh
//! after a 401, never two refreshes in flight for the same org — in this process or any other
//! on the same state database — and every token-endpoint answer persisted (encrypted) before the
//! new token is used (webex-api.md §1.5, "the safe rule").
//!
//! Single flight across processes: a refresh first re-reads the org's tokens from the vault (a
//! fresh enough token another process stored is used as it is), then takes the org's
//! `token_refresh` lease, re-reads once more under it, and only then refreshes — with the
//! refresh token read from the vault, never a cached one that another process may have rotated
//! away (Webex may revoke it on rotation: refreshing with it would be `invalid_grant` and kill
//! the grant). The answer is saved before the lease is released. A process that finds the lease
//! held polls the vault until the holder's token appears or the lease is free (bounded by the
//! lease's time-to-live). Within a process a mutex serializes the same steps, so the vault sees
//! at most one refresh attempt per process at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use vault::{LeaseAcquire, LeaseHolder, LeaseRenewal, Org, OrgStatus, Vault};
use webex::oauth::{ClientAuth, ClientCredentials, OAuthClient, TokenResponse};
use webex::{Error as WebexError, ErrorClass, TokenProvider};

use crate::clock::{Clock, SharedClock, SystemClock};

/// Never refresh proactively more often than this (Webex may hand back the same token).
const MIN_PROACTIVE_INTERVAL_MS: i64 = 60 * 60 * 1000;
/// Refresh when less than this share of the access token's lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 0.25;
/// ... and always when less than this is left, whatever the lifetime.
const REFRESH_MARGIN_MS: i64 = 10 * 60 * 1000;

/// Lease scope that makes an org's token refresh single-flight across processes.
pub const REFRESH_SCOPE: &str = "token_refresh";
/// The refresh lease's time-to-live; its holder renews it every third of that while the
/// request runs, so it only expires when its holder died.
pub const REFRESH_LEASE_TTL: Duration = Duration::from_secs(60);
/// How many times a refreshed answer's save is tried before the refresh fails.
const SAVE_ATTEMPTS: u32 = 6;
/// How often a process waiting for another's refresh looks at the vault again.
const REFRESH_POLL: Duration = Duration::from_millis(200);
/// How much longer than the lease's TTL a process waits for another's refresh before giving
/// up (transiently): the lease expires within its TTL, so by then it is either free or held by
/// a live process that is stuck.
const REFRESH_WAIT_BEYOND_TTL: Duration = Duration::from_secs(5);

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
    /// Whether the tokens in this state came from a refresh by this instance (rather than
    /// from the vault, possibly stored by another process).
    refreshed_here: bool,
}

/// Why a refresh is wanted; decides whether a token another process stored will do instead.
enum Need {
    /// The current token is close to expiry: a stored one that is not will do.
    Proactive,
    /// Webex rejected this token (401): any other stored token will do.
    Rejected(SecretString),
    /// Keep-alive: a token stored since `seen` was read, or a refresh recorded at or after
    /// `fresh_since` (epoch ms, engine clock), shows the grant was refreshed.
    Forced {
        seen: Option<SecretString>,
        fresh_since: i64,
    },
}

/// [`TokenProvider`] for one org, backed by the vault.
pub struct OrgTokens {
    vault: Vault,
    oauth: OAuthClient,
    creds: ClientCredentials,
    clock: SharedClock,
    state: Mutex<State>,
    /// This instance's identity on the org's `token_refresh` lease.
    holder: LeaseHolder,
    /// The `token_refresh` lease's time-to-live ([`REFRESH_LEASE_TTL`] unless a test shortens it).
    lease_ttl_ms: i64,
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
        Self::load_with_lease_ttl(vault, oauth, org, clock, REFRESH_LEASE_TTL).await
    }

    /// [`Self::load`] with another `token_refresh` lease time-to-live than
    /// [`REFRESH_LEASE_TTL`]: tests shorten it to see, in seconds, that a refresh slower than
    /// the TTL keeps its lease (renewed every third of it) and that waiters give up after it.
    ///
    /// # Errors
    /// Vault errors (database unreachable, wrong master key).
    pub async fn load_with_lease_ttl(
        vault: Vault,
        oauth: OAuthClient,
        org: Org,
        clock: SharedClock,
        lease_ttl: Duration,
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
                refreshed_here: false,
            }),
            holder: crate::lease::holder_for_this_run(),
            lease_ttl_ms: i64::try_from(lease_ttl.as_millis())
                .unwrap_or(i64::MAX / 4)
                .max(3),
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

    /// Refreshes under the lock and the lease held by the caller, persisting before returning
    /// the new token.
    ///
    /// The token request, the save of its answer and the lease's release run in a spawned
    /// task that the caller awaits: a caller that is dropped (a job aborted after the shutdown
    /// grace) must not drop an answer Webex already gave — with a rotated refresh token it
    /// would be the only copy of the grant.
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
        let task = LeasedRefresh {
            vault: self.vault.clone(),
            oauth: self.oauth.clone(),
            creds: self.creds.clone(),
            clock: self.clock.clone(),
            org: st.org.clone(),
            refresh,
            holder_id: self.holder.id.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
        };
        let outcome = tokio::spawn(task.run())
            .await
            .map_err(|e| WebexError::TokenSource {
                reason: format!(
                    "the token refresh of org {} stopped unexpectedly ({e}); try again",
                    st.org.name
                ),
                class: ErrorClass::Transient,
            })?;
        match outcome {
            Ok(Refreshed::Saved { org, resp }) => {
                if let OrgStatus::NeedsReauth { .. } = org.status {
                    // A successful refresh proves the grant works again.
                    let _ = self.vault.set_org_status(&org, OrgStatus::Active).await;
                }
                st.org = *org;
                st.org.status = OrgStatus::Active;
                st.access = Some(resp.access_token.clone());
                if let Some(r) = &resp.refresh_token {
                    st.refresh = Some(r.clone());
                }
                st.refreshed_here = true;
                tracing::info!(org = %st.org.name, "access token refreshed");
                Ok(resp.access_token)
            }
            Ok(Refreshed::ByAnother) => {
                tracing::info!(
                    org = %st.org.name,
                    "Webex refused a refresh token another process had already rotated; using the tokens it stored"
                );
                self.reload(st).await?;
                Self::current(st)
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
            self.refresh_shared(&mut st, Need::Proactive).await?;
        }
        Ok(())
    }

    /// Refreshes now if the proactive rule says so, or (keep-alive of an idle grant) when
    /// `force_older_than_ms` is set and the org's last refresh, as re-read from the vault, is
    /// older than that: N processes deciding to force from the same stale snapshot refresh once.
    /// Returns whether the grant was refreshed — by this call, or by another process since
    /// these tokens were read; the org as persisted is in [`Self::org`].
    ///
    /// # Errors
    /// The token endpoint's classified error (a refused grant also marks the org `needs_reauth`).
    pub async fn refresh_if(&self, force_older_than_ms: Option<i64>) -> Result<bool, WebexError> {
        let mut st = self.state.lock().await;
        if let Some(age) = force_older_than_ms {
            let seen = st.access.clone();
            let fresh_since = self.clock.now_ms() - age;
            self.refresh_shared(&mut st, Need::Forced { seen, fresh_since })
                .await?;
            return Ok(true);
        }
        if self.needs_proactive_refresh(&st) {
            self.refresh_shared(&mut st, Need::Proactive).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the tokens in `st` (just re-read from the vault) make a refresh for `need`
    /// unnecessary.
    fn satisfied(&self, st: &State, need: &Need) -> bool {
        let Some(access) = &st.access else {
            return false;
        };
        match need {
            Need::Proactive => !self.needs_proactive_refresh(st),
            Need::Rejected(rejected) => access.expose_secret() != rejected.expose_secret(),
            Need::Forced { seen, fresh_since } => {
                seen.as_ref()
                    .is_none_or(|s| s.expose_secret() != access.expose_secret())
                    || st
                        .org
                        .last_refresh_at_ms
                        .is_some_and(|at| at >= *fresh_since)
            }
        }
    }

    /// Replaces `st`'s org and tokens with what the vault holds now.
    async fn reload(&self, st: &mut State) -> Result<(), WebexError> {
        let unreadable = |e: vault::VaultError| WebexError::TokenSource {
            reason: format!(
                "could not read the tokens of org {} from the state database ({e}); not refreshing without them",
                st.org.name
            ),
            class: if e.is_transient() {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            },
        };
        let org = match self.vault.org_by_id(st.org.id).await {
            Ok(Some(org)) => org,
            Ok(None) => {
                return Err(WebexError::TokenSource {
                    reason: format!(
                        "org {} was removed from the state database while it was in use",
                        st.org.name
                    ),
                    class: ErrorClass::Permanent,
                });
            }
            Err(e) => return Err(unreadable(e)),
        };
        let secrets = self.vault.org_secrets(&org).await.map_err(unreadable)?;
        st.org = org;
        st.access = secrets.access_token;
        st.refresh = secrets.refresh_token;
        st.refreshed_here = false;
        Ok(())
    }

    /// The access token in `st`.
    fn current(st: &State) -> Result<SecretString, WebexError> {
        st.access.clone().ok_or_else(|| WebexError::TokenSource {
            reason: format!(
                "org {} has no access token stored; reconnect it",
                st.org.name
            ),
            class: ErrorClass::Reauth,
        })
    }

    /// The refused grant recorded in `st` (by any process), as an error.
    fn refused(st: &State) -> Option<WebexError> {
        match &st.org.status {
            OrgStatus::NeedsReauth { reason } => Some(WebexError::TokenSource {
                reason: reason.clone(),
                class: ErrorClass::Reauth,
            }),
            OrgStatus::Active => None,
        }
    }

    /// A refresh for `need`, single-flight across processes (see the module docs). Returns the
    /// access token to use: one another process stored, or the one this call obtained (saved
    /// before the lease is released).
    async fn refresh_shared(&self, st: &mut State, need: Need) -> Result<SecretString, WebexError> {
        // Another process may have refreshed since these tokens were read.
        self.reload(st).await?;
        if self.satisfied(st, &need) {
            return Self::current(st);
        }
        if let Some(e) = Self::refused(st) {
            return Err(e);
        }
        let waited_since = tokio::time::Instant::now();
        let wait_max = Duration::from_millis(self.lease_ttl_ms as u64) + REFRESH_WAIT_BEYOND_TTL;
        loop {
            // A Retry-After pause of the client id is waited out before the lease is taken, not
            // under it: the lease is held only while the request can actually be sent.
            self.oauth.wait_unpaused(&self.creds.client_id).await;
            // Lease times are real time: the lease is about this process being alive during one
            // token request, whatever the engine's clock (simulated in tests) says.
            let now = SystemClock.now_ms();
            let taken = match self
                .vault
                .acquire_lease(&st.org, REFRESH_SCOPE, &self.holder, now, self.lease_ttl_ms)
                .await
            {
                // The lease changed hands while being taken: others are at it; wait like busy.
                Err(vault::VaultError::Conflict(_)) => None,
                other => Some(other.map_err(|e| WebexError::TokenSource {
                    reason: format!(
                        "could not take the token refresh lease of org {} in the state database ({e}); \
                         not refreshing without it, so that two processes never refresh one grant",
                        st.org.name
                    ),
                    class: if e.is_transient() {
                        ErrorClass::Transient
                    } else {
                        ErrorClass::Permanent
                    },
                })?),
            };
            match taken {
                Some(LeaseAcquire::Acquired(_)) => break,
                busy @ (Some(LeaseAcquire::Busy(_)) | None) => {
                    if waited_since.elapsed() >= wait_max {
                        let who = match busy {
                            Some(LeaseAcquire::Busy(lease)) => {
                                format!(
                                    "another wxvault process (host {}, pid {})",
                                    lease.host, lease.pid
                                )
                            }
                            _ => "another wxvault process".to_string(),
                        };
                        return Err(WebexError::TokenSource {
                            reason: format!(
                                "{who} has been refreshing the token of org {} \
                                 for over {} s; try again, and check that process if this repeats",
                                st.org.name,
                                wait_max.as_secs()
                            ),
                            class: ErrorClass::Transient,
                        });
                    }
                    tokio::time::sleep(REFRESH_POLL).await;
                    self.reload(st).await?;
                    if self.satisfied(st, &need) {
                        return Self::current(st);
                    }
                    if let Some(e) = Self::refused(st) {
                        return Err(e);
                    }
                }
            }
        }
        self.refresh_leased(st, &need).await
    }

    /// Releases this instance's refresh lease of the org in `st`.
    async fn release(&self, st: &State) {
        release_refresh_lease(&self.vault, &st.org, &self.holder.id).await;
    }

    /// The part of [`Self::refresh_shared`] that runs under the lease: a last re-read (the
    /// previous holder may have finished just before the lease was taken), then the refresh,
    /// whose task releases the lease once the answer is saved.
    async fn refresh_leased(
        &self,
        st: &mut State,
        need: &Need,
    ) -> Result<SecretString, WebexError> {
        let early = match self.reload(st).await {
            Err(e) => Some(Err(e)),
            Ok(()) if self.satisfied(st, need) => Some(Self::current(st)),
            Ok(()) => None,
        };
        if let Some(out) = early {
            self.release(st).await;
            return out;
        }
        if st.refresh.is_none() || matches!(st.org.status, OrgStatus::NeedsReauth { .. }) {
            // Nothing will be sent: the lease is not needed past this point.
            self.release(st).await;
        }
        self.refresh_locked(st).await
    }
}

/// Deletes `holder_id`'s refresh lease of `org`, logging (not failing) when it cannot: it
/// expires on its own, and others wait for it at most its TTL.
async fn release_refresh_lease(vault: &Vault, org: &Org, holder_id: &str) {
    match vault.release_lease(org, REFRESH_SCOPE, holder_id).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            org = %org.name,
            "the token refresh lease had been lost before the refresh ended"
        ),
        Err(e) => tracing::warn!(org = %org.name, "could not release the token refresh lease: {e}"),
    }
}

/// What a [`LeasedRefresh`] came to when it did not fail.
enum Refreshed {
    /// Webex answered and the answer is saved; `org` is the row as saved.
    Saved { org: Box<Org>, resp: TokenResponse },
    /// Webex refused the refresh token, but the vault meanwhile holds tokens another process
    /// stored after rotating it: the grant is fine, use those.
    ByAnother,
}

/// One refresh under the org's `token_refresh` lease, run as a spawned task so that it
/// finishes (answer saved, lease released) even when the caller that started it is dropped.
struct LeasedRefresh {
    vault: Vault,
    oauth: OAuthClient,
    creds: ClientCredentials,
    clock: SharedClock,
    /// The org as read under the lease.
    org: Org,
    /// The refresh token read under the lease.
    refresh: SecretString,
    holder_id: String,
    lease_ttl_ms: i64,
}

impl LeasedRefresh {
    async fn run(self) -> Result<Refreshed, WebexError> {
        let out = self.refresh_and_save().await;
        release_refresh_lease(&self.vault, &self.org, &self.holder_id).await;
        out
    }

    async fn refresh_and_save(&self) -> Result<Refreshed, WebexError> {
        let sent_at = self.clock.now_ms();
        // The lease is renewed while the request (with its retries, which may wait out a
        // Retry-After) runs. If a renewal is lost (this process was paused, or the database was
        // unreachable for the whole TTL), another process may refresh too — but a request already
        // sent may have rotated the refresh token, and dropping its answer would lose the grant
        // for good. So the answer is still awaited and saved: if both refresh, the one Webex
        // answers second gets `invalid_grant` and adopts the stored tokens (`refused`).
        let refresh = self.oauth.refresh(&self.creds, &self.refresh);
        tokio::pin!(refresh);
        let answer = tokio::select! {
            biased;
            answer = &mut refresh => answer,
            lost = self.keep_lease() => {
                tracing::warn!(org = %self.org.name, "{lost}; still waiting for the answer to save it");
                refresh.await
            }
        };
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) if e.class() == ErrorClass::Reauth => return self.refused(e).await,
            Err(e) => return Err(e),
        };
        let update = crate::onboard::token_update(&resp, sent_at);
        // Webex has answered: from here the answer must be saved whatever happens to the
        // lease (the renewals only keep other processes waiting meanwhile).
        let save = self.save(&update);
        tokio::pin!(save);
        let org = tokio::select! {
            saved = &mut save => saved,
            _ = self.keep_lease() => save.await,
        }?;
        Ok(Refreshed::Saved {
            org: Box::new(org),
            resp,
        })
    }

    /// Renews the lease every third of its TTL; returns why when it is lost or could not be
    /// renewed before it would expire (the caller logs it and still saves the answer).
    async fn keep_lease(&self) -> String {
        let every = Duration::from_millis(self.lease_ttl_ms as u64 / 3);
        let mut expires_at = SystemClock.now_ms() + self.lease_ttl_ms;
        loop {
            tokio::time::sleep(every).await;
            let now = SystemClock.now_ms();
            let why = match self
                .vault
                .renew_lease(
                    &self.org,
                    REFRESH_SCOPE,
                    &self.holder_id,
                    now,
                    self.lease_ttl_ms,
                )
                .await
            {
                Ok(LeaseRenewal::Renewed { expires_at_ms }) => {
                    expires_at = expires_at_ms;
                    continue;
                }
                Ok(LeaseRenewal::Lost(_)) => "was taken over".to_string(),
                // A database hiccup: the lease still runs until `expires_at`.
                Err(e) if now + every.as_millis() as i64 * 2 < expires_at => {
                    tracing::warn!(org = %self.org.name, "could not renew the token refresh lease (will retry): {e}");
                    continue;
                }
                Err(e) => format!("could not be renewed ({e})"),
            };
            return format!(
                "the token refresh lease of org {} {why} before Webex answered",
                self.org.name
            );
        }
    }

    /// Saves a refresh answer, retrying database failures with backoff.
    async fn save(&self, update: &vault::TokenUpdate) -> Result<Org, WebexError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.vault.save_tokens(&self.org, update).await {
                Ok(org) => return Ok(org),
                Err(e) if e.is_transient() && attempt < SAVE_ATTEMPTS => {
                    tracing::warn!(org = %self.org.name, attempt, "could not save refreshed tokens (retrying): {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(WebexError::TokenSource {
                        reason: format!(
                            "refreshed the token for org {} but could not save it ({e}); not using it",
                            self.org.name
                        ),
                        class: ErrorClass::Transient,
                    });
                }
            }
        }
    }

    /// Webex refused the refresh token read under the lease. If the vault now holds a
    /// different one (or a newer refresh), another process rotated it — a lease that ran out
    /// from under a slow holder, say — and the grant is fine: adopt, never mark reauth.
    async fn refused(&self, refused: WebexError) -> Result<Refreshed, WebexError> {
        let unsure = |e: vault::VaultError| WebexError::TokenSource {
            reason: format!(
                "Webex refused the refresh token of org {} ({refused}) and the state database could not be \
                 read to check whether another process had rotated it ({e}); try again",
                self.org.name
            ),
            class: ErrorClass::Transient,
        };
        let Some(now) = self.vault.org_by_id(self.org.id).await.map_err(unsure)? else {
            return Err(refused);
        };
        let secrets = self.vault.org_secrets(&now).await.map_err(unsure)?;
        let rotated = secrets
            .refresh_token
            .as_ref()
            .is_some_and(|r| r.expose_secret() != self.refresh.expose_secret());
        if rotated || now.last_refresh_at_ms != self.org.last_refresh_at_ms {
            return Ok(Refreshed::ByAnother);
        }
        Err(refused)
    }
}

#[async_trait]
impl TokenProvider for OrgTokens {
    async fn access_token(&self) -> Result<SecretString, WebexError> {
        let mut st = self.state.lock().await;
        if self.needs_proactive_refresh(&st) {
            match self.refresh_shared(&mut st, Need::Proactive).await {
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
        let token = self
            .refresh_shared(&mut st, Need::Rejected(rejected.clone()))
            .await?;
        // Only a token this process obtained because of the 401 counts as forced; one another
        // process stored meanwhile gets its own chance.
        if st.refreshed_here {
            st.forced = Some(token.clone());
        }
        Ok(token)
    }
}
