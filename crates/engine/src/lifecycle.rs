//! Keeping grants alive without anyone watching, and telling someone when that fails.
//!
//! Webex refresh tokens lapse after about 90 idle days, and an authorization dies when the admin
//! who granted it changes password, leaves, or loses the role. wxvault refreshes every org at
//! least every [`KEEP_ALIVE_EVERY_MS`] (rarely more often than that when idle: Webex may hand back the
//! same tokens when asked more often), watches the refresh token's remaining life from what Webex
//! returns, and sends a notice — a log line and, when configured, a JSON POST — for every
//! problem an operator must act on.

use std::time::Duration;

use serde::Serialize;
use vault::{Org, OrgStatus};
use webex::ErrorClass;

use crate::Engine;
use crate::clock::rfc3339;
use crate::error::EngineError;
use crate::tokens::OrgTokens;

const DAY_MS: i64 = 24 * 3_600_000;
/// An idle org's grant is refreshed at least this often.
pub const KEEP_ALIVE_EVERY_MS: i64 = 3 * DAY_MS;
/// Warn when the refresh token has less than this left.
pub const REFRESH_WARNING_MS: i64 = 14 * DAY_MS;
/// A refresh that moved the refresh token's expiry by less than this did not extend it.
const EXTENDED_TOLERANCE_MS: i64 = 60_000;

/// Something an operator must know about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notice {
    /// `needs_reauth`, `refresh_expiring`, `refresh_not_extended`, `missing_scope`, `sync_failed`.
    pub event: String,
    pub org: String,
    pub org_id: String,
    pub reason: String,
    /// Where an admin re-connects the org (from `[notify] reconnect_url`), when configured.
    pub reconnect_url: Option<String>,
    /// The command that re-connects it from a terminal.
    pub reconnect_command: String,
    pub at: String,
}

/// What one keep-alive pass did for one org.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeepAliveResult {
    pub org: String,
    pub refreshed: bool,
    pub access_expires_at: Option<String>,
    pub refresh_expires_at: Option<String>,
    pub notices: Vec<Notice>,
}

impl Engine {
    /// A notice for `org`, with the reconnect hints filled in.
    pub fn notice(&self, org: &Org, event: &str, reason: &str) -> Notice {
        Notice {
            event: event.to_string(),
            org: org.name.clone(),
            org_id: org.org_id.clone(),
            reason: reason.to_string(),
            reconnect_url: self
                .config
                .notify
                .reconnect_url
                .as_ref()
                .map(|t| t.replace("{org}", &urlencode(&org.name)))
                // With `serve` behind a known address, its dashboard has the re-connect button.
                .or_else(|| {
                    self.config
                        .serve
                        .public_url
                        .as_ref()
                        .map(|u| format!("{}/", u.trim_end_matches('/')))
                }),
            reconnect_command: format!("wxvault connect --name {}", org.name),
            at: rfc3339(self.clock.now_ms()),
        }
    }

