//! The queue as `status` and `wxvault queue` show it: counts, jobs in flight per process, open
//! jobs with their windows, the newest failures.

use serde::Serialize;

use crate::jobs::{COLUMNS, job_from_row};
use crate::orgs::get;
use crate::{Job, Vault, VaultError};

/// Jobs running in one process (each claim has its own holder id; host and pid name the
/// process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessJobs {
    pub host: String,
    pub pid: i64,
    pub jobs: i64,
    /// The earliest lease expiry among them.
    pub lease_expires_ms: i64,
}

/// The queue as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// Waiting jobs, due now or later.
    pub queued: i64,
    /// Of `queued`, those due now.
    pub due: i64,
    pub running: i64,
    /// Running jobs whose lease has expired (their holder stopped renewing; the next claim puts
    /// them back).
    pub expired: i64,
    pub failed: i64,
    pub done: i64,
    /// Running jobs per process.
    pub in_flight: Vec<ProcessJobs>,
    /// The newest failed jobs, with their reasons.
    pub failed_jobs: Vec<Job>,
    /// Queued and running jobs, oldest first (at most [`OPEN_JOBS_SHOWN`]), with their windows.
    pub open_jobs: Vec<Job>,
}

/// Open jobs [`QueueStatus::open_jobs`] lists at most.
pub const OPEN_JOBS_SHOWN: i64 = 50;

impl Vault {
    /// Counts and the in-flight view of the queue at `now_ms`.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn queue_status(&self, now_ms: i64) -> Result<QueueStatus, VaultError> {
        let row = sqlx::query(
            "SELECT \
               COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0) AS queued, \
               COALESCE(SUM(CASE WHEN state = 'queued' AND next_attempt_ms <= $1 THEN 1 ELSE 0 END), 0) AS due, \
               COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS running, \
               COALESCE(SUM(CASE WHEN state = 'running' AND lease_expires_ms <= $1 THEN 1 ELSE 0 END), 0) AS expired, \
               COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS failed, \
               COALESCE(SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), 0) AS done \
             FROM jobs",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db("counting jobs"))?;
        let count = |c: &str| -> Result<i64, VaultError> { get(&row, c) };
        let procs = sqlx::query(
            "SELECT host, pid, COUNT(*) AS jobs, MIN(lease_expires_ms) AS lease_expires_ms \
             FROM jobs WHERE state = 'running' GROUP BY host, pid ORDER BY host, pid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db("listing running jobs"))?;
        let mut in_flight = Vec::new();
        for r in &procs {
            in_flight.push(ProcessJobs {
                host: get::<Option<String>>(r, "host")?.unwrap_or_default(),
                pid: get::<Option<i64>>(r, "pid")?.unwrap_or_default(),
                jobs: get(r, "jobs")?,
                lease_expires_ms: get::<Option<i64>>(r, "lease_expires_ms")?.unwrap_or_default(),
            });
        }
        let open_rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id \
             LIMIT {OPEN_JOBS_SHOWN}"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db("listing open jobs"))?;
        let failed_rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state = 'failed' ORDER BY finished_ms DESC, id DESC LIMIT 20"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db("listing failed jobs"))?;
        Ok(QueueStatus {
            queued: count("queued")?,
            due: count("due")?,
            running: count("running")?,
            expired: count("expired")?,
            failed: count("failed")?,
            done: count("done")?,
            in_flight,
            failed_jobs: failed_rows
                .iter()
                .map(job_from_row)
                .collect::<Result<_, _>>()?,
            open_jobs: open_rows
                .iter()
                .map(job_from_row)
                .collect::<Result<_, _>>()?,
        })
    }
}
