//! Recording sources: one module per source (`wxcc`, `calling`), each knowing its scopes, how it
//! discovers items for a window and how it resolves fresh links, names objects and builds
//! sidecars. Everything after "here is the audio of this item" is [`crate::pipeline`].
//!
//! Adding a source means one module with a [`SourceSpec`] and one line in [`REGISTRY`].

pub mod calling;
pub mod wxcc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use archive::Archive;
use async_trait::async_trait;
use vault::{Org, Vault};
use webex::http::{RateGates, RetryPolicy};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::dbretry::with_db_retry;
use crate::error::OrgError;
use crate::progress::Progress;
use crate::report::OrgReport;
use crate::tokens::OrgTokens;

/// Builds a source for one org's run.
pub type StartFn = fn(Arc<OrgRun>) -> Result<Box<dyn Source>, OrgError>;

/// A recording source as the registry knows it.
pub struct SourceSpec {
    /// Name in `--sources`, the ledger, object keys and sidecars.
    pub name: &'static str,
    /// What operators call it.
    pub label: &'static str,
    /// Scopes to ask for when an org with this source is connected.
    pub scopes: &'static [&'static str],
    /// Why the scopes are asked for, shown on consent pages.
    pub consent_reason: &'static str,
    /// What to tell the operator when a connected grant lacks one of `scopes`.
    pub missing_scope_hint: &'static str,
    /// Builds the source for one org's run.
    pub start: StartFn,
}

/// Every source wxvault knows, in the order they run and are shown.
pub const REGISTRY: &[&SourceSpec] = &[&wxcc::SPEC, &calling::SPEC];

/// The source of an org that names none (orgs created before sources were selectable).
pub const DEFAULT_SOURCE: &str = "wxcc";

/// The registered source called `name`.
pub fn spec(name: &str) -> Option<&'static SourceSpec> {
    REGISTRY.iter().copied().find(|s| s.name == name)
}

/// The names of every registered source.
pub fn known_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

/// Parses a `--sources` value (`wxcc,calling`): known names, no duplicates, at least one.
///
/// # Errors
/// A message naming the unknown value and the known ones.
pub fn parse_sources(items: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let name = part.to_ascii_lowercase();
        if spec(&name).is_none() {
            return Err(format!(
                "unknown source {part:?} (known: {})",
                known_names().join(", ")
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no source given (known: {})",
            known_names().join(", ")
        ));
    }
    Ok(out)
}

/// One source's harvest for one org's run.
#[async_trait]
pub trait Source: Send + Sync {
    /// Harvests `[from_ms, to_ms)` and every unfinished item of earlier runs.
    ///
    /// # Errors
    /// Only org-level problems; problems with single items are recorded against them and
    /// counted in the report.
    async fn harvest(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError>;
    /// API calls this source made (for the economy figures).
    fn api_calls(&self) -> u64;
    /// Checks, right after the org is connected, with a call or two, that the grant can do what
    /// this source needs; says what was checked.
    ///
    /// # Errors
    /// What Webex refused, as for a harvest.
    async fn probe(&self) -> Result<String, OrgError>;
}

/// Everything one org's run shares across its sources.
pub struct OrgRun {
    pub vault: Vault,
    pub archive: Archive,
    pub http: reqwest::Client,
    pub gates: RateGates,
    pub retry: RetryPolicy,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub progress: Arc<dyn Progress>,
    pub org: Org,
    pub tokens: Arc<OrgTokens>,
    /// Set once an org-level error is seen, or from outside (the sync lease, when lost): no
    /// further listing window, batch or window record is started.
    pub stop: Arc<AtomicBool>,
    /// A rescan of the window ([`crate::SyncOptions::rescan`]): re-check items that look
    /// finished too (WxCC: captured tasks whose recordings are all archived).
    pub rescan: bool,
    /// The unfinished items this run resumes and re-checks: those created in `[from, to)`. Runs of
    /// one org can go on at once while it has backfill chunks (the engine's queue decides each
    /// run's share), so each leaves the others' items alone instead of downloading them side by
    /// side. `None`: every unfinished item of the org.
    pub items_window: Option<(i64, i64)>,
}

impl OrgRun {
    /// A state-database call, with transient failures retried (see [`with_db_retry`]).
    ///
    /// # Errors
    /// [`OrgError::Database`] naming `op` once the retries are spent or the error is not transient.
    pub async fn db<T, F, Fut>(&self, op: &str, f: F) -> Result<T, OrgError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, vault::VaultError>>,
    {
        with_db_retry(&self.retry, op, f).await
    }

    /// Whether an unfinished item created at `created_ms` is this run's to work on (see
    /// [`OrgRun::items_window`]).
    pub fn owns_item(&self, created_ms: i64) -> bool {
        self.items_window
            .is_none_or(|(from, to)| from <= created_ms && created_ms < to)
    }

    /// Whether the run was told to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records `[from, to)` as harvested for `source`, in windows of `window_ms`, once the
    /// source's run left nothing behind (`report` is that source's; the caller does not call
    /// this after an org-level error). The cursor (`last_window_end`) only moves contiguously: a
    /// window that starts after it (a backfill chunk that finished before the chunk ahead of it,
    /// an ad-hoc `--from` ahead of the cursor) is recorded *ahead* and moves the cursor only once
    /// the gap before it is harvested, so the next default run still harvests that gap.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_windows(
        &self,
        source: &str,
        from_ms: i64,
        to_ms: i64,
        window_ms: i64,
        report: &OrgReport,
    ) -> Result<(), OrgError> {
        if report.transient_left > 0 || report.malformed > 0 || self.stopped() {
            return Ok(());
        }
        let mut cursor = self
            .db("reading the harvest cursor", || {
                self.vault.last_window_end(&self.org, source)
            })
            .await?;
        let mut start = from_ms;
        while start < to_ms {
            let end = (start + window_ms).min(to_ms);
            if cursor.is_none_or(|c| start <= c) {
                self.db("recording a finished window", || {
                    self.vault.window_done(&self.org, source, start, end)
                })
                .await?;
                cursor = Some(cursor.map_or(end, |c| c.max(end)));
            } else {
                self.db("recording a finished window ahead of the cursor", || {
                    self.vault.window_done_ahead(&self.org, source, start, end)
                })
                .await?;
            }
            start = end;
        }
        self.db("putting finished windows in line", || {
            self.vault.promote_windows(&self.org, source)
        })
        .await?;
        Ok(())
    }

    /// Response items that could not be read: one clear line each, recorded, never fatal.
    pub async fn record_rejected(
        &self,
        endpoint: &str,
        kind: &str,
        rejected: &[webex::wxcc::Rejected],
        report: &mut OrgReport,
    ) {
        for rej in rejected {
            let msg = format!(
                "org {}: {endpoint} returned an item that could not be read (id {}): {}",
                self.org.name,
                rej.id.as_deref().unwrap_or("unknown"),
                rej.reason
            );
            tracing::warn!("{msg}");
            let _ = self.vault.record_event(Some(&self.org), kind, &msg).await;
            report.malformed += 1;
        }
    }
}
