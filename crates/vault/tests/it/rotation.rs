//! Master-key rotation on both backends: `add_key_version` → `rotate_keys` →
//! `key_versions_in_use` → `retire_key_versions`, and what an interrupted rotation leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use sqlx::Row as _;
use vault::testing::fail_rotation_after;
use vault::{
    Keyring, NewPendingAuth, Org, RotationReport, TokenUpdate, Vault, VaultError, add_key_version,
    generate_key_base64, init_key_file, retire_key_versions,
};

use crate::common::{TestDb, backends, new_org, secret};

/// What each org's secrets must read back as: (client secret, access token, refresh token).
type Expected = BTreeMap<String, (String, Option<String>, Option<String>)>;

/// Seven sealed values: orgs a and b with all three, c with a client secret only.
const VALUES: usize = 7;

struct Setup {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    /// Opened with the keyring of the original (bare, version 1) key file.
    old: Vault,
    /// The original key file's text (the version 1 key).
    old_key_text: String,
    expected: Expected,
}

async fn setup(db: &TestDb) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    assert!(init_key_file(&key_file).unwrap());
    let old = db.reopen(Keyring::load(None, &key_file).unwrap()).await;
    let old_key_text = std::fs::read_to_string(&key_file).unwrap();
    let mut expected = Expected::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let mut org = new_org(name, &format!("7f3c1a52-0b55-4d3e-9a1f-0c8e9f6b1b0{i}"));
        let cs = format!("cs-PLAINTEXT-{name}");
        org.client_secret = secret(&cs);
        let (at, rt) = if name == "c" {
            org.tokens = TokenUpdate::default();
            (None, None)
        } else {
            let (at, rt) = (
                format!("at-PLAINTEXT-{name}"),
                format!("rt-PLAINTEXT-{name}"),
            );
            org.tokens.access_token = Some(secret(&at));
            org.tokens.refresh_token = Some(secret(&rt));
            (Some(at), Some(rt))
        };
        old.add_org(org).await.unwrap();
        expected.insert(name.to_string(), (cs, at, rt));
    }
    Setup {
        _dir: dir,
        key_file,
        old,
        old_key_text,
        expected,
    }
}

async fn org(vault: &Vault, name: &str) -> Org {
    vault.org_by_name(name).await.unwrap().unwrap()
}

/// Every org's secrets open with `vault`'s keyring and equal `expected`.
async fn assert_secrets(vault: &Vault, expected: &Expected, ctx: &str) {
    let orgs = vault.orgs().await.unwrap();
    assert_eq!(orgs.len(), expected.len(), "{ctx}");
    for org in orgs {
        let s = vault
            .org_secrets(&org)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: org {}: {e}", org.name));
        let (cs, at, rt) = &expected[&org.name];
        assert_eq!(s.client_secret.expose_secret(), cs, "{ctx}");
        assert_eq!(
            s.access_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            *at,
            "{ctx}"
        );
        assert_eq!(
            s.refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            *rt,
            "{ctx}"
        );
    }
}

/// Every stored sealed value, read behind the vault's back, as (org name, value).
async fn raw_sealed(db: &TestDb) -> Vec<(String, String)> {
    let raw = db.raw().await;
    let rows = sqlx::query(
        "SELECT name, client_secret_enc, access_token_enc, refresh_token_enc FROM orgs ORDER BY id",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    raw.close().await;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).unwrap();
        for col in 1..4 {
            if let Some(v) = row.try_get::<Option<String>, _>(col).unwrap() {
                out.push((name.clone(), v));
            }
        }
    }
    assert_eq!(out.len(), VALUES, "non-vacuous");
    out
}

async fn assert_all_sealed_with(db: &TestDb, version: u32, ctx: &str) {
    let prefix = format!("v1.{version}.");
    for (name, v) in raw_sealed(db).await {
        assert!(v.starts_with(&prefix), "{ctx}: org {name} holds {v}");
    }
}

fn in_use(pairs: &[(u32, usize)]) -> BTreeMap<u32, usize> {
    pairs.iter().copied().collect()
}

fn load(path: &Path) -> Keyring {
    Keyring::load(None, path).unwrap()
}

