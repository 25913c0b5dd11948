//! The recordings ledger: `ready → stored → done`, side exits `failed` (permanent error, with
//! why) and `absent` (legitimately nothing to archive, with why). Each recording is keyed by
//! (org, source, recording id); see `ledger.rs` for the transition rules every statement here
//! follows.

use sqlx::any::AnyRow;

use crate::db::now_ms;
use crate::ledger::{BATCH_ROWS, item_name, last_of_each};
use crate::orgs::get;
use crate::{Archived, Org, RecordingRow, RecordingState, RecordingUpsert, Vault, VaultError};

const RECORDING_COLUMNS: &str = "recording_id, task_id, task_created_ms, file_name, attributes_json, \
    state, object_key, sha256, size_bytes, reason, attempts";

impl Vault {
    /// Records a recording of `source` as `ready`, or refreshes a known one's metadata. Never
    /// changes a known recording's state (so `stored`/`done`/`absent` never regress), nor, once
    /// it is past `ready`, the time and file name its object key was built from. Returns the
    /// stored row.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn upsert_recording(
        &self,
        org: &Org,
        source: &str,
        r: &RecordingUpsert,
    ) -> Result<RecordingRow, VaultError> {
        self.upsert_recordings(org, source, std::slice::from_ref(r))
            .await?
            .pop()
            .ok_or_else(|| VaultError::Corrupt {
                what: item_name(org, source, "recording", &r.recording_id),
                detail: "the upsert returned no row".into(),
            })
    }

    /// [`Vault::upsert_recording`] for many recordings of `source` in one statement per chunk
    /// (ids de-duplicated, the last occurrence wins). Returns the rows in no particular order.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn upsert_recordings(
        &self,
        org: &Org,
        source: &str,
        recordings: &[RecordingUpsert],
    ) -> Result<Vec<RecordingRow>, VaultError> {
        let unique = last_of_each(recordings, |r| r.recording_id.as_str());
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
                 ON CONFLICT (org, source, recording_id) DO UPDATE SET \
                   task_created_ms = CASE WHEN recordings.state = $3 \
                     THEN excluded.task_created_ms ELSE recordings.task_created_ms END, \
                   file_name = CASE WHEN recordings.state = $3 \
                     THEN COALESCE(excluded.file_name, recordings.file_name) \
                     ELSE recordings.file_name END, \
                   attributes_json = excluded.attributes_json, \
                   updated_ms = excluded.updated_ms \
                 RETURNING {RECORDING_COLUMNS}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(source)
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
            let what = match chunk {
                [one] => item_name(org, source, "recording", &one.recording_id),
                _ => format!("{} {source} recordings of org {}", chunk.len(), org.name),
            };
            let rows = q
                .fetch_all(&self.pool)
                .await
                .map_err(VaultError::db(format!("recording {what}")))?;
            for row in &rows {
                out.push(recording_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// The org's recordings of `source` in any of `states`, oldest task first.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn recordings_in_states(
        &self,
        org: &Org,
        source: &str,
        states: &[RecordingState],
    ) -> Result<Vec<RecordingRow>, VaultError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings \
             WHERE org = $1 AND source = $2 AND state IN ({}) \
             ORDER BY task_created_ms, task_id, recording_id",
            crate::db::placeholders(3, states.len())
        );
        let mut q = sqlx::query(&sql).bind(org.id).bind(source);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "listing {source} recordings of org {}",
                org.name
            )))?;
        rows.iter().map(recording_from_row).collect()
    }

    /// One recording of `source` by id, if known.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn recording(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
    ) -> Result<Option<RecordingRow>, VaultError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings \
             WHERE org = $1 AND source = $2 AND recording_id = $3"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(source)
            .bind(recording_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "reading {}",
                item_name(org, source, "recording", recording_id)
            )))?;
        row.as_ref().map(recording_from_row).transpose()
    }

    /// Audio is written and verified: `ready`/`failed`/`stored` → `stored` with its key,
    /// sha256 and size (clearing any failure reason). No-op if already `done` or `absent`.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_stored(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        object_key: &str,
        sha256: &str,
        size: i64,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $4, object_key = $5, sha256 = $6, size_bytes = $7, \
               reason = NULL, updated_ms = $8, \
               state_changed_ms = CASE WHEN state = $4 THEN state_changed_ms ELSE $8 END \
             WHERE org = $1 AND source = $2 AND recording_id = $3 AND state IN ($9, $10, $4)",
        )
        .bind(org.id)
        .bind(source)
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
            "marking {} stored",
            item_name(org, source, "recording", recording_id)
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, source, recording_id, RecordingState::Stored)
                .await?;
        }
        Ok(())
    }

    /// Audio verified and sidecar written in one step: `ready`/`stored`/`failed` → `done` with the
    /// object's key, sha256 and size. Used for recordings small enough that recording `stored`
    /// separately would cost more than re-hashing after a crash (see the engine).
    ///
    /// # Errors
    /// [`VaultError::Transition`] if the recording is `done` or `absent` already,
    /// [`VaultError::NotFound`] if it is unknown, [`VaultError::Db`] on database failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_recording_archived(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        object_key: &str,
        sha256: &str,
        size: i64,
        sidecar_key: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $4, object_key = $5, sha256 = $6, size_bytes = $7, \
               sidecar_key = $8, reason = NULL, updated_ms = $9, \
               state_changed_ms = CASE WHEN state = $4 THEN state_changed_ms ELSE $9 END \
             WHERE org = $1 AND source = $2 AND recording_id = $3 AND state IN ($10, $11, $12)",
        )
        .bind(org.id)
        .bind(source)
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
            "marking {} archived",
            item_name(org, source, "recording", recording_id)
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, source, recording_id, RecordingState::Done)
                .await?;
        }
        Ok(())
    }

    /// [`Vault::mark_recording_archived`] for many recordings of `source` in one statement per
    /// chunk. Recordings that are unknown, already `done` or `absent` are left alone.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn mark_recordings_archived(
        &self,
        org: &Org,
        source: &str,
        items: &[Archived],
    ) -> Result<(), VaultError> {
        let now = now_ms();
        for chunk in items.chunks(BATCH_ROWS) {
            // $1 org, $2 source, $3 done, $4 now, $5..$7 allowed from-states; then 5 per row.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = 8 + i * 5;
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
                 UPDATE recordings SET state = $3, object_key = v.okey, sha256 = v.sha, \
                   size_bytes = v.sz, sidecar_key = v.skey, reason = NULL, updated_ms = $4, \
                   state_changed_ms = $4 \
                 FROM v WHERE recordings.org = $1 AND recordings.source = $2 \
                   AND recordings.recording_id = v.rid \
                   AND recordings.state IN ($5, $6, $7)",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(org.id)
                .bind(source)
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
                "marking {} {source} recordings of org {} archived",
                chunk.len(),
                org.name
            )))?;
        }
        Ok(())
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
        source: &str,
        recording_id: &str,
        sidecar_key: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $4, sidecar_key = $5, reason = NULL, updated_ms = $6, \
               state_changed_ms = CASE WHEN state = $4 THEN state_changed_ms ELSE $6 END \
             WHERE org = $1 AND source = $2 AND recording_id = $3 AND state IN ($7, $4)",
        )
        .bind(org.id)
        .bind(source)
        .bind(recording_id)
        .bind(RecordingState::Done.as_str())
        .bind(sidecar_key)
        .bind(now_ms())
        .bind(RecordingState::Stored.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking {} done",
            item_name(org, source, "recording", recording_id)
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, source, recording_id, RecordingState::Done)
                .await?;
        }
        Ok(())
    }

    /// Permanent failure with a reason: `ready`/`stored`/`failed` → `failed`. No-op if the
    /// recording is already `done` (archived audio is never declared lost) or `absent`.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_failed(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        reason: &str,
    ) -> Result<(), VaultError> {
        self.mark_side_exit(org, source, recording_id, RecordingState::Failed, reason)
            .await
    }

    /// Legitimately nothing to archive, with why (e.g. a Calling recording deleted or purged
    /// since it was listed, zero bytes, no audio): `ready`/`stored`/`failed`/`absent` →
    /// `absent`. Final: nothing moves an absent recording, and `retry` leaves it alone. No-op
    /// if the recording is already `done` (archived audio is never declared absent); repeating
    /// it only refreshes the reason. From `stored`, the archived audio's key and hash stay
    /// recorded.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn mark_recording_absent(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        reason: &str,
    ) -> Result<(), VaultError> {
        self.mark_side_exit(org, source, recording_id, RecordingState::Absent, reason)
            .await
    }

    /// `ready`/`stored`/`failed` (or `to` itself, refreshing the reason) → `to` with a reason.
    async fn mark_side_exit(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        to: RecordingState,
        reason: &str,
    ) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $4, reason = $5, updated_ms = $6, \
               state_changed_ms = CASE WHEN state = $4 THEN state_changed_ms ELSE $6 END \
             WHERE org = $1 AND source = $2 AND recording_id = $3 AND state IN ($7, $8, $9, $4)",
        )
        .bind(org.id)
        .bind(source)
        .bind(recording_id)
        .bind(to.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(RecordingState::Ready.as_str())
        .bind(RecordingState::Stored.as_str())
        .bind(RecordingState::Failed.as_str())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "marking {} {to}",
            item_name(org, source, "recording", recording_id)
        )))?;
        if done.rows_affected() == 0 {
            self.refused(org, source, recording_id, to).await?;
        }
        Ok(())
    }

    /// Explains a refused recording transition: unknown → error; a sidecar for audio that is
    /// not stored (or absent) → error; already further along (`done`, or final `absent`) →
    /// no-op.
    async fn refused(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        to: RecordingState,
    ) -> Result<(), VaultError> {
        let item = item_name(org, source, "recording", recording_id);
        let current: Option<String> = sqlx::query_scalar(
            "SELECT state FROM recordings WHERE org = $1 AND source = $2 AND recording_id = $3",
        )
        .bind(org.id)
        .bind(source)
        .bind(recording_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!("reading {item}")))?;
        let Some(current) = current else {
            return Err(VaultError::NotFound(item));
        };
        let current = RecordingState::parse(&current, &item)?;
        if to == RecordingState::Done {
            let why = match current {
                RecordingState::Absent => {
                    "the recording is absent (nothing to archive), and absent is final"
                }
                RecordingState::Ready
                | RecordingState::Stored
                | RecordingState::Done
                | RecordingState::Failed => {
                    "a sidecar may be written only for stored, verified audio"
                }
            };
            return Err(VaultError::Transition {
                item,
                from: current.to_string(),
                to: to.to_string(),
                why,
            });
        }
        tracing::debug!(org = %org.name, source, recording = recording_id, %current,
            requested = %to, "recording state not changed: already further along");
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
        source: &str,
        recording_id: &str,
        error: &str,
    ) -> Result<i64, VaultError> {
        let item = || item_name(org, source, "recording", recording_id);
        sqlx::query_scalar(
            "UPDATE recordings SET attempts = attempts + 1, last_error = $4, updated_ms = $5 \
             WHERE org = $1 AND source = $2 AND recording_id = $3 RETURNING attempts",
        )
        .bind(org.id)
        .bind(source)
        .bind(recording_id)
        .bind(error)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!("noting an attempt on {}", item())))?
        .ok_or_else(|| VaultError::NotFound(item()))
    }

    /// Notes that the recording's sidecar waits for Webex (metadata not ready) as of `at_ms`
    /// (the engine's clock), unless it already waits; returns since when it waits.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the recording is unknown, [`VaultError::Db`] on database failure.
    pub async fn note_waiting(
        &self,
        org: &Org,
        source: &str,
        recording_id: &str,
        at_ms: i64,
    ) -> Result<i64, VaultError> {
        let item = || item_name(org, source, "recording", recording_id);
        sqlx::query_scalar(
            "UPDATE recordings SET waiting_since_ms = COALESCE(waiting_since_ms, $4) \
             WHERE org = $1 AND source = $2 AND recording_id = $3 RETURNING waiting_since_ms",
        )
        .bind(org.id)
        .bind(source)
        .bind(recording_id)
        .bind(at_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!("noting a wait on {}", item())))?
        .ok_or_else(|| VaultError::NotFound(item()))
    }
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
