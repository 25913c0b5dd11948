//! Opening the state database: one code path for SQLite and PostgreSQL through sqlx's `Any`
//! driver, with per-backend migrations chosen from the URL scheme.

use std::fmt;
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _};

use crate::error::{redact_url, sqlx_is_transient};
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
/// Cheap to clone: clones share one connection pool and one keyring.
#[derive(Clone)]
pub struct Vault {
    pub(crate) pool: AnyPool,
    /// Replaced when the key file is re-read after another process rotated the keys; shared by
    /// clones. Never held across an await.
    pub(crate) keys: Arc<RwLock<Keyring>>,
    pub(crate) backend: Backend,
    /// PostgreSQL: the schema holding wxvault's tables.
    schema: Option<Arc<str>>,
    /// Test hook (see `testing::fail_rotation_after`): make `rotate_keys` fail after this many
    /// re-sealed values. Shared by clones; `usize::MAX` means off.
    #[cfg(feature = "testing")]
    pub(crate) rotation_fail_after: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.backend())
            .field("keyring", &self.keyring())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (creating if needed) the state database and brings its schema up to date; on
    /// PostgreSQL the tables live in the default schema ([`DEFAULT_PG_SCHEMA`]). See
    /// [`Vault::open_in`].
    ///
    /// # Errors
    /// As [`Vault::open_in`].
    pub async fn open(database_url: &str, keyring: Keyring) -> Result<Vault, VaultError> {
        Vault::open_in(database_url, None, keyring).await
    }

    /// Opens (creating if needed) the state database and brings its schema up to date.
    ///
    /// Accepted URLs: `sqlite://PATH` (the file and its parent directory are created; WAL
    /// journal; writers wait for each other up to 10 s), `sqlite::memory:` (one private
    /// in-memory database held by a single connection, for demos and tests) and
    /// `postgres://…` / `postgresql://…`.
    ///
    /// A SQLite file is checked before SQLite sees it: its directory must exist or be
    /// creatable and be writable (SQLite keeps its `-wal` and `-shm` files there) and the file
    /// must open for writing, so a read-only file system or a wrong path fails at once with the
    /// path and the operating system's reason.
    ///
    /// On PostgreSQL wxvault's tables live in their own schema, `schema` (`[database] schema`;
    /// default [`DEFAULT_PG_SCHEMA`]), created if missing, so they never meet other
    /// applications' tables in `public`. Exception for deployments from before the schema
    /// existed: when `schema` is not given, the default schema holds no wxvault tables yet and
    /// `public` does, wxvault keeps using `public` (with a warning saying how to move them).
    /// `schema` is ignored for SQLite. All pending migrations are applied in one transaction:
    /// a failure leaves the database as it was.
    ///
    /// # Errors
    /// [`VaultError::UnsupportedUrl`] for other schemes, [`VaultError::Invalid`] for a schema
    /// name that is not a plain lower-case identifier, [`VaultError::Open`] if the database
    /// cannot be reached, created or written, [`VaultError::Migrate`] if the schema cannot be
    /// applied.
    pub async fn open_in(
        database_url: &str,
        schema: Option<&str>,
        keyring: Keyring,
    ) -> Result<Vault, VaultError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(database_url)?;
        let shown = redact_url(database_url);
        let open_err = |detail: String| VaultError::Open {
            url: shown.clone(),
            detail,
            transient: false,
        };
        // A failure to reach or prepare the database: transient when the server was unreachable
        // or busy (worth another try), not when it refused (no such database, bad credentials).
        let unreachable = |detail: String, transient: bool| VaultError::Open {
            url: shown.clone(),
            detail,
            transient,
        };
        if let Some(name) = schema {
            check_schema_name(name)?;
        }
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
                        if !has_mode {
                            check_sqlite_file(std::path::Path::new(path)).map_err(open_err)?;
                            options
                                .database_url
                                .query_pairs_mut()
                                .append_pair("mode", "rwc");
                        }
                        // SQLite has one writer at a time; with several pooled connections,
                        // concurrent writers meet SQLITE_BUSY and sleep-retry (the benchmark saw
                        // ~15,000 such sleeps per 3,000 recordings). One connection queues them
                        // in-process instead. No code path holds a transaction across an await
                        // on another query (key rotation and sealed writes run every query
                        // through their transaction), so one connection cannot deadlock.
                        AnyPoolOptions::new().max_connections(1)
                    }
                }
                .after_connect(|conn, _meta| Box::pin(async move { sqlite_setup(conn).await }))
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(10),
        };
        // Probe with one plain connection first, set up like the pool's: the pool would keep
        // retrying a refused connection (or a failing set-up) until its acquire timeout, logging
        // each attempt, while the operator wants one clear error at once.
        let mut probe =
            tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    unreachable(
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                        true,
                    )
                })?
                .map_err(|e| {
                    unreachable(
                        redact::redact_urls_in(&e.to_string()),
                        sqlx_is_transient(&e),
                    )
                })?;
        let mut schema_used = None;
        let pool_options = match backend {
            Backend::Sqlite => {
                let setup = sqlite_setup(&mut probe).await;
                let _ = probe.close().await;
                setup.map_err(|e| {
                    unreachable(
                        format!("cannot prepare the database: {e}"),
                        sqlx_is_transient(&e),
                    )
                })?;
                pool_options
            }
            Backend::Postgres => {
                let chosen = pg_prepare_schema(&mut probe, schema).await;
                let _ = probe.close().await;
                let chosen = chosen.map_err(|e| {
                    unreachable(format!(
                        "cannot prepare the schema for wxvault's tables: {e} (check [database] schema and that the user may create schemas)"
                    ), sqlx_is_transient(&e))
                })?;
                tracing::debug!(schema = %chosen, "PostgreSQL schema for wxvault's tables");
                schema_used = Some(Arc::from(chosen.as_str()));
                // A fixed search path: unqualified table names resolve in wxvault's schema only,
                // never to another application's table in `public`.
                let set_path = format!("SET search_path TO \"{chosen}\"");
                pool_options.after_connect(move |conn, _meta| {
                    let set_path = set_path.clone();
                    Box::pin(async move {
                        conn.execute(set_path.as_str()).await?;
                        Ok(())
                    })
                })
            }
        };
        let pool = pool_options
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| VaultError::Open {
                url: shown.clone(),
                detail: redact::redact_urls_in(&e.to_string()),
                transient: sqlx_is_transient(&e),
            })?;

        migrate(&pool, backend)
            .await
            .map_err(|source| VaultError::Migrate {
                url: shown.clone(),
                source,
            })?;
        tracing::debug!(url = %shown, backend = ?backend, "state database open");
        Ok(Vault {
            pool,
            keys: Arc::new(RwLock::new(keyring)),
            backend,
            schema: schema_used,
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

    /// PostgreSQL: the schema holding wxvault's tables (`None` for SQLite).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The keyring sealing this vault's secrets (as last read: it is re-read from its key file
    /// when another process has rotated the keys).
    pub fn keyring(&self) -> Keyring {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Closes the pool, waiting for connections to finish. Optional: dropping works too, but
    /// closing first lets a test drop its database right away.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Where wxvault's tables live on PostgreSQL unless `[database] schema` says otherwise.
pub const DEFAULT_PG_SCHEMA: &str = "wxvault";

/// Schema names are used in SQL text, so only plain identifiers are accepted.
fn check_schema_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "[database] schema {name:?} is not a plain schema name: use lower-case letters, digits and _ (not starting with a digit or pg_), at most 63 characters"
        )))
    }
}

