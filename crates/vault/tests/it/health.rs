//! `Vault::ping`, the database half of `/readyz`.

use crate::common::backends;

#[tokio::test]
async fn ping_answers_and_fails_when_the_schema_or_the_pool_is_gone() {
    for db in backends().await {
        db.vault.ping().await.unwrap();

        // The ping reads a wxvault table, so a database without wxvault's schema is not ready.
        let raw = db.raw().await;
        sqlx::query("ALTER TABLE key_state RENAME TO key_state_moved")
            .execute(&raw)
            .await
            .unwrap();
        let err = db.vault.ping().await.unwrap_err();
        assert!(
            err.to_string().contains("state database"),
            "{}: {err}",
            db.name()
        );
        assert!(
            !err.is_transient(),
            "{}: a missing table is not transient: {err}",
            db.name()
        );
        sqlx::query("ALTER TABLE key_state_moved RENAME TO key_state")
            .execute(&raw)
            .await
            .unwrap();
        db.vault.ping().await.unwrap();
        raw.close().await;

        db.vault.close().await;
        let err = db.vault.ping().await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{}: {err}", db.name());
    }
}
