//! Test helpers shared by every crate's tests (feature `testing`).
//!
//! Each test gets its own PostgreSQL database so tests run in parallel without seeing each
//! other's rows. The admin connection is `postgres://postgres@127.0.0.1:5432/test` unless
//! `WXVAULT_TEST_PG` names another. When PostgreSQL is unreachable the helpers return `None`
//! so a laptop without it still runs the SQLite half of every test — unless
//! `WXVAULT_REQUIRE_PG` is set (CI), in which case they panic, so PostgreSQL coverage can
//! never be skipped silently.
//!
//! Database names carry their creation time (`wxv_test_<unix secs>_<random>`); each new
//! database first drops leftovers older than six hours, so databases leaked by a crashed test
//! (or handed out by [`temp_postgres_url`], which has no guard) do not pile up.

use std::str::FromStr as _;
use std::time::Duration;

use rand::Rng as _;
use secrecy::ExposeSecret as _;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions as _, Connection as _, Executor as _, Row as _};

use crate::{Keyring, Vault};

/// Admin URL used when `WXVAULT_TEST_PG` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PREFIX: &str = "wxv_test_";
const STALE_SECS: u64 = 6 * 3600;

/// A PostgreSQL database that exists for one test; dropped (with any open connections
/// terminated) when the guard is dropped.
#[derive(Debug)]
pub struct TempPostgres {
    url: String,
    admin_url: String,
    name: String,
}

impl TempPostgres {
    /// Creates a fresh, empty database.
    ///
    /// Returns `None` if PostgreSQL is unreachable and `WXVAULT_REQUIRE_PG` is unset.
    ///
    /// # Panics
    /// If PostgreSQL is unreachable and `WXVAULT_REQUIRE_PG` is set, or if the server answers
    /// but refuses to create the database.
    pub async fn create() -> Option<TempPostgres> {
        sqlx::any::install_default_drivers();
        let admin_url =
            std::env::var("WXVAULT_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let mut admin = match connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("WXVAULT_REQUIRE_PG").is_some() {
                    panic!(
                        "WXVAULT_REQUIRE_PG is set but PostgreSQL at {} is unreachable: {e} \
                         (set WXVAULT_TEST_PG to the admin URL of a reachable server)",
                        crate::error::redact_url(&admin_url)
                    );
                }
                eprintln!(
                    "note: PostgreSQL at {} unreachable ({e}); skipping the PostgreSQL half of this test",
                    crate::error::redact_url(&admin_url)
                );
                return None;
            }
        };
        sweep_stale(&mut admin).await;
        let secs = unix_secs();
        let name = format!("{PREFIX}{secs}_{:016x}", rand::thread_rng().r#gen::<u64>());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = AnyConnectOptions::from_str(&admin_url)
            .expect("admin URL parsed once already")
            .database_url;
        url.set_path(&format!("/{name}"));
        Some(TempPostgres {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the test database.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Drop may run inside a Tokio runtime, which must not be blocked on itself: do the
        // async work on a private runtime in a scoped thread.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("warning: cannot drop test database {name}: {e}");
                        return;
                    }
                };
                rt.block_on(async {
                    match connect(&admin_url).await {
                        Ok(mut admin) => {
                            drop_database(&mut admin, &name).await;
                            let _ = admin.close().await;
                        }
                        Err(e) => eprintln!("warning: cannot drop test database {name}: {e}"),
                    }
                });
            });
        });
    }
}

/// Creates a fresh PostgreSQL database and returns its URL, without a guard: the database is
/// left behind and swept up by a later run after six hours. Prefer [`TempPostgres::create`],
/// which drops it at the end of the test.
///
/// # Panics
/// As [`TempPostgres::create`].
pub async fn temp_postgres_url() -> Option<String> {
    let db = TempPostgres::create().await?;
    let url = db.url.clone();
    std::mem::forget(db);
    Some(url)
}

/// A keyring with a fresh random key.
pub fn random_keyring() -> Keyring {
    Keyring::from_base64(crate::generate_key_base64().expose_secret())
        .expect("generated keys are valid")
}

/// Makes [`Vault::rotate_keys`] on `vault` (and its clones) fail once it has re-sealed `n`
/// values inside its transaction, as a crash half-way through would; `None` turns that off.
/// Other vaults, including other handles opened on the same database, are unaffected.
pub fn fail_rotation_after(vault: &Vault, n: Option<usize>) {
    vault
        .rotation_fail_after
        .store(n.unwrap_or(usize::MAX), std::sync::atomic::Ordering::SeqCst);
}

async fn connect(url: &str) -> Result<AnyConnection, sqlx::Error> {
    let opts = AnyConnectOptions::from_str(url)?;
    match tokio::time::timeout(Duration::from_secs(5), opts.connect()).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

async fn drop_database(admin: &mut AnyConnection, name: &str) {
    // WITH (FORCE) (PostgreSQL 13+) ends connections a test left open.
    let forced = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
    if forced.is_err()
        && let Err(e) = admin
            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await
    {
        eprintln!("warning: cannot drop test database {name}: {e}");
    }
}

async fn sweep_stale(admin: &mut AnyConnection) {
    let Ok(rows) =
        sqlx::query("SELECT datname::text FROM pg_database WHERE datname LIKE 'wxv_test_%'")
            .fetch_all(&mut *admin)
            .await
    else {
        return;
    };
    let now = unix_secs();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_SECS) {
            drop_database(admin, &name).await;
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
