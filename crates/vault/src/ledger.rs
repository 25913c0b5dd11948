//! The ledger: tasks, recordings, completed harvest windows and the event log.
//!
//! Every state transition is a single `UPDATE … WHERE state IN (allowed predecessors)`, so it
//! is atomic, idempotent (repeating it changes nothing) and can never move an item backwards,
//! even when two workers race. When the guard refuses a transition because the item is
//! already further along, that is a no-op; when it refuses one that would break an invariant
//! (a sidecar before verified audio), that is an error.

use sqlx::any::AnyRow;

use crate::db::{now_ms, placeholders};
use crate::orgs::get;
use crate::{
    Archived, Counts, Event, Failure, Org, RecordingRow, RecordingState, RecordingUpsert, TaskRow,
    TaskState, TaskUpsert, Vault, VaultError,
};

/// Source name of Webex Contact Center captures; the only source tasks come from today.
pub const SOURCE_WXCC: &str = "wxcc";

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const BATCH_ROWS: usize = 200;
pub(crate) const TASK_COLUMNS: &str =
    "task_id, created_ms, capture_requested, state, reason, attributes_json, checks";
const RECORDING_COLUMNS: &str = "recording_id, task_id, task_created_ms, file_name, attributes_json, \
    state, object_key, sha256, size_bytes, reason, attempts";

