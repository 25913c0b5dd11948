//! The ledger of tasks and the event log (completed harvest windows are in `windows.rs`). Recordings are in
//! `recordings.rs`, org-wide totals and failure lists in `status.rs`.
//!
//! Items are keyed by (org, source, id): a Webex Calling recording id and a WxCC capture id
//! live in different namespaces, so every function on one item takes the source (a name the
//! engine owns, e.g. `wxcc`) right after the org and reads or writes only that source's rows.
//!
//! Every state transition is a single `UPDATE … WHERE state IN (allowed predecessors)`, so it
//! is atomic, idempotent (repeating it changes nothing) and can never move an item backwards,
//! even when two workers race. When the guard refuses a transition because the item is
//! already further along, that is a no-op; when it refuses one that would break an invariant
//! (a sidecar before verified audio), that is an error.

use sqlx::any::AnyRow;

use crate::db::{now_ms, placeholders};
use crate::orgs::get;
use crate::{Event, Failure, Org, TaskRow, TaskState, TaskUpsert, Vault, VaultError};

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
pub(crate) const BATCH_ROWS: usize = 200;
pub(crate) const TASK_COLUMNS: &str =
    "task_id, created_ms, capture_requested, state, reason, attributes_json, checks";

/// How an item is named in errors and logs: `wxcc task T1 of org acme`.
pub(crate) fn item_name(org: &Org, source: &str, kind: &str, id: &str) -> String {
    format!("{source} {kind} {id} of org {}", org.name)
}

/// The last occurrence of each id, in first-seen order: a batch must not name a row twice
/// (PostgreSQL refuses an `ON CONFLICT` statement that would update the same row twice).
pub(crate) fn last_of_each<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut unique: Vec<&T> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashMap::new();
    for item in items {
        match seen.get(id(item)) {
            Some(&i) => unique[i] = item,
            None => {
                seen.insert(id(item), unique.len());
                unique.push(item);
            }
        }
    }
    unique
}

