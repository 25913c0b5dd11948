//! Persistence for the self-service connect web app (`wxvault serve`): invites, pending OAuth
//! authorizations, browser / operator sessions and the operator password.
//!
//! Every bearer secret here (invite token, session id, CSRF token, OAuth `state`, the browser
//! session cookie a state is bound to) is 32 random bytes drawn from the OS and is stored only
//! as its SHA-256 (hex). A fast hash is enough because the inputs are high-entropy: there is
//! nothing to brute-force, and a lookup by hash needs no per-row salt. The PKCE code verifier
//! is the one value that must come back in plaintext, so it is sealed with the [`Keyring`]
//! (AAD bound to the row's state hash) like the org secrets. The operator password, which is
//! low-entropy, is hashed with argon2id instead.
//!
//! Single use is enforced by the database, not by read-then-write code: an invite is consumed
//! by one conditional `UPDATE`, a pending authorization is taken by one `DELETE … RETURNING`.
//! Two concurrent attempts therefore cannot both succeed, on SQLite or PostgreSQL.
//!
//! Times are epoch milliseconds passed in by the caller; a record is expired once
//! `now_ms >= expires_at_ms`. No error message or `Debug` output contains a secret.
//!
//! [`Keyring`]: crate::Keyring

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq as _;

use crate::db::{Backend, now_ms};
use crate::orgs::get;
use crate::{Vault, VaultError};

/// Random bytes in every token, session id, CSRF token.
const TOKEN_BYTES: usize = 32;

/// Session kinds accepted by [`Vault::create_session`].
pub const SESSION_KINDS: [&str; 2] = ["operator", "connect"];

/// Live connect sessions kept per subject (invite): anyone holding an invite link can open it
/// without a cookie over and over, and each open starts a session. Starting one more evicts
/// the oldest, so the rows one link can create are bounded and the newest browser always works.
pub const CONNECT_SESSIONS_PER_INVITE: usize = 20;

/// Pending OAuth authorizations kept per invite: each "Connect with Webex" stores one. Storing
/// one more evicts the oldest (its callback then finds nothing and says to start again).
pub const PENDING_AUTHS_PER_INVITE: usize = 10;

const INVITE_COLUMNS: &str = "id, org_name, sources_json, created_by, client_id, region, \
    created_at_ms, expires_at_ms, used_at_ms, revoked_at_ms";

const PENDING_COLUMNS: &str = "id, state_hash, invite_id, org_name, client_id, region, \
    redirect_uri, code_verifier_enc, scopes_json, created_at_ms";

const CODE_VERIFIER: &str = "code_verifier";

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// An invite to create with [`Vault::create_invite`].
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// The name the org will be registered under.
    pub org_name: String,
    /// Sources to harvest once connected, e.g. `["wxcc"]`.
    pub sources: Vec<String>,
    /// Who created it (operator login), for the dashboard.
    pub created_by: String,
    /// How long the link stays usable, in milliseconds (> 0).
    pub ttl_ms: i64,
    /// The integration to connect through; `None` = the operator's default.
    pub client_id: Option<String>,
    /// The WxCC region (`us1`, `eu1`, …); `None` = the customer admin picks it.
    pub region: Option<String>,
}

/// A freshly created invite and its token. The token is shown once: only its SHA-256 is stored,
/// so it cannot be recovered later.
#[derive(Debug)]
pub struct IssuedInvite {
    /// The stored invite.
    pub invite: Invite,
    /// 32 random bytes, base64url without padding; goes into `/connect?invite=…`.
    pub token: SecretString,
}

/// Where an invite stands, computed against the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteStatus {
    /// Usable.
    Open,
    /// Consumed by a completed connection.
    Used,
    /// Never used, and its time ran out.
    Expired,
    /// Withdrawn by an operator before it was used.
    Revoked,
}

