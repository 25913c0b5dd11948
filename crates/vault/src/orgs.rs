//! Orgs and their sealed secrets.
//!
//! Secrets are sealed before they reach SQL and opened only in [`Vault::org_secrets`]; the
//! [`Org`] type itself never carries them, so it can be logged, listed and serialized freely.

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::crypto::org_aad;
use crate::db::now_ms;
use crate::{Keyring, NewOrg, Org, OrgSecrets, OrgStatus, TokenUpdate, Vault, VaultError};

const ORG_COLUMNS: &str = "id, name, org_id, region, client_id, client_auth, sources_json, status, \
    status_reason, access_expires_at_ms, refresh_expires_at_ms, last_refresh_at_ms, scopes, created_at_ms";

const CLIENT_SECRET: &str = "client_secret";
const ACCESS_TOKEN: &str = "access_token";
const REFRESH_TOKEN: &str = "refresh_token";

/// Every sealed column of `orgs`, with the field name its AAD binds. Key rotation re-seals and
/// counts exactly these: a new sealed column must be added here.
pub(crate) const SEALED_ORG_COLUMNS: [(&str, &str); 3] = [
    ("client_secret_enc", CLIENT_SECRET),
    ("access_token_enc", ACCESS_TOKEN),
    ("refresh_token_enc", REFRESH_TOKEN),
];

const STATUS_ACTIVE: &str = "active";
const STATUS_NEEDS_REAUTH: &str = "needs_reauth";

