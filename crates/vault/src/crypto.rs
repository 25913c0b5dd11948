//! Master keys and sealed secrets.
//!
//! Secrets are sealed with XChaCha20-Poly1305: its 192-bit nonce is large enough to draw at
//! random for every record without a counter, so any number of processes can write safely.
//! Each sealed value carries the version of the key that sealed it, so a keyring can later
//! hold old keys next to the current one ("keys rotate") and still open every record. The
//! associated data binds the record identity (`wxvault:org:<org uuid>:<field>`): a ciphertext
//! copied into another row or another field fails authentication instead of decrypting.
//!
//! Stored form: `v1.<key version>.<base64(nonce || ciphertext || tag)>`. The key file format
//! (one `<version>:<key>` line per version) lives in `keyfile.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use crate::VaultError;
use crate::keyfile::{KeyList, key_file_origin, parse_key_list, read_key_text};

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const FORMAT: &str = "v1";

/// The master keys this process holds, by version; one of them is current (used to seal).
///
/// Cheap to clone (the keys live behind an `Arc`); the key bytes are zeroed when the last
/// clone is dropped. `Debug` shows only the versions.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    current: u32,
    keys: BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>,
    /// The key file this keyring was read from, if any: a vault re-reads it when another
    /// process has rotated the keys (see `Vault::begin_sealing`). `None` for keys given
    /// directly or through `WXVAULT_MASTER_KEY`, which cannot change under a running process.
    source: Option<PathBuf>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current_version", &self.inner.current)
            .field("versions", &self.versions())
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

impl Keyring {
    /// A keyring holding one key, version 1, from standard base64 (surrounding whitespace is
    /// ignored).
    ///
    /// # Errors
    /// [`VaultError::BadKey`] if the text is not base64 of exactly 32 bytes.
    pub fn from_base64(b64: &str) -> Result<Keyring, VaultError> {
        let key = decode_key(b64, "the given value")?;
        Ok(Keyring::from_keys(1, [(1, key)]).expect("version 1 is present"))
    }

    /// A keyring from raw keys by version, sealing with `current`.
    ///
    /// The current key plus older ones that still open existing records (see
    /// [`crate::Vault::rotate_keys`]).
    ///
    /// # Errors
    /// [`VaultError::Invalid`] if `current` is not among the keys or a version is 0.
    pub fn from_keys(
        current: u32,
        keys: impl IntoIterator<Item = (u32, Zeroizing<[u8; KEY_LEN]>)>,
    ) -> Result<Keyring, VaultError> {
        let keys: BTreeMap<_, _> = keys.into_iter().collect();
        if keys.contains_key(&0) {
            return Err(VaultError::Invalid(
                "master key version 0 is reserved; versions start at 1".into(),
            ));
        }
        if !keys.contains_key(&current) {
            return Err(VaultError::Invalid(format!(
                "current master key version {current} is not among the keys given"
            )));
        }
        Ok(Keyring {
            inner: Arc::new(Inner {
                current,
                keys,
                source: None,
            }),
        })
    }

