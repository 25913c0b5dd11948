//! Org-wide views of the ledger for `status`: totals over every source and per source, and the
//! failed or missing items with their reasons. Each is one statement, so one consistent read.

use std::collections::BTreeMap;

use crate::ledger::failure_from_row;
use crate::orgs::get;
use crate::{Counts, Failure, Org, Vault, VaultError};

/// Per-source totals in one pass over the org's tasks, recordings and completed windows (a
/// window row only makes its source appear). `COUNT(CASE …)` rather than `SUM`: PostgreSQL's
/// SUM of integers is NUMERIC, which the `Any` driver cannot decode.
const COUNTS_BY_SOURCE: &str = "SELECT source, \
       COUNT(CASE WHEN kind = 't' THEN 1 END) AS tasks, \
       COUNT(CASE WHEN kind = 'r' THEN 1 END) AS recordings, \
       COUNT(CASE WHEN kind = 'r' AND state = 'done' THEN 1 END) AS archived, \
       COUNT(CASE WHEN kind = 'r' AND state IN ('ready', 'stored') THEN 1 END) AS in_progress, \
       COUNT(CASE WHEN kind = 'r' AND state = 'absent' THEN 1 END) AS recordings_absent, \
       COUNT(CASE WHEN kind = 't' AND state IN ('discovered', 'pending_capture') \
         AND (capture_requested IS NULL OR capture_requested <> 0) THEN 1 END) AS pending_capture, \
       COUNT(CASE WHEN kind = 't' AND state = 'missing' THEN 1 END) AS missing, \
       COUNT(CASE WHEN kind = 't' AND state = 'absent' THEN 1 END) AS absent, \
       COUNT(CASE WHEN kind = 't' AND state = 'absent' AND capture_requested IS NULL THEN 1 END) \
         AS capture_never_requested, \
       COUNT(CASE WHEN kind IN ('t', 'r') AND state = 'failed' THEN 1 END) AS failed \
     FROM ( \
       SELECT 't' AS kind, source, state, capture_requested FROM tasks WHERE org = $1 \
       UNION ALL \
       SELECT 'r' AS kind, source, state, CAST(NULL AS BIGINT) AS capture_requested \
         FROM recordings WHERE org = $1 \
       UNION ALL \
       SELECT DISTINCT 'w' AS kind, source, CAST(NULL AS TEXT) AS state, \
         CAST(NULL AS BIGINT) AS capture_requested FROM windows WHERE org = $1 \
     ) items GROUP BY source ORDER BY source";

impl Vault {
    /// Ledger totals for the org over every source, from one consistent read.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn counts(&self, org: &Org) -> Result<Counts, VaultError> {
        let mut total = Counts::default();
        for c in self.counts_by_source(org).await?.values() {
            total.add(c);
        }
        Ok(total)
    }

    /// Ledger totals for the org per source, from one consistent read: one entry for each
    /// source that has tasks or recordings or a completed harvest window (all zeros then).
    /// Their sum is [`Vault::counts`].
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn counts_by_source(
        &self,
        org: &Org,
    ) -> Result<BTreeMap<String, Counts>, VaultError> {
        let rows = sqlx::query(COUNTS_BY_SOURCE)
            .bind(org.id)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "counting the ledger of org {}",
                org.name
            )))?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "source")?,
                    Counts {
                        tasks: get(row, "tasks")?,
                        recordings: get(row, "recordings")?,
                        archived: get(row, "archived")?,
                        in_progress: get(row, "in_progress")?,
                        pending_capture: get(row, "pending_capture")?,
                        missing: get(row, "missing")?,
                        absent: get(row, "absent")?,
                        capture_never_requested: get(row, "capture_never_requested")?,
                        failed: get(row, "failed")?,
                        recordings_absent: get(row, "recordings_absent")?,
                    },
                ))
            })
            .collect()
    }

    /// Failed recordings and failed or missing tasks of every source with their reasons,
    /// newest first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn failures(&self, org: &Org, limit: i64) -> Result<Vec<Failure>, VaultError> {
        let rows = sqlx::query(
            "SELECT item, source, state, reason, at_ms FROM ( \
               SELECT 'recording ' || recording_id AS item, source, state, reason, \
                 state_changed_ms AS at_ms \
               FROM recordings WHERE org = $1 AND state = 'failed' \
               UNION ALL \
               SELECT 'task ' || task_id AS item, source, state, reason, \
                 state_changed_ms AS at_ms \
               FROM tasks WHERE org = $1 AND state IN ('failed', 'missing') \
             ) f ORDER BY at_ms DESC, item, source LIMIT $2",
        )
        .bind(org.id)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "listing failures of org {}",
            org.name
        )))?;
        rows.iter().map(failure_from_row).collect()
    }
}
