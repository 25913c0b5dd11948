//! Upgrading a database filled by a release at migration 0006 (items keyed by (org, id)) to
//! 0007 (keyed by (org, source, id)): every row and state survives, and afterwards the same id
//! may exist under a second source. On PostgreSQL in the default schema beside foreign tables
//! whose constraint and index names clash with ours, and in `public` (older deployments).

use std::path::{Path, PathBuf};

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};
use vault::testing::{TempPostgres, random_keyring};
use vault::{RecordingState as R, TaskState as T, Vault};

use crate::common::task;

const TASK_COLUMNS: &[&str] = &[
    "org",
    "task_id",
    "source",
    "created_ms",
    "capture_requested",
    "state",
    "reason",
    "attributes_json",
    "checks",
    "last_checked_ms",
    "first_seen_ms",
    "updated_ms",
    "state_changed_ms",
];
const RECORDING_COLUMNS: &[&str] = &[
    "org",
    "recording_id",
    "source",
    "task_id",
    "task_created_ms",
    "file_name",
    "attributes_json",
    "state",
    "object_key",
    "sha256",
    "size_bytes",
    "sidecar_key",
    "reason",
    "attempts",
    "last_error",
    "first_seen_ms",
    "updated_ms",
    "state_changed_ms",
];

/// Rows as a release at 0006 wrote them, for two orgs sharing task and recording ids, in every
/// state.
const FILL: &[&str] = &[
    "INSERT INTO orgs (name, org_id, region, client_id, client_auth, client_secret_enc, \
       sources_json, status, created_at_ms, updated_at_ms) \
     VALUES ('acme', 'uuid-acme', 'us1', 'c1', 'form', 'v1.1.AAAA', '[\"wxcc\"]', 'active', 1, 1)",
    "INSERT INTO orgs (name, org_id, region, client_id, client_auth, client_secret_enc, \
       sources_json, status, created_at_ms, updated_at_ms) \
     VALUES ('beta', 'uuid-beta', 'eu1', 'c2', 'basic', 'v1.1.BBBB', '[\"wxcc\"]', 'active', 1, 1)",
    "INSERT INTO tasks (org, task_id, source, created_ms, capture_requested, state, reason, \
       attributes_json, checks, last_checked_ms, first_seen_ms, updated_ms, state_changed_ms) \
     SELECT id, 't-disc', 'wxcc', 1000, NULL, 'discovered', NULL, '{\"id\":\"t-disc\"}', 0, NULL, 11, 12, 13 \
       FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-pend', 'wxcc', 1001, 1, 'pending_capture', NULL, '{}', 2, 500, 11, 12, 13 \
       FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-capt', 'wxcc', 1002, 1, 'captured', NULL, '{}', 1, 501, 11, 12, 14 \
       FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-abs', 'wxcc', 1003, 0, 'absent', 'not requested', '{}', 1, 502, 11, 12, 15 \
       FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-never', 'wxcc', 1004, NULL, 'absent', \
       'capture_never_requested: none', '{}', 3, 503, 11, 12, 16 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-miss', 'wxcc', 1005, 1, 'missing', 'none within 48 h', '{}', 4, 504, \
       11, 12, 17 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-fail', 'wxcc', 1006, 1, 'failed', 'bad data', '{}', 0, NULL, 11, 12, 18 \
       FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 't-capt', 'wxcc', 2002, 1, 'captured', NULL, '{\"org\":\"beta\"}', 1, 601, \
       21, 22, 23 FROM orgs WHERE name = 'beta'",
    "INSERT INTO recordings (org, recording_id, source, task_id, task_created_ms, file_name, \
       attributes_json, state, object_key, sha256, size_bytes, sidecar_key, reason, attempts, \
       last_error, first_seen_ms, updated_ms, state_changed_ms) \
     SELECT id, 'r-ready', 'wxcc', 't-capt', 1002, 'a.wav', '{}', 'ready', NULL, NULL, NULL, NULL, \
       NULL, 1, 'HTTP 503', 31, 32, 33 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 'r-stored', 'wxcc', 't-capt', 1002, NULL, '{}', 'stored', 'k/s.wav', 'ss', \
       10, NULL, NULL, 0, NULL, 31, 32, 34 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 'r-done', 'wxcc', 't-capt', 1002, 'd.wav', '{\"v\":2}', 'done', 'k/d.wav', \
       'dd', 20, 'k/d.json', NULL, 0, NULL, 31, 32, 35 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 'r-failed', 'wxcc', 't-capt', 1002, 'f.wav', '{}', 'failed', NULL, NULL, \
       NULL, NULL, 'HTTP 403', 5, 'HTTP 403', 31, 32, 36 FROM orgs WHERE name = 'acme' \
     UNION ALL SELECT id, 'r-done', 'wxcc', 't-capt', 2002, 'b.wav', '{}', 'done', 'b/d.wav', 'bb', \
       30, 'b/d.json', NULL, 0, NULL, 41, 42, 43 FROM orgs WHERE name = 'beta'",
];