impl Vault {
    /// Records a task as `discovered`, or refreshes a known task's attributes and capture flag
    /// (a known flag is never replaced by "unknown"). Never changes a known task's state.
    /// Returns the stored row.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn upsert_task(&self, org: &Org, t: &TaskUpsert) -> Result<TaskRow, VaultError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO tasks (org, task_id, source, created_ms, capture_requested, state, \
               attributes_json, checks, first_seen_ms, updated_ms, state_changed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $8) \
             ON CONFLICT (org, task_id) DO UPDATE SET \
               created_ms = excluded.created_ms, \
               capture_requested = COALESCE(excluded.capture_requested, tasks.capture_requested), \
               attributes_json = excluded.attributes_json, \
               updated_ms = excluded.updated_ms \
             RETURNING {TASK_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(&t.task_id)
            .bind(SOURCE_WXCC)
            .bind(t.created_ms)
            .bind(t.capture_requested.map(i64::from))
            .bind(TaskState::Discovered.as_str())
            .bind(&t.attributes_json)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "recording task {} of org {}",
                t.task_id, org.name
            )))?;
        task_from_row(&row)
    }

    /// [`Vault::upsert_task`] for many tasks in one statement per chunk (ids de-duplicated, the
    /// last occurrence wins). Returns the rows in no particular order.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn upsert_tasks(
        &self,
        org: &Org,
        tasks: &[TaskUpsert],
    ) -> Result<Vec<TaskRow>, VaultError> {
        let mut unique: Vec<&TaskUpsert> = Vec::with_capacity(tasks.len());
        let mut seen = std::collections::HashMap::new();
        for t in tasks {
            match seen.get(t.task_id.as_str()) {
                Some(&i) => unique[i] = t,
                None => {
                    seen.insert(t.task_id.as_str(), unique.len());
                    unique.push(t);
                }
            }
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_ROWS) {
            // $1 org, $2 source, $3 state, $4 now; then 4 per row.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = 5 + i * 4;
                    format!(
                        "($1, ${b}, $2, ${}, ${}, $3, ${}, 0, $4, $4, $4)",
                        b + 1,
                        b + 2,
                        b + 3
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO tasks (org, task_id, source, created_ms, capture_requested, state, \
                   attributes_json, checks, first_seen_ms, updated_ms, state_changed_ms) \
                 VALUES {} \
                 ON CONFLICT (org, task_id) DO UPDATE SET \
                   created_ms = excluded.created_ms, \
                   capture_requested = COALESCE(excluded.capture_requested, tasks.capture_requested), \
                   attributes_json = excluded.attributes_json, \
                   updated_ms = excluded.updated_ms \
                 RETURNING {TASK_COLUMNS}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(SOURCE_WXCC)
                .bind(TaskState::Discovered.as_str())
                .bind(now);
            for t in chunk {
                q = q
                    .bind(&t.task_id)
                    .bind(t.created_ms)
                    .bind(t.capture_requested.map(i64::from))
                    .bind(&t.attributes_json);
            }
            let rows = q
                .fetch_all(&self.pool)
                .await
                .map_err(VaultError::db(format!(
                    "recording {} tasks of org {}",
                    chunk.len(),
                    org.name
                )))?;
            for row in &rows {
                out.push(task_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// [`Vault::upsert_recording`] for many recordings in one statement per chunk (ids
    /// de-duplicated, the last occurrence wins). Returns the rows in no particular order.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn upsert_recordings(
        &self,
        org: &Org,
        recordings: &[RecordingUpsert],
    ) -> Result<Vec<RecordingRow>, VaultError> {
        let mut unique: Vec<&RecordingUpsert> = Vec::with_capacity(recordings.len());
        let mut seen = std::collections::HashMap::new();
        for r in recordings {
            match seen.get(r.recording_id.as_str()) {
                Some(&i) => unique[i] = r,
                None => {
                    seen.insert(r.recording_id.as_str(), unique.len());
                    unique.push(r);
                }
            }
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_ROWS) {
            // $1 org, $2 source, $3 state, $4 now; then 5 per row.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = 5 + i * 5;
                    format!(
                        "($1, ${b}, $2, ${}, ${}, ${}, ${}, $3, 0, $4, $4, $4)",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO recordings (org, recording_id, source, task_id, task_created_ms, \
                   file_name, attributes_json, state, attempts, first_seen_ms, updated_ms, \
                   state_changed_ms) \
                 VALUES {} \
                 ON CONFLICT (org, recording_id) DO UPDATE SET \
                   task_created_ms = excluded.task_created_ms, \
                   file_name = COALESCE(excluded.file_name, recordings.file_name), \
                   attributes_json = excluded.attributes_json, \
                   updated_ms = excluded.updated_ms \
                 RETURNING {RECORDING_COLUMNS}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(SOURCE_WXCC)
                .bind(RecordingState::Ready.as_str())
                .bind(now);
            for r in chunk {
                q = q
                    .bind(&r.recording_id)
                    .bind(&r.task_id)
                    .bind(r.task_created_ms)
                    .bind(r.file_name.as_deref())
                    .bind(&r.attributes_json);
            }
            let rows = q
                .fetch_all(&self.pool)
                .await
                .map_err(VaultError::db(format!(
                    "recording {} recordings of org {}",
                    chunk.len(),
                    org.name
                )))?;
            for row in &rows {
                out.push(recording_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Moves a task to `state` with an optional reason. Allowed moves: forward from
    /// `discovered`/`pending_capture`; `missing` may still become `captured` or `absent`;
    /// `captured`, `absent` and `failed` are final. A refused move (the task is already further
    /// along) is a no-op; repeating a move only refreshes the reason.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the task is unknown, [`VaultError::Db`] on database failure.
    pub async fn set_task_state(
        &self,
        org: &Org,
        task_id: &str,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(), VaultError> {
        let from = state.allowed_from();
        let sql = format!(
            "UPDATE tasks SET state = $3, reason = $4, updated_ms = $5, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $5 END \
             WHERE org = $1 AND task_id = $2 AND state IN ({})",
            placeholders(6, from.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(org.id)
            .bind(task_id)
            .bind(state.as_str())
            .bind(reason)
            .bind(now_ms());
        for s in from {
            q = q.bind(s.as_str());
        }
        let done = q.execute(&self.pool).await.map_err(VaultError::db(format!(
            "setting task {task_id} of org {} to {state}",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            match self.task_state(org, task_id).await? {
                None => {
                    return Err(VaultError::NotFound(format!(
                        "task {task_id} of org {}",
                        org.name
                    )));
                }
                Some(current) => tracing::debug!(
                    org = %org.name, task = task_id, %current, requested = %state,
                    "task state not changed: already further along"
                ),
            }
        }
        Ok(())
    }

    async fn task_state(&self, org: &Org, task_id: &str) -> Result<Option<String>, VaultError> {
        sqlx::query_scalar("SELECT state FROM tasks WHERE org = $1 AND task_id = $2")
            .bind(org.id)
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "reading task {task_id} of org {}",
                org.name
            )))
    }

    /// Counts one more captures query for the task and stamps when it happened.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the task is unknown, [`VaultError::Db`] on database failure.
    pub async fn note_capture_check(&self, org: &Org, task_id: &str) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE tasks SET checks = checks + 1, last_checked_ms = $3 \
             WHERE org = $1 AND task_id = $2",
        )
        .bind(org.id)
        .bind(task_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "noting a capture check of task {task_id} of org {}",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(format!(
                "task {task_id} of org {}",
                org.name
            )));
        }
        Ok(())
    }

    /// The org's tasks in any of `states`, oldest first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn tasks_in_states(
        &self,
        org: &Org,
        states: &[TaskState],
    ) -> Result<Vec<TaskRow>, VaultError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE org = $1 AND state IN ({}) \
             ORDER BY created_ms, task_id",
            placeholders(2, states.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!("listing tasks of org {}", org.name)))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Records a recording as `ready`, or refreshes a known one's metadata. Never changes a
    /// known recording's state (so `stored`/`done` never regress). Returns the stored row.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn upsert_recording(
        &self,
        org: &Org,
        r: &RecordingUpsert,
    ) -> Result<RecordingRow, VaultError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO recordings (org, recording_id, source, task_id, task_created_ms, \
               file_name, attributes_json, state, attempts, first_seen_ms, updated_ms, \
               state_changed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $9) \
             ON CONFLICT (org, recording_id) DO UPDATE SET \
               task_created_ms = excluded.task_created_ms, \
               file_name = COALESCE(excluded.file_name, recordings.file_name), \
               attributes_json = excluded.attributes_json, \
               updated_ms = excluded.updated_ms \
             RETURNING {RECORDING_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(&r.recording_id)
            .bind(SOURCE_WXCC)
            .bind(&r.task_id)
            .bind(r.task_created_ms)
            .bind(r.file_name.as_deref())
            .bind(&r.attributes_json)
            .bind(RecordingState::Ready.as_str())
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "recording recording {} of org {}",
                r.recording_id, org.name
            )))?;
        recording_from_row(&row)
    }

    /// The org's recordings in any of `states`, oldest task first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn recordings_in_states(
        &self,
        org: &Org,
        states: &[RecordingState],
    ) -> Result<Vec<RecordingRow>, VaultError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE org = $1 AND state IN ({}) \
             ORDER BY task_created_ms, task_id, recording_id",
            placeholders(2, states.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "listing recordings of org {}",
                org.name
            )))?;
        rows.iter().map(recording_from_row).collect()
    }

    /// One recording by id, if known.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn recording(
        &self,
        org: &Org,
        recording_id: &str,
    ) -> Result<Option<RecordingRow>, VaultError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE org = $1 AND recording_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(recording_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "reading recording {recording_id} of org {}",
                org.name
            )))?;
        row.as_ref().map(recording_from_row).transpose()
    }

    /// Audio is written and verified: `ready`/`failed`/`stored` → `stored` with its key,
    /// sha256 and size (clearing any failure reason). No-op if already `done`.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_stored(
        &self,
        org: &Org,
        recording_id: &str,
        object_key: &str,
        sha256: &str,
        size: i64,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $3, object_key = $4, sha256 = $5, size_bytes = $6, \
               reason = NULL, updated_ms = $7, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $7 END \
             WHERE org = $1 AND recording_id = $2 AND state IN ($8, $9, $3)",
        )
        .bind(org.id)
        .bind(recording_id)
        .bind(RecordingState::Stored.as_str())
        .bind(object_key)
        .bind(sha256)
        .bind(size)
        .bind(now_ms())
        .bind(RecordingState::Ready.as_str())
        .bind(RecordingState::Failed.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking recording {recording_id} of org {} stored",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, recording_id, RecordingState::Stored)
                .await?;
        }
        Ok(())
    }

    /// Audio verified and sidecar written in one step: `ready`/`stored`/`failed` → `done` with the
    /// object's key, sha256 and size. Used for recordings small enough that recording `stored`
    /// separately would cost more than re-hashing after a crash (see the engine).
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_archived(
        &self,
        org: &Org,
        recording_id: &str,
        object_key: &str,
        sha256: &str,
        size: i64,
        sidecar_key: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $3, object_key = $4, sha256 = $5, size_bytes = $6, \
               sidecar_key = $7, reason = NULL, updated_ms = $8, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $8 END \
             WHERE org = $1 AND recording_id = $2 AND state IN ($9, $10, $11)",
        )
        .bind(org.id)
        .bind(recording_id)
        .bind(RecordingState::Done.as_str())
        .bind(object_key)
        .bind(sha256)
        .bind(size)
        .bind(sidecar_key)
        .bind(now_ms())
        .bind(RecordingState::Ready.as_str())
        .bind(RecordingState::Stored.as_str())
        .bind(RecordingState::Failed.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking recording {recording_id} of org {} archived",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, recording_id, RecordingState::Done)
                .await?;
        }
        Ok(())
    }

    /// [`Vault::mark_recording_archived`] for many recordings in one statement per chunk.
    /// Recordings that are unknown or already `done` are left alone.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn mark_recordings_archived(
        &self,
        org: &Org,
        items: &[Archived],
    ) -> Result<(), VaultError> {
        let now = now_ms();
        for chunk in items.chunks(BATCH_ROWS) {
            // $1 org, $2 done, $3 now, $4..$6 allowed from-states; then 5 per row.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = 7 + i * 5;
                    format!(
                        "(${b}, ${}, ${}, CAST(${} AS BIGINT), ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4
                    )
                })
                .collect();
            let sql = format!(
                "WITH v(rid, okey, sha, sz, skey) AS (VALUES {}) \
                 UPDATE recordings SET state = $2, object_key = v.okey, sha256 = v.sha, \
                   size_bytes = v.sz, sidecar_key = v.skey, reason = NULL, updated_ms = $3, \
                   state_changed_ms = $3 \
                 FROM v WHERE recordings.org = $1 AND recordings.recording_id = v.rid \
                   AND recordings.state IN ($4, $5, $6)",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(RecordingState::Done.as_str())
                .bind(now)
                .bind(RecordingState::Ready.as_str())
                .bind(RecordingState::Stored.as_str())
                .bind(RecordingState::Failed.as_str());
            for a in chunk {
                q = q
                    .bind(&a.recording_id)
                    .bind(&a.object_key)
                    .bind(&a.sha256)
                    .bind(a.size)
                    .bind(&a.sidecar_key);
            }
            q.execute(&self.pool).await.map_err(VaultError::db(format!(
                "marking {} recordings of org {} archived",
                chunk.len(),
                org.name
            )))?;
        }
        Ok(())
    }

    /// Several tasks' state at once (one statement), with the same rules as
    /// [`Vault::set_task_state`]; unknown ids and tasks already further along are left alone.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn set_tasks_state(
        &self,
        org: &Org,
        task_ids: &[String],
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(), VaultError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let from = state.allowed_from();
        let sql = format!(
            "UPDATE tasks SET state = $2, reason = $4, updated_ms = $3, \
               state_changed_ms = CASE WHEN state = $2 THEN state_changed_ms ELSE $3 END \
             WHERE org = $1 AND state IN ({}) AND task_id IN ({})",
            placeholders(5, from.len()),
            placeholders(5 + from.len(), task_ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(org.id)
            .bind(state.as_str())
            .bind(now_ms())
            .bind(reason);
        for s in from {
            q = q.bind(s.as_str());
        }
        for id in task_ids {
            q = q.bind(id.as_str());
        }
        q.execute(&self.pool).await.map_err(VaultError::db(format!(
            "setting {} tasks of org {} to {state}",
            task_ids.len(),
            org.name
        )))?;
        Ok(())
    }

    /// Counts one captures query against each of `task_ids` (one statement), stamped with the
    /// system clock; see [`Vault::note_capture_checks_at`].
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn note_capture_checks(
        &self,
        org: &Org,
        task_ids: &[String],
    ) -> Result<(), VaultError> {
        self.note_capture_checks_at(org, task_ids, now_ms()).await
    }

    /// The sidecar is written: `stored` → `done`. Repeating it is a no-op.
    ///
    /// # Errors
    /// [`VaultError::Transition`] if the recording is not `stored` (a sidecar may exist only
    /// for verified audio), [`VaultError::NotFound`] if it is unknown, [`VaultError::Db`] on
    /// database failure.
    pub async fn mark_recording_done(
        &self,
        org: &Org,
        recording_id: &str,
        sidecar_key: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $3, sidecar_key = $4, reason = NULL, updated_ms = $5, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $5 END \
             WHERE org = $1 AND recording_id = $2 AND state IN ($6, $3)",
        )
        .bind(org.id)
        .bind(recording_id)
        .bind(RecordingState::Done.as_str())
        .bind(sidecar_key)
        .bind(now_ms())
        .bind(RecordingState::Stored.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking recording {recording_id} of org {} done",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, recording_id, RecordingState::Done)
                .await?;
        }
        Ok(())
    }

    /// Permanent failure with a reason: `ready`/`stored`/`failed` → `failed`. No-op if the
    /// recording is already `done` (archived audio is never declared lost).
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_failed(
        &self,
        org: &Org,
        recording_id: &str,
        reason: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $3, reason = $4, updated_ms = $5, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $5 END \
             WHERE org = $1 AND recording_id = $2 AND state IN ($6, $7, $3)",
        )
        .bind(org.id)
        .bind(recording_id)
        .bind(RecordingState::Failed.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(RecordingState::Ready.as_str())
        .bind(RecordingState::Stored.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking recording {recording_id} of org {} failed",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, recording_id, RecordingState::Failed)
                .await?;
        }
        Ok(())
    }

    /// Explains a refused recording transition: unknown → error; skipping `stored` → error;
    /// already further along → no-op.
    async fn refused(
        &self,
        org: &Org,
        recording_id: &str,
        to: RecordingState,
    ) -> Result<(), VaultError> {
        let current: Option<String> =
            sqlx::query_scalar("SELECT state FROM recordings WHERE org = $1 AND recording_id = $2")
                .bind(org.id)
                .bind(recording_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(VaultError::db(format!(
                    "reading recording {recording_id} of org {}",
                    org.name
                )))?;
        let item = format!("recording {recording_id} of org {}", org.name);
        let Some(current) = current else {
            return Err(VaultError::NotFound(item));
        };
        let current = RecordingState::parse(&current, &item)?;
        if to == RecordingState::Done {
            return Err(VaultError::Transition {
                item,
                from: current.to_string(),
                to: to.to_string(),
                why: "a sidecar may be written only for stored, verified audio",
            });
        }
        tracing::debug!(org = %org.name, recording = recording_id, %current, requested = %to,
            "recording state not changed: already further along");
        Ok(())
    }

    /// Counts a failed attempt and keeps its error (shown to operators: no secrets, no signed
    /// URLs); returns the attempts so far.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn note_recording_attempt(
        &self,
        org: &Org,
        recording_id: &str,
        error: &str,
    ) -> Result<i64, VaultError> {
        sqlx::query_scalar(
            "UPDATE recordings SET attempts = attempts + 1, last_error = $3, updated_ms = $4 \
             WHERE org = $1 AND recording_id = $2 RETURNING attempts",
        )
        .bind(org.id)
        .bind(recording_id)
        .bind(error)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "noting an attempt on recording {recording_id} of org {}",
            org.name
        )))?
        .ok_or_else(|| {
            VaultError::NotFound(format!("recording {recording_id} of org {}", org.name))
        })
    }

    /// Records that the window `[from_ms, to_ms)` of `source` was harvested completely.
    /// Recording the same window again is a no-op.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] if `from_ms > to_ms`, [`VaultError::Db`] on database failure.
    pub async fn window_done(
        &self,
        org: &Org,
        source: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(), VaultError> {
        if from_ms > to_ms {
            return Err(VaultError::Invalid(format!(
                "harvest window for org {} {source} ends ({to_ms}) before it starts ({from_ms})",
                org.name
            )));
        }
        sqlx::query(
            "INSERT INTO windows (org, source, from_ms, to_ms, done_at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org, source, from_ms, to_ms) DO NOTHING",
        )
        .bind(org.id)
        .bind(source)
        .bind(from_ms)
        .bind(to_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "recording a harvest window for org {} {source}",
            org.name
        )))?;
        Ok(())
    }

    /// The latest end of a completed window of `source`, if any.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn last_window_end(
        &self,
        org: &Org,
        source: &str,
    ) -> Result<Option<i64>, VaultError> {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(to_ms) FROM windows WHERE org = $1 AND source = $2",
        )
        .bind(org.id)
        .bind(source)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading harvest windows of org {} {source}",
            org.name
        )))
    }

    /// Ledger totals for the org, from one consistent read.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn counts(&self, org: &Org) -> Result<Counts, VaultError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM tasks WHERE org = $1) AS tasks, \
               (SELECT COUNT(*) FROM recordings WHERE org = $1) AS recordings, \
               (SELECT COUNT(*) FROM recordings WHERE org = $1 AND state = 'done') AS archived, \
               (SELECT COUNT(*) FROM recordings WHERE org = $1 AND state IN ('ready', 'stored')) \
                 AS in_progress, \
               (SELECT COUNT(*) FROM tasks WHERE org = $1 \
                  AND state IN ('discovered', 'pending_capture') \
                  AND (capture_requested IS NULL OR capture_requested <> 0)) AS pending_capture, \
               (SELECT COUNT(*) FROM tasks WHERE org = $1 AND state = 'missing') AS missing, \
               (SELECT COUNT(*) FROM tasks WHERE org = $1 AND state = 'absent') AS absent, \
               (SELECT COUNT(*) FROM tasks WHERE org = $1 AND state = 'absent' \
                  AND capture_requested IS NULL) AS capture_never_requested, \
               (SELECT COUNT(*) FROM recordings WHERE org = $1 AND state = 'failed') \
                 AS failed_recordings, \
               (SELECT COUNT(*) FROM tasks WHERE org = $1 AND state = 'failed') AS failed_tasks",
        )
        .bind(org.id)
        .fetch_one(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "counting the ledger of org {}",
            org.name
        )))?;
        Ok(Counts {
            tasks: get(&row, "tasks")?,
            recordings: get(&row, "recordings")?,
            archived: get(&row, "archived")?,
            in_progress: get(&row, "in_progress")?,
            pending_capture: get(&row, "pending_capture")?,
            missing: get(&row, "missing")?,
            absent: get(&row, "absent")?,
            capture_never_requested: get(&row, "capture_never_requested")?,
            failed: get::<i64>(&row, "failed_recordings")? + get::<i64>(&row, "failed_tasks")?,
        })
    }

    /// Failed recordings and failed or missing tasks with their reasons, newest first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn failures(&self, org: &Org, limit: i64) -> Result<Vec<Failure>, VaultError> {
        let rows = sqlx::query(
            "SELECT item, state, reason, at_ms FROM ( \
               SELECT 'recording ' || recording_id AS item, state, reason, \
                 state_changed_ms AS at_ms \
               FROM recordings WHERE org = $1 AND state = 'failed' \
               UNION ALL \
               SELECT 'task ' || task_id AS item, state, reason, state_changed_ms AS at_ms \
               FROM tasks WHERE org = $1 AND state IN ('failed', 'missing') \
             ) f ORDER BY at_ms DESC, item LIMIT $2",
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

    /// Appends to the audit/event log. Callers must not pass secrets.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn record_event(
        &self,
        org: Option<&Org>,
        kind: &str,
        message: &str,
    ) -> Result<(), VaultError> {
        sqlx::query("INSERT INTO events (org, at_ms, kind, message) VALUES ($1, $2, $3, $4)")
            .bind(org.map(|o| o.id))
            .bind(now_ms())
            .bind(kind)
            .bind(message)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!("recording a {kind} event")))?;
        Ok(())
    }

    /// The newest `limit` events, newest first: of one org, or of all orgs and none when
    /// `org` is `None`.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn recent_events(
        &self,
        org: Option<&Org>,
        limit: i64,
    ) -> Result<Vec<Event>, VaultError> {
        let q = match org {
            Some(o) => sqlx::query(
                "SELECT id, org, at_ms, kind, message FROM events WHERE org = $1 \
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(o.id),
            None => sqlx::query(
                "SELECT id, org, at_ms, kind, message FROM events ORDER BY id DESC LIMIT $1",
            ),
        };
        let rows = q
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("listing events"))?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    id: get(row, "id")?,
                    org: get(row, "org")?,
                    at_ms: get(row, "at_ms")?,
                    kind: get(row, "kind")?,
                    message: get(row, "message")?,
                })
            })
            .collect()
    }
}

