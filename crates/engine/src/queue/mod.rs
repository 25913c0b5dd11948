//! The work queue's engine side: running claimed jobs, the worker loop of `serve` and `worker`,
//! and `sync`'s wait for its own jobs.
//!
//! A job is one org's harvest over a window (every source of the org side by side, as `sync`
//! always did). An org's harvests and rescans share the org's lane: one of them runs at a time
//! across every process (vault `jobs`), and the run also holds the org's `sync` lease, which
//! fences a process that was paused past its job lease (its heartbeat finds the lease gone and
//! stops the run). A long catch-up is split into backfill chunks (see [`backfill`]), each on its
//! own lane with its own lease scope, so one org's backfill spreads over many workers too.
//!
//! While a job runs, its holder renews the job's lease every third of `[worker] lease_seconds`.
//! A run ends in one of: done (the report is stored with it); queued again after a transient
//! org-level error (backoff, up to `[worker] max_attempts` runs); failed for good (the grant was
//! refused, a permanent error, or the attempts ran out — `status` shows the reason); or released
//! untouched when the process shuts down.

mod backfill;
mod config;
mod planner;
mod view;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use vault::{Job, LeaseHolder, Org};
use webex::ErrorClass;

pub(crate) use backfill::jobs_for_window;
pub use backfill::merge_chunk_reports;
pub use config::{ScheduleConfig, WorkerConfig};
pub use planner::{PLANNER, PlanSummary, plan_if_due};
pub use view::{LeaseView, QueueView};

use crate::clock::rfc3339;
use crate::error::EngineError;
use crate::lease::holder_for_this_run;
use crate::report::{OrgOutcome, OrgReport};
use crate::sync::{Engine, SyncOptions};

/// A job whose runs keep dying (kill -9, OOM) fails after this many lost leases per allowed
/// attempt: a poison job must not cycle for ever, a crash-heavy week must not fail good work.
const LOST_LEASES_PER_ATTEMPT: i64 = 10;

/// How often a worker looks for interrupted uploads (their markers went stale) besides at start.
const STAGING_SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// How `sync` looks again at jobs that other processes are running.
const SYNC_POLL: Duration = Duration::from_millis(250);

/// What a worker process does.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Also run the planner (one planner at a time across all processes).
    pub plan: bool,
}

/// What a worker loop did, for its last log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub jobs_retried: u64,
    /// Jobs handed back to the queue at shutdown (unfinished, no attempt counted).
    pub jobs_released: u64,
}

/// How one run of a job ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Done,
    Retry,
    Failed,
    Released,
    /// Not ours any more (lease lost): nothing recorded.
    Lost,
}

/// The most jobs whose leases expired that a job may lose before it fails for good.
pub(crate) fn max_lost_leases(engine: &Engine) -> i64 {
    engine
        .config
        .worker
        .max_attempts
        .saturating_mul(LOST_LEASES_PER_ATTEMPT)
}

