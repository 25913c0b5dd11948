use vault::testing::random_keyring;
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
    assert!(msg.contains("postgres://wx:***@127.0.0.1:1/db"), "{msg}");
    assert!(msg.contains("check [database] url"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!format!("{err:?}").contains("hunter2"));
}
