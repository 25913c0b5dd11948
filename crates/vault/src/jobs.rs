//! The work queue: jobs in the state database, claimed by any wxvault process with a lease.
//!
//! Written here rather than taken from a queue crate because the claim has a rule of ours: at most
//! one job per lane runs at a time across every process. An org's harvests and rescans share the
//! org's lane, so two processes never harvest the same org's cursors at once; each backfill chunk
//! (a disjoint part of a long catch-up) has its own lane, so chunks spread over processes. The partial unique index `jobs_one_running_per_lane` enforces it in the
//! database; the claim's `NOT EXISTS` keeps a claimer from even trying a busy lane. On PostgreSQL
//! the claim is `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass each other instead of
//! queueing on one row; two claimers that pick two jobs of one free lane at the same instant meet
//! the unique index, and the loser tries again. SQLite has one writer at a time, so the claim (one
//! `UPDATE … WHERE id = (SELECT …) RETURNING`) is atomic there without row locks.
//!
//! A claim counts an attempt. A holder that ends a job early (shutdown) releases it without the
//! attempt counting; a holder that dies stops renewing and its lease expires: the job goes back to
//! the queue (`lost_leases` counts those; a job whose runs keep dying is failed after
//! `max_lost_leases`). A failure either schedules the next attempt (backoff) or, after
//! `max_attempts`, fails the job for good with the reason; `status` shows those.

use serde::Serialize;
use sqlx::any::AnyRow;

use crate::db::Backend;
use crate::orgs::get;
use crate::{LeaseHolder, Org, Vault, VaultError};

/// What a job does.
pub const KIND_HARVEST: &str = "harvest";
/// The daily re-check of recent days (late captures, missing and pending items).
pub const KIND_RESCAN: &str = "rescan";
/// One chunk of an org's long catch-up, over an explicit window, on a lane of its own so that
/// chunks of one org run in several processes at once.
pub const KIND_BACKFILL: &str = "backfill";

/// A job to add to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// [`KIND_HARVEST`], [`KIND_RESCAN`] or [`KIND_BACKFILL`] (which needs both bounds).
    pub kind: String,
    /// Window start (epoch ms); `None`: each source's cursor, as a default `sync`.
    pub from_ms: Option<i64>,
    /// Window end (epoch ms, exclusive); `None`: now minus the settle lag when the job runs.
    pub to_ms: Option<i64>,
    /// Who asked: `planner`, `sync`, `rescan`.
    pub requested_by: String,
    /// Attempts before the job fails for good (at least 1).
    pub max_attempts: i64,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    /// Database id of the org.
    pub org: i64,
    pub lane: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub requested_by: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub lost_leases: i64,
    pub max_attempts: i64,
    pub next_attempt_ms: i64,
    pub holder: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub lease_expires_ms: Option<i64>,
    pub last_error: Option<String>,
    /// What the run reported (JSON), once done or failed.
    #[serde(skip)]
    pub result: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl Job {
    /// Whether the job reached a final state.
    pub fn is_final(&self) -> bool {
        self.state == "done" || self.state == "failed"
    }
}

pub(crate) const COLUMNS: &str = "id, kind, org, lane, from_ms, to_ms, requested_by, state, attempts, \
    lost_leases, max_attempts, next_attempt_ms, holder, host, pid, lease_expires_ms, last_error, \
    result, created_ms, started_ms, finished_ms";

/// How often a claim retries after losing a lane to a concurrent claimer.
const CLAIM_TRIES: usize = 5;

/// The lane of a job: one running at a time. An org's harvests and rescans share the org's lane
/// (they read and move the same cursors); each backfill chunk has a lane of its own, under the
/// org's, since chunks cover disjoint windows and are meant to run side by side.
fn lane(org: &Org, job: &NewJob) -> String {
    match (job.kind.as_str(), job.from_ms) {
        (KIND_BACKFILL, Some(from)) => format!("org:{}/{from}", org.id),
        _ => format!("org:{}", org.id),
    }
}

