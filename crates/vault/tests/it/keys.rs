use secrecy::ExposeSecret as _;
use vault::{Keyring, VaultError, generate_key_base64, init_key_file};

#[test]
fn key_file_is_created_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("master.key");
    assert!(init_key_file(&path).unwrap(), "first init creates the file");
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(
        Keyring::from_base64(&first).is_ok(),
        "file holds a valid key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    assert!(
        !init_key_file(&path).unwrap(),
        "second init reports existing file"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "never overwritten"
    );
    // No temp files left behind.
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    // The loaded keyring opens what a keyring from the same text sealed.
    let loaded = Keyring::load(None, &path).unwrap();
    let sealed = Keyring::from_base64(&first)
        .unwrap()
        .seal("t", "aad", b"x")
        .unwrap();
    assert_eq!(&*loaded.open("t", "aad", &sealed).unwrap(), b"x");
}

#[test]
fn load_prefers_env_and_explains_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let err = Keyring::load(None, &path).unwrap_err();
    assert!(matches!(err, VaultError::KeyMissing { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("wxvault init") && msg.contains("WXVAULT_MASTER_KEY"),
        "{msg}"
    );

    // Blank env falls through to the file.
    assert!(matches!(
        Keyring::load(Some("  "), &path),
        Err(VaultError::KeyMissing { .. })
    ));

    init_key_file(&path).unwrap();
    let env_key = generate_key_base64();
    let from_env = Keyring::load(Some(env_key.expose_secret()), &path).unwrap();
    let sealed = Keyring::from_base64(env_key.expose_secret())
        .unwrap()
        .seal("t", "aad", b"x")
        .unwrap();
    assert!(from_env.open("t", "aad", &sealed).is_ok(), "env key wins");
    let from_file = Keyring::load(None, &path).unwrap();
    assert!(
        from_file.open("t", "aad", &sealed).is_err(),
        "file key differs"
    );

    // Whitespace around the key in the file is fine; garbage names the file, not the content.
    std::fs::write(&path, format!("\n  {}  \n", env_key.expose_secret())).unwrap();
    assert!(
        Keyring::load(None, &path)
            .unwrap()
            .open("t", "aad", &sealed)
            .is_ok()
    );
    std::fs::write(&path, "zzzz-not-a-key").unwrap();
    let msg = Keyring::load(None, &path).unwrap_err().to_string();
    assert!(msg.contains("master.key") && !msg.contains("zzzz"), "{msg}");
    let msg = Keyring::load(Some("AAAA"), &path).unwrap_err().to_string();
    assert!(
        msg.contains("WXVAULT_MASTER_KEY") && msg.contains("3 bytes"),
        "{msg}"
    );
}