    /// Loads the master keys: `env_value` (the `WXVAULT_MASTER_KEY` value) wins when present and
    /// non-blank; otherwise the key file.
    ///
    /// Both hold a key list (see [`crate::add_key_version`]): one key per line as
    /// `<version>:<base64 of 32 bytes>`, blank lines and `#` comments ignored; a bare base64 line
    /// (what [`init_key_file`] writes) is version 1. The highest version is current.
    ///
    /// # Errors
    /// [`VaultError::KeyMissing`] if there is no env value and no key file (the message says to
    /// run `wxvault init` or set `WXVAULT_MASTER_KEY`), [`VaultError::KeyFile`] if the file
    /// cannot be read, [`VaultError::BadKey`] if a key is malformed, [`VaultError::KeyFormat`]
    /// if a line is not a key, a version is repeated or no key is present. Errors name the
    /// origin and line, never the key material.
    pub fn load(env_value: Option<&str>, key_file: &Path) -> Result<Keyring, VaultError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Keyring::from_key_list(parse_key_list(v, "WXVAULT_MASTER_KEY")?);
        }
        let text = read_key_text(key_file)?;
        warn_if_readable_by_others(key_file);
        let ring = Keyring::from_key_list(parse_key_list(&text, &key_file_origin(key_file))?)?;
        Ok(Keyring {
            inner: Arc::new(Inner {
                current: ring.inner.current,
                keys: ring.inner.keys.clone(),
                source: Some(key_file.to_path_buf()),
            }),
        })
    }

    /// A keyring from a parsed, non-empty key list; the highest version is current.
    fn from_key_list(keys: KeyList) -> Result<Keyring, VaultError> {
        let current = keys.keys().next_back().copied().unwrap_or(0);
        Keyring::from_keys(current, keys)
    }

    /// The key file as it is now, if this keyring was read from one (`None` for keys given
    /// directly or through `WXVAULT_MASTER_KEY`).
    ///
    /// # Errors
    /// As [`Keyring::load`] for a key file.
    pub(crate) fn reload(&self) -> Option<Result<Keyring, VaultError>> {
        let path = self.inner.source.as_ref()?;
        Some(Keyring::load(None, path))
    }

    /// Where the keys came from, for messages: the key file or "the given keys".
    pub(crate) fn origin(&self) -> String {
        match &self.inner.source {
            Some(path) => key_file_origin(path),
            None => "the master key given to this process (WXVAULT_MASTER_KEY)".into(),
        }
    }

    /// The version new records are sealed with.
    pub fn current_version(&self) -> u32 {
        self.inner.current
    }

    /// All versions this keyring can open, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.inner.keys.keys().copied().collect()
    }

    /// Seals `plaintext` with the current key, binding `aad` (the record identity).
    /// `what` names the record in errors.
    ///
    /// # Errors
    /// [`VaultError::Encrypt`] only if the AEAD rejects the input (absurd sizes).
    pub fn seal(&self, what: &str, aad: &str, plaintext: &[u8]) -> Result<String, VaultError> {
        let version = self.inner.current;
        let cipher = self.cipher(version).expect("current key is present");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Encrypt {
                what: what.to_string(),
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{FORMAT}.{version}.{}", B64.encode(blob)))
    }

    /// Opens a value made by [`Keyring::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`VaultError::Corrupt`] if the stored text is not in the sealed format,
    /// [`VaultError::UnknownKeyVersion`] if the keyring lacks the key version it names,
    /// [`VaultError::Decrypt`] if authentication fails (wrong key, tampering, or a value
    /// moved from another record).
    pub fn open(
        &self,
        what: &str,
        aad: &str,
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let corrupt = |detail: &str| VaultError::Corrupt {
            what: what.to_string(),
            detail: detail.to_string(),
        };
        let (key_version, body) = split_sealed(sealed).map_err(corrupt)?;
        let cipher = self
            .cipher(key_version)
            .ok_or_else(|| VaultError::UnknownKeyVersion {
                what: what.to_string(),
                key_version,
                have: format!("{:?}", self.versions()),
            })?;
        let blob = B64
            .decode(body)
            .map_err(|_| corrupt("sealed data is not base64"))?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(corrupt("sealed data is too short"));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Decrypt {
                what: what.to_string(),
                key_version,
            })
    }

    /// Opens a sealed UTF-8 secret straight into a [`SecretString`].
    ///
    /// # Errors
    /// As [`Keyring::open`], plus [`VaultError::Corrupt`] if the plaintext is not UTF-8.
    pub fn open_string(
        &self,
        what: &str,
        aad: &str,
        sealed: &str,
    ) -> Result<SecretString, VaultError> {
        let bytes = self.open(what, aad, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Corrupt {
            what: what.to_string(),
            detail: "decrypted secret is not UTF-8".into(),
        })?;
        // `to_owned` allocates exactly, so no unzeroed spare copy is left behind.
        Ok(SecretString::from(text.to_owned()))
    }

    fn cipher(&self, version: u32) -> Option<XChaCha20Poly1305> {
        self.inner
            .keys
            .get(&version)
            .map(|k| XChaCha20Poly1305::new(k.as_ref().into()))
    }
}

/// Splits a sealed value into its key version and base64 body, without decrypting.
fn split_sealed(sealed: &str) -> Result<(u32, &str), &'static str> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(format), Some(version), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not a sealed value (expected v1.<key version>.<data>)");
    };
    if format != FORMAT {
        return Err("unknown sealed-value format");
    }
    let key_version = version.parse().map_err(|_| "key version is not a number")?;
    Ok((key_version, body))
}

/// The key version a sealed value names, without decrypting it.
///
/// `what` names the record in the error ([`VaultError::Corrupt`] if the value is not in the
/// sealed format).
pub(crate) fn sealed_key_version(what: &str, sealed: &str) -> Result<u32, VaultError> {
    split_sealed(sealed)
        .map(|(version, _)| version)
        .map_err(|detail| VaultError::Corrupt {
            what: what.to_string(),
            detail: detail.to_string(),
        })
}

/// The associated data binding a sealed org secret to its org and field.
pub(crate) fn org_aad(org_uuid: &str, field: &str) -> String {
    format!("wxvault:org:{org_uuid}:{field}")
}