/// Per-connection SQLite settings; run on the probe connection too, so a database that cannot
/// take them fails once, at open, instead of on every pooled connection attempt.
async fn sqlite_setup(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // journal_mode is sticky in the file; busy_timeout is per connection.
    // Both are harmless no-ops for :memory:.
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
        .await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    // WAL + NORMAL: a commit survives a process crash (kill -9); only a power loss can drop the
    // last commits, and a rerun repairs that by adopting the identical objects it finds
    // (archive never overwrites). Saves an fsync per ledger write.
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    Ok(())
}

/// Checks, before SQLite sees it, that the database file at `path` can be created or opened
/// for writing and that its directory takes new files (SQLite's `-wal` / `-shm`). SQLite itself
/// would open a read-only file read-only and fail only at the first write, and says just
/// "unable to open database file" otherwise. The error names the path and the OS's reason.
fn check_sqlite_file(path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
    let probe = dir.join(format!(
        ".wxvault-write-check-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot create files in directory {} (SQLite keeps its -wal and -shm files next to the database): {e}",
            dir.display()
        )),
    }
}

/// Picks and creates the PostgreSQL schema for wxvault's tables (see [`Vault::open_in`]).
async fn pg_prepare_schema(
    conn: &mut AnyConnection,
    configured: Option<&str>,
) -> Result<String, sqlx::Error> {
    let chosen = match configured {
        Some(name) => name.to_string(),
        None => {
            // A deployment from before the schema existed: wxvault's own tables (recognised by
            // the sealed-secret column of `orgs`) in `public`, nothing yet in the default schema.
            let legacy: bool = sqlx::query_scalar(
                "SELECT to_regclass($1) IS NULL AND EXISTS (SELECT 1 FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = 'orgs' AND column_name = 'client_secret_enc')",
            )
            .bind(format!("{DEFAULT_PG_SCHEMA}._sqlx_migrations"))
            .fetch_one(&mut *conn)
            .await?;
            if legacy {
                tracing::warn!(
                    "wxvault's tables are in the PostgreSQL schema public (created by an older version); \
                     keeping them there. To give them their own schema, stop every wxvault process, move \
                     each wxvault table with ALTER TABLE public.<table> SET SCHEMA {DEFAULT_PG_SCHEMA} \
                     (see docs/config.md), or set [database] schema = \"public\" to keep this layout"
                );
                "public".to_string()
            } else {
                DEFAULT_PG_SCHEMA.to_string()
            }
        }
    };
    // Create it only when missing: CREATE SCHEMA needs the CREATE privilege on the database even
    // with IF NOT EXISTS, which a user given a prepared schema may lack.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&chosen)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{chosen}\"").as_str())
            .await?;
    }
    Ok(chosen)
}