impl Vault {
    /// Adds `job` for `org`; returns its id.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an unknown kind or no attempts, [`VaultError::Db`] otherwise.
    pub async fn enqueue_job(
        &self,
        org: &Org,
        job: &NewJob,
        now_ms: i64,
    ) -> Result<i64, VaultError> {
        let ids = self
            .enqueue_jobs(org, std::slice::from_ref(job), now_ms)
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| VaultError::Invalid("no job was queued".into()))
    }

    /// Adds all of `jobs` for `org` or none (one transaction): a planner that dies half-way
    /// through an org's backfill chunks must not leave a hole between them. Returns their ids.
    ///
    /// # Errors
    /// As [`Vault::enqueue_job`].
    pub async fn enqueue_jobs(
        &self,
        org: &Org,
        jobs: &[NewJob],
        now_ms: i64,
    ) -> Result<Vec<i64>, VaultError> {
        for job in jobs {
            check_new(job)?;
        }
        let what = || match jobs {
            [job] => format!("queueing a {} job for org {}", job.kind, org.name),
            _ => format!("queueing {} job(s) for org {}", jobs.len(), org.name),
        };
        let mut tx = self.pool.begin().await.map_err(VaultError::db(what()))?;
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let row = sqlx::query(
                "INSERT INTO jobs (kind, org, lane, from_ms, to_ms, requested_by, state, max_attempts, \
                   next_attempt_ms, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $8) RETURNING id",
            )
            .bind(&job.kind)
            .bind(org.id)
            .bind(lane(org, job))
            .bind(job.from_ms)
            .bind(job.to_ms)
            .bind(&job.requested_by)
            .bind(job.max_attempts)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(VaultError::db(what()))?;
            ids.push(get(&row, "id")?);
        }
        tx.commit().await.map_err(VaultError::db(what()))?;
        Ok(ids)
    }

    /// Whether `org` has a job of `kind` queued or running.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn has_open_job(&self, org: &Org, kind: &str) -> Result<bool, VaultError> {
        let n = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM jobs WHERE org = $1 AND kind = $2 \
               AND state IN ('queued', 'running')",
        )
        .bind(org.id)
        .bind(kind)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading the open {kind} jobs of org {}",
            org.name
        )))?;
        Ok(n > 0)
    }

    /// The end of the newest backfill chunk of `org` still queued or running, if any: while
    /// chunks are open the org's regular harvest starts there instead of at its cursor.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn open_backfill_end(&self, org: &Org) -> Result<Option<i64>, VaultError> {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(to_ms) FROM jobs WHERE org = $1 AND kind = $2 \
               AND state IN ('queued', 'running')",
        )
        .bind(org.id)
        .bind(KIND_BACKFILL)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading the open backfill of org {}",
            org.name
        )))
    }

    /// Where the earliest backfill chunk of `org` that is queued or running starts: that chunk
    /// also owns the org's unfinished items created before it (see the engine's `run_job`).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn open_backfill_start(&self, org: &Org) -> Result<Option<i64>, VaultError> {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(from_ms) FROM jobs WHERE org = $1 AND kind = $2 \
               AND state IN ('queued', 'running')",
        )
        .bind(org.id)
        .bind(KIND_BACKFILL)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading the open backfill of org {}",
            org.name
        )))
    }

    /// Adds `job` for `org` unless a job of the same kind is already queued or running for it
    /// (the planner must not pile up work behind a slow org). Returns the new id, if any.
    ///
    /// # Errors
    /// As [`Vault::enqueue_job`].
    pub async fn enqueue_job_unless_open(
        &self,
        org: &Org,
        job: &NewJob,
        now_ms: i64,
    ) -> Result<Option<i64>, VaultError> {
        check_new(job)?;
        let row = sqlx::query(
            "INSERT INTO jobs (kind, org, lane, from_ms, to_ms, requested_by, state, max_attempts, \
               next_attempt_ms, created_ms) \
             SELECT $1, $2, $3, $4, $5, $6, 'queued', $7, $8, $8 \
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE org = $2 AND kind = $1 \
               AND state IN ('queued', 'running')) \
             RETURNING id",
        )
        .bind(&job.kind)
        .bind(org.id)
        .bind(lane(org, job))
        .bind(job.from_ms)
        .bind(job.to_ms)
        .bind(&job.requested_by)
        .bind(job.max_attempts)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "queueing a {} job for org {}",
            job.kind, org.name
        )))?;
        row.as_ref().map(|r| get(r, "id")).transpose()
    }

    /// Claims the next due job whose lane is free for `holder` until `now_ms + ttl_ms`; with
    /// `only`, just among those ids. Running jobs whose lease expired are put back in the queue
    /// first (see [`Vault::requeue_expired_jobs`]).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn claim_job(
        &self,
        holder: &LeaseHolder,
        now_ms: i64,
        ttl_ms: i64,
        only: Option<&[i64]>,
        max_lost_leases: i64,
    ) -> Result<Option<Job>, VaultError> {
        if ttl_ms <= 0 || holder.id.is_empty() {
            return Err(VaultError::Invalid(
                "a job claim needs a holder id and a positive lease time".into(),
            ));
        }
        self.requeue_expired_jobs(now_ms, max_lost_leases).await?;
        let filter = match only {
            Some([]) => return Ok(None),
            Some(ids) => format!(
                " AND j.id IN ({})",
                ids.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', holder = $1, host = $2, pid = $3, \
               attempts = attempts + 1, lease_expires_ms = $5, started_ms = $4 \
             WHERE id = (SELECT j.id FROM jobs j WHERE j.state = 'queued' AND j.next_attempt_ms <= $4{filter} \
               AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.lane = j.lane AND r.state = 'running') \
               ORDER BY j.next_attempt_ms, j.id LIMIT 1{lock}) \
             RETURNING {COLUMNS}"
        );
        for _ in 0..CLAIM_TRIES {
            let got = sqlx::query(&sql)
                .bind(&holder.id)
                .bind(&holder.host)
                .bind(holder.pid)
                .bind(now_ms)
                .bind(now_ms.saturating_add(ttl_ms))
                .fetch_optional(&self.pool)
                .await;
            match got {
                Ok(row) => return row.as_ref().map(job_from_row).transpose(),
                // Another process claimed a job of the same lane in the same instant.
                Err(e) if VaultError::is_unique_violation(&e) => continue,
                Err(e) => return Err(VaultError::db("claiming a job from the queue")(e)),
            }
        }
        Ok(None)
    }

    /// Puts running jobs whose lease expired before `now_ms` back in the queue (their holder
    /// died or hung); a job that has lost `max_lost_leases` leases fails instead, so a job that
    /// kills its process every time cannot cycle for ever. The dead run's attempt is not counted.
    /// Returns how many were put back or failed.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn requeue_expired_jobs(
        &self,
        now_ms: i64,
        max_lost_leases: i64,
    ) -> Result<u64, VaultError> {
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_ms = $1, lease_expires_ms = NULL, \
               lost_leases = lost_leases + 1, \
               last_error = 'its runs stopped renewing their lease ' || CAST(lost_leases + 1 AS TEXT) || \
                 ' times (process killed or hung, last on ' || COALESCE(host, '?') || ' pid ' || \
                 CAST(COALESCE(pid, 0) AS TEXT) || '); gave up — see that process''s log' \
             WHERE state = 'running' AND lease_expires_ms <= $1 AND lost_leases + 1 >= $2",
        )
        .bind(now_ms)
        .bind(max_lost_leases)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db("failing jobs whose runs keep dying"))?;
        let back = sqlx::query(
            "UPDATE jobs SET state = 'queued', next_attempt_ms = $1, lease_expires_ms = NULL, \
               attempts = attempts - 1, lost_leases = lost_leases + 1, \
               last_error = 'the process running it stopped renewing its lease (' || COALESCE(host, '?') || \
                 ' pid ' || CAST(COALESCE(pid, 0) AS TEXT) || '); put back in the queue' \
             WHERE state = 'running' AND lease_expires_ms <= $1",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db("putting jobs with expired leases back in the queue"))?;
        Ok(failed.rows_affected() + back.rows_affected())
    }

    /// Extends `holder_id`'s lease of job `id` to `now_ms + ttl_ms`. `false`: no longer ours.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn renew_job(
        &self,
        id: i64,
        holder_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_ms = $3 WHERE id = $1 AND holder = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(holder_id)
        .bind(now_ms.saturating_add(ttl_ms))
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("renewing the lease of job {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks job `id` done with the run's `result`. `false`: no longer ours (nothing changed).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn finish_job(
        &self,
        id: i64,
        holder_id: &str,
        now_ms: i64,
        result: &str,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', result = $3, finished_ms = $4, lease_expires_ms = NULL, \
               last_error = NULL WHERE id = $1 AND holder = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(holder_id)
        .bind(result)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("marking job {id} done")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed run of job `id`: queued again at `retry_at_ms` while attempts remain and
    /// a retry is wanted, otherwise failed for good with `error`. Returns the state it is left
    /// in, or `None` when it was no longer ours.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn fail_job(
        &self,
        id: i64,
        holder_id: &str,
        now_ms: i64,
        error: &str,
        result: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<Option<&'static str>, VaultError> {
        if let Some(at) = retry_at_ms {
            let again = sqlx::query(
                "UPDATE jobs SET state = 'queued', next_attempt_ms = $3, last_error = $4, result = $5, \
                   lease_expires_ms = NULL WHERE id = $1 AND holder = $2 AND state = 'running' \
                   AND attempts < max_attempts",
            )
            .bind(id)
            .bind(holder_id)
            .bind(at)
            .bind(error)
            .bind(result)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!("scheduling job {id} again")))?;
            if again.rows_affected() == 1 {
                return Ok(Some("queued"));
            }
        }
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_ms = $3, last_error = $4, result = $5, \
               lease_expires_ms = NULL WHERE id = $1 AND holder = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(holder_id)
        .bind(now_ms)
        .bind(error)
        .bind(result)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("failing job {id}")))?;
        Ok((failed.rows_affected() == 1).then_some("failed"))
    }

    /// Gives job `id` back to the queue, due at `due_ms`, without counting the attempt (the
    /// process is shutting down, or the org is busy elsewhere). `false`: no longer ours.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn release_job(
        &self,
        id: i64,
        holder_id: &str,
        due_ms: i64,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', next_attempt_ms = $3, attempts = attempts - 1, \
               lease_expires_ms = NULL WHERE id = $1 AND holder = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(holder_id)
        .bind(due_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("releasing job {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// The jobs with these ids, in id order.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn jobs(&self, ids: &[i64]) -> Result<Vec<Job>, VaultError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE id IN ({list}) ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db("reading jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    /// Deletes jobs that finished (done) before `before_ms`; failed ones stay until the
    /// operator has seen them for as long (`before_ms` applies to them too, so they do not
    /// pile up for ever). Returns how many were removed.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn purge_finished_jobs(&self, before_ms: i64) -> Result<u64, VaultError> {
        let done =
            sqlx::query("DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished_ms < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await
                .map_err(VaultError::db("removing old finished jobs"))?;
        Ok(done.rows_affected())
    }

    /// Deletes `sync` jobs still queued that were created before `before_ms`: their `sync` was
    /// killed (its jobs went back to the queue when their leases expired) and no worker took them.
    /// Returns how many were removed.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn drop_abandoned_sync_jobs(&self, before_ms: i64) -> Result<u64, VaultError> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE requested_by = 'sync' AND state = 'queued' AND created_ms < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db("removing abandoned sync jobs"))?;
        Ok(done.rows_affected())
    }
}