/// Runs claimed `job` under `holder`: renews its lease while the org's harvest goes on, then
/// records the outcome. `stop` ends the harvest early (shutdown); `shutting_down` says why.
async fn run_one(
    engine: &Engine,
    holder: &LeaseHolder,
    job: Job,
    stop: Arc<AtomicBool>,
    shutting_down: &AtomicBool,
) -> Ended {
    let lease_ms = engine.config.worker.lease_ms();
    let renew_every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(1));
    let lost = Arc::new(AtomicBool::new(false));
    let work = run_job(engine, &job, stop.clone(), holder.clone());
    let renew = async {
        let mut expires = job.lease_expires_ms.unwrap_or(0);
        loop {
            tokio::time::sleep(renew_every).await;
            let now = engine.clock.now_ms();
            match engine
                .vault
                .renew_job(job.id, &holder.id, now, lease_ms)
                .await
            {
                Ok(true) => expires = now + lease_ms,
                Ok(false) => break,
                Err(e) if now < expires => {
                    tracing::warn!(
                        job = job.id,
                        "could not renew the job's lease, will retry: {e}"
                    );
                }
                Err(e) => {
                    tracing::error!(
                        job = job.id,
                        "could not renew the job's lease before it expired: {e}"
                    );
                    break;
                }
            }
        }
        tracing::warn!(
            job = job.id,
            "job {} lost its lease (another process may run it now); stopping its run at the next batch",
            job.id
        );
        lost.store(true, Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
    };
    let report = {
        tokio::pin!(work);
        tokio::pin!(renew);
        tokio::select! {
            r = &mut work => r,
            () = &mut renew => work.await,
        }
    };
    if lost.load(Ordering::SeqCst) {
        return Ended::Lost;
    }
    let now = engine.clock.now_ms();
    let vault = &engine.vault;
    if shutting_down.load(Ordering::SeqCst) && stop.load(Ordering::SeqCst) {
        return match vault.release_job(job.id, &holder.id, now).await {
            Ok(true) => Ended::Released,
            Ok(false) => Ended::Lost,
            Err(e) => {
                tracing::warn!(
                    job = job.id,
                    "could not release job {} ({e}); it goes back to the queue when its lease expires",
                    job.id
                );
                Ended::Lost
            }
        };
    }
    let result = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    let recorded = match &report.outcome {
        OrgOutcome::Ok => vault
            .finish_job(job.id, &holder.id, now, &result)
            .await
            .map(|ok| if ok { Ended::Done } else { Ended::Lost }),
        // Another process holds the job's org lease (a run that died on another host, whose
        // lease has not expired yet): the job waits for it without losing an attempt. `sync`'s
        // own jobs report the skip, as `sync` always did.
        OrgOutcome::Skipped(_) if job.requested_by != "sync" => {
            let due = org_lease_expiry(engine, job.org, &lease_scope(&job))
                .await
                .unwrap_or(now + lease_ms);
            vault
                .release_job(job.id, &holder.id, due.max(now + 1000))
                .await
                .map(|ok| if ok { Ended::Retry } else { Ended::Lost })
        }
        OrgOutcome::Skipped(_) => vault
            .finish_job(job.id, &holder.id, now, &result)
            .await
            .map(|ok| if ok { Ended::Done } else { Ended::Lost }),
        OrgOutcome::NeedsReauth(why) => vault
            .fail_job(job.id, &holder.id, now, why, &result, None)
            .await
            .map(ended_from),
        OrgOutcome::Failed(why) => {
            let retry = (report.error_class == Some(ErrorClass::Transient))
                .then(|| engine.config.worker.retry_at(now, job.attempts));
            vault
                .fail_job(job.id, &holder.id, now, why, &result, retry)
                .await
                .map(ended_from)
        }
    };
    match recorded {
        Ok(ended) => ended,
        Err(e) => {
            tracing::error!(
                job = job.id,
                "could not record the end of job {}: {e}; it runs again once its lease expires",
                job.id
            );
            Ended::Lost
        }
    }
}

/// When the org's `scope` lease (held by another process) expires.
async fn org_lease_expiry(engine: &Engine, org: i64, scope: &str) -> Option<i64> {
    let org = engine.vault.org_by_id(org).await.ok()??;
    let lease = engine.vault.lease(&org, scope).await.ok()??;
    Some(lease.expires_at_ms)
}

/// The org lease a job's run holds: a backfill chunk's own scope, or the org's `sync` scope.
pub(crate) fn lease_scope(job: &Job) -> String {
    match (job.kind.as_str(), job.from_ms) {
        (vault::KIND_BACKFILL, Some(from)) => crate::lease::backfill_scope(from),
        _ => crate::lease::SYNC_SCOPE.to_owned(),
    }
}

fn ended_from(state: Option<&'static str>) -> Ended {
    match state {
        Some("queued") => Ended::Retry,
        Some(_) => Ended::Failed,
        None => Ended::Lost,
    }
}

/// The harvest a job asks for; a job whose org is gone ends with that reason.
async fn run_job(
    engine: &Engine,
    job: &Job,
    stop: Arc<AtomicBool>,
    holder: LeaseHolder,
) -> OrgReport {
    let org = match engine.vault.org_by_id(job.org).await {
        Ok(Some(org)) => org,
        Ok(None) => {
            return OrgReport {
                outcome: OrgOutcome::Failed(format!("job {}: its org was removed", job.id)),
                error_class: Some(ErrorClass::Permanent),
                ..OrgReport::default()
            };
        }
        Err(e) => {
            return OrgReport {
                outcome: OrgOutcome::Failed(format!("job {}: reading its org: {e}", job.id)),
                error_class: Some(if e.is_transient() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }),
                ..OrgReport::default()
            };
        }
    };
    let opts = SyncOptions {
        orgs: Vec::new(),
        from_ms: job.from_ms,
        to_ms: job.to_ms,
        rescan: job.kind == vault::KIND_RESCAN,
    };
    let items_window = items_window(engine, &org, job).await;
    engine
        .harvest_org(org, &lease_scope(job), &opts, items_window, stop, holder)
        .await
}

