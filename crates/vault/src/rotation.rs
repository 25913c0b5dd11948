//! Master-key rotation: re-sealing every stored secret with the keyring's current key.
//!
//! The operator flow: [`crate::add_key_version`] adds a new current key to the key file (the
//! old ones stay), [`Vault::rotate_keys`] re-seals every value that names an older version in
//! one transaction, [`Vault::key_versions_in_use`] confirms nothing uses the old versions any
//! more, and [`crate::retire_key_versions`] drops them from the file. Until the last step both
//! keys are in the file, so a rotation that fails or is interrupted (rolled back by the
//! database) loses nothing, and running it again finishes the job. Processes running during
//! the rotation cannot seal with the old key once it has committed (see `sealing.rs`), so the
//! last step cannot strand a record.

use std::collections::BTreeMap;

use sqlx::Any;
use sqlx::Transaction;

use crate::connect::{pending_auth_aad, pending_auth_what};
use crate::crypto::{org_aad, sealed_key_version};
use crate::db::Backend;
use crate::orgs::{SEALED_ORG_COLUMNS, get};
use crate::{Keyring, RotationReport, Vault, VaultError};

impl Vault {
    /// Re-seals every stored secret (all sealed org columns and the PKCE verifiers of pending
    /// OAuth authorizations) that is not sealed with this
    /// vault's current key version, in one database transaction, and reports what it did.
    ///
    /// Every value is opened with its own key version (so the keyring must still hold every
    /// version in use — load it from the key file after [`crate::add_key_version`]) and sealed
    /// again with the current one, bound to the same record. Either every value is re-sealed or
    /// none is: any failure, or an interruption such as a crash, rolls the transaction back and
    /// leaves every record as it was. Running it again after the cause is fixed completes the
    /// rotation; running it when everything is current changes nothing.
    ///
    /// The rows are locked for the duration (SQLite: the write lock; PostgreSQL: the
    /// `key_state` row and the sealed rows), so a concurrent token refresh waits rather than
    /// being overwritten. Once it commits, no process can seal with an older key any more: a
    /// process that loaded its keys before the new one was added re-reads its key file when it
    /// next seals or meets a re-sealed value (see `sealing.rs`), so running `serve` or `sync`
    /// processes keep working and need no restart.
    ///
    /// # Errors
    /// [`VaultError::RotationFailed`] (wrapping the cause: [`VaultError::Decrypt`],
    /// [`VaultError::UnknownKeyVersion`] or [`VaultError::Corrupt`] naming the record that does
    /// not open, [`VaultError::Db`], or [`VaultError::Conflict`] if a value changed under the
    /// rotation) — nothing was changed then; [`VaultError::Db`] if the transaction cannot be
    /// started or committed (a failed commit also changes nothing).
    pub async fn rotate_keys(&self) -> Result<RotationReport, VaultError> {
        // Raises the database's newest key version to ours in this transaction (re-reading the
        // key file if another process is ahead) and holds it: writers of sealed values wait for
        // the commit and then seal with the new key, never the old one (see sealing.rs).
        let (mut tx, ring) = self
            .begin_sealing("the master key rotation")
            .await
            .map_err(|cause| VaultError::RotationFailed {
                source: Box::new(cause),
            })?;
        let to_version = ring.current_version();
        match self.rotate_in(&mut tx, &ring, to_version).await {
            Ok(report) => {
                tx.commit()
                    .await
                    .map_err(VaultError::db("committing the master key rotation"))?;
                tracing::info!(
                    re_encrypted = report.re_encrypted,
                    already_current = report.already_current,
                    to_version,
                    "master key rotation committed"
                );
                Ok(report)
            }
            Err(cause) => {
                if let Err(e) = tx.rollback().await {
                    // The database discards an uncommitted transaction on its own when the
                    // connection goes; nothing was committed either way.
                    tracing::warn!(error = %e, "rolling back the failed key rotation");
                }
                Err(VaultError::RotationFailed {
                    source: Box::new(cause),
                })
            }
        }
    }

