//! The connect web app's persistence on both backends: invites, pending OAuth authorizations,
//! sessions and the operator password.

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use vault::{
    CONNECT_SESSIONS_PER_INVITE, InviteStatus, Keyring, NewInvite, NewPendingAuth,
    PENDING_AUTHS_PER_INVITE, RotationReport, Vault, VaultError, add_key_version, hash_password,
    init_key_file, retire_key_versions, verify_password,
};

use crate::common::{TestDb, backends, secret};

/// A fixed "now" (2023-11-14); every call gets its clock from the test.
const NOW: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

const STATE: &str = "state-PLAINTEXT-0123456789abcdef0123456789abcdef";
const BROWSER: &str = "browser-PLAINTEXT-cookie-0123456789abcdef01234";
const OTHER_BROWSER: &str = "browser-PLAINTEXT-cookie-attacker-0000000000";
const VERIFIER: &str = "verifier-PLAINTEXT-pkce-0123456789abcdef0123456789abcdef";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn new_invite(org: &str, ttl_ms: i64) -> NewInvite {
    NewInvite {
        org_name: org.into(),
        sources: vec!["wxcc".into()],
        created_by: "operator-ann".into(),
        ttl_ms,
        client_id: None,
        region: None,
    }
}

fn pending(state: &str, browser: &str, ttl_ms: i64) -> NewPendingAuth {
    NewPendingAuth {
        state: secret(state),
        browser_session: secret(browser),
        invite_id: None,
        org_name: "acme".into(),
        client_id: "C-integration-1".into(),
        region: Some("eu1".into()),
        redirect_uri: "https://vault.example.com/connect/callback".into(),
        code_verifier: secret(VERIFIER),
        scopes: vec!["cjp:config_read".into(), "spark:people_read".into()],
        ttl_ms,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that none of `secrets` is stored in plaintext in `tables`, and that `marker` (a
/// non-secret value of the same rows) is, so the check is not vacuous. PostgreSQL: whole rows
/// rendered as text. SQLite: the raw database file and its WAL, after closing the vault.
async fn assert_not_stored(db: &TestDb, tables: &[&str], marker: &str, secrets: &[&str]) {
    let b = db.name();
    if b == "postgres" {
        let raw = db.raw().await;
        let mut all = String::new();
        for table in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT CAST({table} AS TEXT) FROM {table}"))
                    .fetch_all(&raw)
                    .await
                    .unwrap();
            all.extend(rows);
        }
        raw.close().await;
        assert!(all.contains(marker), "non-vacuous: {all}");
        for s in secrets {
            assert!(!all.contains(s), "{s} in a PostgreSQL row: {all}");
        }
    }
    if let Some(path) = &db.sqlite_path {
        db.vault.close().await;
        let mut bytes = std::fs::read(path).unwrap();
        for ext in ["-wal", "-journal"] {
            if let Ok(more) = std::fs::read(format!("{}{ext}", path.display())) {
                bytes.extend(more);
            }
        }
        assert!(contains(&bytes, marker.as_bytes()), "non-vacuous: {marker}");
        for s in secrets {
            assert!(!contains(&bytes, s.as_bytes()), "{s} in the SQLite file");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invite_token_is_shown_once_and_only_its_hash_is_stored() {
    for db in backends().await {
        let b = db.name();
        let mut new = new_invite("acme-invited", 7 * 24 * 60 * MINUTE);
        new.client_id = Some("C-per-invite".into());
        new.region = Some(" eu2 ".into());
        let issued = db.vault.create_invite(new, NOW).await.unwrap();
        let token = issued.token.expose_secret().to_string();
        assert_eq!(token.len(), 43, "{b}: 32 bytes base64url without padding");
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{b}: url-safe {token}"
        );
        let inv = &issued.invite;
        assert_eq!(inv.org_name, "acme-invited");
        assert_eq!(inv.sources, vec!["wxcc".to_string()]);
        assert_eq!(inv.created_by, "operator-ann");
        assert_eq!(inv.client_id.as_deref(), Some("C-per-invite"));
        assert_eq!(inv.region.as_deref(), Some("eu2"), "{b}: trimmed");
        assert_eq!(inv.created_at_ms, NOW);
        assert_eq!(inv.expires_at_ms, NOW + 7 * 24 * 60 * MINUTE);
        assert_eq!(inv.used_at_ms, None);
        assert_eq!(inv.status, InviteStatus::Open);

        // Nothing prints or serializes the token.
        let shown = format!(
            "{issued:?} {}",
            serde_json::to_string(&issued.invite).unwrap()
        );
        assert!(!shown.contains(&token), "{b}: {shown}");

        // Found by the token, not by anything else.
        let found = db.vault.invite_by_token(&token, NOW + 1).await.unwrap();
        assert_eq!(found.map(|i| i.id), Some(inv.id), "{b}");
        assert!(
            db.vault
                .invite_by_token(&sha256_hex(&token), NOW + 1)
                .await
                .unwrap()
                .is_none(),
            "{b}: the stored hash is not a token"
        );
        assert!(
            db.vault
                .invite_by_token("", NOW + 1)
                .await
                .unwrap()
                .is_none()
        );

        // And by its id, with the status as of the time asked.
        let by_id = db
            .vault
            .invite_by_id(inv.id, NOW + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (by_id.id, by_id.status),
            (inv.id, InviteStatus::Open),
            "{b}"
        );
        let later = NOW + 7 * 24 * 60 * MINUTE;
        let by_id = db.vault.invite_by_id(inv.id, later).await.unwrap().unwrap();
        assert_eq!(by_id.status, InviteStatus::Expired, "{b}");
        assert!(
            db.vault.invite_by_id(-1, NOW).await.unwrap().is_none(),
            "{b}"
        );

        // Another invite gets another token.
        let other = db
            .vault
            .create_invite(new_invite("other", MINUTE), NOW)
            .await
            .unwrap();
        assert_ne!(other.token.expose_secret(), token, "{b}");

        // The row holds SHA-256(token), never the token.
        let raw = db.raw().await;
        let row = sqlx::query("SELECT token_hash FROM invites WHERE id = $1")
            .bind(inv.id)
            .fetch_one(&raw)
            .await
            .unwrap();
        let stored: String = row.try_get(0).unwrap();
        assert_eq!(stored, sha256_hex(&token), "{b}");
        raw.close().await;
        assert_not_stored(&db, &["invites"], "acme-invited", &[&token]).await;
    }
}

#[tokio::test]
async fn expired_used_and_revoked_invites_are_reported_as_such() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let issued = v
            .create_invite(new_invite("acme", 10 * MINUTE), NOW)
            .await
            .unwrap();
        let token = issued.token.expose_secret().to_string();
        let id = issued.invite.id;
        let status = |now| {
            let token = token.clone();
            async move {
                v.invite_by_token(&token, now)
                    .await
                    .unwrap()
                    .unwrap()
                    .status
            }
        };
        assert_eq!(
            status(NOW + 10 * MINUTE - 1).await,
            InviteStatus::Open,
            "{b}"
        );
        assert_eq!(
            status(NOW + 10 * MINUTE).await,
            InviteStatus::Expired,
            "{b}"
        );

        // Consuming after expiry is refused and changes nothing.
        let err = v.consume_invite(id, NOW + 10 * MINUTE).await.unwrap_err();
        assert!(
            matches!(&err, VaultError::Invalid(m) if m == "invite already used or expired"),
            "{b}: {err:?}"
        );
        assert!(!err.to_string().contains(&token));
        assert_eq!(status(NOW + MINUTE).await, InviteStatus::Open, "{b}");

        // Consumed once; then used, whatever the clock says, and never again.
        v.consume_invite(id, NOW + MINUTE).await.unwrap();
        let used = v
            .invite_by_token(&token, NOW + 2 * MINUTE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.status, InviteStatus::Used, "{b}");
        assert_eq!(used.used_at_ms, Some(NOW + MINUTE), "{b}");
        assert_eq!(status(NOW + 20 * MINUTE).await, InviteStatus::Used, "{b}");
        assert!(matches!(
            v.consume_invite(id, NOW + 2 * MINUTE).await,
            Err(VaultError::Invalid(_))
        ));
        // A used invite cannot be revoked.
        assert!(
            matches!(v.revoke_invite(id).await, Err(VaultError::Invalid(_))),
            "{b}"
        );

        // Revoked: reported, not consumable, revoking again is harmless.
        let r = v
            .create_invite(new_invite("revoked-co", 10 * MINUTE), NOW)
            .await
            .unwrap();
        v.revoke_invite(r.invite.id).await.unwrap();
        v.revoke_invite(r.invite.id).await.unwrap();
        let got = v
            .invite_by_token(r.token.expose_secret(), NOW + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, InviteStatus::Revoked, "{b}");
        assert!(matches!(
            v.consume_invite(r.invite.id, NOW + 1).await,
            Err(VaultError::Invalid(_))
        ));
        assert!(matches!(
            v.revoke_invite(9_999_999).await,
            Err(VaultError::NotFound(_))
        ));
        assert!(matches!(
            v.consume_invite(9_999_999, NOW).await,
            Err(VaultError::Invalid(_))
        ));

        // The listing computes status against the system clock: one invite created "now" with
        // a day to live is open, the ones from 2023 are used / revoked / expired.
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        v.create_invite(new_invite("fresh", 24 * 60 * MINUTE), wall_now)
            .await
            .unwrap();
        v.create_invite(new_invite("stale", MINUTE), NOW)
            .await
            .unwrap();
        let listed: Vec<(String, InviteStatus)> = v
            .invites()
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.org_name, i.status))
            .collect();
        assert_eq!(listed.len(), 4, "{b}: {listed:?}");
        assert_eq!(listed[0], ("fresh".into(), InviteStatus::Open), "{b}");
        for (name, want) in [
            ("acme", InviteStatus::Used),
            ("revoked-co", InviteStatus::Revoked),
            ("stale", InviteStatus::Expired),
        ] {
            assert!(listed.contains(&(name.into(), want)), "{b}: {listed:?}");
        }
        let json = serde_json::to_string(&v.invites().await.unwrap()).unwrap();
        assert!(json.contains("\"status\":\"revoked\""), "{json}");

        // Refused inputs.
        for bad in [
            new_invite("", MINUTE),
            new_invite("x", 0),
            new_invite("x", -5),
        ] {
            assert!(matches!(
                v.create_invite(bad, NOW).await,
                Err(VaultError::Invalid(_))
            ));
        }
        let mut no_sources = new_invite("x", MINUTE);
        no_sources.sources.clear();
        assert!(matches!(
            v.create_invite(no_sources, NOW).await,
            Err(VaultError::Invalid(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_is_single_use_under_concurrent_calls() {
    for db in backends().await {
        let b = db.name();
        for round in 0..8 {
            let issued = db
                .vault
                .create_invite(new_invite(&format!("race-{round}"), MINUTE), NOW)
                .await
                .unwrap();
            let id = issued.invite.id;
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let v = db.vault.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        v.consume_invite(id, NOW + 1).await
                    })
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) => ok += 1,
                    Err(VaultError::Invalid(_)) => {}
                    Err(e) => panic!("{b}: unexpected {e:?}"),
                }
            }
            assert_eq!(ok, 1, "{b} round {round}: exactly one consume wins");
            let got = db
                .vault
                .invite_by_token(issued.token.expose_secret(), NOW + 2)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.status, InviteStatus::Used, "{b}");
        }
    }
}