/// Which unfinished items of the org a run of `job` resumes (see `OrgRun::items_window`), so
/// that no two runs of one org work on the same item at once: a backfill chunk those created in
/// its window — the earliest open chunk also those created before it, or nobody would resume
/// them while the chunks run — and any other run, while chunks are open, those created after the
/// newest chunk; with no chunks open, every unfinished item. A database error falls back to the
/// narrower choice for a chunk and to every item otherwise (the org's regular harvest must not
/// skip anything; at worst an item is downloaded twice, and writes are create-only).
async fn items_window(engine: &Engine, org: &vault::Org, job: &Job) -> Option<(i64, i64)> {
    match (job.kind.as_str(), job.from_ms, job.to_ms) {
        (vault::KIND_BACKFILL, Some(from), Some(to)) => {
            let earliest = engine.vault.open_backfill_start(org).await;
            let bottom = if matches!(earliest, Ok(Some(start)) if start >= from) {
                i64::MIN
            } else {
                from
            };
            Some((bottom, to))
        }
        _ => match engine.vault.open_backfill_end(org).await {
            Ok(Some(end)) => Some((end, i64::MAX)),
            _ => None,
        },
    }
}

/// `sync`'s part: claims and runs the jobs `ids` (other processes may run some of them) until
/// every one has ended; returns them in the order of `ids`.
///
/// # Errors
/// Database failures while claiming or reading the jobs.
pub async fn work_until_done(engine: &Engine, ids: &[i64]) -> Result<Vec<Job>, EngineError> {
    let never = AtomicBool::new(false);
    let ttl = engine.config.worker.lease_ms();
    let mut mine: HashSet<i64> = HashSet::new();
    let mut running = FuturesUnordered::new();
    loop {
        // The database is read only while none of this process's jobs runs: a job's future is
        // polled only by this loop, and with SQLite's one connection a read here must never
        // wait on a job that is not being polled.
        if let Some((id, _)) = running.next().await {
            mine.remove(&id);
            continue;
        }
        let jobs = engine.vault.jobs(ids).await?;
        if jobs.iter().all(Job::is_final) {
            return Ok(order(jobs, ids));
        }
        let open: Vec<i64> = jobs
            .iter()
            .filter(|j| !j.is_final() && !mine.contains(&j.id))
            .map(|j| j.id)
            .collect();
        // At once: one job per org as before chunks existed, or `[worker] concurrency` if more —
        // a year's backfill split into 52 chunks must not run 52 harvests in this one process.
        let orgs: HashSet<i64> = jobs.iter().map(|j| j.org).collect();
        let cap = engine.config.worker.concurrency.max(orgs.len());
        // Claimed jobs are not polled until every claim is made.
        while running.len() < cap {
            // Every claim has its own holder id: a run that lost its job can never renew or end
            // the job's next claim, even in the same process.
            let holder = holder_for_this_run();
            let Some(job) = engine
                .vault
                .claim_job(
                    &holder,
                    engine.clock.now_ms(),
                    ttl,
                    Some(&open),
                    max_lost_leases(engine),
                )
                .await?
            else {
                break;
            };
            mine.insert(job.id);
            let id = job.id;
            let stop = Arc::new(AtomicBool::new(false));
            let never = &never;
            running.push(async move { (id, run_one(engine, &holder, job, stop, never).await) });
        }
        if running.is_empty() {
            // Other processes run the rest.
            tokio::time::sleep(SYNC_POLL).await;
        }
    }
}

fn order(jobs: Vec<Job>, ids: &[i64]) -> Vec<Job> {
    let mut by_id: std::collections::HashMap<i64, Job> =
        jobs.into_iter().map(|j| (j.id, j)).collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// The report of a finished job of `org`: what its run stored, or the job's own error when no
/// run reported (its runs kept dying).
pub fn job_report(org: &Org, job: &Job) -> OrgReport {
    let stored = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<OrgReport>(r).ok());
    match stored {
        Some(r) if !r.org.is_empty() => r,
        _ => OrgReport {
            org: org.name.clone(),
            org_id: org.org_id.clone(),
            outcome: OrgOutcome::Failed(format!(
                "org {}: job {} {}: {}",
                org.name,
                job.id,
                job.state,
                job.last_error.as_deref().unwrap_or("no run reported")
            )),
            ..OrgReport::default()
        },
    }
}