/// The migrations of `backend` up to and including 0006, copied into `dir`.
fn migrations_up_to_0006(backend: &str, dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let to = dir.join(backend);
    std::fs::create_dir_all(&to).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let version: u32 = name.split('_').next().unwrap().parse().unwrap();
        if version <= 6 {
            std::fs::copy(&path, to.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 6, "{backend}: migrations 0001-0006");
    to
}

/// A pool whose PostgreSQL connections look only in `schema`, as the vault's do.
async fn pool(url: &str, schema: Option<&str>) -> AnyPool {
    sqlx::any::install_default_drivers();
    let set_path = schema.map(|s| format!("SET search_path TO \"{s}\""));
    AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                if let Some(sql) = set_path {
                    sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .unwrap()
}

/// Every column of every row of `table`, as text, in key order.
async fn snapshot(pool: &AnyPool, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS TEXT) AS {c}"))
        .collect();
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY org, {}",
        select.join(", "),
        columns[1]
    );
    let rows = sqlx::query(&sql).fetch_all(pool).await.unwrap();
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.try_get::<Option<String>, _>(*c).unwrap())
                .collect()
        })
        .collect()
}

/// Fills a database at 0006 through `pool`, upgrades it by opening a vault on `url` (in
/// `schema` as given), and checks what survived. Returns the upgraded vault.
async fn fill_upgrade_and_check(
    label: &str,
    backend: &str,
    url: &str,
    fill_pool: AnyPool,
    schema: Option<&str>,
) -> Vault {
    let dir = tempfile::tempdir().unwrap();
    let migrator = Migrator::new(migrations_up_to_0006(backend, dir.path()))
        .await
        .unwrap();
    migrator.run(&fill_pool).await.unwrap();
    for sql in FILL {
        sqlx::query(sql).execute(&fill_pool).await.unwrap();
    }
    let tasks_before = snapshot(&fill_pool, "tasks", TASK_COLUMNS).await;
    let recordings_before = snapshot(&fill_pool, "recordings", RECORDING_COLUMNS).await;
    assert_eq!(
        (tasks_before.len(), recordings_before.len()),
        (8, 5),
        "{label}"
    );
    fill_pool.close().await;

    let v = Vault::open_in(url, schema, random_keyring()).await.unwrap();
    let raw = pool(url, v.schema()).await;
    let applied: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert!(applied >= 8, "{label}: 0007 and 0008 ran");
    assert_eq!(
        snapshot(&raw, "tasks", TASK_COLUMNS).await,
        tasks_before,
        "{label}: every task row survived, column by column"
    );
    assert_eq!(
        snapshot(&raw, "recordings", RECORDING_COLUMNS).await,
        recordings_before,
        "{label}: every recording row survived, column by column"
    );

    // The ledger reads them back through the API, under their source.
    let orgs = v.orgs().await.unwrap();
    let acme = orgs.iter().find(|o| o.name == "acme").unwrap();
    let beta = orgs.iter().find(|o| o.name == "beta").unwrap();
    let states: Vec<(String, T)> = v
        .tasks_in_states(acme, "wxcc", T::ALL)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state))
        .collect();
    let expected_states = [
        ("t-disc", T::Discovered),
        ("t-pend", T::PendingCapture),
        ("t-capt", T::Captured),
        ("t-abs", T::Absent),
        ("t-never", T::Absent),
        ("t-miss", T::Missing),
        ("t-fail", T::Failed),
    ]
    .map(|(id, s)| (id.to_string(), s));
    assert_eq!(states, expected_states, "{label}");
    let recs: Vec<(String, R)> = v
        .recordings_in_states(acme, "wxcc", R::ALL)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.recording_id, r.state))
        .collect();
    let expected_recs = [
        ("r-done", R::Done),
        ("r-failed", R::Failed),
        ("r-ready", R::Ready),
        ("r-stored", R::Stored),
    ]
    .map(|(id, s)| (id.to_string(), s));
    assert_eq!(recs, expected_recs, "{label}");
    let c = v.counts(acme).await.unwrap();
    assert_eq!(
        (c.tasks, c.recordings, c.archived, c.in_progress, c.failed),
        (7, 4, 1, 2, 2),
        "{label}"
    );
    assert_eq!(
        (
            c.pending_capture,
            c.missing,
            c.absent,
            c.capture_never_requested
        ),
        (2, 1, 2, 1),
        "{label}"
    );
    assert_eq!(
        v.counts_by_source(beta)
            .await
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["wxcc"],
        "{label}"
    );
    let r = v.recording(beta, "wxcc", "r-done").await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.sha256.as_deref(), r.object_key.as_deref()),
        (R::Done, Some("bb"), Some("b/d.wav")),
        "{label}"
    );

    // The new key: the same ids under a second source are new rows beside the old ones.
    let t = v
        .upsert_task(acme, "calling", &task("t-capt", 9_000, None))
        .await
        .unwrap();
    assert_eq!(t.state, T::Discovered, "{label}");
    let r = v
        .upsert_recording(
            acme,
            "calling",
            &crate::common::rec_at("r-done", "t-capt", 9_000),
        )
        .await
        .unwrap();
    assert_eq!(r.state, R::Ready, "{label}");
    let old = v.recording(acme, "wxcc", "r-done").await.unwrap().unwrap();
    assert_eq!((old.state, old.task_created_ms), (R::Done, 1002), "{label}");
    assert_eq!(v.counts(acme).await.unwrap().tasks, 8, "{label}");
    raw.close().await;
    v
}