impl InviteStatus {
    /// `"open"`, `"used"`, `"expired"` or `"revoked"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteStatus::Open => "open",
            InviteStatus::Used => "used",
            InviteStatus::Expired => "expired",
            InviteStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for InviteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored invite (no secret: safe to print and serialize).
#[derive(Debug, Clone, Serialize)]
pub struct Invite {
    /// Database id.
    pub id: i64,
    /// The name the org will be registered under.
    pub org_name: String,
    /// Sources to harvest.
    pub sources: Vec<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was created (epoch ms).
    pub created_at_ms: i64,
    /// When it stops being usable (epoch ms, exclusive).
    pub expires_at_ms: i64,
    /// When it was consumed, if it was.
    pub used_at_ms: Option<i64>,
    /// The integration to connect through; `None` = the operator's default.
    pub client_id: Option<String>,
    /// The WxCC region; `None` = the customer admin picks it.
    pub region: Option<String>,
    /// Open / used / expired / revoked, as of the time the invite was read.
    pub status: InviteStatus,
}

/// An OAuth authorization about to start, for [`Vault::put_pending_auth`].
#[derive(Debug)]
pub struct NewPendingAuth {
    /// The OAuth `state` sent to Webex; stored as SHA-256 only.
    pub state: SecretString,
    /// The browser session cookie value the state is bound to; stored as SHA-256 only.
    pub browser_session: SecretString,
    /// The invite this authorization came from, if any.
    pub invite_id: Option<i64>,
    /// The name the org will be registered under.
    pub org_name: String,
    /// The OAuth client id the authorization uses.
    pub client_id: String,
    /// The WxCC region the org will be registered in, when known.
    pub region: Option<String>,
    /// The redirect URI sent in the authorization request (needed again for the exchange).
    pub redirect_uri: String,
    /// The PKCE code verifier; stored sealed.
    pub code_verifier: SecretString,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// How long the authorization may take, in milliseconds (> 0).
    pub ttl_ms: i64,
}

/// A pending OAuth authorization taken back by its `state` ([`Vault::take_pending_auth`]).
/// `Debug` redacts the code verifier.
#[derive(Debug)]
pub struct PendingAuth {
    /// Database id (the row is gone once taken).
    pub id: i64,
    /// The invite this authorization came from, if any.
    pub invite_id: Option<i64>,
    /// The name the org will be registered under.
    pub org_name: String,
    /// The OAuth client id the authorization used.
    pub client_id: String,
    /// The WxCC region the org will be registered in, when known.
    pub region: Option<String>,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// The PKCE code verifier, decrypted.
    pub code_verifier: SecretString,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// When the authorization started (epoch ms).
    pub created_at_ms: i64,
}

/// A freshly created session. The id and CSRF token are shown once; only their SHA-256 is
/// stored.
#[derive(Debug)]
pub struct IssuedSession {
    /// The cookie value: 32 random bytes, base64url without padding.
    pub id: SecretString,
    /// The per-session CSRF token (32 random bytes, base64url), for forms of this session.
    pub csrf: SecretString,
    /// When the session expires (epoch ms, exclusive).
    pub expires_at_ms: i64,
}

/// A live session, found by [`Vault::session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `"operator"` (dashboard) or `"connect"` (a browser in the connect flow).
    pub kind: String,
    /// Who: the operator login, or whatever the connect flow binds (e.g. the invite id).
    pub subject: String,
    /// Hex SHA-256 of the session's CSRF token; compare with [`Vault::csrf_matches`].
    pub csrf_hash: String,
    /// When the session expires (epoch ms, exclusive).
    pub expires_at_ms: i64,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Hex SHA-256 of a high-entropy secret, the form in which it is stored and looked up.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 32 random bytes from the OS, base64url without padding.
fn random_token() -> SecretString {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    SecretString::from(B64URL.encode(bytes.as_ref()))
}

/// The associated data binding a sealed PKCE verifier to its pending-auth row.
pub(crate) fn pending_auth_aad(state_hash: &str) -> String {
    format!("wxvault:pending_auth:{state_hash}:{CODE_VERIFIER}")
}

/// How a sealed verifier is named in errors (never its contents).
pub(crate) fn pending_auth_what(id: i64) -> String {
    format!("pending OAuth authorization #{id} {CODE_VERIFIER}")
}

/// `now_ms + ttl_ms`, refusing non-positive or overflowing lifetimes.
fn expiry(what: &str, now_ms: i64, ttl_ms: i64) -> Result<i64, VaultError> {
    if ttl_ms <= 0 {
        return Err(VaultError::Invalid(format!(
            "{what} lifetime must be positive, got {ttl_ms} ms"
        )));
    }
    now_ms
        .checked_add(ttl_ms)
        .ok_or_else(|| VaultError::Invalid(format!("{what} lifetime of {ttl_ms} ms is too large")))
}

/// How many existing rows to keep so that, with the one about to be inserted, at most `max`
/// remain. Evicting before the insert (never after) keeps the new row whatever the clock says.
fn keep_before_insert(max: usize) -> i64 {
    i64::try_from(max.saturating_sub(1)).unwrap_or(i64::MAX)
}

fn non_empty(what: &str, value: &str) -> Result<(), VaultError> {
    if value.is_empty() {
        return Err(VaultError::Invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

fn to_json(what: &str, list: &[String]) -> Result<String, VaultError> {
    serde_json::to_string(list)
        .map_err(|e| VaultError::Invalid(format!("{what} cannot be encoded: {e}")))
}

fn from_json(what: String, json: &str) -> Result<Vec<String>, VaultError> {
    serde_json::from_str(json).map_err(|e| VaultError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn invite_status(
    used_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    expires_at_ms: i64,
    now_ms: i64,
) -> InviteStatus {
    if used_at_ms.is_some() {
        InviteStatus::Used
    } else if revoked_at_ms.is_some() {
        InviteStatus::Revoked
    } else if now_ms >= expires_at_ms {
        InviteStatus::Expired
    } else {
        InviteStatus::Open
    }
}

fn invite_from_row(row: &AnyRow, now_ms: i64) -> Result<Invite, VaultError> {
    let id: i64 = get(row, "id")?;
    let sources_json: String = get(row, "sources_json")?;
    let expires_at_ms: i64 = get(row, "expires_at_ms")?;
    let used_at_ms: Option<i64> = get(row, "used_at_ms")?;
    let revoked_at_ms: Option<i64> = get(row, "revoked_at_ms")?;
    Ok(Invite {
        id,
        org_name: get(row, "org_name")?,
        sources: from_json(format!("invite #{id} sources"), &sources_json)?,
        created_by: get(row, "created_by")?,
        created_at_ms: get(row, "created_at_ms")?,
        expires_at_ms,
        used_at_ms,
        client_id: get(row, "client_id")?,
        region: get(row, "region")?,
        status: invite_status(used_at_ms, revoked_at_ms, expires_at_ms, now_ms),
    })
}

impl Vault {
    /// A transaction that will write. On SQLite it takes the write lock up front: a deferred
    /// transaction that reads and then writes fails with SQLITE_BUSY if another process wrote
    /// in between.
    pub(crate) async fn begin_write(
        &self,
        what: &str,
    ) -> Result<sqlx::Transaction<'_, sqlx::Any>, VaultError> {
        let begun = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        begun.map_err(VaultError::db(what.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------------------------

impl Vault {
    /// Creates a single-use invite valid for `new.ttl_ms` from `now_ms` and returns it with its
    /// token. The token is 32 random bytes (base64url); only its SHA-256 is stored, so this is
    /// the only time it can be shown.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty org name, no sources or a non-positive (or
    /// overflowing) lifetime; [`VaultError::Db`] on database failure.
    pub async fn create_invite(
        &self,
        new: NewInvite,
        now_ms: i64,
    ) -> Result<IssuedInvite, VaultError> {
        let org_name = new.org_name.trim();
        non_empty("invite org name", org_name)?;
        if new.sources.is_empty() {
            return Err(VaultError::Invalid(format!(
                "invite for org {org_name}: at least one source is required"
            )));
        }
        let expires_at_ms = expiry(&format!("invite for org {org_name}"), now_ms, new.ttl_ms)?;
        let sources_json = to_json(&format!("invite for org {org_name}: sources"), &new.sources)?;
        let client_id = new
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let region = new
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let token = random_token();
        let sql = format!(
            "INSERT INTO invites (token_hash, org_name, sources_json, created_by, client_id, \
             region, created_at_ms, expires_at_ms, used_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) RETURNING {INVITE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(sha256_hex(token.expose_secret()))
            .bind(org_name)
            .bind(sources_json)
            .bind(new.created_by.trim())
            .bind(client_id)
            .bind(region)
            .bind(now_ms)
            .bind(expires_at_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(VaultError::db(format!(
                "creating an invite for org {org_name}"
            )))?;
        let invite = invite_from_row(&row, now_ms)?;
        tracing::info!(
            invite = invite.id,
            org = %invite.org_name,
            created_by = %invite.created_by,
            expires_at_ms,
            "invite created"
        );
        Ok(IssuedInvite { invite, token })
    }

    /// The invite with this database id, with its status as of `now_ms`; `None` if there is none.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn invite_by_id(&self, id: i64, now_ms: i64) -> Result<Option<Invite>, VaultError> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!("looking up invite #{id}")))?;
        row.map(|r| invite_from_row(&r, now_ms)).transpose()
    }

    /// The invite whose token this is (looked up by its SHA-256), with its status as of
    /// `now_ms` — expired, used and revoked invites are returned too, so the page can say
    /// why the link no longer works. `None` if no invite has this token.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn invite_by_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<Invite>, VaultError> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(sha256_hex(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db("looking up an invite by its token"))?;
        row.map(|r| invite_from_row(&r, now_ms)).transpose()
    }

    /// Marks the invite used, in one conditional `UPDATE` that succeeds only while it is open
    /// (not used, not revoked) and unexpired at `now_ms`: of two concurrent calls exactly one
    /// succeeds.
    ///
    /// # Errors
    /// [`VaultError::Invalid`]`("invite already used or expired")` if it is used, expired,
    /// revoked or does not exist; [`VaultError::Db`] on database failure.
    pub async fn consume_invite(&self, invite_id: i64, now_ms: i64) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE invites SET used_at_ms = $2 \
             WHERE id = $1 AND used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(invite_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("consuming invite #{invite_id}")))?;
        if done.rows_affected() == 0 {
            return Err(VaultError::Invalid("invite already used or expired".into()));
        }
        tracing::info!(invite = invite_id, "invite used");
        Ok(())
    }

    /// Makes a consumed invite usable again, for when the connection it was consumed for could
    /// not be stored: the customer admin can then start again from the same link.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn release_invite(&self, invite_id: i64) -> Result<(), VaultError> {
        sqlx::query("UPDATE invites SET used_at_ms = NULL WHERE id = $1")
            .bind(invite_id)
            .execute(&self.pool)
            .await
            .map_err(VaultError::db(format!("releasing invite #{invite_id}")))?;
        tracing::info!(
            invite = invite_id,
            "invite released: the connection it was used for failed"
        );
        Ok(())
    }

    /// Withdraws an unused invite; its link stops working at once. Revoking an invite that is
    /// already revoked does nothing.
    ///
    /// # Errors
    /// [`VaultError::NotFound`] if there is no such invite, [`VaultError::Invalid`] if it was
    /// already used (remove the org instead), [`VaultError::Db`] on database failure.
    pub async fn revoke_invite(&self, invite_id: i64) -> Result<(), VaultError> {
        let done = sqlx::query(
            "UPDATE invites SET revoked_at_ms = $2 \
             WHERE id = $1 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
        )
        .bind(invite_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(VaultError::db(format!("revoking invite #{invite_id}")))?;
        if done.rows_affected() == 1 {
            tracing::info!(invite = invite_id, "invite revoked");
            return Ok(());
        }
        let row = sqlx::query("SELECT used_at_ms FROM invites WHERE id = $1")
            .bind(invite_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db(format!("revoking invite #{invite_id}")))?
            .ok_or_else(|| VaultError::NotFound(format!("invite #{invite_id}")))?;
        if get::<Option<i64>>(&row, "used_at_ms")?.is_some() {
            return Err(VaultError::Invalid(format!(
                "invite #{invite_id} was already used and cannot be revoked — remove the org it connected instead"
            )));
        }
        Ok(())
    }

    /// Every invite, newest first, with its status computed against the system clock (this
    /// listing takes no `now_ms`).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for unreadable rows.
    pub async fn invites(&self) -> Result<Vec<Invite>, VaultError> {
        let now = now_ms();
        let sql =
            format!("SELECT {INVITE_COLUMNS} FROM invites ORDER BY created_at_ms DESC, id DESC");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(VaultError::db("listing invites"))?;
        rows.iter().map(|r| invite_from_row(r, now)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Pending OAuth authorizations
// ---------------------------------------------------------------------------------------------

impl Vault {
    /// Records an authorization about to be sent to Webex: SHA-256 of the `state` and of the
    /// browser session it is bound to, and the PKCE verifier sealed with the current master key
    /// (AAD binds it to the row's state hash). It expires `p.ttl_ms` after `now_ms`.
    ///
    /// At most [`PENDING_AUTHS_PER_INVITE`] live rows are kept per invite: the oldest (and any
    /// expired ones) of the same invite are deleted in the same transaction.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an empty state, browser session, verifier, org name, client
    /// id or redirect URI, or a non-positive lifetime; [`VaultError::Conflict`] if the state is
    /// already pending (states must be fresh random values); [`VaultError::Db`] on database
    /// failure.
    pub async fn put_pending_auth(&self, p: NewPendingAuth, now_ms: i64) -> Result<(), VaultError> {
        non_empty("OAuth state", p.state.expose_secret())?;
        non_empty("browser session", p.browser_session.expose_secret())?;
        non_empty("PKCE code verifier", p.code_verifier.expose_secret())?;
        let org_name = p.org_name.trim();
        non_empty("org name", org_name)?;
        non_empty("client id", p.client_id.trim())?;
        non_empty("redirect URI", p.redirect_uri.trim())?;
        let what = format!("pending OAuth authorization for org {org_name}");
        let expires_at_ms = expiry(&what, now_ms, p.ttl_ms)?;
        let scopes_json = to_json(&format!("{what}: scopes"), &p.scopes)?;
        let state_hash = sha256_hex(p.state.expose_secret());
        let (mut tx, ring) = self.begin_sealing(&format!("storing the {what}")).await?;
        let verifier_enc = ring.seal(
            &format!("{what} {CODE_VERIFIER}"),
            &pending_auth_aad(&state_hash),
            p.code_verifier.expose_secret().as_bytes(),
        )?;
        if let Some(invite_id) = p.invite_id {
            let evicted = sqlx::query(
                "DELETE FROM pending_auths WHERE invite_id = $1 AND (expires_at_ms <= $3 OR id NOT IN \
                 (SELECT id FROM pending_auths WHERE invite_id = $1 ORDER BY id DESC LIMIT $2))",
            )
            .bind(invite_id)
            .bind(keep_before_insert(PENDING_AUTHS_PER_INVITE))
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(VaultError::db(format!(
                "evicting old pending OAuth authorizations of invite #{invite_id}"
            )))?
            .rows_affected();
            if evicted > 0 {
                tracing::info!(
                    invite = invite_id,
                    evicted,
                    "oldest pending OAuth authorizations of the invite evicted"
                );
            }
        }
        let done = sqlx::query(
            "INSERT INTO pending_auths (state_hash, browser_session_hash, invite_id, org_name, \
             client_id, region, redirect_uri, code_verifier_enc, scopes_json, created_at_ms, \
             expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&state_hash)
        .bind(sha256_hex(p.browser_session.expose_secret()))
        .bind(p.invite_id)
        .bind(org_name)
        .bind(p.client_id.trim())
        .bind(p.region.as_deref().map(str::trim).filter(|r| !r.is_empty()))
        .bind(p.redirect_uri.trim())
        .bind(verifier_enc)
        .bind(scopes_json)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => tx
                .commit()
                .await
                .map_err(VaultError::db(format!("storing the {what}"))),
            Err(e) if VaultError::is_unique_violation(&e) => Err(VaultError::Conflict(format!(
                "{what}: this OAuth state is already pending — generate a fresh random state"
            ))),
            Err(e) => Err(VaultError::Db {
                op: format!("storing the {what}"),
                source: e,
            }),
        }
    }

    /// Takes back the authorization this `state` started — once. In one `DELETE … RETURNING`
    /// the row is removed and returned iff SHA-256(`state`) matches, SHA-256(`browser_session`)
    /// matches the session it was bound to, and it has not expired at `now_ms`.
    ///
    /// A replayed state, an expired one or a state presented by another browser gives
    /// `Ok(None)`. A mismatched browser session does not consume the row, so the browser that
    /// started the flow can still finish it; an expired row stays until
    /// [`Vault::purge_expired`].
    ///
    /// # Errors
    /// [`VaultError::Decrypt`] / [`VaultError::UnknownKeyVersion`] if the verifier does not
    /// open (the row is gone then: start the flow again), [`VaultError::Corrupt`] for an
    /// unreadable row, [`VaultError::Db`] on database failure.
    pub async fn take_pending_auth(
        &self,
        state: &str,
        browser_session: &str,
        now_ms: i64,
    ) -> Result<Option<PendingAuth>, VaultError> {
        let sql = format!(
            "DELETE FROM pending_auths \
             WHERE state_hash = $1 AND browser_session_hash = $2 AND expires_at_ms > $3 \
             RETURNING {PENDING_COLUMNS}"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(sha256_hex(state))
            .bind(sha256_hex(browser_session))
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db("taking a pending OAuth authorization"))?
        else {
            return Ok(None);
        };
        let id: i64 = get(&row, "id")?;
        // The AAD uses the state hash of the same row, so a verifier moved between rows fails.
        let state_hash: String = get(&row, "state_hash")?;
        let sealed: String = get(&row, "code_verifier_enc")?;
        let code_verifier = self.open_sealed(
            &pending_auth_what(id),
            &pending_auth_aad(&state_hash),
            &sealed,
        )?;
        let scopes_json: String = get(&row, "scopes_json")?;
        Ok(Some(PendingAuth {
            id,
            invite_id: get(&row, "invite_id")?,
            org_name: get(&row, "org_name")?,
            client_id: get(&row, "client_id")?,
            region: get(&row, "region")?,
            redirect_uri: get(&row, "redirect_uri")?,
            code_verifier,
            scopes: from_json(
                format!("pending OAuth authorization #{id} scopes"),
                &scopes_json,
            )?,
            created_at_ms: get(&row, "created_at_ms")?,
        }))
    }

    /// Deletes pending authorizations and sessions that have expired at `now_ms`; returns how
    /// many rows went. Invites are kept (the dashboard shows them as expired).
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<u64, VaultError> {
        let mut purged = 0;
        for (table, what) in [
            ("pending_auths", "expired pending OAuth authorizations"),
            ("sessions", "expired sessions"),
        ] {
            purged += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at_ms <= $1"))
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(VaultError::db(format!("purging {what}")))?
                .rows_affected();
        }
        if purged > 0 {
            tracing::debug!(purged, "expired connect records purged");
        }
        Ok(purged)
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

impl Vault {
    /// Starts a session of `kind` (`"operator"` or `"connect"`) for `subject`, valid for
    /// `ttl_ms` from `now_ms`. Returns the cookie value and CSRF token (32 random bytes each,
    /// base64url); only their SHA-256 is stored. A `"connect"` session evicts the oldest (and
    /// expired) connect sessions of the same subject beyond [`CONNECT_SESSIONS_PER_INVITE`].
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for an unknown kind or a non-positive lifetime,
    /// [`VaultError::Db`] on database failure.
    pub async fn create_session(
        &self,
        kind: &str,
        subject: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<IssuedSession, VaultError> {
        if !SESSION_KINDS.contains(&kind) {
            return Err(VaultError::Invalid(format!(
                "session kind must be \"operator\" or \"connect\", not {kind:?}"
            )));
        }
        let expires_at_ms = expiry(&format!("{kind} session"), now_ms, ttl_ms)?;
        let id = random_token();
        let csrf = random_token();
        let mut tx = self
            .begin_write(&format!("starting a {kind} session"))
            .await?;
        if kind == "connect" {
            let evicted = sqlx::query(
                "DELETE FROM sessions WHERE kind = 'connect' AND subject = $1 AND \
                 (expires_at_ms <= $3 OR id_hash NOT IN (SELECT id_hash FROM sessions \
                 WHERE kind = 'connect' AND subject = $1 \
                 ORDER BY created_at_ms DESC, id_hash DESC LIMIT $2))",
            )
            .bind(subject)
            .bind(keep_before_insert(CONNECT_SESSIONS_PER_INVITE))
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(VaultError::db("evicting old connect sessions"))?
            .rows_affected();
            if evicted > 0 {
                tracing::info!(subject, evicted, "oldest connect sessions evicted");
            }
        }
        sqlx::query(
            "INSERT INTO sessions (id_hash, kind, subject, csrf_hash, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(sha256_hex(id.expose_secret()))
        .bind(kind)
        .bind(subject)
        .bind(sha256_hex(csrf.expose_secret()))
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(VaultError::db(format!("starting a {kind} session")))?;
        tx.commit()
            .await
            .map_err(VaultError::db(format!("starting a {kind} session")))?;
        Ok(IssuedSession {
            id,
            csrf,
            expires_at_ms,
        })
    }

    /// The live session with this cookie value (looked up by its SHA-256); `None` if there is
    /// none or it has expired at `now_ms`.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure, [`VaultError::Corrupt`] for an unreadable row.
    pub async fn session(&self, id: &str, now_ms: i64) -> Result<Option<Session>, VaultError> {
        let row = sqlx::query(
            "SELECT kind, subject, csrf_hash, expires_at_ms FROM sessions \
             WHERE id_hash = $1 AND expires_at_ms > $2",
        )
        .bind(sha256_hex(id))
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(VaultError::db("looking up a session"))?;
        row.map(|row| {
            Ok(Session {
                kind: get(&row, "kind")?,
                subject: get(&row, "subject")?,
                csrf_hash: get(&row, "csrf_hash")?,
                expires_at_ms: get(&row, "expires_at_ms")?,
            })
        })
        .transpose()
    }

    /// Whether `presented` is the session's CSRF token: SHA-256(`presented`) compared with the
    /// stored hash in constant time.
    pub fn csrf_matches(session: &Session, presented: &str) -> bool {
        let presented = sha256_hex(presented);
        presented
            .as_bytes()
            .ct_eq(session.csrf_hash.as_bytes())
            .into()
    }

    /// Ends the session with this cookie value (logout). Ending a session that does not exist
    /// (or already ended) is not an error.
    ///
    /// # Errors
    /// [`VaultError::Db`] on database failure.
    pub async fn end_session(&self, id: &str) -> Result<(), VaultError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(sha256_hex(id))
            .execute(&self.pool)
            .await
            .map_err(VaultError::db("ending a session"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Operator password
// ---------------------------------------------------------------------------------------------

/// Hashes the operator password with argon2id (default parameters, random 16-byte salt) into a
/// PHC string (`$argon2id$v=19$…`). Deliberately slow (tens of milliseconds): call it from
/// `tokio::task::spawn_blocking` in a server.
///
/// # Errors
/// [`VaultError::Invalid`] for an empty password, or if hashing fails (the message never
/// contains the password).
pub fn hash_password(password: &SecretString) -> Result<String, VaultError> {
    let password = password.expose_secret();
    if password.is_empty() {
        return Err(VaultError::Invalid("password must not be empty".into()));
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| VaultError::Invalid(format!("cannot encode a password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| VaultError::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the PHC string from [`hash_password`]. argon2's verification
/// compares in constant time; a malformed PHC string is simply no match. Slow like
/// [`hash_password`].
pub fn verify_password(password: &SecretString, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.expose_secret().as_bytes(), &hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_random_bytes_base64url() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.expose_secret().len(), 43);
        assert_eq!(B64URL.decode(a.expose_secret()).unwrap().len(), TOKEN_BYTES);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(
            a.expose_secret()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn sha256_hex_is_the_standard_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn invite_status_precedence() {
        assert_eq!(invite_status(None, None, 10, 9), InviteStatus::Open);
        assert_eq!(invite_status(None, None, 10, 10), InviteStatus::Expired);
        assert_eq!(invite_status(Some(5), None, 10, 20), InviteStatus::Used);
        assert_eq!(invite_status(None, Some(5), 10, 20), InviteStatus::Revoked);
        assert_eq!(
            serde_json::to_string(&InviteStatus::Expired).unwrap(),
            "\"expired\""
        );
    }

    #[test]
    fn expiry_rejects_bad_lifetimes() {
        assert_eq!(expiry("x", 100, 5).unwrap(), 105);
        assert!(expiry("x", 100, 0).is_err());
        assert!(expiry("x", 100, -1).is_err());
        assert!(expiry("x", i64::MAX, 1).is_err());
    }
}