impl Vault {
    /// Registers an org, sealing its client secret and any initial tokens.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty name or org id or an unknown `client_auth`,
    /// [`VaultError::Conflict`] if the name or the Webex org id is already registered,
    /// [`VaultError::Db`] on database failure.
    pub async fn add_org(&self, new: NewOrg) -> Result<Org, VaultError> {
        let name = new.name.trim();
        let org_id = new.org_id.trim();
        if name.is_empty() {
            return Err(VaultError::Invalid("org name must not be empty".into()));
        }
        if org_id.is_empty() {
            return Err(VaultError::Invalid(format!(
                "org {name}: Webex org id must not be empty"
            )));
        }
        if !matches!(new.client_auth.as_str(), "form" | "basic") {
            return Err(VaultError::Invalid(format!(
                "org {name}: client_auth must be \"form\" or \"basic\", not {:?}",
                new.client_auth
            )));
        }
        if let Some(existing) = self.conflicting_org(name, org_id).await? {
            return Err(existing);
        }
        let sources_json = serde_json::to_string(&new.sources).map_err(|e| {
            VaultError::Invalid(format!("org {name}: sources cannot be encoded: {e}"))
        })?;
        let (mut tx, ring) = self.begin_sealing(&format!("adding org {name}")).await?;
        let client_secret_enc = seal_org(&ring, name, org_id, CLIENT_SECRET, &new.client_secret)?;
        let access_enc = seal_opt(&ring, name, org_id, ACCESS_TOKEN, &new.tokens.access_token)?;
        let refresh_enc = seal_opt(
            &ring,
            name,
            org_id,
            REFRESH_TOKEN,
            &new.tokens.refresh_token,
        )?;
        let now = now_ms();
        let sql = format!(
            "INSERT INTO orgs (name, org_id, region, client_id, client_auth, client_secret_enc, \
             access_token_enc, refresh_token_enc, sources_json, status, status_reason, \
             access_expires_at_ms, refresh_expires_at_ms, last_refresh_at_ms, scopes, \
             created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $12, $13, $14, $15, $15) \
             RETURNING {ORG_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(org_id)
            .bind(new.region.trim())
            .bind(new.client_id.trim())
            .bind(&new.client_auth)
            .bind(client_secret_enc)
            .bind(access_enc)
            .bind(refresh_enc)
            .bind(sources_json)
            .bind(STATUS_ACTIVE)
            .bind(new.tokens.access_expires_at_ms)
            .bind(new.tokens.refresh_expires_at_ms)
            .bind(new.tokens.refreshed_at_ms)
            .bind(new.tokens.scopes.as_deref())
            .bind(now)
            .fetch_one(&mut *tx)
            .await;
        match row {
            Ok(row) => {
                let org = org_from_row(&row)?;
                tx.commit()
                    .await
                    .map_err(VaultError::db(format!("adding org {name}")))?;
                Ok(org)
            }
            Err(e) if VaultError::is_unique_violation(&e) => {
                // Release the connection first (SQLite's pool has only this one).
                let _ = tx.rollback().await;
                // Lost a race with another writer: say which rule it hit.
                Err(self
                    .conflicting_org(name, org_id)
                    .await?
                    .unwrap_or_else(|| {
                        VaultError::Conflict(format!(
                            "org {name} ({org_id}) conflicts with an org registered at the same moment"
                        ))
                    }))
            }
            Err(e) => Err(VaultError::Db {
                op: format!("adding org {name}"),
                source: e,
            }),
        }
    }

    async fn conflicting_org(
        &self,
        name: &str,
        org_id: &str,
    ) -> Result<Option<VaultError>, VaultError> {
        let rows = sqlx::query("SELECT name, org_id FROM orgs WHERE name = $1 OR org_id = $2")
            .bind(name)
            .bind(org_id)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "checking whether org {name} exists"
            )))?;
        for row in rows {
            let (n, o): (String, String) = (get(&row, "name")?, get(&row, "org_id")?);
            if n == name {
                return Ok(Some(VaultError::Conflict(format!(
                    "an org named {name} already exists — choose another name, or remove the old one first"
                ))));
            }
            if o == org_id {
                return Ok(Some(VaultError::Conflict(format!(
                    "Webex org {org_id} is already registered as {n} — use that org, or remove it first"
                ))));
            }
        }
        Ok(None)
    }

    /// All orgs, by name.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn orgs(&self) -> Result<Vec<Org>, VaultError> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM orgs ORDER BY name");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("listing orgs"))?;
        rows.iter().map(org_from_row).collect()
    }

    /// The org with this name, if any.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn org_by_name(&self, name: &str) -> Result<Option<Org>, VaultError> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM orgs WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!("looking up org {name}")))?;
        row.as_ref().map(org_from_row).transpose()
    }

    /// The org with this database id, if any.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn org_by_id(&self, id: i64) -> Result<Option<Org>, VaultError> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!("looking up org #{id}")))?;
        row.as_ref().map(org_from_row).transpose()
    }

    /// Decrypts the org's client secret and tokens.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the org is gone, [`VaultError::Decrypt`] /
    /// [`VaultError::UnknownKeyVersion`] if the master key does not open them,
    /// [`VaultError::Db`] on database failure.
    pub async fn org_secrets(&self, org: &Org) -> Result<OrgSecrets, VaultError> {
        let row = sqlx::query(
            "SELECT org_id, client_secret_enc, access_token_enc, refresh_token_enc \
             FROM orgs WHERE id = $1",
        )
        .bind(org.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "reading secrets of org {}",
            org.name
        )))?
        .ok_or_else(|| VaultError::NotFound(format!("org {}", org.name)))?;
        // The AAD uses the org id stored in the same row, so a value moved between rows fails.
        let org_id: String = get(&row, "org_id")?;
        let open = |field: &str, sealed: &str| {
            self.open_sealed(
                &format!("org {} {field}", org.name),
                &org_aad(&org_id, field),
                sealed,
            )
        };
        let client_secret_enc: String = get(&row, "client_secret_enc")?;
        let access: Option<String> = get(&row, "access_token_enc")?;
        let refresh: Option<String> = get(&row, "refresh_token_enc")?;
        Ok(OrgSecrets {
            client_secret: open(CLIENT_SECRET, &client_secret_enc)?,
            access_token: access.map(|s| open(ACCESS_TOKEN, &s)).transpose()?,
            refresh_token: refresh.map(|s| open(REFRESH_TOKEN, &s)).transpose()?,
        })
    }

    /// Replaces the org's client secret (the integration's secret was rotated), sealed like the
    /// original.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the org is gone, [`VaultError::Db`] on database failure.
    pub async fn set_client_secret(
        &self,
        org: &Org,
        secret: &SecretString,
    ) -> Result<(), VaultError> {
        let op = format!("storing the client secret of org {}", org.name);
        let (mut tx, ring) = self.begin_sealing(&op).await?;
        let sealed = seal_org(&ring, &org.name, &org.org_id, CLIENT_SECRET, secret)?;
        let done = sqlx::query("UPDATE orgs SET client_secret_enc = $2, updated_at_ms = $3 WHERE id = $1 AND org_id = $4")
            .bind(org.id)
            .bind(sealed)
            .bind(crate::db::now_ms())
            .bind(&org.org_id)
            .execute(&mut *tx)
            .await
            .map_err(VaultError::db(op.clone()))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(format!("org {}", org.name)));
        }
        tx.commit().await.map_err(VaultError::db(op))
    }

    /// Stores the result of a token refresh in one atomic write and returns the updated org.
    /// Each `None` in `update` keeps the stored value (Webex may not rotate the refresh
    /// token). The org's status is left alone; see [`Vault::set_org_status`].
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the org is gone, [`VaultError::Db`] on database failure.
    pub async fn save_tokens(&self, org: &Org, update: &TokenUpdate) -> Result<Org, VaultError> {
        let op = format!("saving tokens for org {}", org.name);
        // The transaction takes the write lock up front (`BEGIN IMMEDIATE` on SQLite: a
        // deferred read-then-write transaction could hit SQLite's lock-upgrade deadlock).
        let (mut tx, ring) = self.begin_sealing(&op).await?;
        let access = seal_opt(
            &ring,
            &org.name,
            &org.org_id,
            ACCESS_TOKEN,
            &update.access_token,
        )?;
        let refresh = seal_opt(
            &ring,
            &org.name,
            &org.org_id,
            REFRESH_TOKEN,
            &update.refresh_token,
        )?;
        // One UPDATE of the row, atomic on both backends.
        // `org_id = $9` guarantees the AAD used above matches the row written.
        let sql = format!(
            "UPDATE orgs SET \
               access_token_enc = COALESCE($2, access_token_enc), \
               access_expires_at_ms = CASE WHEN $2 IS NULL THEN COALESCE($3, access_expires_at_ms) ELSE $3 END, \
               refresh_token_enc = COALESCE($4, refresh_token_enc), \
               refresh_expires_at_ms = COALESCE($5, refresh_expires_at_ms), \
               scopes = COALESCE($6, scopes), \
               last_refresh_at_ms = COALESCE($7, last_refresh_at_ms), \
               updated_at_ms = $8 \
             WHERE id = $1 AND org_id = $9 \
             RETURNING {ORG_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(org.id)
            .bind(access)
            .bind(update.access_expires_at_ms)
            .bind(refresh)
            .bind(update.refresh_expires_at_ms)
            .bind(update.scopes.as_deref())
            .bind(update.refreshed_at_ms)
            .bind(now_ms())
            .bind(&org.org_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(VaultError::db(op.clone()))?
            .ok_or_else(|| VaultError::NotFound(format!("org {} ({})", org.name, org.org_id)))?;
        let updated = org_from_row(&row)?;
        tx.commit().await.map_err(VaultError::db(op))?;
        Ok(updated)
    }

    /// Removes an org: its encrypted secrets and its ledger (tasks, recordings, windows) are
    /// deleted; its events stay, detached, as the audit trail. Archived objects are not touched.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the org is already gone, [`VaultError::Db`] on database failure.
    pub async fn remove_org(&self, org: &Org) -> Result<(), VaultError> {
        let done = sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(org.id)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!("removing org {}", org.name)))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(format!("org {}", org.name)));
        }
        Ok(())
    }

    /// Marks the org active, or as needing an admin to reconnect it (with why).
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if the org is gone, [`VaultError::Db`] on database failure.
    pub async fn set_org_status(&self, org: &Org, status: OrgStatus) -> Result<(), VaultError> {
        let (s, reason) = match &status {
            OrgStatus::Active => (STATUS_ACTIVE, None),
            OrgStatus::NeedsReauth { reason } => (STATUS_NEEDS_REAUTH, Some(reason.as_str())),
        };
        let done = sqlx::query(
            "UPDATE orgs SET status = $2, status_reason = $3, updated_at_ms = $4 WHERE id = $1",
        )
        .bind(org.id)
        .bind(s)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!(
            "setting status of org {}",
            org.name
        )))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(format!("org {}", org.name)));
        }
        Ok(())
    }

    /// Replaces the sources an org is harvested for (names are checked by the caller). Items
    /// already in the ledger stay, whatever their source.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] for an unknown org, [`VaultError::Db`] on database failure.
    pub async fn set_org_sources(&self, org: &Org, sources: &[String]) -> Result<(), VaultError> {
        let json = serde_json::to_string(sources).map_err(|e| {
            VaultError::Invalid(format!("org {}: sources cannot be encoded: {e}", org.name))
        })?;
        let done =
            sqlx::query("UPDATE orgs SET sources_json = $2, updated_at_ms = $3 WHERE id = $1")
                .bind(org.id)
                .bind(json)
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map_err(VaultError::db(format!(
                    "setting sources of org {}",
                    org.name
                )))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::NotFound(format!("org {}", org.name)));
        }
        Ok(())
    }
}

