//! The orchestrator: opens the vault and the archive once, then harvests every selected org
//! concurrently. One org's failure (revoked grant, missing scope, bad data) is recorded in its own
//! report and never stops another org (design invariant 5).

use std::sync::Arc;

use archive::Archive;
use futures::future::join_all;
use serde::Serialize;
use vault::{Counts, Failure, Keyring, Org, OrgStatus, Vault};
use webex::ErrorClass;
use webex::http::{RateGates, RetryPolicy};
use webex::oauth::OAuthClient;

use crate::clock::SharedClock;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::error::{EngineError, OrgError};
use crate::progress::{NoProgress, Progress};
use crate::report::{OrgOutcome, OrgReport, SourceReport, SyncReport};
use crate::source::{DEFAULT_SOURCE, OrgRun};
use crate::tokens::OrgTokens;

/// Failed or missing items of a window named in the run summary (all are counted).
const PROBLEMS_LISTED: i64 = 20;

/// A `sync` job still queued this long after it was created belongs to a killed `sync`.
const ABANDONED_SYNC_JOB_MS: i64 = 24 * 3_600_000;

/// How far behind "now" a default window ends.
pub const SETTLE_LAG_MS: i64 = 5 * 60 * 1000;

/// What `wxvault sync` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Org names; empty means all.
    pub orgs: Vec<String>,
    /// Inclusive start (epoch ms); default: end of the last completed window.
    pub from_ms: Option<i64>,
    /// Exclusive end (epoch ms); default: now.
    pub to_ms: Option<i64>,
    /// A rescan (the planner's daily job): sources also re-check items of the window that
    /// look finished, so captures Webex adds late are found. `false` for `sync` and harvests.
    pub rescan: bool,
}

/// One org as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OrgStatusView {
    pub org: Org,
    pub counts: Counts,
    pub last_window_end: Option<String>,
    pub failures: Vec<Failure>,
    /// Whether this process's master key opens the org's stored secrets.
    pub secrets: SecretsHealth,
    /// The same counts and cursor per source (the org's sources first, then any other source
    /// that still has items in the ledger). Additive: the fields above are the org's totals.
    pub sources: Vec<SourceStatus>,
}

/// One source of one org as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// Whether the org is currently set to harvest this source.
    pub enabled: bool,
    pub counts: Counts,
    pub last_window_end: Option<String>,
}

/// Whether the master key opens an org's stored secrets: with the wrong key an org recorded as
/// `active` cannot be harvested, and `status` must say so rather than look healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SecretsHealth {
    /// Every stored secret of the org opens.
    Readable,
    /// They cannot be opened with this master key; `reason` names the record and the cause,
    /// never a secret.
    Unreadable { reason: String },
}

/// Long-lived handles shared by every org in a run.
pub struct Engine {
    pub vault: Vault,
    pub archive: Archive,
    pub config: Arc<Config>,
    pub http: reqwest::Client,
    pub gates: RateGates,
    pub retry: RetryPolicy,
    pub clock: SharedClock,
    pub progress: Arc<dyn Progress>,
}

impl Engine {
    /// Opens the state database (running migrations) and the archive.
    ///
    /// # Errors
    /// [`EngineError`] naming the config key to check when the key, database or storage cannot be
    /// opened.
    pub async fn open(
        config: Config,
        master_key_env: Option<&str>,
        clock: SharedClock,
    ) -> Result<Engine, EngineError> {
        let keyring = Keyring::load(
            master_key_env,
            std::path::Path::new(&config.vault.master_key_file),
        )?;
        let vault = Vault::open_in(
            &config.database.url,
            config.database.schema.as_deref(),
            keyring,
        )
        .await?;
        let archive = Archive::open(&config.storage_config())?;
        let gates = crate::budget::shared_gates(&vault, &config.webex);
        Ok(Engine {
            vault,
            archive,
            config: Arc::new(config),
            http: webex::http::build_client(),
            gates,
            retry: RetryPolicy::default(),
            clock,
            progress: Arc::new(NoProgress),
        })
    }

