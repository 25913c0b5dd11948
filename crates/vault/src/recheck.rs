//! The ledger's second look: tasks worth asking Webex about again after they settled as
//! `missing` or never-requested `absent`, the problems an operator must see for a window, and
//! `wxvault retry`, which puts failed and missing items back in line.
//!
//! Kept apart from `ledger.rs` because these are the only statements that move an item
//! backwards, and only on the operator's word (`retry`) or when Webex lists a capture late.

use crate::db::placeholders;
use crate::ledger::{TASK_COLUMNS, failure_from_row, task_from_row};
use crate::{Failure, Org, TaskRow, Vault, VaultError};

/// What [`Vault::retry_failed`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetryCounts {
    /// Failed recordings now `ready` again, with their attempts reset.
    pub recordings: u64,
    /// Failed or missing tasks now `discovered` again.
    pub tasks: u64,
}

/// Problems of one window, for the run summary and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowProblems {
    /// How many items in the window are failed or missing.
    pub total: u64,
    /// The first of them (newest first), with their reasons.
    pub items: Vec<Failure>,
}

impl Vault {
    /// Tasks of `source` that settled without a capture — `missing`, or `absent` because Webex never said a
    /// capture was requested — created at or after `created_since_ms` and not checked since
    /// `checked_before_ms`. A capture Webex produces late (re-processing, retention jobs) is
    /// then still found.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn tasks_due_for_recheck(
        &self,
        org: &Org,
        source: &str,
        created_since_ms: i64,
        checked_before_ms: i64,
    ) -> Result<Vec<TaskRow>, VaultError> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE org = $1 AND source = $2 \
               AND (state = 'missing' OR (state = 'absent' AND capture_requested IS NULL)) \
               AND created_ms >= $3 \
               AND (last_checked_ms IS NULL OR last_checked_ms < $4) \
             ORDER BY created_ms, task_id"
        );
        let rows = sqlx::query(&sql)
            .bind(org.id)
            .bind(source)
            .bind(created_since_ms)
            .bind(checked_before_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "listing {source} tasks to re-check of org {}",
                org.name
            )))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks of `source` created in `[from_ms, to_ms)` that a rescan asks Webex about again,
    /// whenever they were last checked: `captured` ones (a capture can be added to a task after
    /// its first ones were archived), `missing` ones, and `absent` ones Webex never said had a
    /// capture requested. Waiting tasks are queried on every run anyway.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn tasks_for_rescan(
        &self,
        org: &Org,
        source: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<TaskRow>, VaultError> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE org = $1 AND source = $2 \
               AND (state IN ('captured', 'missing') \
                    OR (state = 'absent' AND capture_requested IS NULL)) \
               AND created_ms >= $3 AND created_ms < $4 \
             ORDER BY created_ms, task_id"
        );
        let rows = sqlx::query(&sql)
            .bind(org.id)
            .bind(source)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "listing {source} tasks to rescan of org {}",
                org.name
            )))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Counts one captures query against each of `task_ids` of `source`, stamped `at_ms` (the caller's
    /// clock, so re-check intervals follow the same time as the grace period).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn note_capture_checks_at(
        &self,
        org: &Org,
        source: &str,
        task_ids: &[String],
        at_ms: i64,
    ) -> Result<(), VaultError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE tasks SET checks = checks + 1, last_checked_ms = $3 \
             WHERE org = $1 AND source = $2 AND task_id IN ({})",
            placeholders(4, task_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id).bind(source).bind(at_ms);
        for id in task_ids {
            q = q.bind(id.as_str());
        }
        q.execute(&self.pool).await.map_err(VaultError::db(format!(
            "noting capture checks of {} {source} tasks of org {}",
            task_ids.len(),
            org.name
        )))?;
        Ok(())
    }

    /// A task of `source` that was `absent` because Webex never said a capture was requested, and whose
    /// capture is now listed after all, goes back to `pending_capture` so it can become
    /// `captured`. Tasks absent for any other reason (Webex said no capture was requested) are
    /// final and left alone. Returns whether the task moved.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn reopen_never_requested(
        &self,
        org: &Org,
        source: &str,
        task_ids: &[String],
        at_ms: i64,
    ) -> Result<u64, VaultError> {
        if task_ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE tasks SET state = 'pending_capture', reason = NULL, updated_ms = $3, \
               state_changed_ms = $3 \
             WHERE org = $1 AND source = $2 AND state = 'absent' AND capture_requested IS NULL \
               AND task_id IN ({})",
            placeholders(4, task_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id).bind(source).bind(at_ms);
        for id in task_ids {
            q = q.bind(id.as_str());
        }
        let done = q.execute(&self.pool).await.map_err(VaultError::db(format!(
            "re-opening {} late-captured {source} tasks of org {}",
            task_ids.len(),
            org.name
        )))?;
        Ok(done.rows_affected())
    }

    /// Failed recordings and failed or missing tasks of every source whose task was created in
    /// `[from_ms, to_ms)`: the count, and the newest `limit` with their reasons.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn problems_in_window(
        &self,
        org: &Org,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<WindowProblems, VaultError> {
        let inner = "SELECT 'recording ' || recording_id AS item, source, state, reason, \
                       state_changed_ms AS at_ms \
                     FROM recordings WHERE org = $1 AND state = 'failed' \
                       AND task_created_ms >= $2 AND task_created_ms < $3 \
                     UNION ALL \
                     SELECT 'task ' || task_id AS item, source, state, reason, \
                       state_changed_ms AS at_ms \
                     FROM tasks WHERE org = $1 AND state IN ('failed', 'missing') \
                       AND created_ms >= $2 AND created_ms < $3";
        let op = || format!("listing problems in a window of org {}", org.name);
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({inner}) f"))
            .bind(org.id)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(op()))?;
        let rows = sqlx::query(&format!(
            "SELECT item, source, state, reason, at_ms FROM ({inner}) f \
             ORDER BY at_ms DESC, item, source LIMIT $4"
        ))
        .bind(org.id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db(op()))?;
        let items = rows
            .iter()
            .map(failure_from_row)
            .collect::<Result<Vec<_>, VaultError>>()?;
        Ok(WindowProblems {
            total: u64::try_from(total).unwrap_or(0),
            items,
        })
    }

    /// Puts failed recordings back to `ready` (attempts reset) and failed or missing tasks back
    /// to `discovered`, of every source (`absent` items are final and stay), for tasks created in `[from_ms, to_ms)` (each bound optional), in one
    /// transaction. The next sync then tries them again from the start; objects already in the
    /// archive are adopted, never overwritten.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure (nothing changed then).
    pub async fn retry_failed(
        &self,
        org: &Org,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<RetryCounts, VaultError> {
        let from = from_ms.unwrap_or(i64::MIN);
        let to = to_ms.unwrap_or(i64::MAX);
        let op = || format!("putting failed items of org {} back", org.name);
        let mut tx = self.begin_write(&op()).await?;
        let recordings = sqlx::query(
            "UPDATE recordings SET state = 'ready', reason = NULL, last_error = NULL, \
               attempts = 0, object_key = NULL, sha256 = NULL, size_bytes = NULL, \
               sidecar_key = NULL, waiting_since_ms = NULL, updated_ms = $4, state_changed_ms = $4 \
             WHERE org = $1 AND state = 'failed' AND task_created_ms >= $2 AND task_created_ms < $3",
        )
        .bind(org.id)
        .bind(from)
        .bind(to)
        .bind(at_ms)
        .execute(&mut *tx)
        .await
        .map_err(VaultError::db(op()))?
        .rows_affected();
        // A task of a put-back recording is `captured`: it is queried again because it has an
        // unfinished recording. A failed or missing task starts over from `discovered`, its check
        // stamp cleared so it is looked at on the next run.
        let tasks = sqlx::query(
            "UPDATE tasks SET state = 'discovered', reason = NULL, last_checked_ms = NULL, \
               updated_ms = $4, state_changed_ms = $4 \
             WHERE org = $1 AND state IN ('failed', 'missing') AND created_ms >= $2 AND created_ms < $3",
        )
        .bind(org.id)
        .bind(from)
        .bind(to)
        .bind(at_ms)
        .execute(&mut *tx)
        .await
        .map_err(VaultError::db(op()))?
        .rows_affected();
        tx.commit().await.map_err(VaultError::db(op()))?;
        Ok(RetryCounts { recordings, tasks })
    }
}