pub(crate) fn decode_key(text: &str, origin: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
    let bad = |problem: String| VaultError::BadKey {
        origin: origin.to_string(),
        problem,
    };
    let bytes = Zeroizing::new(
        B64.decode(text.trim())
            .map_err(|_| bad("not valid standard base64".into()))?,
    );
    if bytes.len() != KEY_LEN {
        return Err(bad(format!(
            "decodes to {} bytes, expected {KEY_LEN}",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Generates a fresh random master key as base64 (for `wxvault init` and tests).
pub fn generate_key_base64() -> SecretString {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    SecretString::from(B64.encode(key.as_ref()))
}

/// Creates the master key file with 32 random bytes in base64, readable only by its owner
/// (mode 0600 on Unix), creating parent directories (0700) as needed. Never overwrites: the
/// key is written to a private temporary file and hard-linked into place, which fails if the
/// file already exists, so a concurrent or crashed `init` can neither clobber a key nor leave
/// a half-written one.
///
/// Returns `Ok(true)` if the file was created, `Ok(false)` if it already existed.
///
/// # Errors
/// [`VaultError::KeyFile`] if the directory or file cannot be created or written.
pub fn init_key_file(path: &Path) -> Result<bool, VaultError> {
    let io_err = |source| VaultError::KeyFile {
        action: "create",
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(io_err)?;

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "master.key".into());
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{:016x}",
        rand::rngs::OsRng.next_u64()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        let key = generate_key_base64();
        let line = Zeroizing::new(format!("{}\n", secrecy::ExposeSecret::expose_secret(&key)));
        f.write_all(line.as_bytes())?;
        f.sync_all()
    };
    let result = write().and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "master key file is readable by group or others; run chmod 600 on it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_base64(secrecy::ExposeSecret::expose_secret(&generate_key_base64())).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_format() {
        let k = ring();
        let sealed = k.seal("t", "aad", b"hello").unwrap();
        assert!(sealed.starts_with("v1.1."), "{sealed}");
        assert!(!sealed.contains("hello"));
        assert_eq!(&*k.open("t", "aad", &sealed).unwrap(), b"hello");
        // Fresh nonce per record.
        assert_ne!(sealed, k.seal("t", "aad", b"hello").unwrap());
    }

    #[test]
    fn wrong_aad_wrong_key_tamper_and_unknown_version_fail() {
        let k = ring();
        let sealed = k.seal("t", "aad", b"hello").unwrap();
        assert!(matches!(
            k.open("t", "other", &sealed),
            Err(VaultError::Decrypt { key_version: 1, .. })
        ));
        assert!(matches!(
            ring().open("t", "aad", &sealed),
            Err(VaultError::Decrypt { .. })
        ));
        let body = sealed.rsplit('.').next().unwrap();
        let mut raw = B64.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1.1.{}", B64.encode(raw));
        assert!(matches!(
            k.open("t", "aad", &tampered),
            Err(VaultError::Decrypt { .. })
        ));
        let other_version = sealed.replacen("v1.1.", "v1.7.", 1);
        assert!(matches!(
            k.open("t", "aad", &other_version),
            Err(VaultError::UnknownKeyVersion { key_version: 7, .. })
        ));
        assert!(matches!(
            k.open("t", "aad", "garbage"),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn multi_key_ring_opens_old_versions() {
        let mut k1 = Zeroizing::new([0u8; KEY_LEN]);
        k1[0] = 1;
        let mut k2 = Zeroizing::new([0u8; KEY_LEN]);
        k2[0] = 2;
        let old = Keyring::from_keys(1, [(1, k1.clone())]).unwrap();
        let sealed_old = old.seal("t", "a", b"x").unwrap();
        let both = Keyring::from_keys(2, [(1, k1), (2, k2)]).unwrap();
        assert_eq!(both.versions(), vec![1, 2]);
        assert!(both.seal("t", "a", b"y").unwrap().starts_with("v1.2."));
        assert_eq!(&*both.open("t", "a", &sealed_old).unwrap(), b"x");
        assert!(Keyring::from_keys(3, []).is_err());
    }

    #[test]
    fn bad_keys_are_rejected_without_echoing_them() {
        let e = Keyring::from_base64("c2hvcnQ=").unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
        assert!(!e.contains("c2hvcnQ"), "{e}");
        let e = Keyring::from_base64("not base64 !!")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64") && !e.contains("!!"), "{e}");
    }

    #[test]
    fn debug_redacts() {
        let b64 = generate_key_base64();
        let k = Keyring::from_base64(secrecy::ExposeSecret::expose_secret(&b64)).unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("REDACTED"));
        assert!(!dbg.contains(secrecy::ExposeSecret::expose_secret(&b64)));
    }
}
