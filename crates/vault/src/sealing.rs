//! Sealing and opening secrets safely while another process rotates the master key.
//!
//! The hazard: a process that loaded the key file before `keys rotate` keeps the retired key.
//! If it sealed a token with it after the rotation re-sealed everything, the old key would be
//! dropped from the file and that token could never be opened again (and every later rotation
//! would stop at it). Two rules make that impossible, independent of timing:
//!
//! - **Never seal with a version older than the newest in the database.** The one-row table
//!   `key_state` records the newest key version that has sealed anything. Every write of a
//!   sealed value runs in a transaction that first raises `key_state` to the writer's current
//!   version and reads it back (one `UPDATE … RETURNING`, which takes the row's write lock —
//!   on SQLite the database write lock, taken by `BEGIN IMMEDIATE`). If the database is ahead,
//!   the writer rolls back, re-reads its key file and seals again with the newer key, or
//!   refuses ([`VaultError::KeyBehind`]) if its keys cannot be re-read or are still behind.
//!   Key rotation raises `key_state` in its own transaction before re-sealing, so a writer
//!   either committed before the rotation read the rows (and its value is re-sealed) or runs
//!   after it and sees the new version. Once the rotation has committed, no process can add a
//!   value sealed with an older key, so `keys rotate` may drop the old key from the file as
//!   soon as [`Vault::key_versions_in_use`] shows none left.
//! - **Re-read the key file on an unknown key version.** A process that meets a value sealed
//!   with a version it does not hold re-reads its key file once and tries again, so a rotation
//!   elsewhere never locks it out of its own records.

use sqlx::{Any, Transaction};

use crate::db::Backend;
use crate::{Keyring, Vault, VaultError};

/// How often a writer re-reads its keys before giving up (a rotation per attempt).
const SEAL_ATTEMPTS: usize = 3;

impl Vault {
    /// Starts a transaction for writing sealed values and returns it with the keyring to seal
    /// them with: its current version is at least the newest version recorded in the database,
    /// and the transaction holds the `key_state` row (a rotation waits for it) until it ends.
    /// Seal inside, write through the transaction, commit; dropping it rolls back.
    ///
    /// Every query must go through the returned transaction: on SQLite it holds the pool's only
    /// connection.
    ///
    /// # Errors
    /// [`VaultError::KeyBehind`] if the database uses a newer key than this process can load,
    /// [`VaultError::KeyFile`] / [`VaultError::KeyFormat`] / … if the key file cannot be
    /// re-read, [`VaultError::Db`] (naming `op`) on database failure.
    pub(crate) async fn begin_sealing(
        &self,
        op: &str,
    ) -> Result<(Transaction<'static, Any>, Keyring), VaultError> {
        let raise = match self.backend {
            Backend::Sqlite => {
                "UPDATE key_state SET newest_version = MAX(newest_version, $1) WHERE id = 1 \
                 RETURNING newest_version"
            }
            Backend::Postgres => {
                "UPDATE key_state SET newest_version = GREATEST(newest_version, $1) WHERE id = 1 \
                 RETURNING newest_version"
            }
        };
        let mut newest = 0;
        for _ in 0..SEAL_ATTEMPTS {
            let ring = self.keyring();
            let mut tx = match self.backend {
                // Take the write lock up front: a deferred transaction that reads and then
                // writes fails at once with SQLITE_BUSY if another process wrote in between.
                Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => self.pool.begin().await,
            }
            .map_err(VaultError::db(op))?;
            let recorded: i64 = sqlx::query_scalar(raise)
                .bind(i64::from(ring.current_version()))
                .fetch_one(&mut *tx)
                .await
                .map_err(VaultError::db(format!(
                    "{op} (checking the master key version)"
                )))?;
            newest = u32::try_from(recorded).unwrap_or(u32::MAX);
            if newest <= ring.current_version() {
                return Ok((tx, ring));
            }
            // Another process rotated to a newer key: never seal with the older one.
            let _ = tx.rollback().await;
            tracing::info!(
                newest,
                have = ring.current_version(),
                "the state database uses a newer master key; re-reading the key file"
            );
            if !self.reload_keys()? {
                break;
            }
        }
        let ring = self.keyring();
        Err(VaultError::KeyBehind {
            op: op.to_string(),
            newest,
            origin: ring.origin(),
            have: format!("{:?}", ring.versions()),
        })
    }

    /// Opens a sealed secret as [`Keyring::open_string`] does, re-reading the key file once
    /// when the value names a key version this process does not hold yet (another process
    /// rotated the keys).
    ///
    /// # Errors
    /// As [`Keyring::open_string`]; errors re-reading the key file.
    pub(crate) fn open_sealed(
        &self,
        what: &str,
        aad: &str,
        sealed: &str,
    ) -> Result<secrecy::SecretString, VaultError> {
        match self.keyring().open_string(what, aad, sealed) {
            Err(VaultError::UnknownKeyVersion { .. }) if self.reload_keys()? => {
                self.keyring().open_string(what, aad, sealed)
            }
            other => other,
        }
    }

    /// Replaces the keyring with its key file as it is now. `Ok(false)` when the keys did not
    /// come from a file (nothing to re-read).
    fn reload_keys(&self) -> Result<bool, VaultError> {
        let Some(fresh) = self.keyring().reload() else {
            return Ok(false);
        };
        let fresh = fresh?;
        tracing::info!(versions = ?fresh.versions(), "re-read the master key file");
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(true)
    }
}
