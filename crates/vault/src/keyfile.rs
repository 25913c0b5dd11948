//! The master key file: a list of key versions, and the atomic rewrites that add or retire one.
//!
//! Format, one entry per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! 1:<base64 of 32 bytes>
//! 2:<base64 of 32 bytes>
//! ```
//!
//! The highest version is current: it seals new secrets; the others only open old records. A
//! bare base64 line (the format [`crate::init_key_file`] writes) means version 1, so key files
//! from before rotation existed keep loading unchanged.
//!
//! Rewrites ([`add_key_version`], [`retire_key_versions`]) never touch the file in place: the
//! new list goes to a private temporary file in the same directory, which is synced and renamed
//! over the old one, and the directory is synced, so a crash leaves either the old list or the
//! new one, never a torn file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore as _;
use secrecy::zeroize::Zeroizing;

use crate::crypto::decode_key;
use crate::{KEY_LEN, VaultError};

/// Keys by version.
pub(crate) type KeyList = BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>;

/// Written at the top of every rewritten key file.
const HEADER: &str = "# wxvault master keys, one per line as <version>:<base64 of 32 bytes>.\n\
# The highest version seals new secrets; older ones still open records sealed with them.\n\
# Keep this file private (mode 0600) and backed up: without it the stored secrets are lost.\n";

/// How a key file is named in errors.
pub(crate) fn key_file_origin(path: &Path) -> String {
    format!("key file {}", path.display())
}

/// Parses a key list (see the module docs). `origin` names the source in errors
/// (`key file PATH` or `WXVAULT_MASTER_KEY`), followed by the line number.
pub(crate) fn parse_key_list(text: &str, origin: &str) -> Result<KeyList, VaultError> {
    let mut keys = KeyList::new();
    let mut first_seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{origin} line {line_no}");
        let format_err = |problem: String| VaultError::KeyFormat {
            origin: at.clone(),
            problem,
        };
        // Base64 never contains ':', so a colon always separates a version.
        let (version, key_text) = match line.split_once(':') {
            Some((version, key_text)) => {
                let version = version.trim();
                // Never echo the text: a mangled line may hold key material.
                let parsed = if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) {
                    version.parse::<u32>().ok()
                } else {
                    None
                };
                let Some(parsed) = parsed else {
                    return Err(format_err(
                        "the text before ':' is not a key version (a whole number from 1 to 4294967295)"
                            .into(),
                    ));
                };
                (parsed, key_text)
            }
            None => (1, line),
        };
        if version == 0 {
            return Err(format_err(
                "key version 0 is reserved; versions start at 1".into(),
            ));
        }
        let key = decode_key(key_text, &at)?;
        if let Some(first) = first_seen.insert(version, line_no) {
            return Err(format_err(format!(
                "key version {version} appears twice (first on line {first}; a line without \
                 '<version>:' is version 1) — each version may hold only one key"
            )));
        }
        keys.insert(version, key);
    }
    if keys.is_empty() {
        return Err(VaultError::KeyFormat {
            origin: origin.to_string(),
            problem: "holds no key".into(),
        });
    }
    Ok(keys)
}

