//! Opening the state database: one code path for SQLite and PostgreSQL through sqlx's `Any`
//! driver, with per-backend migrations chosen from the URL scheme.

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _};

use crate::error::redact_url;
use crate::{Keyring, VaultError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long opening the database may take before it is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a SQLite writer waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Which database engine a [`Vault`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL scheme.
    pub(crate) fn from_url(url: &str) -> Result<Backend, VaultError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(VaultError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }
}

/// The state database plus the keyring that seals its secrets.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Vault {
    pub(crate) pool: AnyPool,
    pub(crate) keyring: Keyring,
    pub(crate) backend: Backend,
    /// Test hook (see `testing::fail_rotation_after`): make `rotate_keys` fail after this many
    /// re-sealed values. Shared by clones; `usize::MAX` means off.
    #[cfg(feature = "testing")]
    pub(crate) rotation_fail_after: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.backend())
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (creating if needed) the state database and brings its schema up to date.
    ///
    /// Accepted URLs: `sqlite://PATH` (the file and its parent directory are created; WAL
    /// journal; writers wait for each other up to 10 s), `sqlite::memory:` (one private
    /// in-memory database held by a single connection, for demos and tests) and
    /// `postgres://…` / `postgresql://…`.
    ///
    /// # Errors
    /// [`VaultError::UnsupportedUrl`] for other schemes, [`VaultError::Open`] if the database
    /// cannot be reached or created, [`VaultError::Migrate`] if the schema cannot be applied.
    pub async fn open(database_url: &str, keyring: Keyring) -> Result<Vault, VaultError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(database_url)?;
        let shown = redact_url(database_url);
        let open_err = |detail: String| VaultError::Open {
            url: shown.clone(),
            detail,
        };
        let mut options = AnyConnectOptions::from_str(database_url).map_err(|e| {
            open_err(format!(
                "not a valid URL ({})",
                redact::redact_urls_in(&e.to_string())
            ))
        })?;

        let pool_options = match backend {
            Backend::Sqlite => {
                let target = SqliteTarget::parse(database_url);
                match &target {
                    SqliteTarget::Memory => {
                        // Every new connection to `:memory:` is a new, empty database, so the
                        // pool must hold exactly one connection for its whole life.
                        AnyPoolOptions::new()
                            .max_connections(1)
                            .min_connections(1)
                            .idle_timeout(None)
                            .max_lifetime(None)
                    }
                    SqliteTarget::File { path, has_mode } => {
                        if let Some(parent) = std::path::Path::new(path).parent()
                            && !parent.as_os_str().is_empty()
                        {
                            std::fs::create_dir_all(parent).map_err(|e| {
                                open_err(format!(
                                    "cannot create directory {}: {e}",
                                    parent.display()
                                ))
                            })?;
                        }
                        if !has_mode {
                            options
                                .database_url
                                .query_pairs_mut()
                                .append_pair("mode", "rwc");
                        }
                        // SQLite has one writer at a time; with several pooled connections,
                        // concurrent writers meet SQLITE_BUSY and sleep-retry (the benchmark saw
                        // ~15,000 such sleeps per 3,000 recordings). One connection queues them
                        // in-process instead. No code path holds a transaction across an await
                        // on another query (key rotation runs every query through its
                        // transaction), so one connection cannot deadlock.
                        AnyPoolOptions::new().max_connections(1)
                    }
                }
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // journal_mode is sticky in the file; busy_timeout is per connection.
                        // Both are harmless no-ops for :memory:.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute(
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                        )
                        .await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // WAL + NORMAL: a commit survives a process crash (kill -9); only a power
                        // loss can drop the last commits, and a rerun repairs that by adopting the
                        // identical objects it finds (archive never overwrites). Saves an fsync
                        // per ledger write.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                })
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(10),
        };
        // Probe with one plain connection first: the pool would keep retrying a refused
        // connection until its acquire timeout, while the operator wants the error at once.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect_with(&options))
            .await
            .map_err(|_| open_err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| open_err(redact::redact_urls_in(&e.to_string())))?;
        let _ = probe.close().await;
        let pool = pool_options
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_err(redact::redact_urls_in(&e.to_string())))?;

        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| VaultError::Migrate {
                url: shown.clone(),
                source,
            })?;
        tracing::debug!(url = %shown, backend = ?backend, "state database open");
        Ok(Vault {
            pool,
            keyring,
            backend,
            #[cfg(feature = "testing")]
            rotation_fail_after: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                usize::MAX,
            )),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The keyring sealing this vault's secrets.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Closes the pool, waiting for connections to finish. Optional: dropping works too, but
    /// closing first lets a test drop its database right away.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What a `sqlite:` URL points at.
enum SqliteTarget {
    Memory,
    File { path: String, has_mode: bool },
}

impl SqliteTarget {
    /// Mirrors sqlx's own parsing: `sqlite://PATH?params`, `sqlite:PATH?params`,
    /// `sqlite::memory:` or `mode=memory`.
    fn parse(url: &str) -> SqliteTarget {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        let mode = params
            .split('&')
            .find_map(|kv| kv.strip_prefix("mode="))
            .map(str::to_string);
        if path == ":memory:" || mode.as_deref() == Some("memory") {
            SqliteTarget::Memory
        } else {
            SqliteTarget::File {
                path: percent_decode(path),
                has_mode: mode.is_some(),
            }
        }
    }
}

/// Minimal `%XX` decoding for paths in SQLite URLs (sqlx decodes them the same way).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Milliseconds since the Unix epoch, for bookkeeping timestamps.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `$first, $first+1, …` placeholders for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls() {
        assert!(matches!(
            SqliteTarget::parse("sqlite::memory:"),
            SqliteTarget::Memory
        ));
        assert!(matches!(
            SqliteTarget::parse("sqlite://x.db?mode=memory"),
            SqliteTarget::Memory
        ));
        match SqliteTarget::parse("sqlite:///tmp/a%20b/x.db?mode=rw") {
            SqliteTarget::File { path, has_mode } => {
                assert_eq!(path, "/tmp/a b/x.db");
                assert!(has_mode);
            }
            SqliteTarget::Memory => panic!("file expected"),
        }
        match SqliteTarget::parse("sqlite://data/x.db") {
            SqliteTarget::File { path, has_mode } => {
                assert_eq!(path, "data/x.db");
                assert!(!has_mode);
            }
            SqliteTarget::Memory => panic!("file expected"),
        }
        assert_eq!(placeholders(3, 2), "$3, $4");
    }

    #[test]
    fn relative_sqlite_paths_survive_url_handling() {
        use sqlx::ConnectOptions as _;
        for (url, file) in [
            (
                "sqlite://./wxvault-data/wxvault.db",
                "./wxvault-data/wxvault.db",
            ),
            ("sqlite://wxvault.db", "wxvault.db"),
            ("sqlite:///abs/Dir/x.db", "/abs/Dir/x.db"),
        ] {
            let mut o = AnyConnectOptions::from_str(url).unwrap();
            o.database_url.query_pairs_mut().append_pair("mode", "rwc");
            let sq = sqlx::sqlite::SqliteConnectOptions::from_url(&o.database_url).unwrap();
            assert_eq!(sq.get_filename(), std::path::Path::new(file), "{url}");
            match SqliteTarget::parse(url) {
                SqliteTarget::File { path, .. } => assert_eq!(path, file),
                SqliteTarget::Memory => panic!("file expected"),
            }
        }
        assert!(Backend::from_url("mysql://x").is_err());
    }
}