    /// The OAuth client for `[webex] api_base`.
    ///
    /// # Errors
    /// When the configured base is not a URL.
    pub fn oauth(&self) -> Result<OAuthClient, EngineError> {
        let base = url::Url::parse(&self.config.webex.api_base).map_err(|e| {
            EngineError::Config(format!(
                "[webex] api_base {:?}: {e}",
                self.config.webex.api_base
            ))
        })?;
        Ok(
            OAuthClient::new(self.http.clone(), base, self.retry.clone())
                .with_gates(self.gates.clone()),
        )
    }

    /// Selected orgs, or an error naming the unknown ones.
    ///
    /// # Errors
    /// Unknown org names, database errors.
    pub async fn select_orgs(&self, names: &[String]) -> Result<Vec<Org>, EngineError> {
        let all = self.vault.orgs().await?;
        if names.is_empty() {
            return Ok(all);
        }
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !all.iter().any(|o| &o.name == *n))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = all.iter().map(|o| o.name.as_str()).collect();
            return Err(EngineError::Usage(format!(
                "unknown org {} (known: {})",
                unknown
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if known.is_empty() {
                    "none; add one with `wxvault org add`".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(all
            .into_iter()
            .filter(|o| names.contains(&o.name))
            .collect())
    }

    /// Harvests the selected orgs: queues one job per org for the window — or one per backfill
    /// chunk when it is long (see `queue::backfill`) — in the same queue the workers of `serve`
    /// and `worker` use, works on them alongside any running workers, and returns once every one
    /// has ended, with one report per org.
    ///
    /// # Errors
    /// Only for problems that concern every org (unknown org names, database unreachable); each
    /// org's own failure is in its report.
    pub async fn sync(&self, opts: &SyncOptions) -> Result<SyncReport, EngineError> {
        let orgs = self.select_orgs(&opts.orgs).await?;
        if orgs.is_empty() {
            return Err(EngineError::Usage(
                "no orgs configured; add one with `wxvault org add` first".into(),
            ));
        }
        self.oauth()?;
        self.clean_staging().await;
        let now = self.clock.now_ms();
        match self
            .vault
            .drop_abandoned_sync_jobs(now - ABANDONED_SYNC_JOB_MS)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} queued job(s) of sync runs that were killed"),
            Err(e) => tracing::warn!("could not remove abandoned sync jobs: {e}"),
        }
        let to = opts.to_ms.unwrap_or(now - SETTLE_LAG_MS).min(now);
        // One job per org, or one per backfill chunk of a long window: workers already running
        // take chunks too, and the org's report merges them.
        let mut per_org: Vec<Vec<i64>> = Vec::with_capacity(orgs.len());
        for org in &orgs {
            // The run's report is the answer: `sync` never retries on its own.
            let jobs =
                crate::queue::jobs_for_window(self, org, opts.from_ms, Some(to), "sync", 1).await?;
            per_org.push(match jobs.as_slice() {
                [one] => vec![self.vault.enqueue_job(org, one, now).await?],
                chunks => self.vault.enqueue_jobs(org, chunks, now).await?,
            });
        }
        let ids: Vec<i64> = per_org.iter().flatten().copied().collect();
        let jobs = crate::queue::work_until_done(self, &ids).await?;
        let reports = orgs
            .iter()
            .zip(&per_org)
            .map(|(org, ids)| {
                let parts = ids
                    .iter()
                    .map(|id| match jobs.iter().find(|j| j.id == *id) {
                        Some(job) => crate::queue::job_report(org, job),
                        None => OrgReport {
                            org: org.name.clone(),
                            org_id: org.org_id.clone(),
                            outcome: OrgOutcome::Failed(format!(
                                "org {}: removed while it was being synced",
                                org.name
                            )),
                            ..OrgReport::default()
                        },
                    })
                    .collect();
                crate::queue::merge_chunk_reports(parts)
            })
            .collect();
        Ok(SyncReport { orgs: reports })
    }

    /// Aborts and removes uploads a killed run left half-way (see
    /// `archive::Archive::clean_interrupted_uploads`).
    pub async fn clean_staging(&self) {
        // Uploads a killed run left half-way (kill -9 during an upload): their markers stopped
        // being refreshed; live uploads of concurrent processes refresh theirs and are kept.
        match self.archive.clean_interrupted_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} unfinished upload(s) left by an interrupted run"),
            Err(e) => tracing::warn!("could not clean unfinished uploads: {e}"),
        }
    }

    /// One org's harvest over the window `opts` names (every source of the org, side by side),
    /// under the org's `scope` lease (see `crate::lease::run_leased`) taken as `holder` (a job's
    /// claim, so whoever hands the job back can release that lease too); `stop` ends it early at
    /// the next batch boundary.
    pub(crate) async fn harvest_org(
        &self,
        org: Org,
        scope: &str,
        opts: &SyncOptions,
        items_window: Option<(i64, i64)>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        holder: vault::LeaseHolder,
    ) -> OrgReport {
        let oauth = match self.oauth() {
            Ok(o) => o,
            Err(e) => {
                return OrgReport {
                    org: org.name.clone(),
                    org_id: org.org_id.clone(),
                    outcome: OrgOutcome::Failed(e.to_string()),
                    error_class: Some(ErrorClass::Permanent),
                    ..OrgReport::default()
                };
            }
        };
        crate::lease::run_leased(self, org, scope, holder, |org, lease| {
            self.sync_org(org, opts, items_window, oauth, lease, stop)
        })
        .await
    }

    async fn sync_org(
        &self,
        org: Org,
        opts: &SyncOptions,
        items_window: Option<(i64, i64)>,
        oauth: OAuthClient,
        lease: crate::lease::OrgLease,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> OrgReport {
        let now = self.clock.now_ms();
        let mut report = OrgReport {
            org: org.name.clone(),
            org_id: org.org_id.clone(),
            ..OrgReport::default()
        };
        if let OrgStatus::NeedsReauth { reason } = &org.status {
            report.outcome = OrgOutcome::NeedsReauth(reason.clone());
            return report;
        }
        // Webex may list an item a little after its creation time: a default window ends
        // slightly in the past so the next run's window still covers items indexed late.
        let to = opts.to_ms.unwrap_or(now - SETTLE_LAG_MS).min(now);
        let tokens =
            match OrgTokens::load(self.vault.clone(), oauth, org.clone(), self.clock.clone()).await
            {
                Ok(t) => t,
                Err(e) => {
                    report.window_from = rfc3339(opts.from_ms.unwrap_or(to).min(to));
                    report.window_to = rfc3339(to);
                    report.outcome =
                        OrgOutcome::Failed(format!("cannot read the org's secrets: {e}"));
                    return report;
                }
            };
        let run = self.org_run_with(&org, tokens.clone(), stop, opts.rescan, items_window);
        lease.stop_on_loss(run.stop.clone());
        let names = org_sources(&org);
        // Sources run side by side; one source's refusal never stops the other.
        let parts = join_all(
            names
                .iter()
                .map(|name| self.sync_source(run.clone(), name, opts, now, to)),
        )
        .await;
        let mut from_all: Option<i64> = None;
        let mut first_error: Option<(String, OrgError)> = None;
        for (name, from, part, api_calls, result) in parts {
            from_all = Some(from_all.map_or(from, |f| f.min(from)));
            report.absorb(&part);
            report.api_calls += api_calls;
            let outcome = match &result {
                Ok(()) => OrgOutcome::Ok,
                Err(e) if e.class() == ErrorClass::Reauth => OrgOutcome::NeedsReauth(e.to_string()),
                Err(e) => OrgOutcome::Failed(e.to_string()),
            };
            report
                .sources
                .push(SourceReport::from_part(&name, &part, outcome, api_calls));
            if let Err(e) = result {
                // Every failed source is recorded (status, dashboard and notices read the
                // events); the org's outcome below carries the weightiest one.
                let msg = if names.len() > 1 {
                    format!("org {} ({name}): {e}", org.name)
                } else {
                    format!("org {}: {e}", org.name)
                };
                tracing::error!("{msg}");
                let _ = self
                    .vault
                    .record_event(Some(&org), "sync_failed", &msg)
                    .await;
                // A refused grant outranks any other error: it changes the org's status.
                let replace = match &first_error {
                    None => true,
                    Some((_, prev)) => {
                        e.class() == ErrorClass::Reauth && prev.class() != ErrorClass::Reauth
                    }
                };
                if replace {
                    first_error = Some((name, e));
                }
            }
        }
        let from = from_all.unwrap_or(to).min(to);
        report.window_from = rfc3339(from);
        report.window_to = rfc3339(to);
        // Items of this window that failed or went missing, in this run or an earlier one: they
        // keep the exit code at 2 until `wxvault retry` puts them back (or a late capture lands).
        match self
            .vault
            .problems_in_window(&org, from, to, PROBLEMS_LISTED)
            .await
        {
            Ok(p) => {
                report.window_problems = p.total;
                report.window_problem_items = p
                    .items
                    .into_iter()
                    .map(|f| format!("{} ({}): {}", f.item, f.state, f.reason))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(org = %org.name, "could not list the window's failed items: {e}")
            }
        }
        if let Some((source, e)) = first_error {
            let msg = if names.len() > 1 {
                format!("org {} ({source}): {e}", org.name)
            } else {
                format!("org {}: {e}", org.name)
            };
            report.error_class = Some(e.class());
            report.outcome = match e.class() {
                ErrorClass::Reauth => self.reauth_outcome(&org, &tokens, &msg).await,
                ErrorClass::Transient | ErrorClass::Permanent => OrgOutcome::Failed(msg),
            };
        }
        report
    }

    /// The handles one org's run shares across its sources.
    pub(crate) fn org_run(&self, org: &Org, tokens: Arc<OrgTokens>) -> Arc<OrgRun> {
        self.org_run_with(
            org,
            tokens,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
            false,
            None,
        )
    }

    /// [`Engine::org_run`] with a stop flag of the caller's (a job's: lease lost, shutdown),
    /// whether the run is a rescan ([`SyncOptions::rescan`]), and the window whose items alone it
    /// works on (a backfill chunk's, see [`OrgRun::items_window`]).
    pub(crate) fn org_run_with(
        &self,
        org: &Org,
        tokens: Arc<OrgTokens>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        rescan: bool,
        items_window: Option<(i64, i64)>,
    ) -> Arc<OrgRun> {
        Arc::new(OrgRun {
            vault: self.vault.clone(),
            archive: self.archive.clone(),
            http: self.http.clone(),
            gates: self.gates.clone(),
            retry: self.retry.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            progress: self.progress.clone(),
            org: org.clone(),
            tokens,
            stop,
            rescan,
            items_window,
        })
    }

    /// One source of one org: its window (from its own cursor), its harvest and its counters.
    async fn sync_source(
        &self,
        run: Arc<OrgRun>,
        name: &str,
        opts: &SyncOptions,
        now: i64,
        to: i64,
    ) -> (String, i64, OrgReport, u64, Result<(), OrgError>) {
        let mut part = OrgReport::default();
        let from = match opts.from_ms {
            Some(f) => f,
            None => match self.vault.last_window_end(&run.org, name).await {
                Ok(Some(end)) => end,
                Ok(None) => {
                    now - i64::try_from(self.config.sync.first_lookback_hours).unwrap_or(24)
                        * 3_600_000
                }
                Err(e) => {
                    let e = OrgError::db("reading the harvest cursor")(e);
                    return (name.to_owned(), to, part, 0, Err(e));
                }
            },
        }
        .min(to);
        part.window_from = rfc3339(from);
        part.window_to = rfc3339(to);
        let Some(spec) = crate::source::spec(name) else {
            let e = OrgError::Config(format!(
                "unknown source {name:?} for org {}; set it with `wxvault org sources {} wxcc,calling`",
                run.org.name, run.org.name
            ));
            return (name.to_owned(), from, part, 0, Err(e));
        };
        let source = match (spec.start)(run) {
            Ok(s) => s,
            Err(e) => return (name.to_owned(), from, part, 0, Err(e)),
        };
        let result = source.harvest(from, to, &mut part).await;
        (name.to_owned(), from, part, source.api_calls(), result)
    }

    /// The org's outcome after Webex refused its grant: `needs_reauth` with the likely causes,
    /// recorded on the org unless the token manager already did.
    async fn reauth_outcome(&self, org: &Org, tokens: &OrgTokens, msg: &str) -> OrgOutcome {
        let fresh = tokens.org().await;
        match fresh.status {
            OrgStatus::NeedsReauth { reason } => OrgOutcome::NeedsReauth(reason),
            OrgStatus::Active => {
                let reason = format!(
                    "{msg}. Webex rejected a freshly refreshed token: the grant no longer authorizes this call. \
                     Likely causes: {}. Fix: have an admin of that org reconnect it.",
                    crate::tokens::REAUTH_CAUSES
                );
                let _ = self
                    .vault
                    .set_org_status(
                        org,
                        OrgStatus::NeedsReauth {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                OrgOutcome::NeedsReauth(reason)
            }
        }
    }

    /// `wxvault retry`: puts the selected orgs' failed recordings and failed or missing tasks
    /// (task created in `[from_ms, to_ms)`, each bound optional) back in line for the next sync.
    ///
    /// # Errors
    /// Unknown org names, database errors.
    pub async fn retry_failed(
        &self,
        names: &[String],
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<(String, vault::RetryCounts)>, EngineError> {
        let mut out = Vec::new();
        for org in self.select_orgs(names).await? {
            let counts = self
                .vault
                .retry_failed(&org, from_ms, to_ms, self.clock.now_ms())
                .await?;
            if counts.recordings + counts.tasks > 0 {
                let msg = format!(
                    "operator put back {} failed recording(s) and {} failed or missing task(s)",
                    counts.recordings, counts.tasks
                );
                let _ = self.vault.record_event(Some(&org), "retry", &msg).await;
            }
            out.push((org.name, counts));
        }
        Ok(out)
    }

    /// Per-org ledger view for `wxvault status`, including whether the master key opens each
    /// org's secrets (they are opened and dropped at once; nothing is shown).
    ///
    /// # Errors
    /// Database errors.
    pub async fn status(&self) -> Result<Vec<OrgStatusView>, EngineError> {
        let mut out = Vec::new();
        for org in self.vault.orgs().await? {
            let counts = self.vault.counts(&org).await?;
            let mut by_source = self.vault.counts_by_source(&org).await?;
            let mut sources = Vec::new();
            let mut last: Option<i64> = None;
            let mut all_started = true;
            let enabled = org_sources(&org);
            let others: Vec<String> = by_source
                .keys()
                .filter(|k| !enabled.contains(k))
                .cloned()
                .collect();
            for name in enabled.iter().chain(others.iter()) {
                let cursor = self.vault.last_window_end(&org, name).await?;
                let is_enabled = enabled.contains(name);
                if is_enabled {
                    match cursor {
                        Some(c) => last = Some(last.map_or(c, |l| l.min(c))),
                        None => all_started = false,
                    }
                }
                sources.push(SourceStatus {
                    source: name.clone(),
                    enabled: is_enabled,
                    counts: by_source.remove(name).unwrap_or_default(),
                    last_window_end: cursor.map(rfc3339),
                });
            }
            // The org is synced up to where its least advanced source is.
            let last = if all_started { last } else { None };
            let failures = self.vault.failures(&org, 20).await?;
            let secrets = match self.vault.org_secrets(&org).await {
                Ok(_) => SecretsHealth::Readable,
                Err(
                    e @ (vault::VaultError::Decrypt { .. }
                    | vault::VaultError::UnknownKeyVersion { .. }
                    | vault::VaultError::Corrupt { .. }),
                ) => SecretsHealth::Unreadable {
                    reason: format!(
                        "the org's secrets cannot be opened with this master key ({e}); use the key file or WXVAULT_MASTER_KEY that stored them — sync cannot run for this org until then"
                    ),
                },
                Err(e) => return Err(e.into()),
            };
            out.push(OrgStatusView {
                org,
                counts,
                last_window_end: last.map(rfc3339),
                failures,
                secrets,
                sources,
            });
        }
        Ok(out)
    }
}

/// The sources an org harvests: its configured ones, or WxCC for orgs that name none.
pub fn org_sources(org: &Org) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in &org.sources {
        // Never one source twice (it would be harvested twice at once).
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    if out.is_empty() {
        out.push(DEFAULT_SOURCE.to_owned());
    }
    out
}