    /// One keep-alive pass over every active org: refresh where due, then check how long the
    /// refresh token has left. Orgs already marked `needs_reauth` are reported again, not retried.
    ///
    /// # Errors
    /// Only database errors that concern every org; each org's problem is a notice.
    pub async fn keep_alive(&self) -> Result<Vec<KeepAliveResult>, EngineError> {
        let oauth = self.oauth()?;
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for org in self.vault.orgs().await? {
            let mut result = KeepAliveResult {
                org: org.name.clone(),
                refreshed: false,
                access_expires_at: org.access_expires_at_ms.map(rfc3339),
                refresh_expires_at: org.refresh_expires_at_ms.map(rfc3339),
                notices: Vec::new(),
            };
            if let OrgStatus::NeedsReauth { reason } = &org.status {
                result
                    .notices
                    .push(self.notice(&org, "needs_reauth", reason));
                out.push(result);
                continue;
            }
            let since = now - org.last_refresh_at_ms.unwrap_or(org.created_at_ms);
            let force = since >= KEEP_ALIVE_EVERY_MS;
            let tokens = match OrgTokens::load(
                self.vault.clone(),
                oauth.clone(),
                org.clone(),
                self.clock.clone(),
            )
            .await
            {
                Ok(t) => t,
                Err(e) => {
                    // One org's unreadable secrets never stop the others (invariant 5).
                    result.notices.push(self.notice(
                        &org,
                        "refresh_failed",
                        &format!("cannot read the org's secrets: {e}"),
                    ));
                    out.push(result);
                    continue;
                }
            };
            let before = org.refresh_expires_at_ms;
            // Forced only every few days; otherwise only an access token running out refreshes.
            // The window is passed on so that the vault's last refresh (another process's) decides,
            // not this possibly stale snapshot.
            let refreshed = tokens
                .refresh_if(force.then_some(KEEP_ALIVE_EVERY_MS))
                .await;
            let fresh = tokens.org().await;
            match refreshed {
                Ok(did) => {
                    result.refreshed = did;
                    result.access_expires_at = fresh.access_expires_at_ms.map(rfc3339);
                    result.refresh_expires_at = fresh.refresh_expires_at_ms.map(rfc3339);
                    if did
                        && let (Some(b), Some(a)) = (before, fresh.refresh_expires_at_ms)
                        && a - b < EXTENDED_TOLERANCE_MS
                    {
                        result.notices.push(self.notice(
                            &fresh,
                            "refresh_not_extended",
                            &format!(
                                "a refresh did not extend the refresh token (still expires {}); Webex counts its lifetime down, \
                                 so the org must be re-connected before then",
                                rfc3339(a)
                            ),
                        ));
                    }
                    if let Some(exp) = fresh.refresh_expires_at_ms
                        && exp - now < REFRESH_WARNING_MS
                    {
                        let days = (exp - now).max(0) / DAY_MS;
                        result.notices.push(self.notice(
                            &fresh,
                            "refresh_expiring",
                            &format!(
                                "the refresh token expires {} (in {days} day(s)); after that the org stops archiving until an admin re-connects it",
                                rfc3339(exp)
                            ),
                        ));
                    }
                }
                Err(e) => {
                    let (event, reason) = match (&fresh.status, e.class()) {
                        (OrgStatus::NeedsReauth { reason }, _) => ("needs_reauth", reason.clone()),
                        (_, ErrorClass::Transient) => (
                            "refresh_failed",
                            format!("keep-alive refresh failed, will retry: {e}"),
                        ),
                        (_, _) => ("refresh_failed", format!("keep-alive refresh failed: {e}")),
                    };
                    result.notices.push(self.notice(&fresh, event, &reason));
                }
            }
            out.push(result);
        }
        Ok(out)
    }

    /// Notices for a finished sync: refused grants, org failures, missing captures.
    pub async fn sync_notices(&self, report: &crate::SyncReport) -> Vec<Notice> {
        let mut notices = Vec::new();
        for r in &report.orgs {
            let org = match self.vault.org_by_name(&r.org).await {
                Ok(Some(org)) => org,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(org = %r.org, "cannot prepare notices: {e}");
                    continue;
                }
            };
            match &r.outcome {
                crate::OrgOutcome::NeedsReauth(reason) => {
                    notices.push(self.notice(&org, "needs_reauth", reason))
                }
                crate::OrgOutcome::Failed(reason) => {
                    notices.push(self.notice(&org, "sync_failed", reason))
                }
                crate::OrgOutcome::Ok | crate::OrgOutcome::Skipped(_) => {}
            }
            if !r.missing.is_empty() || !r.failed.is_empty() {
                notices.push(self.notice(
                    &org,
                    "sync_items_failed",
                    &format!("{} capture(s) missing after the grace period, {} recording(s) failed; see `wxvault status`", r.missing.len(), r.failed.len()),
                ));
            }
            if r.malformed > 0 {
                notices.push(self.notice(
                    &org,
                    "bad_data",
                    &format!(
                        "{} item(s) in Webex's answers could not be read and were not archived; see the events log",
                        r.malformed
                    ),
                ));
            }
        }
        notices
    }

    /// Logs every notice and, when `[notify] webhook_url` is set, POSTs each as JSON, retrying
    /// with backoff. Returns how many were delivered to the webhook.
    pub async fn notify(&self, notices: &[Notice]) -> usize {
        let mut delivered = 0;
        for n in notices {
            tracing::warn!(event = %n.event, org = %n.org, "{}", n.reason);
            let _ = self
                .vault
                .record_event(
                    None,
                    &format!("notice:{}", n.event),
                    &format!("{}: {}", n.org, n.reason),
                )
                .await;
            let Some(url) = &self.config.notify.webhook_url else {
                continue;
            };
            if self.post_notice(url, n).await {
                delivered += 1;
            }
        }
        delivered
    }

    async fn post_notice(&self, url: &str, n: &Notice) -> bool {
        let attempts = self.config.notify.attempts.max(1);
        for attempt in 1..=attempts {
            match self
                .http
                .post(url)
                .json(n)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(resp) => {
                    tracing::warn!(event = %n.event, status = %resp.status(), attempt, "notification webhook refused the notice")
                }
                Err(e) => {
                    tracing::warn!(event = %n.event, attempt, "notification webhook unreachable: {}", e.without_url())
                }
            }
            if attempt < attempts {
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
        }
        tracing::error!(event = %n.event, org = %n.org, "could not deliver the notice to the notification webhook after {attempts} attempts");
        false
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
