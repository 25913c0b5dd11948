//! Process-wide singletons: a lease one process at a time holds (the planner), with a record of
//! its last runs that outlives the holder, so a planner that moves to another process keeps the
//! same rhythm.

use serde::Serialize;

use crate::orgs::get;
use crate::{LeaseHolder, Vault, VaultError};

/// A process-wide singleton (the planner's lease and record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Singleton {
    pub name: String,
    pub holder: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub expires_at_ms: Option<i64>,
    /// The first run recorded (the planner's daily rescan is first due a day after it).
    pub first_run_ms: Option<i64>,
    pub last_run_ms: Option<i64>,
    /// The last run that queued a rescan.
    pub last_rescan_ms: Option<i64>,
    pub last_summary: Option<String>,
}

impl Vault {
    /// Takes singleton `name` (the planner) for `holder` until `now_ms + ttl_ms` if it is free,
    /// expired or already `holder`'s. One conditional upsert, as for org leases.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn acquire_singleton(
        &self,
        name: &str,
        holder: &LeaseHolder,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "INSERT INTO singletons (name, holder, host, pid, expires_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, host = excluded.host, \
               pid = excluded.pid, expires_at_ms = excluded.expires_at_ms \
             WHERE singletons.holder IS NULL OR singletons.expires_at_ms <= $6 \
               OR singletons.holder = excluded.holder",
        )
        .bind(name)
        .bind(&holder.id)
        .bind(&holder.host)
        .bind(holder.pid)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("taking the {name} lease")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up singleton `name` if `holder_id` has it; its record of runs stays.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn release_singleton(&self, name: &str, holder_id: &str) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE singletons SET holder = NULL, host = NULL, pid = NULL, expires_at_ms = NULL \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder_id)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("releasing the {name} lease")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a run of singleton `name` by `holder_id` at `now_ms` (and a rescan, if it was
    /// one) with a one-line summary; the first run recorded is kept as `first_run_ms`. `false`:
    /// not held by `holder_id` any more.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn record_singleton_run(
        &self,
        name: &str,
        holder_id: &str,
        now_ms: i64,
        rescan: bool,
        summary: &str,
    ) -> Result<bool, VaultError> {
        let rescan = if rescan { ", last_rescan_ms = $3" } else { "" };
        let done = sqlx::query(&format!(
            "UPDATE singletons SET last_run_ms = $3, last_summary = $4, \
               first_run_ms = COALESCE(first_run_ms, $3){rescan} \
             WHERE name = $1 AND holder = $2"
        ))
        .bind(name)
        .bind(holder_id)
        .bind(now_ms)
        .bind(summary)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("recording a {name} run")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Singleton `name` as stored.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn singleton(&self, name: &str) -> Result<Option<Singleton>, VaultError> {
        let row = sqlx::query(
            "SELECT name, holder, host, pid, expires_at_ms, first_run_ms, last_run_ms, last_rescan_ms, \
               last_summary \
             FROM singletons WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!("reading the {name} record")))?;
        row.as_ref()
            .map(|r| {
                Ok(Singleton {
                    name: get(r, "name")?,
                    holder: get(r, "holder")?,
                    host: get(r, "host")?,
                    pid: get(r, "pid")?,
                    expires_at_ms: get(r, "expires_at_ms")?,
                    first_run_ms: get(r, "first_run_ms")?,
                    last_run_ms: get(r, "last_run_ms")?,
                    last_rescan_ms: get(r, "last_rescan_ms")?,
                    last_summary: get(r, "last_summary")?,
                })
            })
            .transpose()
    }
}