impl Vault {
    /// Records a task of `source` as `discovered`, or refreshes a known task's attributes and
    /// capture flag (a known flag is never replaced by "unknown"). Never changes a known task's
    /// state. Returns the stored row.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn upsert_task(
        &self,
        org: &Org,
        source: &str,
        t: &TaskUpsert,
    ) -> Result<TaskRow, VaultError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO tasks (org, task_id, source, created_ms, capture_requested, state, \
               attributes_json, checks, first_seen_ms, updated_ms, state_changed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $8) \
             ON CONFLICT (org, source, task_id) DO UPDATE SET \
               created_ms = excluded.created_ms, \
               capture_requested = COALESCE(excluded.capture_requested, tasks.capture_requested), \
               attributes_json = excluded.attributes_json, \
               updated_ms = excluded.updated_ms \
             RETURNING {TASK_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(&t.task_id)
            .bind(source)
            .bind(t.created_ms)
            .bind(t.capture_requested.map(i64::from))
            .bind(TaskState::Discovered.as_str())
            .bind(&t.attributes_json)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "recording {}",
                item_name(org, source, "task", &t.task_id)
            )))?;
        task_from_row(&row)
    }

    /// [`Vault::upsert_task`] for many tasks of `source` in one statement per chunk (ids
    /// de-duplicated, the last occurrence wins). Returns the rows in no particular order.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn upsert_tasks(
        &self,
        org: &Org,
        source: &str,
        tasks: &[TaskUpsert],
    ) -> Result<Vec<TaskRow>, VaultError> {
        let unique = last_of_each(tasks, |t| t.task_id.as_str());
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
                 ON CONFLICT (org, source, task_id) DO UPDATE SET \
                   created_ms = excluded.created_ms, \
                   capture_requested = COALESCE(excluded.capture_requested, tasks.capture_requested), \
                   attributes_json = excluded.attributes_json, \
                   updated_ms = excluded.updated_ms \
                 RETURNING {TASK_COLUMNS}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(source)
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
                    "recording {} {source} tasks of org {}",
                    chunk.len(),
                    org.name
                )))?;
            for row in &rows {
                out.push(task_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Moves a task of `source` to `state` with an optional reason. Allowed moves: forward from
    /// `discovered`/`pending_capture`; `missing` may still become `captured` or `absent`;
    /// `captured`, `absent` and `failed` are final. A refused move (the task is already further
    /// along) is a no-op; repeating a move only refreshes the reason.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the task is unknown, [`VaultError::Db`] on database failure.
    pub async fn set_task_state(
        &self,
        org: &Org,
        source: &str,
        task_id: &str,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(), VaultError> {
        let from = state.allowed_from();
        let sql = format!(
            "UPDATE tasks SET state = $4, reason = $5, updated_ms = $6, \
               state_changed_ms = CASE WHEN state = $4 THEN state_changed_ms ELSE $6 END \
             WHERE org = $1 AND source = $2 AND task_id = $3 AND state IN ({})",
            placeholders(7, from.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(org.id)
            .bind(source)
            .bind(task_id)
            .bind(state.as_str())
            .bind(reason)
            .bind(now_ms());
        for s in from {
            q = q.bind(s.as_str());
        }
        let item = || item_name(org, source, "task", task_id);
        let done = q
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!("setting {} to {state}", item())))?;
        if done.rows_affected() == 0 {
            match self.task_state(org, source, task_id).await? {
                None => return Err(VaultError::NotFound(item())),
                Some(current) => tracing::debug!(
                    org = %org.name, source, task = task_id, %current, requested = %state,
                    "task state not changed: already further along"
                ),
            }
        }
        Ok(())
    }

    async fn task_state(
        &self,
        org: &Org,
        source: &str,
        task_id: &str,
    ) -> Result<Option<String>, VaultError> {
        sqlx::query_scalar(
            "SELECT state FROM tasks WHERE org = $1 AND source = $2 AND task_id = $3",
        )
        .bind(org.id)
        .bind(source)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading {}",
            item_name(org, source, "task", task_id)
        )))
    }

    /// Counts one more captures query for the task of `source` and stamps when it happened.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the task is unknown, [`VaultError::Db`] on database failure.
    pub async fn note_capture_check(
        &self,
        org: &Org,
        source: &str,
        task_id: &str,
    ) -> Result<(), VaultError> {
        let item = || item_name(org, source, "task", task_id);
        let done = sqlx::query(
            "UPDATE tasks SET checks = checks + 1, last_checked_ms = $4 \
             WHERE org = $1 AND source = $2 AND task_id = $3",
        )
        .bind(org.id)
        .bind(source)
        .bind(task_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "noting a capture check of {}",
            item()
        )))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(item()));
        }
        Ok(())
    }

    /// The org's tasks of `source` in any of `states`, oldest first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn tasks_in_states(
        &self,
        org: &Org,
        source: &str,
        states: &[TaskState],
    ) -> Result<Vec<TaskRow>, VaultError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE org = $1 AND source = $2 AND state IN ({}) \
             ORDER BY created_ms, task_id",
            placeholders(3, states.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id).bind(source);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "listing {source} tasks of org {}",
                org.name
            )))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Several tasks' state at once (one statement), with the same rules as
    /// [`Vault::set_task_state`]; unknown ids and tasks already further along are left alone.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn set_tasks_state(
        &self,
        org: &Org,
        source: &str,
        task_ids: &[String],
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(), VaultError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let from = state.allowed_from();
        let sql = format!(
            "UPDATE tasks SET state = $3, reason = $5, updated_ms = $4, \
               state_changed_ms = CASE WHEN state = $3 THEN state_changed_ms ELSE $4 END \
             WHERE org = $1 AND source = $2 AND state IN ({}) AND task_id IN ({})",
            placeholders(6, from.len()),
            placeholders(6 + from.len(), task_ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(org.id)
            .bind(source)
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
            "setting {} {source} tasks of org {} to {state}",
            task_ids.len(),
            org.name
        )))?;
        Ok(())
    }

    /// Counts one captures query against each of `task_ids` of `source` (one statement),
    /// stamped with the system clock; see [`Vault::note_capture_checks_at`].
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn note_capture_checks(
        &self,
        org: &Org,
        source: &str,
        task_ids: &[String],
    ) -> Result<(), VaultError> {
        self.note_capture_checks_at(org, source, task_ids, now_ms())
            .await
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

/// A row of `item, source, state, reason, at_ms` as a [`Failure`].
pub(crate) fn failure_from_row(row: &AnyRow) -> Result<Failure, VaultError> {
    let reason: Option<String> = get(row, "reason")?;
    Ok(Failure {
        item: get(row, "item")?,
        source: get(row, "source")?,
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