/// Seals one org secret with `ring` (from [`Vault::begin_sealing`]), bound to org and field.
fn seal_org(
    ring: &Keyring,
    name: &str,
    org_id: &str,
    field: &str,
    secret: &SecretString,
) -> Result<String, VaultError> {
    ring.seal(
        &format!("org {name} {field}"),
        &org_aad(org_id, field),
        secret.expose_secret().as_bytes(),
    )
}

fn seal_opt(
    ring: &Keyring,
    name: &str,
    org_id: &str,
    field: &str,
    secret: &Option<SecretString>,
) -> Result<Option<String>, VaultError> {
    secret
        .as_ref()
        .map(|s| seal_org(ring, name, org_id, field, s))
        .transpose()
}

/// Reads one column, naming it in the error.
pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, VaultError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(|e| VaultError::Corrupt {
        what: format!("column {col}"),
        detail: e.to_string(),
    })
}

fn org_from_row(row: &AnyRow) -> Result<Org, VaultError> {
    let name: String = get(row, "name")?;
    let sources_json: String = get(row, "sources_json")?;
    let sources = serde_json::from_str(&sources_json).map_err(|e| VaultError::Corrupt {
        what: format!("org {name} sources"),
        detail: e.to_string(),
    })?;
    let status: String = get(row, "status")?;
    let reason: Option<String> = get(row, "status_reason")?;
    let status = match status.as_str() {
        STATUS_ACTIVE => OrgStatus::Active,
        STATUS_NEEDS_REAUTH => OrgStatus::NeedsReauth {
            reason: reason.unwrap_or_default(),
        },
        other => {
            return Err(VaultError::Corrupt {
                what: format!("org {name} status"),
                detail: format!("unknown status {other:?}"),
            });
        }
    };
    Ok(Org {
        id: get(row, "id")?,
        org_id: get(row, "org_id")?,
        region: get(row, "region")?,
        client_id: get(row, "client_id")?,
        client_auth: get(row, "client_auth")?,
        sources,
        status,
        access_expires_at_ms: get(row, "access_expires_at_ms")?,
        refresh_expires_at_ms: get(row, "refresh_expires_at_ms")?,
        last_refresh_at_ms: get(row, "last_refresh_at_ms")?,
        scopes: get(row, "scopes")?,
        created_at_ms: get(row, "created_at_ms")?,
        name,
    })
}
