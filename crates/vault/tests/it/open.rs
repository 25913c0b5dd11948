use vault::testing::{TempPostgres, random_keyring};
use vault::{Vault, VaultError};

use crate::common::{backends, new_org};

#[tokio::test]
async fn open_reports_backend_and_is_repeatable() {
    let dbs = backends().await;
    assert!(!dbs.is_empty());
    for db in &dbs {
        assert!(["sqlite", "postgres"].contains(&db.name()));
        // Re-opening runs the migrations again without harm and sees the same data.
        db.vault.add_org(new_org("acme", "uuid-1")).await.unwrap();
        let again = db.reopen(db.keyring.clone()).await;
        assert_eq!(again.orgs().await.unwrap().len(), 1, "{}", db.name());
        again.close().await;
    }
    if let Some(path) = &dbs[0].sqlite_path {
        assert!(path.exists(), "sqlite file and its parent dir were created");
    }
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_across_calls() {
    let v = Vault::open("sqlite::memory:", random_keyring())
        .await
        .unwrap();
    assert_eq!(v.backend(), "sqlite");
    for i in 0..5 {
        v.add_org(new_org(&format!("o{i}"), &format!("id-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(v.orgs().await.unwrap().len(), 5);
}

#[tokio::test]
async fn open_errors_name_the_url_without_its_password() {
    let err = Vault::open("mysql://root:pw@localhost/x", random_keyring())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::UnsupportedUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("pw@"), "{err}");

    // Port 1 on loopback: refused at once.
    let err = Vault::open("postgres://wx:hunter2@127.0.0.1:1/db", random_keyring())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VaultError::Open { .. }), "{err:?}");
    assert!(msg.contains("postgres://***@127.0.0.1:1/db"), "{msg}");
    assert!(msg.contains("check [database] url"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

/// Issue 7 item 3: a SQLite database that cannot be written fails at once, with one error
/// naming the path and the operating system's reason, instead of the pool retrying for 15 s.
/// Tests run as root, so the paths are ones root cannot write either: an existing file on the
/// read-only procfs (SQLite would open it read-only and fail only at the first write), a
/// directory of procfs that takes no new files, and a regular file where a directory is
/// expected.
#[tokio::test]
async fn an_unwritable_sqlite_database_fails_at_once_naming_path_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let cases = [
        ("/proc/version".to_string(), "/proc/version"),
        ("/proc/self/state.db".to_string(), "/proc/self/state.db"),
        (
            format!("{}/state.db", not_a_dir.display()),
            not_a_dir.to_str().unwrap(),
        ),
    ];
    for (path, named) in cases {
        let url = format!("sqlite://{path}");
        // Only a guard against a hang; the checks below are on what the error says (the pool's
        // retries ended in "pool timed out", never the path and the OS's reason).
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            Vault::open(&url, random_keyring()),
        )
        .await
        .unwrap_or_else(|_| panic!("{url}: opening hung"))
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, VaultError::Open { .. }), "{url}: {err:?}");
        assert!(msg.contains(named), "{url}: {msg}");
        assert!(msg.contains("os error"), "{url}: the OS's reason: {msg}");
        assert!(!msg.contains('\n'), "{url}: one line: {msg}");
    }
}

/// Issue 7 item 4: on PostgreSQL wxvault's tables live in their own schema; a foreign `events`
/// table of another shape in `public` neither stops it nor is touched.
#[tokio::test]
async fn postgres_tables_live_in_their_own_schema_beside_foreign_tables() {
    let Some(pg) = TempPostgres::create().await else {
        return;
    };
    let admin = sqlx::AnyPool::connect(pg.url()).await.unwrap();
    for sql in [
        "CREATE TABLE public.events (id TEXT PRIMARY KEY, payload JSONB NOT NULL)",
        "INSERT INTO public.events VALUES ('foreign-1', '{\"a\": 1}')",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    let vault = Vault::open(pg.url(), random_keyring()).await.unwrap();
    assert_eq!(vault.schema(), Some("wxvault"));
    let org = vault.add_org(new_org("acme", "uuid-1")).await.unwrap();
    vault
        .record_event(Some(&org), "test", "ours")
        .await
        .unwrap();
    vault.close().await;

    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT table_schema::text FROM information_schema.tables \
         WHERE table_name IN ('orgs', 'events', 'tasks', 'key_state', '_sqlx_migrations')",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    let mut schemas = schemas;
    schemas.sort();
    assert_eq!(schemas, vec!["public".to_string(), "wxvault".to_string()]);
    let in_public: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        in_public,
        vec!["events".to_string()],
        "only the foreign table"
    );
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'events' ORDER BY ordinal_position",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(columns, vec!["id".to_string(), "payload".to_string()]);
    let rows: Vec<String> = sqlx::query_scalar("SELECT id FROM public.events")
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(rows, vec!["foreign-1".to_string()]);
    let ours: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wxvault.events")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(ours, 1);

    // A configured schema is used as given; a name that is not a plain identifier is refused.
    let other = Vault::open_in(pg.url(), Some("archive_state"), random_keyring())
        .await
        .unwrap();
    assert!(other.orgs().await.unwrap().is_empty());
    other.close().await;
    let err = Vault::open_in(pg.url(), Some("x\"; DROP"), random_keyring())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Invalid(_)), "{err:?}");
    admin.close().await;
}

