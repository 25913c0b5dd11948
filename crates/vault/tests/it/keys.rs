use secrecy::ExposeSecret as _;
use vault::{
    Keyring, VaultError, add_key_version, generate_key_base64, init_key_file, retire_key_versions,
};

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

fn mode(path: &std::path::Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o600
    }
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Files in the key file's directory other than the key file (temporary copies left behind).
fn strays(path: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "master.key")
        .collect()
}

#[test]
fn add_key_version_upgrades_a_bare_file_keeps_old_keys_and_stays_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    init_key_file(&path).unwrap();
    let bare = std::fs::read_to_string(&path).unwrap();
    let v1 = Keyring::load(None, &path).unwrap();
    assert_eq!((v1.current_version(), v1.versions()), (1, vec![1]));
    let sealed_v1 = v1.seal("t", "aad", b"one").unwrap();
    #[cfg(unix)]
    set_mode(&path, 0o644);

    assert_eq!(add_key_version(&path).unwrap(), 2);
    assert_eq!(mode(&path), 0o600, "rewritten file is private");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!("1:{}", bare.trim())),
        "the bare key became version 1"
    );
    assert_eq!(
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count(),
        2,
        "{} key lines",
        text.lines().count()
    );
    let both = Keyring::load(None, &path).unwrap();
    assert_eq!((both.current_version(), both.versions()), (2, vec![1, 2]));
    assert_eq!(&*both.open("t", "aad", &sealed_v1).unwrap(), b"one");
    let sealed_v2 = both.seal("t", "aad", b"two").unwrap();
    assert!(sealed_v2.starts_with("v1.2."), "{sealed_v2}");
    assert!(v1.open("t", "aad", &sealed_v2).is_err(), "v2 is a new key");

    assert_eq!(add_key_version(&path).unwrap(), 3);
    let three = Keyring::load(None, &path).unwrap();
    assert_eq!(
        (three.current_version(), three.versions()),
        (3, vec![1, 2, 3])
    );
    assert_eq!(&*three.open("t", "aad", &sealed_v1).unwrap(), b"one");
    assert_eq!(&*three.open("t", "aad", &sealed_v2).unwrap(), b"two");
    assert!(strays(&path).is_empty(), "left behind: {:?}", strays(&path));

    // The Debug of a multi-key ring shows versions, never keys.
    let dbg = format!("{three:?}");
    assert!(
        dbg.contains("[1, 2, 3]") && dbg.contains("REDACTED"),
        "{dbg}"
    );
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        if let Some((_, key)) = line.split_once(':') {
            assert!(!dbg.contains(key.trim()), "{dbg}");
        }
    }

    let missing = dir.path().join("none.key");
    assert!(matches!(
        add_key_version(&missing),
        Err(VaultError::KeyMissing { .. })
    ));
}

#[cfg(unix)]
#[test]
fn add_key_version_writes_through_a_symlink_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("real");
    let real = real_dir.join("master.key");
    init_key_file(&real).unwrap();
    let link = dir.path().join("master.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(add_key_version(&link).unwrap(), 2);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(Keyring::load(None, &real).unwrap().versions(), vec![1, 2]);

    // A file that does not parse is left exactly as it was.
    let broken = format!("{}\n2:short\n", std::fs::read_to_string(&real).unwrap());
    std::fs::write(&real, &broken).unwrap();
    let err = add_key_version(&real).unwrap_err();
    assert!(matches!(err, VaultError::BadKey { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&real).unwrap(), broken);
}

#[test]
fn key_lists_parse_versions_comments_and_reject_bad_lines_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let (k1, k2, k5) = (
        generate_key_base64(),
        generate_key_base64(),
        generate_key_base64(),
    );
    let (k1, k2, k5) = (k1.expose_secret(), k2.expose_secret(), k5.expose_secret());
    std::fs::write(
        &path,
        format!("# keys\r\n\r\n5:{k5}\r\n  1 : {k1}  \r\n# old\r\n2:{k2}\r\n"),
    )
    .unwrap();
    let ring = Keyring::load(None, &path).unwrap();
    assert_eq!(
        (ring.current_version(), ring.versions()),
        (5, vec![1, 2, 5])
    );
    let by_v2 = Keyring::from_keys(2, [(2, raw(k2))]).unwrap();
    let sealed = by_v2.seal("t", "a", b"x").unwrap();
    assert_eq!(&*ring.open("t", "a", &sealed).unwrap(), b"x");

    // A single versioned line loads as that version, not as version 1.
    std::fs::write(&path, format!("7:{k1}\n")).unwrap();
    let ring = Keyring::load(None, &path).unwrap();
    assert_eq!((ring.current_version(), ring.versions()), (7, vec![7]));

    let cases: [(String, &str, &str); 7] = [
        (format!("1:{k1}\n# c\n1:{k2}\n"), "line 3", "appears twice"),
        (
            format!("{k1}\n1:{k2}\n"),
            "line 2",
            "key version 1 appears twice",
        ),
        (format!("1:{k1}\nx{k2}:{k1}\n"), "line 2", "key version"),
        (format!("0:{k1}\n"), "line 1", "version 0"),
        (format!("1:{k1}\n2:{}\n", &k2[..20]), "line 2", "15 bytes"),
        (format!("1:{k1}\n-3:{k2}\n"), "line 2", "key version"),
        ("# only a comment\n\n".into(), "master.key", "no key"),
    ];
    for (text, at, problem) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = Keyring::load(None, &path).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                VaultError::KeyFormat { .. } | VaultError::BadKey { .. }
            ),
            "{err:?}"
        );
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(at),
            "{at}: {msg}"
        );
        assert!(msg.contains(problem), "{problem}: {msg}");
        for key in [k1, k2, &k2[..20]] {
            assert!(!msg.contains(key), "key material in {msg}");
            assert!(!format!("{err:?}").contains(key), "key material in {err:?}");
        }
    }
}