/// Applies every pending migration in one transaction: either all of them land or none does
/// (sqlx alone commits each migration separately, so a failure half-way left a database with
/// some of a release's migrations applied). Both backends have transactional DDL.
///
/// When every migration is applied already (every open after the first), nothing is written: on
/// SQLite the transaction below takes the file's write lock, and a process starting while others
/// write heavily (a fleet of workers on one file) would otherwise wait for it and could fail.
async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    if all_applied(pool, migrator).await {
        return Ok(());
    }
    let mut tx = match backend {
        // Take SQLite's write lock up front, so a concurrent opener waits instead of failing.
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    };
    // Each migration runs in a savepoint of this transaction.
    migrator.run_direct(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// True when the database records every migration of `migrator` as applied with the same
/// checksum, and none it does not know. Anything else (no table yet, a newer or edited schema, a
/// read error) is left to the migrator, which applies what is pending or says what is wrong.
async fn all_applied(pool: &AnyPool, migrator: &Migrator) -> bool {
    let Ok(rows) = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success",
    )
    .fetch_all(pool)
    .await
    else {
        return false;
    };
    let applied: std::collections::HashMap<i64, Vec<u8>> = rows.into_iter().collect();
    let known: Vec<_> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    applied.len() == known.len()
        && known.iter().all(|m| {
            applied
                .get(&m.version)
                .is_some_and(|c| c[..] == m.checksum[..])
        })
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