#[tokio::test]
async fn a_released_invite_can_be_used_again() {
    for db in backends().await {
        let b = db.name();
        let issued = db
            .vault
            .create_invite(new_invite("released", MINUTE), NOW)
            .await
            .unwrap();
        let id = issued.invite.id;
        db.vault.consume_invite(id, NOW + 1).await.unwrap();
        assert!(db.vault.consume_invite(id, NOW + 2).await.is_err(), "{b}");
        db.vault.release_invite(id).await.unwrap();
        let got = db.vault.invite_by_id(id, NOW + 3).await.unwrap().unwrap();
        assert_eq!(got.status, InviteStatus::Open, "{b}");
        assert_eq!(got.used_at_ms, None, "{b}");
        db.vault.consume_invite(id, NOW + 4).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Pending OAuth authorizations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pending_auth_is_taken_once_only_by_its_browser_and_its_verifier_is_sealed() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let invite = v
            .create_invite(new_invite("acme", MINUTE), NOW)
            .await
            .unwrap();
        let mut p = pending(STATE, BROWSER, 10 * MINUTE);
        p.invite_id = Some(invite.invite.id);
        let shown = format!("{p:?}");
        for s in [STATE, BROWSER, VERIFIER] {
            assert!(!shown.contains(s), "{b}: NewPendingAuth Debug shows {s}");
        }
        v.put_pending_auth(p, NOW).await.unwrap();

        // The same state twice is refused (states must be fresh), without echoing it.
        let err = v
            .put_pending_auth(pending(STATE, BROWSER, MINUTE), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::Conflict(_)), "{b}: {err:?}");
        assert!(!err.to_string().contains(STATE), "{err}");

        // Stored: hashes and a sealed verifier only.
        let raw = db.raw().await;
        let row = sqlx::query(
            "SELECT state_hash, browser_session_hash, code_verifier_enc FROM pending_auths",
        )
        .fetch_one(&raw)
        .await
        .unwrap();
        assert_eq!(row.try_get::<String, _>(0).unwrap(), sha256_hex(STATE));
        assert_eq!(row.try_get::<String, _>(1).unwrap(), sha256_hex(BROWSER));
        let sealed: String = row.try_get(2).unwrap();
        assert!(sealed.starts_with("v1.1."), "{b}: {sealed}");
        assert!(!sealed.contains("PLAINTEXT"), "{b}");
        raw.close().await;

        // Another browser presenting the state gets nothing, and does not burn it.
        assert!(
            v.take_pending_auth(STATE, OTHER_BROWSER, NOW + 1)
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        // Neither do a wrong state nor the browser session alone.
        assert!(
            v.take_pending_auth("forged-state", BROWSER, NOW + 1)
                .await
                .unwrap()
                .is_none()
        );

        // The browser that started it finishes it, with everything it stored.
        let got = v
            .take_pending_auth(STATE, BROWSER, NOW + MINUTE)
            .await
            .unwrap()
            .expect("the legitimate browser takes it");
        assert_eq!(got.code_verifier.expose_secret(), VERIFIER, "{b}");
        assert_eq!(got.invite_id, Some(invite.invite.id));
        assert_eq!(got.org_name, "acme");
        assert_eq!(got.client_id, "C-integration-1");
        assert_eq!(got.region.as_deref(), Some("eu1"));
        assert_eq!(
            got.redirect_uri,
            "https://vault.example.com/connect/callback"
        );
        assert_eq!(
            got.scopes,
            vec!["cjp:config_read".to_string(), "spark:people_read".into()]
        );
        assert_eq!(got.created_at_ms, NOW);
        assert!(!format!("{got:?}").contains(VERIFIER), "{b}: Debug redacts");

        // Replay: gone, for everyone, for good.
        for browser in [BROWSER, OTHER_BROWSER] {
            assert!(
                v.take_pending_auth(STATE, browser, NOW + MINUTE)
                    .await
                    .unwrap()
                    .is_none(),
                "{b}: replay"
            );
        }
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_auths")
            .fetch_one(&db.raw().await)
            .await
            .unwrap();
        assert_eq!(left, 0, "{b}");

        // A second flow left in the table for the raw scan.
        v.put_pending_auth(pending(STATE, BROWSER, MINUTE), NOW)
            .await
            .unwrap();
        assert_not_stored(
            &db,
            &["pending_auths"],
            "vault.example.com/connect/callback",
            &[STATE, BROWSER, VERIFIER],
        )
        .await;
    }
}