#[tokio::test]
async fn sqlite_rows_survive_the_upgrade_to_source_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let fill = pool(&format!("{url}?mode=rwc"), None).await;
    let v = fill_upgrade_and_check("sqlite", "sqlite", &url, fill, None).await;
    let raw = pool(&url, None).await;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    for name in [
        "recordings_org_state",
        "recordings_org_task",
        "tasks_org_state",
    ] {
        let sql = indexes.iter().find(|s| s.contains(name)).unwrap();
        assert!(sql.contains("(org, source, "), "{sql}");
    }
    let fk: Vec<String> =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list('tasks')")
            .fetch_all(&raw)
            .await
            .unwrap();
    assert_eq!(fk, ["orgs"], "the org reference survived the rebuild");
    raw.close().await;
    v.close().await;
}

/// The default schema, beside foreign tables in `public` whose primary key and index names are
/// the ones 0007 drops and re-creates: only wxvault's are touched.
#[tokio::test]
async fn postgres_rows_survive_the_upgrade_to_source_keys_in_the_default_schema() {
    let Some(pg) = TempPostgres::create().await else {
        return;
    };
    let admin = pool(pg.url(), None).await;
    for sql in [
        "CREATE SCHEMA wxvault",
        "CREATE TABLE public.tasks (id TEXT PRIMARY KEY, state TEXT)",
        "CREATE INDEX tasks_org_state ON public.tasks (state)",
        "CREATE TABLE public.recordings (id TEXT PRIMARY KEY, task TEXT)",
        "CREATE INDEX recordings_org_task ON public.recordings (task)",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    let fill = pool(pg.url(), Some("wxvault")).await;
    let v = fill_upgrade_and_check("postgres wxvault", "postgres", pg.url(), fill, None).await;
    assert_eq!(v.schema(), Some("wxvault"));
    v.close().await;

    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname::text || ' ' || indexname::text || ' ' || indexdef FROM pg_indexes \
         WHERE tablename IN ('tasks', 'recordings') ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    let defs = defs.join("\n");
    for expect in [
        "public recordings_org_task CREATE INDEX recordings_org_task ON public.recordings USING btree (task)",
        "public recordings_pkey CREATE UNIQUE INDEX recordings_pkey ON public.recordings USING btree (id)",
        "public tasks_org_state CREATE INDEX tasks_org_state ON public.tasks USING btree (state)",
        "public tasks_pkey CREATE UNIQUE INDEX tasks_pkey ON public.tasks USING btree (id)",
        "wxvault recordings_org_state CREATE INDEX recordings_org_state ON wxvault.recordings USING btree (org, source, state)",
        "wxvault recordings_org_task CREATE INDEX recordings_org_task ON wxvault.recordings USING btree (org, source, task_id)",
        "wxvault recordings_pkey CREATE UNIQUE INDEX recordings_pkey ON wxvault.recordings USING btree (org, source, recording_id)",
        "wxvault tasks_org_state CREATE INDEX tasks_org_state ON wxvault.tasks USING btree (org, source, state)",
        "wxvault tasks_pkey CREATE UNIQUE INDEX tasks_pkey ON wxvault.tasks USING btree (org, source, task_id)",
    ] {
        assert!(defs.contains(expect), "{expect}\nnot in\n{defs}");
    }
    admin.close().await;
}

/// A deployment from before the schema existed: its tables are in `public` and upgraded there.
#[tokio::test]
async fn postgres_rows_survive_the_upgrade_to_source_keys_in_public() {
    let Some(pg) = TempPostgres::create().await else {
        return;
    };
    let fill = pool(pg.url(), Some("public")).await;
    let v = fill_upgrade_and_check("postgres public", "postgres", pg.url(), fill, None).await;
    assert_eq!(v.schema(), Some("public"), "the legacy layout is kept");
    v.close().await;
}