#[test]
fn multi_line_env_value_holds_several_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    init_key_file(&path).unwrap();
    let (k1, k2) = (generate_key_base64(), generate_key_base64());
    let (k1, k2) = (k1.expose_secret(), k2.expose_secret());
    let old = Keyring::from_base64(k1).unwrap();
    let sealed_old = old.seal("t", "a", b"old").unwrap();

    let env = format!("1:{k1}\n2:{k2}\n");
    let ring = Keyring::load(Some(&env), &path).unwrap();
    assert_eq!((ring.current_version(), ring.versions()), (2, vec![1, 2]));
    assert_eq!(&*ring.open("t", "a", &sealed_old).unwrap(), b"old");
    assert!(ring.seal("t", "a", b"n").unwrap().starts_with("v1.2."));
    // A bare single env value is still version 1.
    assert_eq!(Keyring::load(Some(k1), &path).unwrap().versions(), vec![1]);

    let err = Keyring::load(Some(&format!("1:{k1}\n2:{k1}x\n")), &path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("WXVAULT_MASTER_KEY line 2"), "{msg}");
    assert!(!msg.contains(k1), "{msg}");
}

#[test]
fn retire_keeps_only_the_current_version_and_refuses_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    init_key_file(&path).unwrap();
    // Retiring on a single-key file is a no-op that keeps the bare format loadable.
    retire_key_versions(&path, 1).unwrap();
    assert_eq!(Keyring::load(None, &path).unwrap().versions(), vec![1]);
    assert_eq!(add_key_version(&path).unwrap(), 2);
    assert_eq!(add_key_version(&path).unwrap(), 3);
    let ring = Keyring::load(None, &path).unwrap();
    let sealed_v3 = ring.seal("t", "a", b"three").unwrap();
    let before = std::fs::read(&path).unwrap();

    for keep in [2, 1, 4] {
        let err = retire_key_versions(&path, keep).unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("nothing was changed"), "{msg}");
        if keep < 3 {
            assert!(
                msg.contains("refusing to retire master key version 3"),
                "{msg}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "untouched");
    }

    #[cfg(unix)]
    set_mode(&path, 0o640);
    retire_key_versions(&path, 3).unwrap();
    assert_eq!(mode(&path), 0o600);
    let kept = Keyring::load(None, &path).unwrap();
    assert_eq!((kept.current_version(), kept.versions()), (3, vec![3]));
    assert_eq!(&*kept.open("t", "a", &sealed_v3).unwrap(), b"three");
    assert!(strays(&path).is_empty(), "left behind: {:?}", strays(&path));
    // Versions are never reused after a retirement.
    assert_eq!(add_key_version(&path).unwrap(), 4);
}

fn raw(b64: &str) -> secrecy::zeroize::Zeroizing<[u8; vault::KEY_LEN]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut key = secrecy::zeroize::Zeroizing::new([0u8; vault::KEY_LEN]);
    key.copy_from_slice(&bytes);
    key
}