/// Issue 7 item 4: all pending migrations apply in one transaction — a failure in a later one
/// leaves nothing of the earlier ones behind, and opening again after the cause is removed
/// applies them all.
#[tokio::test]
async fn a_failed_migration_leaves_nothing_half_applied() {
    let Some(pg) = TempPostgres::create().await else {
        return;
    };
    let admin = sqlx::AnyPool::connect(pg.url()).await.unwrap();
    // The second migration creates `invites`: a foreign one in wxvault's schema makes it fail
    // after the first migration (orgs, tasks, …) has run.
    for sql in [
        "CREATE SCHEMA wxvault",
        "CREATE TABLE wxvault.invites (foreign_column INTEGER)",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    let err = Vault::open(pg.url(), random_keyring()).await.unwrap_err();
    assert!(matches!(err, VaultError::Migrate { .. }), "{err:?}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text || '.' || table_name::text FROM information_schema.tables \
         WHERE table_schema IN ('public', 'wxvault') ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        tables,
        vec!["wxvault.invites".to_string()],
        "nothing applied"
    );

    sqlx::query("DROP TABLE wxvault.invites")
        .execute(&admin)
        .await
        .unwrap();
    let vault = Vault::open(pg.url(), random_keyring()).await.unwrap();
    vault.add_org(new_org("acme", "uuid-1")).await.unwrap();
    vault.close().await;
    admin.close().await;
}

/// Issue 7 item 4, existing deployments: tables an older wxvault created in `public` are kept
/// and used when `[database] schema` is not set (nothing moves, nothing is lost); no second,
/// empty set of tables appears in the default schema.
#[tokio::test]
async fn postgres_tables_from_before_the_schema_stay_in_public() {
    let Some(pg) = TempPostgres::create().await else {
        return;
    };
    let old = Vault::open_in(pg.url(), Some("public"), random_keyring())
        .await
        .unwrap();
    let keyring = old.keyring();
    old.add_org(new_org("acme", "uuid-1")).await.unwrap();
    old.close().await;

    let vault = Vault::open(pg.url(), keyring).await.unwrap();
    assert_eq!(vault.schema(), Some("public"));
    let orgs = vault.orgs().await.unwrap();
    assert_eq!(orgs.len(), 1);
    vault.org_secrets(&orgs[0]).await.unwrap();
    vault.close().await;
    let admin = sqlx::AnyPool::connect(pg.url()).await.unwrap();
    let in_default: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'wxvault'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(in_default, 0);
    admin.close().await;
}

/// A process starting while another holds the SQLite file's write lock (a fleet of workers on one
/// file, busy writing) opens at once when its schema is current: the open writes nothing then.
/// A file whose migrations are still pending has to wait for the lock; when it cannot get it,
/// the error says the database was busy and counts as transient, so `serve` and `worker` try
/// again instead of exiting.
#[tokio::test]
async fn a_current_sqlite_database_opens_while_another_process_writes() {
    use sqlx::{Connection as _, Executor as _};
    let dir = tempfile::tempdir().unwrap();
    let keyring = random_keyring();
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}", path.display());
    Vault::open(&url, keyring.clone())
        .await
        .unwrap()
        .close()
        .await;
    let fresh_path = dir.path().join("fresh.db");
    let fresh_url = format!("sqlite://{}", fresh_path.display());
    let mut writers = Vec::new();
    for p in [&path, &fresh_path] {
        let mut w = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", p.display()))
            .await
            .unwrap();
        w.execute("PRAGMA journal_mode = WAL").await.unwrap();
        w.execute("BEGIN IMMEDIATE").await.unwrap();
        writers.push(w);
    }

    let v = Vault::open(&url, keyring.clone())
        .await
        .expect("a current schema opens without the write lock");
    assert!(v.orgs().await.unwrap().is_empty());

    let err = Vault::open(&fresh_url, keyring.clone()).await.unwrap_err();
    assert!(matches!(err, VaultError::Migrate { .. }), "{err:?}");
    assert!(
        err.is_transient(),
        "a locked database is worth another try: {err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("busy or unreachable"), "{msg}");
    assert!(!msg.contains("newer wxvault"), "{msg}");

    for mut w in writers {
        w.execute("ROLLBACK").await.unwrap();
    }
    let fresh = Vault::open(&fresh_url, keyring).await.unwrap();
    assert!(fresh.orgs().await.unwrap().is_empty());
}
