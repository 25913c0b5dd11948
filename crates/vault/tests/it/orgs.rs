use secrecy::ExposeSecret as _;
use sqlx::Row as _;
use vault::testing::random_keyring;
use vault::{OrgStatus, TokenUpdate, VaultError};

use crate::common::{ACCESS, CLIENT_SECRET, REFRESH, backends, new_org, secret};

const ORG_A: &str = "7f3c1a52-0b55-4d3e-9a1f-0c8e9f6b1a01";
const ORG_B: &str = "7f3c1a52-0b55-4d3e-9a1f-0c8e9f6b1a02";

#[tokio::test]
async fn secrets_round_trip_and_never_stored_in_plaintext() {
    for db in backends().await {
        let b = db.name();
        let org = db.vault.add_org(new_org("acme", ORG_A)).await.unwrap();
        assert_eq!(org.name, "acme");
        assert_eq!(org.org_id, ORG_A);
        assert_eq!(org.status, OrgStatus::Active);
        assert_eq!(org.sources, vec!["wxcc".to_string()]);
        assert_eq!(org.access_expires_at_ms, Some(1_000));
        assert_eq!(org.refresh_expires_at_ms, Some(2_000));
        assert_eq!(org.last_refresh_at_ms, Some(500));
        assert_eq!(org.scopes.as_deref(), Some("cjp:config_read"));

        let s = db.vault.org_secrets(&org).await.unwrap();
        assert_eq!(s.client_secret.expose_secret(), CLIENT_SECRET, "{b}");
        assert_eq!(s.access_token.unwrap().expose_secret(), ACCESS, "{b}");
        assert_eq!(s.refresh_token.unwrap().expose_secret(), REFRESH, "{b}");

        // Nothing secret in Debug or JSON of the org, nor in the NewOrg's Debug.
        let shown = format!(
            "{org:?} {} {:?}",
            serde_json::to_string(&org).unwrap(),
            new_org("x", "y")
        );
        for plain in [CLIENT_SECRET, ACCESS, REFRESH] {
            assert!(!shown.contains(plain), "{b}: {shown}");
        }

        // Raw rows hold sealed values only.
        let raw = db.raw().await;
        let row = sqlx::query(
            "SELECT client_secret_enc, access_token_enc, refresh_token_enc FROM orgs WHERE id = $1",
        )
        .bind(org.id)
        .fetch_one(&raw)
        .await
        .unwrap();
        for col in 0..3 {
            let v: String = row.try_get(col).unwrap();
            assert!(v.starts_with("v1.1."), "{b}: sealed format, got {v}");
            for plain in [CLIENT_SECRET, ACCESS, REFRESH] {
                assert!(!v.contains(plain), "{b}");
            }
        }
        if b == "postgres" {
            // Whole rows as PostgreSQL renders them, every column included.
            let rows: Vec<String> = sqlx::query_scalar("SELECT CAST(orgs AS TEXT) FROM orgs")
                .fetch_all(&raw)
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert!(rows[0].contains(ORG_A), "non-vacuous: {}", rows[0]);
            for plain in [CLIENT_SECRET, ACCESS, REFRESH] {
                assert!(!rows[0].contains(plain), "{plain} in a PostgreSQL row");
            }
        }
        raw.close().await;

        if let Some(path) = &db.sqlite_path {
            db.vault.close().await;
            let mut bytes = std::fs::read(path).unwrap();
            for ext in ["-wal", "-journal"] {
                if let Ok(more) = std::fs::read(format!("{}{ext}", path.display())) {
                    bytes.extend(more);
                }
            }
            // Non-vacuous: the org's plain (non-secret) fields are in the file.
            assert!(
                contains(&bytes, ORG_A.as_bytes()),
                "org id should be stored in the file"
            );
            for plain in [CLIENT_SECRET, ACCESS, REFRESH] {
                assert!(
                    !contains(&bytes, plain.as_bytes()),
                    "{plain} found in the SQLite file"
                );
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn moved_or_tampered_ciphertexts_and_wrong_keys_fail() {
    for db in backends().await {
        let b = db.name();
        let a = db.vault.add_org(new_org("a", ORG_A)).await.unwrap();
        let mut nb = new_org("b", ORG_B);
        nb.client_secret = secret("other-secret-b");
        let org_b = db.vault.add_org(nb).await.unwrap();
        let raw = db.raw().await;

        // Copy org a's client secret into org b's row: AAD names org a, so it must fail.
        sqlx::query(
            "UPDATE orgs SET client_secret_enc = (SELECT client_secret_enc FROM orgs WHERE id = $1) WHERE id = $2",
        )
        .bind(a.id)
        .bind(org_b.id)
        .execute(&raw)
        .await
        .unwrap();
        let err = db.vault.org_secrets(&org_b).await.unwrap_err();
        assert!(
            matches!(err, VaultError::Decrypt { key_version: 1, .. }),
            "{b}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("org b client_secret") && msg.contains("wrong master key"),
            "{b}: {msg}"
        );
        assert!(!msg.contains(CLIENT_SECRET), "{b}");

        // Field swap inside one row: the access token sealed as refresh token fails.
        sqlx::query("UPDATE orgs SET refresh_token_enc = access_token_enc WHERE id = $1")
            .bind(a.id)
            .execute(&raw)
            .await
            .unwrap();
        let err = db.vault.org_secrets(&a).await.unwrap_err();
        assert!(
            err.to_string().contains("org a refresh_token"),
            "{b}: {err}"
        );

        // Restore a valid refresh token, then flip one byte of the ciphertext.
        db.vault
            .save_tokens(
                &a,
                &TokenUpdate {
                    refresh_token: Some(secret(REFRESH)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(db.vault.org_secrets(&a).await.is_ok(), "{b}: restored");
        let sealed: String = sqlx::query_scalar("SELECT client_secret_enc FROM orgs WHERE id = $1")
            .bind(a.id)
            .fetch_one(&raw)
            .await
            .unwrap();
        let mut chars: Vec<char> = sealed.chars().collect();
        let i = chars.len() - 5;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        sqlx::query("UPDATE orgs SET client_secret_enc = $1 WHERE id = $2")
            .bind(&tampered)
            .bind(a.id)
            .execute(&raw)
            .await
            .unwrap();
        assert!(
            matches!(
                db.vault.org_secrets(&a).await,
                Err(VaultError::Decrypt { .. })
            ),
            "{b}: tampered ciphertext must not open"
        );
        sqlx::query("UPDATE orgs SET client_secret_enc = $1 WHERE id = $2")
            .bind(&sealed)
            .bind(a.id)
            .execute(&raw)
            .await
            .unwrap();
        assert_eq!(
            db.vault
                .org_secrets(&a)
                .await
                .unwrap()
                .client_secret
                .expose_secret(),
            CLIENT_SECRET,
            "{b}"
        );
        raw.close().await;

        // Same database, different master key.
        let other = db.reopen(random_keyring()).await;
        let err = other.org_secrets(&a).await.unwrap_err();
        assert!(matches!(err, VaultError::Decrypt { .. }), "{b}: {err:?}");
        assert!(
            err.to_string()
                .contains("wrong master key? (key version 1)"),
            "{b}: {err}"
        );
        // The right key still works through a fresh handle.
        let same = db.reopen(db.keyring.clone()).await;
        assert!(same.org_secrets(&a).await.is_ok(), "{b}");
        other.close().await;
        same.close().await;
    }
}

#[tokio::test]
async fn org_names_and_ids_are_unique() {
    for db in backends().await {
        let b = db.name();
        db.vault.add_org(new_org("acme", ORG_A)).await.unwrap();
        let err = db.vault.add_org(new_org("acme", ORG_B)).await.unwrap_err();
        assert!(matches!(err, VaultError::Conflict(_)), "{b}: {err:?}");
        assert!(
            err.to_string().contains("org named acme already exists"),
            "{b}: {err}"
        );
        let err = db.vault.add_org(new_org("other", ORG_A)).await.unwrap_err();
        assert!(matches!(err, VaultError::Conflict(_)), "{b}: {err:?}");
        assert!(
            err.to_string().contains("already registered as acme"),
            "{b}: {err}"
        );

        let mut bad = new_org("bad", ORG_B);
        bad.client_auth = "jwt".into();
        assert!(
            matches!(db.vault.add_org(bad).await, Err(VaultError::Invalid(_))),
            "{b}"
        );

        db.vault.add_org(new_org("beta", ORG_B)).await.unwrap();
        let names: Vec<_> = db
            .vault
            .orgs()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["acme", "beta"], "{b}");
        assert!(db.vault.org_by_name("nope").await.unwrap().is_none(), "{b}");
        let acme = db.vault.org_by_name("acme").await.unwrap().unwrap();
        assert_eq!(
            db.vault.org_by_id(acme.id).await.unwrap().unwrap().name,
            "acme",
            "{b}"
        );
    }
}

#[tokio::test]
async fn save_tokens_keeps_what_is_not_given() {
    for db in backends().await {
        let b = db.name();
        let org = db.vault.add_org(new_org("acme", ORG_A)).await.unwrap();
        let update = TokenUpdate {
            access_token: Some(secret("at-second")),
            access_expires_at_ms: Some(10_000),
            refresh_token: None,
            refresh_expires_at_ms: None,
            scopes: None,
            refreshed_at_ms: Some(9_000),
        };
        let org2 = db.vault.save_tokens(&org, &update).await.unwrap();
        assert_eq!(org2.access_expires_at_ms, Some(10_000), "{b}");
        assert_eq!(org2.refresh_expires_at_ms, Some(2_000), "{b}: kept");
        assert_eq!(org2.scopes.as_deref(), Some("cjp:config_read"), "{b}: kept");
        assert_eq!(org2.last_refresh_at_ms, Some(9_000), "{b}");
        let s = db.vault.org_secrets(&org2).await.unwrap();
        assert_eq!(s.access_token.unwrap().expose_secret(), "at-second", "{b}");
        assert_eq!(
            s.refresh_token.unwrap().expose_secret(),
            REFRESH,
            "{b}: old refresh kept"
        );

        let update = TokenUpdate {
            access_token: Some(secret("at-third")),
            access_expires_at_ms: Some(20_000),
            refresh_token: Some(secret("rt-second")),
            refresh_expires_at_ms: Some(30_000),
            scopes: Some("cjp:config_read cjp:config_write".into()),
            refreshed_at_ms: Some(19_000),
        };
        let org3 = db.vault.save_tokens(&org2, &update).await.unwrap();
        assert_eq!(org3.refresh_expires_at_ms, Some(30_000), "{b}");
        assert_eq!(
            org3.scopes.as_deref(),
            Some("cjp:config_read cjp:config_write"),
            "{b}"
        );
        let s = db.vault.org_secrets(&org3).await.unwrap();
        assert_eq!(s.refresh_token.unwrap().expose_secret(), "rt-second", "{b}");
        assert_eq!(
            s.client_secret.expose_secret(),
            CLIENT_SECRET,
            "{b}: untouched"
        );

        // Status round trip.
        let why = "invalid_grant: refresh token revoked";
        db.vault
            .set_org_status(&org3, OrgStatus::NeedsReauth { reason: why.into() })
            .await
            .unwrap();
        let o = db.vault.org_by_name("acme").await.unwrap().unwrap();
        assert_eq!(
            o.status,
            OrgStatus::NeedsReauth { reason: why.into() },
            "{b}"
        );
        assert_eq!(
            serde_json::to_value(&o.status).unwrap(),
            serde_json::json!({"state": "needs_reauth", "reason": why})
        );
        db.vault
            .set_org_status(&o, OrgStatus::Active)
            .await
            .unwrap();
        assert_eq!(
            db.vault.org_by_name("acme").await.unwrap().unwrap().status,
            OrgStatus::Active
        );

        // An org without tokens yet.
        let mut bare = new_org("bare", ORG_B);
        bare.tokens = TokenUpdate::default();
        let bare = db.vault.add_org(bare).await.unwrap();
        let s = db.vault.org_secrets(&bare).await.unwrap();
        assert!(s.access_token.is_none() && s.refresh_token.is_none(), "{b}");

        // A vanished org is reported, not silently ignored.
        let mut ghost = bare.clone();
        ghost.id = 9_999;
        assert!(matches!(
            db.vault.save_tokens(&ghost, &TokenUpdate::default()).await,
            Err(VaultError::NotFound(_))
        ));
        assert!(matches!(
            db.vault.set_org_status(&ghost, OrgStatus::Active).await,
            Err(VaultError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn removing_an_org_deletes_its_secrets_and_ledger_but_not_other_orgs() {
    for db in crate::common::backends().await {
        let b = db.name();
        let v = &db.vault;
        let a = v
            .add_org(crate::common::new_org(
                "gone",
                "00000000-0000-4000-8000-0000000000a1",
            ))
            .await
            .unwrap();
        let keep = v
            .add_org(crate::common::new_org(
                "kept",
                "00000000-0000-4000-8000-0000000000a2",
            ))
            .await
            .unwrap();
        for o in [&a, &keep] {
            v.upsert_task(
                o,
                "wxcc",
                &vault::TaskUpsert {
                    task_id: "t".into(),
                    created_ms: 1,
                    capture_requested: Some(true),
                    attributes_json: "{}".into(),
                },
            )
            .await
            .unwrap();
            v.record_event(Some(o), "test", "event").await.unwrap();
        }
        v.remove_org(&a).await.unwrap();
        assert!(v.org_by_name("gone").await.unwrap().is_none(), "{b}");
        assert!(
            matches!(v.remove_org(&a).await, Err(vault::VaultError::NotFound(_))),
            "{b}"
        );
        assert_eq!(
            v.counts(&keep).await.unwrap().tasks,
            1,
            "{b}: the other org is untouched"
        );
        assert!(v.org_secrets(&keep).await.is_ok(), "{b}");
        assert_eq!(
            v.counts(&a).await.unwrap().tasks,
            0,
            "{b}: the removed org's ledger is gone"
        );
        let events = v.recent_events(None, 10).await.unwrap();
        assert!(events.len() >= 2, "{b}: events stay as the audit trail");
    }
}

#[tokio::test]
async fn a_rotated_client_secret_replaces_the_stored_one() {
    for db in crate::common::backends().await {
        let b = db.name();
        let v = &db.vault;
        let o = v
            .add_org(crate::common::new_org(
                "rot",
                "00000000-0000-4000-8000-0000000000b1",
            ))
            .await
            .unwrap();
        v.set_client_secret(&o, &vault::SecretString::from("the-new-secret".to_string()))
            .await
            .unwrap();
        let got = v.org_secrets(&o).await.unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&got.client_secret),
            "the-new-secret",
            "{b}"
        );
        v.remove_org(&o).await.unwrap();
        assert!(
            matches!(
                v.set_client_secret(&o, &vault::SecretString::from("x".to_string()))
                    .await,
                Err(vault::VaultError::NotFound(_))
            ),
            "{b}"
        );
    }
}
