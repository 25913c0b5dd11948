//! Per-client-id request budgets shared by every process on the database.
//!
//! Webex limits requests per integration client id, so several wxvault processes working for
//! orgs of one integration must share one budget. The budget is a GCRA (generic cell rate
//! algorithm) schedule: one row per client id holding its "theoretical arrival time" (TAT).
//! Taking a slot is one upsert that moves the TAT one emission interval past the later of the
//! stored TAT, now and any pause, and returns the new TAT and the pause; the caller derives
//! from them when its request may go (`engine::budget`). Every caller gets a slot — the
//! schedule decides *when* — so a reservation is one round trip with no read-then-write window,
//! atomic on SQLite (one writer) and PostgreSQL (the row lock of the upsert) alike.
//!
//! A 429's `Retry-After` is stored as `paused_until_ms` (never shortened); slots taken during a
//! pause are scheduled after it.
//!
//! Times are epoch milliseconds of the callers' system clocks: the budget is about real time,
//! as Webex counts it, not the engine's (possibly simulated) clock.

use crate::db::Backend;
use crate::orgs::get;
use crate::{Vault, VaultError};

/// What [`Vault::reserve_request`] found after taking a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSlot {
    /// The client id's theoretical arrival time after this reservation (epoch ms).
    pub tat_ms: i64,
    /// Until when the client id is paused by a `Retry-After` (epoch ms; in the past when not).
    pub paused_until_ms: i64,
}

impl Vault {
    /// Takes one request slot of `client_id`'s budget at `now_ms`: the stored TAT becomes
    /// `max(TAT, now_ms, paused_until_ms) + interval_ms` (a new client id starts at
    /// `now_ms + interval_ms`). One statement.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty client id or a non-positive interval,
    /// [`VaultError::Db`] on database failure.
    pub async fn reserve_request(
        &self,
        client_id: &str,
        now_ms: i64,
        interval_ms: i64,
    ) -> Result<BudgetSlot, VaultError> {
        if client_id.is_empty() || interval_ms <= 0 {
            return Err(VaultError::Invalid(format!(
                "a request budget needs a client id and a positive interval, got {interval_ms} ms"
            )));
        }
        let later = self.greatest();
        let sql = format!(
            "INSERT INTO request_budgets (client_id, tat_ms, paused_until_ms, updated_at_ms) \
             VALUES ($1, $2 + $3, 0, $2) \
             ON CONFLICT (client_id) DO UPDATE SET \
               tat_ms = {later}(request_budgets.tat_ms, $2, request_budgets.paused_until_ms) + $3, \
               updated_at_ms = $2 \
             RETURNING tat_ms, paused_until_ms"
        );
        let row = sqlx::query(&sql)
            .bind(client_id)
            .bind(now_ms)
            .bind(interval_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "taking a request slot for client id {client_id}"
            )))?;
        Ok(BudgetSlot {
            tat_ms: get(&row, "tat_ms")?,
            paused_until_ms: get(&row, "paused_until_ms")?,
        })
    }

    /// Pauses `client_id` until `until_ms` (a 429's `Retry-After`), unless it is already
    /// paused longer. One statement.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty client id, [`VaultError::Db`] on database failure.
    pub async fn pause_requests(
        &self,
        client_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<(), VaultError> {
        if client_id.is_empty() {
            return Err(VaultError::Invalid(
                "a request budget needs a client id".into(),
            ));
        }
        let later = self.greatest();
        let sql = format!(
            "INSERT INTO request_budgets (client_id, tat_ms, paused_until_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $2) \
             ON CONFLICT (client_id) DO UPDATE SET \
               paused_until_ms = {later}(request_budgets.paused_until_ms, $3), \
               updated_at_ms = $2"
        );
        sqlx::query(&sql)
            .bind(client_id)
            .bind(now_ms)
            .bind(until_ms)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "pausing requests for client id {client_id}"
            )))?;
        Ok(())
    }

    /// Until when `client_id` is paused (epoch ms; `None` for a client id never seen).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn requests_paused_until(&self, client_id: &str) -> Result<Option<i64>, VaultError> {
        let row = sqlx::query("SELECT paused_until_ms FROM request_budgets WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "reading the request pause of client id {client_id}"
            )))?;
        row.as_ref().map(|r| get(r, "paused_until_ms")).transpose()
    }

    /// The SQL function taking the largest of its arguments.
    fn greatest(&self) -> &'static str {
        match self.backend {
            // SQLite's multi-argument max() is a scalar function.
            Backend::Sqlite => "MAX",
            Backend::Postgres => "GREATEST",
        }
    }
}
