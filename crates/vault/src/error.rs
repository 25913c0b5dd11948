//! The one error type of this crate.
//!
//! Policy: every message says *what* failed (which database, org, task or recording) and,
//! where the operator can act, *what to do*. No message ever contains a secret: database URLs
//! are shown with their password redacted, and crypto failures name the record, never its
//! contents.

use std::path::PathBuf;

/// Errors from the state database, the keyring and the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The master key text is not 32 bytes of standard base64.
    #[error(
        "invalid master key from {origin}: {problem} — it must be 32 random bytes in base64 (run `wxvault init` to create a key file)"
    )]
    BadKey {
        /// Where the key came from (`WXVAULT_MASTER_KEY` or the key file path).
        origin: String,
        /// What is wrong with it (never the key itself).
        problem: String,
    },

    /// Neither the environment nor the key file provided a master key.
    #[error(
        "no master key: {} does not exist — run `wxvault init` to create it, or set WXVAULT_MASTER_KEY",
        path.display()
    )]
    KeyMissing {
        /// The key file that was looked for.
        path: PathBuf,
    },

    /// The key file (or `WXVAULT_MASTER_KEY`) is not a list of master keys.
    #[error(
        "invalid master key list in {origin}: {problem} — each line must be <version>:<base64 of 32 bytes> (a single bare base64 key means version 1); blank lines and # comments are ignored"
    )]
    KeyFormat {
        /// Where: `key file PATH line N` or `WXVAULT_MASTER_KEY line N`.
        origin: String,
        /// What is wrong (never the key material).
        problem: String,
    },

    /// The key file exists but could not be read or written.
    #[error("cannot {action} key file {}: {source}", path.display())]
    KeyFile {
        /// What was being done: "read", "create", "resolve", "write a temporary copy of" or
        /// "replace".
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The database URL has a scheme this crate does not support.
    #[error(
        "unsupported database url {url}: use sqlite://PATH, sqlite::memory: or postgres://… — check [database] url"
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },

    /// Connecting to (or creating) the database failed.
    #[error("cannot open database {url}: {detail} — check [database] url")]
    Open {
        /// The URL, password redacted.
        url: String,
        /// What went wrong.
        detail: String,
        /// The server could not be reached or was busy (worth another try), as opposed to a bad
        /// URL, a database that does not exist or refused credentials.
        transient: bool,
    },

    /// Applying the schema migrations failed.
    #[error("cannot migrate database {url}: {source}{}", migrate_hint(source))]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// The migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A query failed.
    #[error("state database error while {op}: {source}")]
    Db {
        /// What was being done, e.g. "saving tokens for org acme".
        op: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// A uniqueness rule was violated (e.g. an org name or Webex org id already exists).
    #[error("{0}")]
    Conflict(String),

    /// The caller passed a value the vault refuses to store.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// The org, task or recording does not exist.
    #[error("{0} not found in the state database")]
    NotFound(String),

    /// A state transition that would break the ledger's invariants (e.g. `done` before `stored`).
    #[error("{item}: cannot go from {from} to {to}: {why}")]
    Transition {
        /// "task …" or "recording …".
        item: String,
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
        /// Why that is refused.
        why: &'static str,
    },

    /// Authenticated decryption failed: wrong key, tampered ciphertext, or a ciphertext moved
    /// from another row or field.
    #[error(
        "decryption failed for {what}: wrong master key? (key version {key_version}) — or the stored value was altered or copied from another record"
    )]
    Decrypt {
        /// Which record and field, e.g. "org acme client_secret".
        what: String,
        /// Key version named by the record.
        key_version: u32,
    },

    /// The record names a key version this keyring does not hold.
    #[error(
        "{what} is sealed with master key version {key_version}, which this keyring does not hold (it has {have}) — use the master key that wrote it"
    )]
    UnknownKeyVersion {
        /// Which record and field.
        what: String,
        /// Key version named by the record.
        key_version: u32,
        /// Versions the keyring holds.
        have: String,
    },

    /// The database already holds secrets sealed with a newer master key version than this
    /// process holds, even after re-reading its key file: another process rotated to a key this
    /// one does not have. Nothing was written (sealing with the older key would make the record
    /// unreadable once that key is retired).
    #[error(
        "cannot store {op}: the state database uses master key version {newest}, but {origin} holds only versions {have} — another wxvault process rotated the master key; give this process the same key file (or WXVAULT_MASTER_KEY) as that one and retry. Nothing was written"
    )]
    KeyBehind {
        /// What was being stored, e.g. "tokens for org acme".
        op: String,
        /// The newest key version recorded in the database.
        newest: u32,
        /// Where this process's keys came from.
        origin: String,
        /// Versions this process holds.
        have: String,
    },

    /// A stored value does not have the expected shape.
    #[error("corrupt value in the state database for {what}: {detail}")]
    Corrupt {
        /// Which record and field.
        what: String,
        /// What is wrong (never the value itself if it may be secret).
        detail: String,
    },

    /// [`crate::Vault::rotate_keys`] failed before committing; its transaction was rolled back.
    #[error(
        "master key rotation failed and was rolled back — no record was changed, every secret is still sealed as before and opens with the keys in the key file: {source}"
    )]
    RotationFailed {
        /// Why it failed (e.g. a record that does not decrypt).
        #[source]
        source: Box<VaultError>,
    },

    /// Encryption failed (practically only on absurd input sizes).
    #[error("encryption failed for {what}")]
    Encrypt {
        /// Which record and field.
        what: String,
    },
}