/// A row of `item, state, reason, at_ms` as a [`Failure`].
pub(crate) fn failure_from_row(row: &AnyRow) -> Result<Failure, VaultError> {
    let reason: Option<String> = get(row, "reason")?;
    Ok(Failure {
        item: get(row, "item")?,
        state: get(row, "state")?,
        reason: reason.unwrap_or_else(|| "no reason recorded".into()),
        at_ms: get(row, "at_ms")?,
    })
}

pub(crate) fn task_from_row(row: &AnyRow) -> Result<TaskRow, VaultError> {
    let task_id: String = get(row, "task_id")?;
    let state: String = get(row, "state")?;
    let capture: Option<i64> = get(row, "capture_requested")?;
    Ok(TaskRow {
        state: TaskState::parse(&state, &format!("task {task_id}"))?,
        created_ms: get(row, "created_ms")?,
        capture_requested: capture.map(|v| v != 0),
        reason: get(row, "reason")?,
        attributes_json: get(row, "attributes_json")?,
        checks: get(row, "checks")?,
        task_id,
    })
}

fn recording_from_row(row: &AnyRow) -> Result<RecordingRow, VaultError> {
    let recording_id: String = get(row, "recording_id")?;
    let state: String = get(row, "state")?;
    Ok(RecordingRow {
        state: RecordingState::parse(&state, &format!("recording {recording_id}"))?,
        task_id: get(row, "task_id")?,
        task_created_ms: get(row, "task_created_ms")?,
        file_name: get(row, "file_name")?,
        attributes_json: get(row, "attributes_json")?,
        object_key: get(row, "object_key")?,
        sha256: get(row, "sha256")?,
        size_bytes: get(row, "size_bytes")?,
        reason: get(row, "reason")?,
        attempts: get(row, "attempts")?,
        recording_id,
    })
}