#[tokio::test]
async fn expired_pending_auth_is_none_and_purged() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        v.put_pending_auth(pending(STATE, BROWSER, 10 * MINUTE), NOW)
            .await
            .unwrap();
        v.put_pending_auth(pending("state-live", BROWSER, 60 * MINUTE), NOW)
            .await
            .unwrap();
        let expiry = NOW + 10 * MINUTE;
        assert!(
            v.take_pending_auth(STATE, BROWSER, expiry)
                .await
                .unwrap()
                .is_none(),
            "{b}: expired at its expiry instant"
        );
        assert!(
            v.take_pending_auth(STATE, BROWSER, expiry + 5 * MINUTE)
                .await
                .unwrap()
                .is_none(),
            "{b}: still expired"
        );
        // An operator session expiring at the same time is purged with it.
        v.create_session("operator", "ann", 10 * MINUTE, NOW)
            .await
            .unwrap();
        assert_eq!(v.purge_expired(expiry - 1).await.unwrap(), 0, "{b}");
        assert_eq!(v.purge_expired(expiry).await.unwrap(), 2, "{b}");
        assert_eq!(v.purge_expired(expiry).await.unwrap(), 0, "{b}");
        // The live one survived the purge and still works.
        let live = v
            .take_pending_auth("state-live", BROWSER, expiry)
            .await
            .unwrap();
        assert!(live.is_some(), "{b}");
    }
}

