//! The planner: every `[schedule] interval_minutes` it queues a harvest for each active org that
//! has none pending (as backfill chunks when the org is far behind, see [`super::backfill`]), and
//! once a day a rescan of the last `[schedule] rescan_days`. Exactly one
//! process plans at a time: it holds the `planner` singleton lease in the database, renewed on
//! every pass, and records when it last planned there, so a planner that moves to another
//! process (the first one died) keeps the same rhythm.

use vault::{KIND_HARVEST, KIND_RESCAN, LeaseHolder, NewJob, OrgStatus};

use super::backfill::jobs_for_window;
use crate::error::EngineError;
use crate::sync::{Engine, SETTLE_LAG_MS};

/// The planner's singleton name.
pub const PLANNER: &str = "planner";

const DAY_MS: i64 = 86_400_000;

/// Finished jobs are kept this long (their reports and reasons), then removed.
const KEEP_FINISHED_MS: i64 = 7 * DAY_MS;

/// What one planning pass queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub harvests: u64,
    /// Backfill chunks queued (for orgs far behind).
    pub backfill_chunks: u64,
    pub rescans: u64,
    /// Active orgs that already had a harvest queued or running.
    pub already_pending: u64,
    /// Orgs left out because they need re-authorization.
    pub needs_reauth: u64,
    pub purged_jobs: u64,
}

impl PlanSummary {
    /// One line for the log and `status`.
    pub fn line(&self) -> String {
        format!(
            "queued {} harvest(s), {} backfill chunk(s) and {} rescan(s); {} org(s) had one pending, \
             {} need re-authorization",
            self.harvests,
            self.backfill_chunks,
            self.rescans,
            self.already_pending,
            self.needs_reauth
        )
    }
}

/// Plans if this process holds (or can take) the planner lease and a pass is due; `None` when
/// another process plans or nothing was due.
///
/// # Errors
/// Database failures.
pub async fn plan_if_due(
    engine: &Engine,
    holder: &LeaseHolder,
) -> Result<Option<PlanSummary>, EngineError> {
    let now = engine.clock.now_ms();
    let cfg = &engine.config;
    let poll_ms = i64::try_from(cfg.worker.poll_seconds).unwrap_or(5) * 1000;
    // Long enough to survive a few missed passes, short enough that another process takes over
    // soon after this one dies.
    let ttl = cfg.worker.lease_ms().max(3 * poll_ms);
    if !engine
        .vault
        .acquire_singleton(PLANNER, holder, now, ttl)
        .await?
    {
        return Ok(None);
    }
    let record = engine.vault.singleton(PLANNER).await?;
    let interval = i64::try_from(cfg.schedule.interval_minutes).unwrap_or(15) * 60_000;
    let last_run = record.as_ref().and_then(|r| r.last_run_ms);
    // A clock that went backwards (a restored database, a moved simulator clock) plans at once.
    let due = last_run.is_none_or(|t| now - t >= interval || now < t);
    if !due {
        return Ok(None);
    }
    let last_rescan = record.as_ref().and_then(|r| r.last_rescan_ms);
    // The first rescan comes a day after the first pass: a new deployment's first harvest
    // covers the recent past already.
    let since = last_rescan.or(record.as_ref().and_then(|r| r.first_run_ms));
    let rescan_due =
        cfg.schedule.rescan_days > 0 && since.is_some_and(|t| now - t >= DAY_MS || now < t);
    let mut summary = PlanSummary::default();
    for org in engine.vault.orgs().await? {
        if matches!(org.status, OrgStatus::NeedsReauth { .. }) {
            summary.needs_reauth += 1;
            continue;
        }
        if engine.vault.has_open_job(&org, KIND_HARVEST).await? {
            summary.already_pending += 1;
        } else {
            let jobs =
                jobs_for_window(engine, &org, None, None, "planner", cfg.worker.max_attempts)
                    .await?;
            match jobs.as_slice() {
                [harvest] if harvest.kind == KIND_HARVEST => {
                    match engine
                        .vault
                        .enqueue_job_unless_open(&org, harvest, now)
                        .await?
                    {
                        Some(_) => summary.harvests += 1,
                        None => summary.already_pending += 1,
                    }
                }
                chunks => {
                    let ids = engine.vault.enqueue_jobs(&org, chunks, now).await?;
                    summary.backfill_chunks += ids.len() as u64;
                }
            }
        }
        if rescan_due {
            let days = i64::try_from(cfg.schedule.rescan_days).unwrap_or(3);
            let rescan = NewJob {
                kind: KIND_RESCAN.into(),
                from_ms: Some(now - days * DAY_MS),
                to_ms: Some(now - SETTLE_LAG_MS),
                requested_by: "planner".into(),
                max_attempts: cfg.worker.max_attempts,
            };
            if engine
                .vault
                .enqueue_job_unless_open(&org, &rescan, now)
                .await?
                .is_some()
            {
                summary.rescans += 1;
            }
        }
    }
    summary.purged_jobs = engine
        .vault
        .purge_finished_jobs(now - KEEP_FINISHED_MS)
        .await?;
    // The first pass starts the rescan clock (`first_run_ms`).
    engine
        .vault
        .record_singleton_run(PLANNER, &holder.id, now, rescan_due, &summary.line())
        .await?;
    Ok(Some(summary))
}