/// Reads the key file into zeroizing memory.
pub(crate) fn read_key_text(path: &Path) -> Result<Zeroizing<String>, VaultError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VaultError::KeyMissing {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(VaultError::KeyFile {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Appends a fresh random master key to the key file as the next version (one above the
/// highest present) and returns that version, which becomes the current one for every keyring
/// loaded from the file afterwards. Existing keys are kept: records sealed with them stay
/// readable until [`crate::Vault::rotate_keys`] has re-sealed them.
///
/// A file in the bare single-key format is upgraded: its key becomes `1:<key>`. The file is
/// rewritten atomically (private temporary file in the same directory, mode 0600, synced, then
/// renamed over the old one; the directory is synced too), so a crash leaves either the old
/// list or the new one. Comments are not preserved.
///
/// Not meant to run concurrently with another rewrite of the same file; if the file changes
/// while it is being rewritten, this returns [`VaultError::Conflict`] and changes nothing.
///
/// # Errors
/// [`VaultError::KeyMissing`] if the file does not exist (run `wxvault init` first),
/// [`VaultError::KeyFile`] if it cannot be read or replaced, [`VaultError::BadKey`] /
/// [`VaultError::KeyFormat`] if it does not parse (nothing is written then),
/// [`VaultError::Conflict`] on a concurrent change, [`VaultError::Invalid`] if the highest
/// version is already `u32::MAX`.
pub fn add_key_version(path: &Path) -> Result<u32, VaultError> {
    let text = read_key_text(path)?;
    let mut keys = parse_key_list(&text, &key_file_origin(path))?;
    let highest = keys.keys().next_back().copied().unwrap_or(0);
    let next = highest.checked_add(1).ok_or_else(|| {
        VaultError::Invalid(format!(
            "{}: key version {highest} is the last possible one; retire old versions and start a new key file",
            key_file_origin(path)
        ))
    })?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    keys.insert(next, key);
    replace_key_file(path, &text, &keys)?;
    tracing::info!(file = %path.display(), version = next, "added master key version");
    Ok(next)
}

/// Rewrites the key file keeping only version `keep`, which must be the file's current
/// (highest) version: the current key is never dropped. Call it only after
/// [`crate::Vault::key_versions_in_use`] shows that no record is sealed with another version —
/// records sealed with a dropped version can never be opened again.
///
/// The rewrite is atomic as in [`add_key_version`]; the remaining key is written as
/// `<keep>:<key>` (never in the bare format, which would mean version 1). If the file already
/// holds only `keep`, it is left untouched.
///
/// # Errors
/// [`VaultError::Invalid`] if `keep` is not in the file or is not its current version (the
/// file is left untouched), [`VaultError::KeyMissing`] / [`VaultError::KeyFile`] /
/// [`VaultError::BadKey`] / [`VaultError::KeyFormat`] / [`VaultError::Conflict`] as for
/// [`add_key_version`].
pub fn retire_key_versions(path: &Path, keep: u32) -> Result<(), VaultError> {
    let origin = key_file_origin(path);
    let text = read_key_text(path)?;
    let mut keys = parse_key_list(&text, &origin)?;
    let versions: Vec<u32> = keys.keys().copied().collect();
    let current = versions.last().copied().unwrap_or(0);
    if !keys.contains_key(&keep) {
        return Err(VaultError::Invalid(format!(
            "{origin} has no master key version {keep} (it holds {versions:?}); nothing was changed"
        )));
    }
    if keep != current {
        return Err(VaultError::Invalid(format!(
            "refusing to retire master key version {current}: it is the current version in \
             {origin} (the highest); only versions older than the current one can be retired — \
             keep {current}, after `keys rotate` has re-sealed every record with it; nothing was \
             changed"
        )));
    }
    if keys.len() == 1 {
        return Ok(());
    }
    keys.retain(|version, _| *version == keep);
    replace_key_file(path, &text, &keys)?;
    tracing::info!(file = %path.display(), kept = keep, retired = ?&versions[..versions.len() - 1], "retired master key versions");
    Ok(())
}

/// The canonical text of a key list.
fn render(keys: &KeyList) -> Zeroizing<String> {
    // Reserve everything up front: a growing String would free its old buffers unzeroed.
    let per_key = 10 + 1 + KEY_LEN.div_ceil(3) * 4 + 1;
    let mut out = Zeroizing::new(String::with_capacity(HEADER.len() + keys.len() * per_key));
    out.push_str(HEADER);
    for (version, key) in keys {
        let _ = write!(out, "{version}:");
        B64.encode_string(key.as_ref(), &mut out);
        out.push('\n');
    }
    out
}

/// Atomically replaces the key file (which held `original`) with `keys`.
fn replace_key_file(path: &Path, original: &str, keys: &KeyList) -> Result<(), VaultError> {
    let io_err = |action: &'static str| {
        move |source| VaultError::KeyFile {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    // Replace the file a symlink points at, not the link, and put the temporary file next to it
    // so the rename stays within one filesystem.
    let target = std::fs::canonicalize(path).map_err(io_err("resolve"))?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "master.key".into());
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{:016x}",
        rand::rngs::OsRng.next_u64()
    ));
    let text = render(keys);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        // The umask may have narrowed the mode further; make it exactly owner read/write.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("write a temporary copy of")(e));
    }
    // Optimistic check against a concurrent rewrite: the file must still hold what was read.
    let unchanged = match std::fs::read(&target) {
        Ok(now) => {
            let now = Zeroizing::new(now);
            now.as_slice() == original.as_bytes()
        }
        Err(_) => false,
    };
    if !unchanged {
        let _ = std::fs::remove_file(&tmp);
        return Err(VaultError::Conflict(format!(
            "{} changed while it was being rewritten (another key command running?); nothing \
             was changed by this one — run it again",
            key_file_origin(path)
        )));
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("replace")(e));
    }
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