/// Rows of `table` matching `filter`, counted behind the vault's back.
async fn count(db: &TestDb, table: &str, filter: &str) -> i64 {
    let raw = db.raw().await;
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {filter}"))
        .fetch_one(&raw)
        .await
        .unwrap();
    raw.close().await;
    n
}

#[tokio::test]
async fn one_invite_cannot_pile_up_connect_sessions_and_the_newest_always_works() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let mut issued = Vec::new();
        // Fifteen a millisecond apart, then a full set at one instant: the oldest go first,
        // and eviction never takes the session being issued, even when the clock stands still.
        for i in 0..CONNECT_SESSIONS_PER_INVITE + 15 {
            let at = NOW + i64::try_from(i.min(15)).unwrap();
            issued.push(
                v.create_session("connect", "7", 10 * MINUTE, at)
                    .await
                    .unwrap(),
            );
        }
        let other = v
            .create_session("connect", "8", 10 * MINUTE, NOW)
            .await
            .unwrap();
        let operator = v
            .create_session("operator", "7", 10 * MINUTE, NOW)
            .await
            .unwrap();
        assert_eq!(
            count(&db, "sessions", "kind = 'connect' AND subject = '7'").await,
            CONNECT_SESSIONS_PER_INVITE as i64,
            "{b}"
        );
        // The session just issued is always among those kept.
        let newest = issued.last().unwrap();
        assert!(
            v.session(newest.id.expose_secret(), NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        for (i, s) in issued.iter().enumerate() {
            let live = v
                .session(s.id.expose_secret(), NOW)
                .await
                .unwrap()
                .is_some();
            assert_eq!(live, i >= 15, "{b}: session {i}");
        }
        let first = issued.first().unwrap();
        assert!(
            v.session(first.id.expose_secret(), NOW)
                .await
                .unwrap()
                .is_none(),
            "{b}: evicted"
        );
        // Other invites and operator sessions are untouched.
        assert!(
            v.session(other.id.expose_secret(), NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
        assert!(
            v.session(operator.id.expose_secret(), NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}"
        );
    }
}

#[tokio::test]
async fn one_invite_cannot_pile_up_pending_authorizations() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let invite = v
            .create_invite(new_invite("acme", 60 * MINUTE), NOW)
            .await
            .unwrap();
        let other = v
            .create_invite(new_invite("globex", 60 * MINUTE), NOW)
            .await
            .unwrap();
        let with_invite = |state: String, id: i64| NewPendingAuth {
            invite_id: Some(id),
            ..pending(&state, BROWSER, 10 * MINUTE)
        };
        for i in 0..PENDING_AUTHS_PER_INVITE + 5 {
            v.put_pending_auth(with_invite(format!("state-{i}"), invite.invite.id), NOW)
                .await
                .unwrap();
        }
        v.put_pending_auth(with_invite("state-other".into(), other.invite.id), NOW)
            .await
            .unwrap();
        let id = invite.invite.id;
        assert_eq!(
            count(&db, "pending_auths", &format!("invite_id = {id}")).await,
            PENDING_AUTHS_PER_INVITE as i64,
            "{b}"
        );
        let last = format!("state-{}", PENDING_AUTHS_PER_INVITE + 4);
        assert!(
            v.take_pending_auth(&last, BROWSER, NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}: newest kept"
        );
        assert!(
            v.take_pending_auth("state-0", BROWSER, NOW)
                .await
                .unwrap()
                .is_none(),
            "{b}: oldest evicted"
        );
        assert!(
            v.take_pending_auth("state-other", BROWSER, NOW)
                .await
                .unwrap()
                .is_some(),
            "{b}: other invite untouched"
        );
    }
}

