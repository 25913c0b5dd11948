//! The command-line contract: exit codes and clear errors for bad input.

use webex_sim::DatasetSpec;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_config_errors_exit_1_with_a_clear_message() {
    let env = Env::start(DatasetSpec::small()).await;
    let out = env.run(&["no-such-command"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "clap's usage errors map to 1: {}",
        text(&out)
    );

    let out = env.run(&["sync", "--from", "yesterday"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--from"), "{}", text(&out));

    let out = env.run(&["sync"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "no orgs is a usage error: {}",
        text(&out)
    );
    assert!(text(&out).contains("org add"), "{}", text(&out));

    let out = env.run(&["sync", "--org", "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(1));

    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[wxcc]\nurl_expiration_minutes = 90\n").unwrap();
    let out = run_with_config(&bad, &["status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("url_expiration_minutes") && text(&out).contains("bad.toml"),
        "{}",
        text(&out)
    );

    std::fs::write(&bad, "[storage]\nurll = \"file://x\"\n").unwrap();
    let out = run_with_config(&bad, &["status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("urll"),
        "unknown keys are named: {}",
        text(&out)
    );

    let out = env.run(&["--help"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
}

async fn run_with_config(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("WXVAULT_MASTER_KEY", MASTER_KEY);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_add_refuses_secrets_it_cannot_read_safely() {
    let env = Env::start(DatasetSpec::small()).await;
    // No env and no terminal: it must not hang or take secrets from argv.
    let out = env
        .run(
            &[
                "org",
                "add",
                "--name",
                "x",
                "--region",
                "us1",
                "--client-id",
                &env.client.client_id,
            ],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("WXVAULT_CLIENT_SECRET"),
        "{}",
        text(&out)
    );
    // A token that does not end in _<cluster>_<orgId> needs --org-id.
    let out = env
        .run(
            &[
                "org",
                "add",
                "--name",
                "x",
                "--region",
                "us1",
                "--client-id",
                &env.client.client_id,
            ],
            &[
                ("WXVAULT_CLIENT_SECRET", "s3cr3t"),
                ("WXVAULT_REFRESH_TOKEN", "opaque-token-without-org"),
            ],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--org-id"), "{}", text(&out));
    assert!(!text(&out).contains("opaque-token-without-org") && !text(&out).contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_master_key_is_explained() {
    let env = Env::start(DatasetSpec::small()).await;
    let out = {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
        cmd.arg("--config")
            .arg(&env.config_path)
            .arg("status")
            .env_remove("WXVAULT_MASTER_KEY");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("wxvault init") || text(&out).contains("WXVAULT_MASTER_KEY"),
        "{}",
        text(&out)
    );
}