#[tokio::test]
async fn rotation_re_seals_everything_and_afterwards_only_the_new_key_opens_it() {
    for db in backends().await {
        let b = db.name();
        let mut s = setup(&db).await;
        assert_eq!(
            s.old.key_versions_in_use().await.unwrap(),
            in_use(&[(1, 7)])
        );

        assert_eq!(add_key_version(&s.key_file).unwrap(), 2);
        let both = db.reopen(load(&s.key_file)).await;
        assert_eq!(both.keyring().versions(), vec![1, 2]);
        // Nothing changes by adding a key; new writes use it at once.
        assert_all_sealed_with(&db, 1, b).await;
        let update = TokenUpdate {
            access_token: Some(secret("at-PLAINTEXT-b-refreshed")),
            ..TokenUpdate::default()
        };
        both.save_tokens(&org(&both, "b").await, &update)
            .await
            .unwrap();
        s.expected.get_mut("b").unwrap().1 = Some("at-PLAINTEXT-b-refreshed".into());
        assert_eq!(
            both.key_versions_in_use().await.unwrap(),
            in_use(&[(1, 6), (2, 1)]),
            "{b}"
        );
        assert_secrets(&both, &s.expected, b).await;

        let report = both.rotate_keys().await.unwrap();
        assert_eq!(
            report,
            RotationReport {
                re_encrypted: 6,
                already_current: 1,
                to_version: 2
            },
            "{b}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"re_encrypted\":6"), "{json}");
        assert_eq!(both.key_versions_in_use().await.unwrap(), in_use(&[(2, 7)]));
        assert_all_sealed_with(&db, 2, b).await;
        assert_secrets(&both, &s.expected, b).await;
        for (_, v) in raw_sealed(&db).await {
            assert!(!v.contains("PLAINTEXT"), "{b}: {v}");
        }

        // Nothing left to do: a second run changes nothing.
        let before = raw_sealed(&db).await;
        assert_eq!(
            both.rotate_keys().await.unwrap(),
            RotationReport {
                re_encrypted: 0,
                already_current: 7,
                to_version: 2
            }
        );
        assert_eq!(raw_sealed(&db).await, before, "{b}: untouched");

        // Retire version 1: a keyring with only the new key reads everything.
        retire_key_versions(&s.key_file, 2).unwrap();
        let new_only = db.reopen(load(&s.key_file)).await;
        assert_eq!(new_only.keyring().versions(), vec![2]);
        assert_secrets(&new_only, &s.expected, b).await;

        // Only the old key (given directly, so there is no key file to re-read): every record
        // names a version it lacks.
        let old_only = db
            .reopen(Keyring::load(Some(&s.old_key_text), &s.key_file).unwrap())
            .await;
        for org in old_only.orgs().await.unwrap() {
            let err = old_only.org_secrets(&org).await.unwrap_err();
            assert!(
                matches!(err, VaultError::UnknownKeyVersion { key_version: 2, .. }),
                "{b}: {err:?}"
            );
        }
        // Another key under the same version number does not open them either.
        let impostor = format!("2:{}", generate_key_base64().expose_secret());
        let impostor = db
            .reopen(Keyring::load(Some(&impostor), &s.key_file).unwrap())
            .await;
        let err = impostor
            .org_secrets(&org(&impostor, "a").await)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::Decrypt { key_version: 2, .. }),
            "{b}: {err:?}"
        );
        for v in [&s.old, &old_only, &both, &new_only, &impostor] {
            v.close().await;
        }
    }
}

#[tokio::test]
async fn interrupted_rotation_rolls_back_and_a_second_run_completes() {
    for db in backends().await {
        let b = db.name();
        let s = setup(&db).await;
        assert_eq!(add_key_version(&s.key_file).unwrap(), 2);
        let both = db.reopen(load(&s.key_file)).await;

        // Fail after four of the seven values were re-sealed inside the transaction.
        fail_rotation_after(&both, Some(4));
        let err = both.rotate_keys().await.unwrap_err();
        let msg = err.to_string();
        match &err {
            VaultError::RotationFailed { source } => assert!(
                source.to_string().contains("after 4 re-sealed values"),
                "{b}: {source}"
            ),
            other => panic!("{b}: {other:?}"),
        }
        assert!(msg.contains("rolled back"), "{msg}");

        // Nothing committed: every value still names version 1 and opens with the old key
        // alone (the same vault handle keeps working, so the transaction really ended).
        assert_eq!(both.key_versions_in_use().await.unwrap(), in_use(&[(1, 7)]));
        assert_all_sealed_with(&db, 1, b).await;
        assert_secrets(&s.old, &s.expected, b).await;
        assert_secrets(&both, &s.expected, b).await;

        // Cause removed: the rotation completes.
        fail_rotation_after(&both, None);
        assert_eq!(
            both.rotate_keys().await.unwrap(),
            RotationReport {
                re_encrypted: 7,
                already_current: 0,
                to_version: 2
            },
            "{b}"
        );
        assert_all_sealed_with(&db, 2, b).await;
        assert_secrets(&both, &s.expected, b).await;
        s.old.close().await;
        both.close().await;
    }
}

