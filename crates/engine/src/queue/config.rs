//! `[schedule]` and `[worker]`: when the planner queues work and how workers claim it.

use serde::{Deserialize, Serialize};

/// `[schedule]`: what the planner (in `serve`, or `worker --plan`) queues on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Minutes between planning passes: each queues, for every active org without one pending, a
    /// harvest from the org's cursors up to now minus the settle lag.
    #[serde(default = "default_interval_minutes")]
    pub interval_minutes: u64,
    /// Days the daily rescan covers: pending, missing and recently archived items of those days
    /// are checked again so late captures are found. 0 turns the rescan off.
    #[serde(default = "default_rescan_days")]
    pub rescan_days: u64,
    /// Days per backfill chunk: a catch-up window longer than two chunks (a new org with a long
    /// `[sync] first_lookback_hours`, an org that was off for weeks, `sync --from` far back) is
    /// queued as one chunk per this many days, each on its own lane, so several workers harvest
    /// one org's history at once. 0 never splits.
    #[serde(default = "default_backfill_chunk_days")]
    pub backfill_chunk_days: u64,
}

/// `[worker]`: how each process runs jobs from the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs one process runs at once (each is one org's harvest).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds a claimed job's lease lasts; the holder renews it every third of that. A process
    /// that dies leaves its jobs to others once their lease ran out.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Runs of a job that fail with a transient error before it fails for good (shown by
    /// `status`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// Seconds before the first retry of a failed job; doubled per attempt, at most an hour.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// Seconds an idle worker waits before looking at the queue again (work queued by this
    /// process wakes it at once).
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Where `wxvault worker` serves `/healthz` and `/readyz` (e.g. `0.0.0.0:9091`); unset: no
    /// listener (`serve` has its own on `[serve] listen`).
    #[serde(default)]
    pub listen: Option<String>,
}

fn default_interval_minutes() -> u64 {
    15
}
fn default_rescan_days() -> u64 {
    3
}
fn default_backfill_chunk_days() -> u64 {
    7
}
fn default_concurrency() -> usize {
    4
}
fn default_lease_seconds() -> u64 {
    60
}
fn default_max_attempts() -> i64 {
    5
}
fn default_retry_seconds() -> u64 {
    30
}
fn default_poll_seconds() -> u64 {
    5
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            interval_minutes: default_interval_minutes(),
            rescan_days: default_rescan_days(),
            backfill_chunk_days: default_backfill_chunk_days(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            lease_seconds: default_lease_seconds(),
            max_attempts: default_max_attempts(),
            retry_seconds: default_retry_seconds(),
            poll_seconds: default_poll_seconds(),
            listen: None,
        }
    }
}

/// A bad key: its name, the value as shown, and why.
type Bad = (&'static str, String, String);

impl ScheduleConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// The key, its value and why it is refused.
    pub fn check(&self) -> Result<(), Bad> {
        if !(1..=24 * 60).contains(&self.interval_minutes) {
            return Err((
                "schedule.interval_minutes",
                self.interval_minutes.to_string(),
                "must be between 1 and 1440".into(),
            ));
        }
        if self.rescan_days > 90 {
            return Err((
                "schedule.rescan_days",
                self.rescan_days.to_string(),
                "must be between 0 (off) and 90".into(),
            ));
        }
        if self.backfill_chunk_days > 366 {
            return Err((
                "schedule.backfill_chunk_days",
                self.backfill_chunk_days.to_string(),
                "must be between 0 (never split) and 366".into(),
            ));
        }
        Ok(())
    }

    /// A backfill chunk in milliseconds; `None` when splitting is off.
    pub fn backfill_chunk_ms(&self) -> Option<i64> {
        let days = i64::try_from(self.backfill_chunk_days).ok()?;
        (days > 0).then_some(days * 86_400_000)
    }
}

impl WorkerConfig {
    /// Checks the ranges and the listen address.
    ///
    /// # Errors
    /// The key, its value and why it is refused.
    pub fn check(&self) -> Result<(), Bad> {
        if !(1..=256).contains(&self.concurrency) {
            return Err((
                "worker.concurrency",
                self.concurrency.to_string(),
                "must be between 1 and 256".into(),
            ));
        }
        if !(3..=3600).contains(&self.lease_seconds) {
            return Err((
                "worker.lease_seconds",
                self.lease_seconds.to_string(),
                "must be between 3 and 3600".into(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err((
                "worker.max_attempts",
                self.max_attempts.to_string(),
                "must be between 1 and 100".into(),
            ));
        }
        if !(1..=3600).contains(&self.retry_seconds) {
            return Err((
                "worker.retry_seconds",
                self.retry_seconds.to_string(),
                "must be between 1 and 3600".into(),
            ));
        }
        if !(1..=300).contains(&self.poll_seconds) {
            return Err((
                "worker.poll_seconds",
                self.poll_seconds.to_string(),
                "must be between 1 and 300".into(),
            ));
        }
        if let Some(l) = &self.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            return Err((
                "worker.listen",
                l.clone(),
                "use IP:PORT, e.g. 0.0.0.0:9091".into(),
            ));
        }
        Ok(())
    }

    /// The lease of a claimed job, in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease_seconds).unwrap_or(3600) * 1000
    }

    /// When the attempt after `attempts` failed ones may start, from `now_ms`.
    pub fn retry_at(&self, now_ms: i64, attempts: i64) -> i64 {
        let base = i64::try_from(self.retry_seconds).unwrap_or(30) * 1000;
        let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        now_ms + base.saturating_mul(1 << shift).min(3_600_000)
    }
}
