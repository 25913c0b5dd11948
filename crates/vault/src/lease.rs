//! Per-org leases: which wxvault process is working on an org right now.
//!
//! Two `sync` processes on one database would otherwise both download every recording. A lease
//! row per (org, scope) names its holder (random per run, plus host name and pid for the message
//! another process shows) and an expiry. The holder renews it while its run goes on and deletes
//! it when the run ends; a holder that died stops renewing, so its lease can be taken over once it
//! has expired.
//!
//! Taking a lease is one conditional upsert — insert, or overwrite a row that has expired or is
//! already ours — and the affected-row count says whether we got it. There is no read-then-write
//! window, so of any number of concurrent attempts exactly one wins, on SQLite and PostgreSQL
//! alike. Renewing and releasing are conditional on the holder id, so a process that lost its
//! lease cannot extend or delete the new holder's.
//!
//! Times are epoch milliseconds of the caller's clock; a lease is expired once
//! `now_ms >= expires_at_ms`.

use serde::Serialize;
use sqlx::any::AnyRow;

use crate::orgs::get;
use crate::{Org, Vault, VaultError};

/// Who takes a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Random per run; the identity that renewing and releasing check.
    pub id: String,
    /// Host name, for the message another process shows.
    pub host: String,
    /// Process id, for the same message.
    pub pid: i64,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Database id of the org.
    pub org: i64,
    /// What the lease covers, e.g. `"sync"`.
    pub scope: String,
    /// The holder's random id.
    pub holder: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: i64,
    /// When the current holder took it.
    pub acquired_at_ms: i64,
    /// When the current holder last renewed it.
    pub renewed_at_ms: i64,
    /// When it may be taken over unless renewed first (exclusive).
    pub expires_at_ms: i64,
}

/// What [`Vault::acquire_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAcquire {
    /// The lease is ours until `expires_at_ms`.
    Acquired(Lease),
    /// Another holder has it and it has not expired.
    Busy(Lease),
}

/// What [`Vault::renew_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// Still ours, now until this time.
    Renewed {
        /// The new expiry.
        expires_at_ms: i64,
    },
    /// No longer ours: taken over by the holder shown, or gone (`None`).
    Lost(Option<Lease>),
}

const COLUMNS: &str = "org, scope, holder, host, pid, acquired_at_ms, renewed_at_ms, expires_at_ms";

/// How often a contested acquire re-reads a lease that vanished between its upsert and its read.
const ACQUIRE_TRIES: usize = 3;

/// The lease `holder` has just taken at `now_ms`.
fn fresh_lease(
    org: &Org,
    scope: &str,
    holder: &LeaseHolder,
    now_ms: i64,
    expires_at_ms: i64,
) -> Lease {
    Lease {
        org: org.id,
        scope: scope.to_string(),
        holder: holder.id.clone(),
        host: holder.host.clone(),
        pid: holder.pid,
        acquired_at_ms: now_ms,
        renewed_at_ms: now_ms,
        expires_at_ms,
    }
}

