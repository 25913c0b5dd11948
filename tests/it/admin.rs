//! Operator commands around the vault: `keys rotate` and `org remove`.

use serde_json::Value;
use webex_sim::DatasetSpec;

use crate::harness::*;

/// Runs the binary with the key file (no WXVAULT_MASTER_KEY).
async fn run_with_key_file(
    env: &Env,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
    cmd.arg("--config")
        .arg(&env.config_path)
        .args(args)
        .env_remove("WXVAULT_MASTER_KEY")
        .env_remove("WXVAULT_CONFIG");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_re_encrypts_everything_and_retires_the_old_key() {
    let env = Env::start(DatasetSpec::small()).await;
    assert_ok(&run_with_key_file(&env, &["init"], &[]).await, "init");
    let key_path = env.dir.path().join("master.key");
    let old_key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_string();
    let org = env.handle().orgs()[0].clone();
    let grant = env
        .handle()
        .issue_grant(&env.client.client_id, &org.org_id, &["cjp:config_read"]);
    let add = run_with_key_file(
        &env,
        &[
            "org",
            "add",
            "--name",
            "acme",
            "--region",
            "us1",
            "--client-id",
            &env.client.client_id,
        ],
        &[
            ("WXVAULT_CLIENT_SECRET", &env.client.client_secret),
            ("WXVAULT_REFRESH_TOKEN", &grant.refresh_token),
            ("WXVAULT_ACCESS_TOKEN", &grant.access_token),
        ],
    )
    .await;
    assert_ok(&add, "org add");

    let out = run_with_key_file(&env, &["keys", "rotate", "--json"], &[]).await;
    assert_ok(&out, "keys rotate");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["re_encrypted"], 3,
        "client secret, access and refresh token: {report}"
    );
    assert_eq!(report["old_keys_retired"], true);
    let file = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        !file.contains(&old_key),
        "the old key is gone from the file"
    );
    assert!(
        file.lines().any(|l| l.starts_with("2:")),
        "{}",
        file.lines()
            .filter(|l| !l.contains(':') || l.starts_with('#'))
            .count()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(!text(&out).contains(&old_key));

    // Everything still decrypts with the new key alone: a sync needs the client secret and tokens.
    let now = env.handle().now_ms();
    let from = rfc3339(now - 3 * 86_400_000);
    let to = rfc3339(now + 1);
    let out = run_with_key_file(&env, &["sync", "--from", &from, "--to", &to], &[]).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
    // The old key alone no longer opens the secrets.
    let out = run_with_key_file(
        &env,
        &["sync", "--from", &from, "--to", &to],
        &[("WXVAULT_MASTER_KEY", &old_key)],
    )
    .await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));

    // With the key in the environment, wxvault explains instead of rewriting it.
    let out = env.run(&["keys", "rotate"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("WXVAULT_MASTER_KEY"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_remove_revokes_at_webex_and_keeps_the_archive() {
    let env = Env::start(DatasetSpec::small()).await;
    let orgs = env.handle().orgs();
    env.add_org("acme", &orgs[0].org_id).await;
    env.add_org("beta", &orgs[1].org_id).await;
    env.sync_all(3, &["--org", "acme"]).await;
    let archived = files(&env.archive_dir());
    assert!(!archived.is_empty());

    let out = env.run(&["org", "remove", "acme", "--yes"], &[]).await;
    assert_ok(&out, "org remove");
    assert!(text(&out).contains("Revoked"), "{}", text(&out));
    assert_eq!(
        env.handle()
            .stats()
            .by_endpoint
            .get("authorizations")
            .copied(),
        Some(1)
    );
    assert_eq!(
        files(&env.archive_dir()),
        archived,
        "archived recordings stay"
    );
    let list = env.run(&["org", "list", "--json"], &[]).await;
    let names: Vec<String> = serde_json::from_slice::<Value>(&list.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["beta".to_string()]);

    // A grant that is already dead cannot be revoked: said clearly, removed anyway, exit 2.
    env.handle().revoke_grants(&orgs[1].org_id);
    let out = env.run(&["org", "remove", "beta", "--yes"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("Could not revoke") && text(&out).contains("Control Hub"),
        "{}",
        text(&out)
    );
    let list = env.run(&["org", "list", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
    let out = env.run(&["org", "remove", "beta", "--yes"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown org is a usage error"
    );
}