impl VaultError {
    /// Builds a [`VaultError::Db`] from a description of the operation.
    pub(crate) fn db(op: impl Into<String>) -> impl FnOnce(sqlx::Error) -> VaultError {
        let op = op.into();
        move |source| VaultError::Db { op, source }
    }

    /// True when the same operation may well succeed if tried again shortly: the database was
    /// busy or locked, a connection broke or could not be had in time, or the server is
    /// restarting. Corrupt values, conflicts, decryption and schema problems are not.
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Db { source, .. } => sqlx_is_transient(source),
            VaultError::Open { transient, .. } => *transient,
            VaultError::Migrate {
                source: sqlx::migrate::MigrateError::Execute(e),
                ..
            } => sqlx_is_transient(e),
            _ => false,
        }
    }

    /// True when a unique or primary-key constraint rejected the write.
    pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
    }
}

/// What to tell the operator about a failed migration: a busy or unreachable database is worth
/// another try; anything else points at a schema this version does not know.
fn migrate_hint(e: &sqlx::migrate::MigrateError) -> &'static str {
    match e {
        sqlx::migrate::MigrateError::Execute(e) if sqlx_is_transient(e) => {
            " — the database was busy or unreachable; try again (serve and worker keep trying)"
        }
        _ => " — was it written by a newer wxvault, or edited by hand?",
    }
}

/// Busy/locked SQLite, dropped or unobtainable connections, and PostgreSQL's connection,
/// resource, shutdown and serialization classes are worth retrying.
pub(crate) fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED, 10 SQLITE_IOERR (primary and extended
            // codes, e.g. 517 SQLITE_BUSY_SNAPSHOT, 261 SQLITE_BUSY_RECOVERY).
            if let Ok(n) = code.parse::<i64>() {
                return matches!(n & 0xff, 5 | 6 | 10);
            }
            // PostgreSQL SQLSTATE: 08 connection exception, 53 insufficient resources,
            // 57P0x operator intervention / shutdown, 40001 serialization, 40P01 deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "40001"
                || code == "40P01"
        }
        _ => false,
    }
}

/// Database URLs in messages go through wxvault's one redaction helper (userinfo and query
/// string hidden).
pub(crate) use redact::redact_url;

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:s3cret@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://u@db/x?password=s3cret&sslmode=require"),
            "postgres://***@db/x?***"
        );
        assert_eq!(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    /// A write refused because another connection holds the database lock is worth retrying;
    /// a constraint violation is not.
    #[tokio::test]
    async fn a_locked_sqlite_database_is_transient_a_constraint_is_not() {
        use sqlx::{Connection, Executor, SqliteConnection};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        let mut holder = SqliteConnection::connect(&url).await.unwrap();
        holder
            .execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        let mut other = SqliteConnection::connect(&url).await.unwrap();
        other.execute("PRAGMA busy_timeout = 0").await.unwrap();
        holder.execute("BEGIN EXCLUSIVE").await.unwrap();
        let busy = other
            .execute("INSERT INTO t (id) VALUES (1)")
            .await
            .map_err(super::VaultError::db("writing t"))
            .unwrap_err();
        assert!(busy.is_transient(), "{busy}");
        holder.execute("COMMIT").await.unwrap();
        other
            .execute("INSERT INTO t (id) VALUES (1)")
            .await
            .unwrap();
        let dup = other
            .execute("INSERT INTO t (id) VALUES (1)")
            .await
            .map_err(super::VaultError::db("writing t"))
            .unwrap_err();
        assert!(!dup.is_transient(), "{dup}");
    }
}