    /// Every query runs through `tx`: the SQLite pool has one connection, which `tx` holds.
    async fn rotate_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        ring: &Keyring,
        to_version: u32,
    ) -> Result<RotationReport, VaultError> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let columns = SEALED_ORG_COLUMNS.map(|(col, _)| col).join(", ");
        let sql = format!("SELECT id, name, org_id, {columns} FROM orgs ORDER BY id{lock}");
        let rows = sqlx::query(&sql)
            .fetch_all(&mut **tx)
            .await
            .map_err(VaultError::db(
                "reading sealed org secrets for key rotation",
            ))?;
        let mut report = RotationReport {
            re_encrypted: 0,
            already_current: 0,
            to_version,
        };
        for row in &rows {
            let id: i64 = get(row, "id")?;
            let name: String = get(row, "name")?;
            // The AAD uses the org id stored in the same row, as `org_secrets` does.
            let org_id: String = get(row, "org_id")?;
            for (col, field) in SEALED_ORG_COLUMNS {
                let Some(sealed) = get::<Option<String>>(row, col)? else {
                    continue;
                };
                let what = format!("org {name} {field}");
                if sealed_key_version(&what, &sealed)? == to_version {
                    report.already_current += 1;
                    continue;
                }
                let aad = org_aad(&org_id, field);
                let plaintext = ring.open(&what, &aad, &sealed)?;
                let resealed = ring.seal(&what, &aad, &plaintext)?;
                drop(plaintext);
                // Compare-and-set on the old value: belt and braces on top of the locks.
                let done = sqlx::query(&format!(
                    "UPDATE orgs SET {col} = $1 WHERE id = $2 AND {col} = $3"
                ))
                .bind(resealed)
                .bind(id)
                .bind(&sealed)
                .execute(&mut **tx)
                .await
                .map_err(VaultError::db(format!("re-sealing {what}")))?;
                if done.rows_affected() != 1 {
                    return Err(VaultError::Conflict(format!(
                        "{what} changed or disappeared during the key rotation — run the rotation again"
                    )));
                }
                report.re_encrypted += 1;
                self.rotation_test_hook(&report)?;
            }
        }

        // PKCE verifiers of OAuth authorizations in flight: short-lived, but a key retired
        // under one would break that connection, so they rotate with everything else.
        let sql = format!(
            "SELECT id, state_hash, code_verifier_enc FROM pending_auths ORDER BY id{lock}"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&mut **tx)
            .await
            .map_err(VaultError::db(
                "reading sealed PKCE verifiers for key rotation",
            ))?;
        for row in &rows {
            let id: i64 = get(row, "id")?;
            let state_hash: String = get(row, "state_hash")?;
            let sealed: String = get(row, "code_verifier_enc")?;
            let what = pending_auth_what(id);
            if sealed_key_version(&what, &sealed)? == to_version {
                report.already_current += 1;
                continue;
            }
            let aad = pending_auth_aad(&state_hash);
            let plaintext = ring.open(&what, &aad, &sealed)?;
            let resealed = ring.seal(&what, &aad, &plaintext)?;
            drop(plaintext);
            // Compare-and-set on the old value, as for orgs (the rows are locked).
            let done = sqlx::query(
                "UPDATE pending_auths SET code_verifier_enc = $1 \
                 WHERE id = $2 AND code_verifier_enc = $3",
            )
            .bind(resealed)
            .bind(id)
            .bind(&sealed)
            .execute(&mut **tx)
            .await
            .map_err(VaultError::db(format!("re-sealing {what}")))?;
            if done.rows_affected() != 1 {
                return Err(VaultError::Conflict(format!(
                    "{what} changed or disappeared during the key rotation — run the rotation again"
                )));
            }
            report.re_encrypted += 1;
            self.rotation_test_hook(&report)?;
        }
        Ok(report)
    }

    /// See `testing::fail_rotation_after`.
    #[allow(clippy::unused_self, clippy::unnecessary_wraps)]
    fn rotation_test_hook(&self, report: &RotationReport) -> Result<(), VaultError> {
        #[cfg(feature = "testing")]
        if report.re_encrypted
            >= self
                .rotation_fail_after
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(VaultError::Invalid(format!(
                "key rotation interrupted by the test hook after {} re-sealed values",
                report.re_encrypted
            )));
        }
        #[cfg(not(feature = "testing"))]
        let _ = report;
        Ok(())
    }

    /// How many stored sealed values name each master key version (version → count), across
    /// every sealed column. Reads only the version prefixes; decrypts nothing, so it works with
    /// any keyring. Pending OAuth authorizations count too. An old version is safe to retire
    /// once it no longer appears here.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] (naming the org and
    /// field) for a value not in the sealed format.
    pub async fn key_versions_in_use(&self) -> Result<BTreeMap<u32, usize>, VaultError> {
        let columns = SEALED_ORG_COLUMNS.map(|(col, _)| col).join(", ");
        let rows = sqlx::query(&format!("SELECT name, {columns} FROM orgs"))
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("counting master key versions in use"))?;
        let mut in_use = BTreeMap::new();
        for row in &rows {
            let name: String = get(row, "name")?;
            for (col, field) in SEALED_ORG_COLUMNS {
                if let Some(sealed) = get::<Option<String>>(row, col)? {
                    let version = sealed_key_version(&format!("org {name} {field}"), &sealed)?;
                    *in_use.entry(version).or_insert(0) += 1;
                }
            }
        }
        let rows = sqlx::query("SELECT id, code_verifier_enc FROM pending_auths")
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("counting master key versions in use"))?;
        for row in &rows {
            let sealed: String = get(row, "code_verifier_enc")?;
            let version = sealed_key_version(&pending_auth_what(get(row, "id")?), &sealed)?;
            *in_use.entry(version).or_insert(0) += 1;
        }
        Ok(in_use)
    }
}