#[tokio::test]
async fn rotation_stops_at_a_record_that_does_not_open_and_changes_nothing() {
    for db in backends().await {
        let b = db.name();
        let s = setup(&db).await;
        assert_eq!(add_key_version(&s.key_file).unwrap(), 2);
        let both = db.reopen(load(&s.key_file)).await;

        // Org c (the last row) gets org a's client secret: its AAD names org a, so it cannot
        // be opened as c's. Orgs a and b are re-sealed before the rotation reaches it.
        let raw = db.raw().await;
        let original: String =
            sqlx::query_scalar("SELECT client_secret_enc FROM orgs WHERE name = 'c'")
                .fetch_one(&raw)
                .await
                .unwrap();
        sqlx::query(
            "UPDATE orgs SET client_secret_enc = \
             (SELECT client_secret_enc FROM orgs WHERE name = 'a') WHERE name = 'c'",
        )
        .execute(&raw)
        .await
        .unwrap();

        let err = both.rotate_keys().await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, VaultError::RotationFailed { source }
                if matches!(**source, VaultError::Decrypt { key_version: 1, .. })),
            "{b}: {err:?}"
        );
        assert!(msg.contains("org c client_secret"), "{msg}");
        assert!(!msg.contains("PLAINTEXT"), "{msg}");
        assert_eq!(both.key_versions_in_use().await.unwrap(), in_use(&[(1, 7)]));
        assert_all_sealed_with(&db, 1, b).await;

        // Put the record back: everything opens with the old key alone, and rotation completes.
        sqlx::query("UPDATE orgs SET client_secret_enc = $1 WHERE name = 'c'")
            .bind(&original)
            .execute(&raw)
            .await
            .unwrap();
        raw.close().await;
        assert_secrets(&s.old, &s.expected, b).await;
        assert_eq!(both.rotate_keys().await.unwrap().re_encrypted, 7, "{b}");
        assert_all_sealed_with(&db, 2, b).await;
        assert_secrets(&both, &s.expected, b).await;
        s.old.close().await;
        both.close().await;
    }
}

/// What `wxvault keys rotate` does, as the "rotating process" B: add a key version, open the
/// database with the key file as it is now, re-seal, and drop the old keys once no record uses
/// them. Returns B.
async fn keys_rotate(db: &TestDb, key_file: &Path, to: u32) -> Vault {
    assert_eq!(add_key_version(key_file).unwrap(), to);
    let b = db.reopen(load(key_file)).await;
    assert_eq!(b.rotate_keys().await.unwrap().to_version, to);
    assert_eq!(
        b.key_versions_in_use()
            .await
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![to]
    );
    retire_key_versions(key_file, to).unwrap();
    b
}

fn pending(state: &str) -> NewPendingAuth {
    NewPendingAuth {
        state: secret(state),
        browser_session: secret("browser-session-1"),
        invite_id: None,
        org_name: "new".into(),
        client_id: "C-integration-1".into(),
        region: None,
        redirect_uri: "https://vault.example.com/oauth/callback".into(),
        code_verifier: secret(&format!("verifier-PLAINTEXT-{state}")),
        scopes: vec!["cjp:config_read".into()],
        ttl_ms: 3_600_000,
    }
}

