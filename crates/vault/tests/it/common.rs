use std::path::PathBuf;

use secrecy::SecretString;
use sqlx::AnyPool;
use vault::testing::{TempPostgres, random_keyring};
use vault::{Keyring, NewOrg, TokenUpdate, Vault};

/// One backend under test. Field order matters: the vault's pool closes before the
/// PostgreSQL database is dropped.
pub struct TestDb {
    pub vault: Vault,
    pub url: String,
    pub keyring: Keyring,
    /// The SQLite file, for raw-byte checks.
    pub sqlite_path: Option<PathBuf>,
    _pg: Option<TempPostgres>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn name(&self) -> &'static str {
        self.vault.backend()
    }

    /// A second, raw connection pool for poking at rows behind the vault's back.
    /// On PostgreSQL it looks in wxvault's schema first, where the vault keeps its tables.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        let postgres = self.name() == "postgres";
        sqlx::any::AnyPoolOptions::new()
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if postgres {
                        sqlx::Executor::execute(
                            &mut *conn,
                            format!("SET search_path TO {}, public", vault::DEFAULT_PG_SCHEMA)
                                .as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&self.url)
            .await
            .expect("raw pool")
    }

    /// Reopens the same database with another keyring.
    pub async fn reopen(&self, keyring: Keyring) -> Vault {
        Vault::open(&self.url, keyring).await.expect("reopen")
    }
}

/// SQLite always; PostgreSQL when reachable (mandatory with WXVAULT_REQUIRE_PG).
pub async fn backends() -> Vec<TestDb> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("state.db");
    let url = format!("sqlite://{}", path.display());
    let keyring = random_keyring();
    out.push(TestDb {
        vault: Vault::open(&url, keyring.clone())
            .await
            .expect("open sqlite"),
        url,
        keyring,
        sqlite_path: Some(path),
        _pg: None,
        _dir: Some(dir),
    });
    if let Some(pg) = TempPostgres::create().await {
        let keyring = random_keyring();
        let url = pg.url().to_string();
        out.push(TestDb {
            vault: Vault::open(&url, keyring.clone())
                .await
                .expect("open postgres"),
            url,
            keyring,
            sqlite_path: None,
            _pg: Some(pg),
            _dir: None,
        });
    }
    out
}

pub const CLIENT_SECRET: &str = "cs-PLAINTEXT-client-secret-0001";
pub const ACCESS: &str = "at-PLAINTEXT-access-token-0001";
pub const REFRESH: &str = "rt-PLAINTEXT-refresh-token-0001";

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

pub fn new_org(name: &str, org_id: &str) -> NewOrg {
    NewOrg {
        name: name.into(),
        org_id: org_id.into(),
        region: "us1".into(),
        client_id: format!("client-{name}"),
        client_secret: secret(CLIENT_SECRET),
        client_auth: "form".into(),
        sources: vec!["wxcc".into()],
        tokens: TokenUpdate {
            access_token: Some(secret(ACCESS)),
            access_expires_at_ms: Some(1_000),
            refresh_token: Some(secret(REFRESH)),
            refresh_expires_at_ms: Some(2_000),
            scopes: Some("cjp:config_read".into()),
            refreshed_at_ms: Some(500),
        },
    }
}

/// An org named `name` with an org id derived from it.
pub async fn org(v: &Vault, name: &str) -> vault::Org {
    v.add_org(new_org(
        name,
        &format!("00000000-0000-4000-8000-{name:0>12}"),
    ))
    .await
    .unwrap()
}

/// A task to upsert.
pub fn task(id: &str, created: i64, capture: Option<bool>) -> vault::TaskUpsert {
    vault::TaskUpsert {
        task_id: id.into(),
        created_ms: created,
        capture_requested: capture,
        attributes_json: format!(r#"{{"id":"{id}","v":1}}"#),
    }
}

/// A recording of `task` (created at `created`) to upsert.
pub fn rec_at(id: &str, task: &str, created: i64) -> vault::RecordingUpsert {
    vault::RecordingUpsert {
        recording_id: id.into(),
        task_id: task.into(),
        task_created_ms: created,
        file_name: Some(format!("{id}.wav")),
        attributes_json: format!(r#"{{"id":"{id}"}}"#),
    }
}