impl Vault {
    /// Takes the `scope` lease of `org` for `holder` until `now_ms + ttl_ms`, if it is free, has
    /// expired, or is already `holder`'s (which then extends it).
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty scope or holder id or a non-positive `ttl_ms`,
    /// [`VaultError::Db`] on database failure.
    pub async fn acquire_lease(
        &self,
        org: &Org,
        scope: &str,
        holder: &LeaseHolder,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<LeaseAcquire, VaultError> {
        check(scope, &holder.id, ttl_ms)?;
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        for _ in 0..ACQUIRE_TRIES {
            let done = sqlx::query(
                "INSERT INTO leases (org, scope, holder, host, pid, acquired_at_ms, renewed_at_ms, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
                 ON CONFLICT (org, scope) DO UPDATE SET holder = excluded.holder, host = excluded.host, \
                 pid = excluded.pid, acquired_at_ms = excluded.acquired_at_ms, \
                 renewed_at_ms = excluded.renewed_at_ms, expires_at_ms = excluded.expires_at_ms \
                 WHERE leases.expires_at_ms <= $6 OR leases.holder = excluded.holder",
            )
            .bind(org.id)
            .bind(scope)
            .bind(&holder.id)
            .bind(&holder.host)
            .bind(holder.pid)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "taking the {scope} lease of org {}",
                org.name
            )))?;
            if done.rows_affected() == 1 {
                return Ok(LeaseAcquire::Acquired(fresh_lease(
                    org,
                    scope,
                    holder,
                    now_ms,
                    expires_at_ms,
                )));
            }
            // Held by someone else. It may have been released since: then try again.
            if let Some(current) = self.lease(org, scope).await? {
                return Ok(LeaseAcquire::Busy(current));
            }
        }
        Err(VaultError::Conflict(format!(
            "the {scope} lease of org {} changed hands {ACQUIRE_TRIES} times while it was being taken; try again",
            org.name
        )))
    }

    /// Takes the `scope` lease of `org` from `dead_holder_id` for `holder`, whatever its expiry,
    /// if that holder still has it: for a holder known to be dead (a process on this host that
    /// no longer runs). Returns whether it was taken.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty scope or holder id or a non-positive `ttl_ms`,
    /// [`VaultError::Db`] on database failure.
    pub async fn take_over_lease(
        &self,
        org: &Org,
        scope: &str,
        dead_holder_id: &str,
        holder: &LeaseHolder,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, VaultError> {
        check(scope, &holder.id, ttl_ms)?;
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let done = sqlx::query(
            "UPDATE leases SET holder = $4, host = $5, pid = $6, acquired_at_ms = $7, \
               renewed_at_ms = $7, expires_at_ms = $8 \
             WHERE org = $1 AND scope = $2 AND holder = $3",
        )
        .bind(org.id)
        .bind(scope)
        .bind(dead_holder_id)
        .bind(&holder.id)
        .bind(&holder.host)
        .bind(holder.pid)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "taking over the {scope} lease of org {}",
            org.name
        )))?;
        Ok((done.rows_affected() == 1)
            .then(|| fresh_lease(org, scope, holder, now_ms, expires_at_ms)))
    }

    /// Extends `holder_id`'s `scope` lease of `org` to `now_ms + ttl_ms`, if it still holds it
    /// (even past its expiry, as long as nobody took it over).
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty scope or holder id or a non-positive `ttl_ms`,
    /// [`VaultError::Db`] on database failure.
    pub async fn renew_lease(
        &self,
        org: &Org,
        scope: &str,
        holder_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<LeaseRenewal, VaultError> {
        check(scope, holder_id, ttl_ms)?;
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let done = sqlx::query(
            "UPDATE leases SET renewed_at_ms = $4, expires_at_ms = $5 \
             WHERE org = $1 AND scope = $2 AND holder = $3",
        )
        .bind(org.id)
        .bind(scope)
        .bind(holder_id)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "renewing the {scope} lease of org {}",
            org.name
        )))?;
        if done.rows_affected() == 1 {
            return Ok(LeaseRenewal::Renewed { expires_at_ms });
        }
        Ok(LeaseRenewal::Lost(self.lease(org, scope).await?))
    }

    /// Deletes `holder_id`'s `scope` lease of `org`. Returns `false` when it did not hold it
    /// (taken over after it expired, or already released): the current holder's lease stays.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn release_lease(
        &self,
        org: &Org,
        scope: &str,
        holder_id: &str,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query("DELETE FROM leases WHERE org = $1 AND scope = $2 AND holder = $3")
            .bind(org.id)
            .bind(scope)
            .bind(holder_id)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "releasing the {scope} lease of org {}",
                org.name
            )))?;
        Ok(done.rows_affected() == 1)
    }

    /// Every lease as stored, expired or not, by org and scope.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn leases(&self) -> Result<Vec<Lease>, VaultError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM leases ORDER BY org, scope"))
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("reading the leases"))?;
        rows.iter().map(lease_from_row).collect()
    }

    /// The `scope` lease of `org` as stored, expired or not.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn lease(&self, org: &Org, scope: &str) -> Result<Option<Lease>, VaultError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM leases WHERE org = $1 AND scope = $2"
        ))
        .bind(org.id)
        .bind(scope)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading the {scope} lease of org {}",
            org.name
        )))?;
        row.as_ref().map(lease_from_row).transpose()
    }
}

fn check(scope: &str, holder_id: &str, ttl_ms: i64) -> Result<(), VaultError> {
    if scope.is_empty() || holder_id.is_empty() {
        return Err(VaultError::Invalid(
            "a lease needs a scope and a holder id".into(),
        ));
    }
    if ttl_ms <= 0 {
        return Err(VaultError::Invalid(format!(
            "lease time-to-live must be positive, got {ttl_ms} ms"
        )));
    }
    Ok(())
}

fn lease_from_row(row: &AnyRow) -> Result<Lease, VaultError> {
    Ok(Lease {
        org: get(row, "org")?,
        scope: get(row, "scope")?,
        holder: get(row, "holder")?,
        host: get(row, "host")?,
        pid: get(row, "pid")?,
        acquired_at_ms: get(row, "acquired_at_ms")?,
        renewed_at_ms: get(row, "renewed_at_ms")?,
        expires_at_ms: get(row, "expires_at_ms")?,
    })
}