/// Issue 7 item 1: process A keeps running with the key file it loaded while process B runs
/// `keys rotate` (twice). Every value A seals afterwards — a token refresh, a new org, a pending
/// authorization's verifier — uses the newest key, so A, B and a fresh process read every row,
/// and the second rotation succeeds. Before `key_state`, A sealed with the retired key.
#[tokio::test]
async fn a_process_running_through_keys_rotate_never_seals_with_a_retired_key() {
    for db in backends().await {
        let b_name = db.name();
        let mut s = setup(&db).await;
        let a = &s.old;
        a.put_pending_auth(pending("before"), 1_000).await.unwrap();

        let b = keys_rotate(&db, &s.key_file, 2).await;

        // A, still holding only version 1, refreshes a token, adds an org and starts an OAuth
        // authorization.
        let update = TokenUpdate {
            access_token: Some(secret("at-PLAINTEXT-a-refreshed")),
            refresh_token: Some(secret("rt-PLAINTEXT-a-refreshed")),
            ..TokenUpdate::default()
        };
        a.save_tokens(&org(a, "a").await, &update).await.unwrap();
        let entry = s.expected.get_mut("a").unwrap();
        entry.1 = Some("at-PLAINTEXT-a-refreshed".into());
        entry.2 = Some("rt-PLAINTEXT-a-refreshed".into());
        let mut new = new_org("d", "7f3c1a52-0b55-4d3e-9a1f-0c8e9f6b1b09");
        new.client_secret = secret("cs-PLAINTEXT-d");
        new.tokens = TokenUpdate::default();
        a.add_org(new).await.unwrap();
        s.expected
            .insert("d".into(), ("cs-PLAINTEXT-d".into(), None, None));
        a.put_pending_auth(pending("after"), 1_000).await.unwrap();
        assert_eq!(
            a.keyring().current_version(),
            2,
            "{b_name}: A re-read the key file"
        );

        // Nothing is sealed with the retired key, and everyone reads everything.
        assert_eq!(
            b.key_versions_in_use().await.unwrap(),
            in_use(&[(2, 8 + 2)]),
            "{b_name}"
        );
        let fresh = db.reopen(load(&s.key_file)).await;
        for v in [a, &b, &fresh] {
            assert_secrets(v, &s.expected, b_name).await;
        }

        // The second rotation succeeds; A (now at version 2) keeps reading and writing.
        let b2 = keys_rotate(&db, &s.key_file, 3).await;
        let update = TokenUpdate {
            access_token: Some(secret("at-PLAINTEXT-b-refreshed")),
            ..TokenUpdate::default()
        };
        a.save_tokens(&org(a, "b").await, &update).await.unwrap();
        s.expected.get_mut("b").unwrap().1 = Some("at-PLAINTEXT-b-refreshed".into());
        assert_eq!(
            b2.key_versions_in_use().await.unwrap(),
            in_use(&[(3, 10)]),
            "{b_name}"
        );
        let fresh2 = db.reopen(load(&s.key_file)).await;
        for v in [a, &b, &b2, &fresh2] {
            assert_secrets(v, &s.expected, b_name).await;
        }
        // The verifiers A stored before and after the rotations open too.
        for state in ["before", "after"] {
            let taken = fresh2
                .take_pending_auth(state, "browser-session-1", 2_000)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{b_name}: pending {state}"));
            assert_eq!(
                taken.code_verifier.expose_secret(),
                format!("verifier-PLAINTEXT-{state}"),
                "{b_name}"
            );
        }
        for v in [&s.old, &b, &fresh, &b2, &fresh2] {
            v.close().await;
        }
    }
}

/// A process whose keys cannot be re-read (`WXVAULT_MASTER_KEY`) refuses to seal with a key
/// older than the database's newest, and says what to do; nothing is written.
#[tokio::test]
async fn a_process_with_an_outdated_fixed_key_refuses_to_seal() {
    for db in backends().await {
        let b_name = db.name();
        let s = setup(&db).await;
        let fixed = db
            .reopen(Keyring::load(Some(&s.old_key_text), &s.key_file).unwrap())
            .await;
        let b = keys_rotate(&db, &s.key_file, 2).await;
        let before = raw_sealed(&db).await;
        let update = TokenUpdate {
            access_token: Some(secret("at-PLAINTEXT-never")),
            ..TokenUpdate::default()
        };
        let err = fixed
            .save_tokens(&org(&fixed, "a").await, &update)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, VaultError::KeyBehind { newest: 2, .. }),
            "{b_name}: {err:?}"
        );
        assert!(
            msg.contains("WXVAULT_MASTER_KEY") && msg.contains("version 2"),
            "{msg}"
        );
        assert!(!msg.contains("PLAINTEXT"), "{msg}");
        assert_eq!(raw_sealed(&db).await, before, "{b_name}: nothing written");
        for v in [&s.old, &fixed, &b] {
            v.close().await;
        }
    }
}