#[tokio::test]
async fn pending_auth_verifier_is_bound_to_its_row_and_inputs_are_checked() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        v.put_pending_auth(pending("state-a", BROWSER, MINUTE), NOW)
            .await
            .unwrap();
        let mut other = pending("state-b", BROWSER, MINUTE);
        other.code_verifier = secret("verifier-b-PLAINTEXT-other");
        v.put_pending_auth(other, NOW).await.unwrap();

        // Copy a's sealed verifier into b's row: the AAD names a's state, so it must not open.
        let raw = db.raw().await;
        sqlx::query(
            "UPDATE pending_auths SET code_verifier_enc = \
             (SELECT code_verifier_enc FROM pending_auths WHERE state_hash = $1) \
             WHERE state_hash = $2",
        )
        .bind(sha256_hex("state-a"))
        .bind(sha256_hex("state-b"))
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
        let err = v
            .take_pending_auth("state-b", BROWSER, NOW + 1)
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::Decrypt { .. }), "{b}: {err:?}");
        assert!(!err.to_string().contains("PLAINTEXT"), "{err}");
        let a = v
            .take_pending_auth("state-a", BROWSER, NOW + 1)
            .await
            .unwrap();
        assert_eq!(a.unwrap().code_verifier.expose_secret(), VERIFIER, "{b}");

        // Empty secrets and bad lifetimes are refused.
        for p in [
            pending("", BROWSER, MINUTE),
            pending("s1", "", MINUTE),
            pending("s2", BROWSER, 0),
            NewPendingAuth {
                code_verifier: secret(""),
                ..pending("s3", BROWSER, MINUTE)
            },
        ] {
            assert!(
                matches!(
                    v.put_pending_auth(p, NOW).await,
                    Err(VaultError::Invalid(_))
                ),
                "{b}"
            );
        }
    }
}

