//! `wxvault demo` end to end, as a new user runs it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_archives_and_leaves_a_usable_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
        cmd.args(args)
            .env_remove("WXVAULT_MASTER_KEY")
            .env_remove("WXVAULT_CONFIG")
            .current_dir(tmp.path());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = run(vec![
        "demo".into(),
        "--dir".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("4/4"), "{text}");
    let archived = crate::harness::files(&dir.join("archive"));
    let wavs = archived.keys().filter(|k| k.ends_with(".wav")).count();
    let jsons = archived.keys().filter(|k| k.ends_with(".json")).count();
    assert!(wavs > 50, "a day of recordings: {wavs}");
    assert_eq!(wavs, jsons, "one sidecar per recording");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let config = dir.join("wxvault.toml");
    let out = run(vec![
        "--config".into(),
        config.display().to_string(),
        "status".into(),
    ])
    .await
    .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{status}");
    assert!(
        status.contains("demo") && status.contains(&wavs.to_string()),
        "{status}"
    );

    // Running the demo again replaces its own folder cleanly.
    let again = run(vec![
        "demo".into(),
        "--dir".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0));
}