fn check_new(job: &NewJob) -> Result<(), VaultError> {
    if ![KIND_HARVEST, KIND_RESCAN, KIND_BACKFILL].contains(&job.kind.as_str()) {
        return Err(VaultError::Invalid(format!(
            "unknown job kind {:?}",
            job.kind
        )));
    }
    if job.kind == KIND_BACKFILL && !matches!((job.from_ms, job.to_ms), (Some(f), Some(t)) if f < t)
    {
        return Err(VaultError::Invalid(format!(
            "a backfill chunk needs a window with from before to, got {:?} .. {:?}",
            job.from_ms, job.to_ms
        )));
    }
    if job.max_attempts < 1 {
        return Err(VaultError::Invalid(format!(
            "a job needs at least one attempt, got {}",
            job.max_attempts
        )));
    }
    Ok(())
}

pub(crate) fn job_from_row(row: &AnyRow) -> Result<Job, VaultError> {
    Ok(Job {
        id: get(row, "id")?,
        kind: get(row, "kind")?,
        org: get(row, "org")?,
        lane: get(row, "lane")?,
        from_ms: get(row, "from_ms")?,
        to_ms: get(row, "to_ms")?,
        requested_by: get(row, "requested_by")?,
        state: get(row, "state")?,
        attempts: get(row, "attempts")?,
        lost_leases: get(row, "lost_leases")?,
        max_attempts: get(row, "max_attempts")?,
        next_attempt_ms: get(row, "next_attempt_ms")?,
        holder: get(row, "holder")?,
        host: get(row, "host")?,
        pid: get(row, "pid")?,
        lease_expires_ms: get(row, "lease_expires_ms")?,
        last_error: get(row, "last_error")?,
        result: get(row, "result")?,
        created_ms: get(row, "created_ms")?,
        started_ms: get(row, "started_ms")?,
        finished_ms: get(row, "finished_ms")?,
    })
}
