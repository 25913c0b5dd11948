//! Completed harvest windows per org and source, and the cursor they make.
//!
//! A source's cursor — where its next default harvest starts — is the latest end of its windows
//! recorded *in line* (`ahead = 0`). A window recorded while the cursor is behind its start is
//! kept *ahead*: it says "this period is harvested" without moving the cursor over the period
//! before it, which may still be running (a backfill chunk that finished before the chunk ahead of
//! it) or may have failed. Every recording promotes the ahead windows that now touch the cursor,
//! until none does, so the cursor jumps over a run of finished chunks exactly when the chunk
//! before them is done, in whatever order they finished.

use crate::db::now_ms;
use crate::orgs::get;
use crate::{Org, Vault, VaultError};

/// Promotion passes at most: one pass moves the whole run the cursor reaches; more are needed
/// only while other processes record at the same time. A bound against a livelock.
const PROMOTE_PASSES: usize = 100;

impl Vault {
    /// Records that the window `[from_ms, to_ms)` of `source` was harvested completely, in line
    /// (the caller checked that it starts at or before the cursor). Recording the same window
    /// again is a no-op, except that a copy recorded ahead is now in line.
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
        self.insert_window(org, source, from_ms, to_ms, false).await
    }

    /// Records that `[from_ms, to_ms)` of `source` was harvested completely although the cursor
    /// has not reached `from_ms`: the window waits, ahead, for [`Vault::promote_windows`].
    ///
    /// # Errors
    /// As [`Vault::window_done`].
    pub async fn window_done_ahead(
        &self,
        org: &Org,
        source: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(), VaultError> {
        self.insert_window(org, source, from_ms, to_ms, true).await
    }

    async fn insert_window(
        &self,
        org: &Org,
        source: &str,
        from_ms: i64,
        to_ms: i64,
        ahead: bool,
    ) -> Result<(), VaultError> {
        if from_ms > to_ms {
            return Err(VaultError::Invalid(format!(
                "harvest window for org {} {source} ends ({to_ms}) before it starts ({from_ms})",
                org.name
            )));
        }
        // In line wins over ahead: never turn an in-line window back into an ahead one.
        let conflict = if ahead {
            "DO NOTHING"
        } else {
            "DO UPDATE SET ahead = 0"
        };
        sqlx::query(&format!(
            "INSERT INTO windows (org, source, from_ms, to_ms, done_at_ms, ahead) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org, source, from_ms, to_ms) {conflict}"
        ))
        .bind(org.id)
        .bind(source)
        .bind(from_ms)
        .bind(to_ms)
        .bind(now_ms())
        .bind(i64::from(ahead))
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "recording a harvest window for org {} {source}",
            org.name
        )))?;
        Ok(())
    }

    /// Puts in line every ahead window of `source` that the cursor now reaches (it starts at or
    /// before the cursor, or before the end of a run of windows that does), so the cursor moves
    /// over them. Returns how many moved.
    ///
    /// Each recorder calls this after its own insert and repeats until a pass moves nothing, so of
    /// two recorders racing (PostgreSQL), the one whose last pass starts later sees both inserts
    /// and leaves nothing that could move behind.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn promote_windows(&self, org: &Org, source: &str) -> Result<u64, VaultError> {
        let mut moved = 0;
        for _ in 0..PROMOTE_PASSES {
            let Some(cursor) = self.last_window_end(org, source).await? else {
                break;
            };
            let reach = self.windows_reach(org, source, cursor).await?;
            let done = sqlx::query(
                "UPDATE windows SET ahead = 0 WHERE org = $1 AND source = $2 AND ahead = 1 \
                 AND from_ms <= $3",
            )
            .bind(org.id)
            .bind(source)
            .bind(reach)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "putting finished windows of org {} {source} in line",
                org.name
            )))?;
            if done.rows_affected() == 0 {
                break;
            }
            moved += done.rows_affected();
        }
        Ok(moved)
    }

    /// The cursor of `source`: the latest end of a window recorded in line, if any.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn last_window_end(
        &self,
        org: &Org,
        source: &str,
    ) -> Result<Option<i64>, VaultError> {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(to_ms) FROM windows WHERE org = $1 AND source = $2 AND ahead = 0",
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

    /// How far `source` is harvested without a gap from `from_ms` on, counting windows recorded
    /// ahead too: `from_ms` itself when no window starts at or before it and ends after it. The
    /// planner starts an org's regular harvest there while backfill chunks before `from_ms` still
    /// run, so it neither re-lists what earlier passes harvested nor skips what they left behind.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn windows_reach(
        &self,
        org: &Org,
        source: &str,
        from_ms: i64,
    ) -> Result<i64, VaultError> {
        let rows = sqlx::query(
            "SELECT from_ms, to_ms FROM windows WHERE org = $1 AND source = $2 AND to_ms > $3 \
             ORDER BY from_ms",
        )
        .bind(org.id)
        .bind(source)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading harvest windows of org {} {source}",
            org.name
        )))?;
        let mut reach = from_ms;
        for r in &rows {
            let (from, to): (i64, i64) = (get(r, "from_ms")?, get(r, "to_ms")?);
            if from > reach {
                break;
            }
            reach = reach.max(to);
        }
        Ok(reach)
    }
}