/// The worker loop of `serve` and `worker`: claims up to `[worker] concurrency` jobs at a time,
/// each on its own task, runs the planner too when `opts.plan`, until `shutdown` turns true. Then
/// it claims nothing more, tells running jobs to stop at their next batch, waits up to `[serve]
/// shutdown_grace_seconds` for them, and hands whatever still runs back to the queue.
pub async fn run_workers(
    engine: Arc<Engine>,
    opts: &WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> WorkerSummary {
    let holder = Arc::new(holder_for_this_run());
    let cfg = engine.config.worker.clone();
    let poll = Duration::from_secs(cfg.poll_seconds);
    let shutting_down = Arc::new(AtomicBool::new(false));
    let stops: Mutex<Vec<InFlight>> = Mutex::new(Vec::new());
    let mut summary = WorkerSummary::default();
    let mut running: tokio::task::JoinSet<(i64, Ended)> = tokio::task::JoinSet::new();
    tracing::info!(
        "worker {} (pid {}) started: up to {} job(s) at once{}",
        holder.host,
        holder.pid,
        cfg.concurrency,
        if opts.plan { ", planning" } else { "" }
    );
    // A database or store that hangs must not hold a SIGTERM past the grace: every call of the
    // loop gives way to the shutdown (what it did half-way is redone by the next process: the
    // sweep and the planner are idempotent, a claim whose answer is dropped expires back).
    let _ = unless_stopped(&mut shutdown, engine.clean_staging()).await;
    let mut next_sweep = tokio::time::Instant::now() + STAGING_SWEEP_EVERY;
    while !*shutdown.borrow() {
        // Uploads of a process killed and restarted within the stale age are only found by a
        // later sweep: a long-running worker sweeps now and then, not only at start.
        if tokio::time::Instant::now() >= next_sweep {
            let _ = unless_stopped(&mut shutdown, engine.clean_staging()).await;
            next_sweep = tokio::time::Instant::now() + STAGING_SWEEP_EVERY;
        }
        if opts.plan {
            match unless_stopped(&mut shutdown, planner::plan_if_due(&engine, &holder)).await {
                Some(Ok(Some(s))) => tracing::info!("planner: {}", s.line()),
                Some(Ok(None)) | None => {}
                Some(Err(e)) => tracing::warn!("planner: {e}"),
            }
        }
        while running.len() < cfg.concurrency && !*shutdown.borrow() {
            // Every claim has its own holder id (see `work_until_done`).
            let claim_holder = holder_for_this_run();
            let claim = unless_stopped(
                &mut shutdown,
                engine.vault.claim_job(
                    &claim_holder,
                    engine.clock.now_ms(),
                    cfg.lease_ms(),
                    None,
                    max_lost_leases(&engine),
                ),
            )
            .await;
            let job = match claim {
                None | Some(Ok(None)) => break,
                Some(Ok(Some(job))) => job,
                Some(Err(e)) => {
                    tracing::warn!("could not claim a job: {e}");
                    break;
                }
            };
            tracing::info!(
                job = job.id,
                "job {} ({} of org #{}, {}) claimed, attempt {}/{}",
                job.id,
                job.kind,
                job.org,
                window_text(&job),
                job.attempts,
                job.max_attempts
            );
            let stop = Arc::new(AtomicBool::new(false));
            if let Ok(mut s) = stops.lock() {
                s.push(InFlight {
                    job: job.id,
                    org: job.org,
                    scope: lease_scope(&job),
                    holder: claim_holder.id.clone(),
                    stop: stop.clone(),
                });
            }
            let id = job.id;
            let (engine, shutting_down) = (engine.clone(), shutting_down.clone());
            running.spawn(async move {
                (
                    id,
                    run_one(&engine, &claim_holder, job, stop, &shutting_down).await,
                )
            });
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            Some(joined) = running.join_next(), if !running.is_empty() => {
                note_joined(&mut summary, joined, &stops);
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
    // Shutdown: claim nothing more; running jobs stop at their next batch boundary.
    shutting_down.store(true, Ordering::SeqCst);
    if let Ok(s) = stops.lock() {
        for f in s.iter() {
            f.stop.store(true, Ordering::SeqCst);
        }
    }
    let grace = Duration::from_secs(engine.config.serve.shutdown_grace_seconds);
    if !running.is_empty() {
        tracing::info!(
            "shutting down: waiting up to {}s for {} job(s) to stop",
            grace.as_secs(),
            running.len()
        );
    }
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = running.join_next() => match next {
                Some(joined) => note_joined(&mut summary, joined, &stops),
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    // Whatever still runs is cancelled mid-flight — as safe as a crash (create-only objects, the
    // ledger after the object) — and handed back to the queue at once, with the org lease it held
    // (its `sync` scope, or a backfill chunk's), so the next claim does not wait for it to expire.
    running.shutdown().await;
    let left: Vec<InFlight> = stops
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    // The hand-back runs side by side and within a bound: with the database down, each call
    // could wait out the pool's timeout, and what is not released expires back anyway.
    let release = async {
        let jobs = futures::future::join_all(left.iter().map(|f| release_in_flight(&engine, f)));
        let planner = async {
            if opts.plan {
                let _ = engine.vault.release_singleton(PLANNER, &holder.id).await;
            }
        };
        futures::future::join(jobs, planner).await.0
    };
    match tokio::time::timeout(RELEASE_LIMIT, release).await {
        Ok(released) => {
            summary.jobs_released += released.into_iter().filter(|r| *r).count() as u64;
        }
        Err(_) => tracing::warn!(
            "could not hand {} job(s) back within {} s; they go back to the queue when their leases expire",
            left.len(),
            RELEASE_LIMIT.as_secs()
        ),
    }
    tracing::info!(
        "worker stopped: {} job(s) done, {} to retry, {} failed, {} handed back",
        summary.jobs_done,
        summary.jobs_retried,
        summary.jobs_failed,
        summary.jobs_released
    );
    summary
}

/// How long the hand-back at shutdown may take after the grace (see `run_workers`).
const RELEASE_LIMIT: Duration = Duration::from_secs(5);

/// `f`, unless a shutdown is requested first (then `None`, and `f` is dropped). A sender that
/// is gone never asks for one.
async fn unless_stopped<F: std::future::Future>(
    shutdown: &mut watch::Receiver<bool>,
    f: F,
) -> Option<F::Output> {
    let stopped = async {
        if shutdown.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = stopped => None,
        out = f => Some(out),
    }
}

/// Hands one in-flight job back at shutdown: its org lease, then the job. True when the job
/// was still ours and is queued again.
async fn release_in_flight(engine: &Engine, f: &InFlight) -> bool {
    if let Ok(Some(org)) = engine.vault.org_by_id(f.org).await {
        let _ = engine.vault.release_lease(&org, &f.scope, &f.holder).await;
    }
    match engine
        .vault
        .release_job(f.job, &f.holder, engine.clock.now_ms())
        .await
    {
        Ok(released) => released,
        Err(e) => {
            tracing::warn!(
                "could not release job {} ({e}); it goes back to the queue when its lease expires",
                f.job
            );
            false
        }
    }
}

/// A job running in this process: what shutdown needs to stop it and hand it back.
struct InFlight {
    job: i64,
    org: i64,
    /// The org lease scope its run holds (see [`lease_scope`]).
    scope: String,
    /// The claim's holder id (also the org lease's holder for its run).
    holder: String,
    stop: Arc<AtomicBool>,
}

fn note_joined(
    summary: &mut WorkerSummary,
    joined: Result<(i64, Ended), tokio::task::JoinError>,
    stops: &Mutex<Vec<InFlight>>,
) {
    match joined {
        Ok((id, ended)) => note_end(summary, id, ended, stops),
        // A panicking job: its lease runs out and another run takes it (counted as lost).
        Err(e) => tracing::error!("a job's task ended abnormally: {e}"),
    }
}

fn note_end(summary: &mut WorkerSummary, id: i64, ended: Ended, stops: &Mutex<Vec<InFlight>>) {
    if let Ok(mut s) = stops.lock() {
        s.retain(|f| f.job != id);
    }
    match ended {
        Ended::Done => summary.jobs_done += 1,
        Ended::Retry => summary.jobs_retried += 1,
        Ended::Failed => summary.jobs_failed += 1,
        Ended::Released => summary.jobs_released += 1,
        Ended::Lost => {}
    }
    tracing::info!(job = id, "job {id} ended: {ended:?}");
}

/// A job's window as `queue` and the log show it (`cursor` / `now` for open bounds).
pub fn window_text(job: &Job) -> String {
    let from = job.from_ms.map_or_else(|| "cursor".to_string(), rfc3339);
    let to = job.to_ms.map_or_else(|| "now".to_string(), rfc3339);
    format!("{from} .. {to}")
}