#[tokio::test]
async fn pending_auth_verifiers_rotate_with_the_master_key() {
    for db in backends().await {
        let b = db.name();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("master.key");
        assert!(init_key_file(&key_file).unwrap());
        let old = db.reopen(Keyring::load(None, &key_file).unwrap()).await;
        old.put_pending_auth(pending(STATE, BROWSER, MINUTE), NOW)
            .await
            .unwrap();
        assert_eq!(
            old.key_versions_in_use().await.unwrap(),
            [(1, 1)].into_iter().collect(),
            "{b}: pending verifiers count as in use"
        );

        assert_eq!(add_key_version(&key_file).unwrap(), 2);
        let both = db.reopen(Keyring::load(None, &key_file).unwrap()).await;
        assert_eq!(
            both.rotate_keys().await.unwrap(),
            RotationReport {
                re_encrypted: 1,
                already_current: 0,
                to_version: 2
            },
            "{b}"
        );
        assert_eq!(
            both.key_versions_in_use().await.unwrap(),
            [(2, 1)].into_iter().collect(),
            "{b}"
        );
        retire_key_versions(&key_file, 2).unwrap();
        let new_only = db.reopen(Keyring::load(None, &key_file).unwrap()).await;
        let got = new_only
            .take_pending_auth(STATE, BROWSER, NOW + 1)
            .await
            .unwrap()
            .expect("still pending after the rotation");
        assert_eq!(got.code_verifier.expose_secret(), VERIFIER, "{b}");
        for v in [&old, &both, &new_only] {
            v.close().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_are_looked_up_by_hash_expire_and_end() {
    for db in backends().await {
        let b = db.name();
        let v = &db.vault;
        let s = v
            .create_session("operator", "ann", 30 * MINUTE, NOW)
            .await
            .unwrap();
        let (id, csrf) = (
            s.id.expose_secret().to_string(),
            s.csrf.expose_secret().to_string(),
        );
        assert_eq!(id.len(), 43, "{b}");
        assert_ne!(id, csrf, "{b}");
        assert_eq!(s.expires_at_ms, NOW + 30 * MINUTE);
        let shown = format!("{s:?}");
        assert!(!shown.contains(&id) && !shown.contains(&csrf), "{shown}");

        let got = v.session(&id, NOW + 1).await.unwrap().expect("live");
        assert_eq!(got.kind, "operator");
        assert_eq!(got.subject, "ann");
        assert_eq!(got.expires_at_ms, NOW + 30 * MINUTE);
        assert_eq!(got.csrf_hash, sha256_hex(&csrf), "{b}");

        // CSRF: only the session's own token matches.
        assert!(Vault::csrf_matches(&got, &csrf), "{b}");
        for wrong in ["", id.as_str(), got.csrf_hash.as_str(), &csrf[..42]] {
            assert!(!Vault::csrf_matches(&got, wrong), "{b}: {wrong:?}");
        }

        // Not found by anything but the id.
        assert!(v.session(&csrf, NOW + 1).await.unwrap().is_none());
        assert!(
            v.session(&sha256_hex(&id), NOW + 1)
                .await
                .unwrap()
                .is_none()
        );
        // Expired at its expiry instant.
        assert!(
            v.session(&id, NOW + 30 * MINUTE - 1)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            v.session(&id, NOW + 30 * MINUTE).await.unwrap().is_none(),
            "{b}: expired"
        );

        // A connect session lives independently; ending one leaves the other.
        let c = v
            .create_session("connect", "invite:7", 10 * MINUTE, NOW)
            .await
            .unwrap();
        let cid = c.id.expose_secret().to_string();
        assert_eq!(v.session(&cid, NOW).await.unwrap().unwrap().kind, "connect");
        v.end_session(&id).await.unwrap();
        v.end_session(&id).await.unwrap();
        assert!(v.session(&id, NOW + 1).await.unwrap().is_none(), "{b}");
        assert!(v.session(&cid, NOW + 1).await.unwrap().is_some(), "{b}");

        // Refused inputs.
        assert!(matches!(
            v.create_session("admin", "ann", MINUTE, NOW).await,
            Err(VaultError::Invalid(_))
        ));
        assert!(matches!(
            v.create_session("operator", "ann", 0, NOW).await,
            Err(VaultError::Invalid(_))
        ));

        let csrf_c = c.csrf.expose_secret().to_string();
        assert_not_stored(&db, &["sessions"], "invite:7", &[&cid, &csrf_c]).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Operator password
// ---------------------------------------------------------------------------------------------

#[test]
fn password_hash_verifies_and_does_not_contain_the_password() {
    let pw = secret("correct horse battery staple");
    let phc = hash_password(&pw).unwrap();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(!phc.contains("correct horse"), "{phc}");
    assert!(verify_password(&pw, &phc));
    assert!(!verify_password(
        &secret("correct horse battery stapler"),
        &phc
    ));
    assert!(!verify_password(&secret(""), &phc));
    assert!(!verify_password(&pw, "not a phc string"));
    // A fresh salt every time.
    let again = hash_password(&pw).unwrap();
    assert_ne!(phc, again);
    assert!(verify_password(&pw, &again));
    let err = hash_password(&secret("")).unwrap_err();
    assert!(matches!(err, VaultError::Invalid(_)), "{err:?}");
}
