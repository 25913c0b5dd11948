//! Object key layout: where each recording lands in the archive.
//!
//! Keys are built only from validated components so that nothing coming from
//! a remote API (an org id, a task id, a file name) can escape the archive
//! root, collide with the staging area or produce a key that two backends
//! interpret differently. The layout is a public contract (documented in
//! `docs/layout.md`): `<org_id>/<source>/<YYYY>/<MM>/<DD>/<folder>/<recording_id>.<ext>`
//! ([`dated_key`]; WxCC: [`wxcc_audio`], folder = task id, date = the task's creation;
//! Webex Calling: folder = recording id, date = `timeRecorded`), dates in UTC, so a day's
//! recordings can be listed, retained or deleted as one prefix.

use std::fmt;

use object_store::path::Path;

use crate::error::ArchiveError;

/// Longest accepted identifier component; Webex ids are UUIDs (36 chars).
const MAX_COMPONENT_LEN: usize = 200;

/// Extension used for sidecars; an audio key may never use it.
const SIDECAR_EXT: &str = "json";

/// A validated key of an object in the archive, relative to the archive root.
///
/// Constructed only through [`dated_key`], [`wxcc_audio`], [`companion_of`],
/// [`sidecar_for`] or [`ObjectKey::new`], which all validate every path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates an arbitrary `/`-separated key (for objects outside the
    /// recording layout, e.g. manifests).
    ///
    /// Each segment follows the same rules as layout identifiers: non-empty,
    /// only `[A-Za-z0-9._-]`, not starting with `.`, no `..`.
    ///
    /// # Errors
    /// [`ArchiveError::InvalidKey`] when a segment breaks these rules.
    pub fn new(key: &str) -> Result<ObjectKey, ArchiveError> {
        if key.is_empty() {
            return Err(invalid(key, "empty key"));
        }
        for segment in key.split('/') {
            validate_id(segment)?;
        }
        Ok(ObjectKey(key.to_owned()))
    }

    /// The key as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an `object_store` path. Segments are already validated
    /// to contain only characters that need no encoding.
    pub(crate) fn to_path(&self) -> Path {
        Path::from_iter(self.0.split('/'))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(component: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::InvalidKey {
        component: component.chars().take(MAX_COMPONENT_LEN).collect(),
        reason,
    }
}

/// Identifier rules shared by every key segment.
fn validate_id(component: &str) -> Result<(), ArchiveError> {
    if component.is_empty() {
        return Err(invalid(component, "empty component"));
    }
    if component.len() > MAX_COMPONENT_LEN {
        return Err(invalid(component, "component longer than 200 characters"));
    }
    if component.starts_with('.') {
        return Err(invalid(component, "component starts with '.'"));
    }
    if component.contains("..") {
        return Err(invalid(component, "component contains '..'"));
    }
    if let Some(bad) = component
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            component,
            match bad {
                '/' | '\\' => "component contains a path separator",
                c if c.is_control() => "component contains a control character",
                _ => "component contains a character outside [A-Za-z0-9._-]",
            },
        ));
    }
    Ok(())
}

fn validate_ext(ext: &str) -> Result<(), ArchiveError> {
    if ext.is_empty() || ext.len() > 10 || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(
            ext,
            "extension must be 1-10 ASCII letters or digits",
        ));
    }
    if ext.eq_ignore_ascii_case(SIDECAR_EXT) {
        return Err(invalid(ext, "extension 'json' is reserved for sidecars"));
    }
    Ok(())
}

/// Key of a Contact Center capture:
/// `<org_id>/wxcc/<YYYY>/<MM>/<DD>/<task_id>/<recording_id>.<ext>`.
///
/// The date is the task's `createdTime` (epoch milliseconds) in UTC, so the key
/// of a recording never changes between runs, whatever the local time zone.
///
/// # Errors
/// [`ArchiveError::InvalidKey`] when an id is empty, longer than 200
/// characters, starts with `.`, contains `..` or a character outside
/// `[A-Za-z0-9._-]` (which excludes `/`, `\` and control characters), when the
/// extension is not 1–10 ASCII alphanumerics or is `json`, or when the
/// timestamp is outside years 0–9999.
pub fn wxcc_audio(
    org_id: &str,
    task_created_ms: i64,
    task_id: &str,
    recording_id: &str,
    ext: &str,
) -> Result<ObjectKey, ArchiveError> {
    validate_id(org_id)?;
    validate_id(task_id)?;
    validate_id(recording_id)?;
    validate_ext(ext)?;
    let created =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(task_created_ms) * 1_000_000)
            .map_err(|_| {
                invalid(
                    &task_created_ms.to_string(),
                    "task creation time out of range",
                )
            })?;
    let year = created.year();
    if !(0..=9999).contains(&year) {
        return Err(invalid(
            &task_created_ms.to_string(),
            "task creation time outside years 0-9999",
        ));
    }
    Ok(ObjectKey(format!(
        "{org_id}/wxcc/{year:04}/{month:02}/{day:02}/{task_id}/{recording_id}.{ext}",
        month = u8::from(created.month()),
        day = created.day(),
    )))
}

/// Key of a recording of any source:
/// `<org_id>/<source>/<YYYY>/<MM>/<DD>/<folder>/<recording_id>.<ext>`, the date being `at_ms`
/// in UTC. Each source picks its time and folder (WxCC: the task's `createdTime` and id;
/// Webex Calling: `timeRecorded` and the recording id), so a new source needs nothing here.
///
/// # Errors
/// [`ArchiveError::InvalidKey`] as for [`wxcc_audio`], also for an invalid `source`.
pub fn dated_key(
    org_id: &str,
    source: &str,
    at_ms: i64,
    folder: &str,
    recording_id: &str,
    ext: &str,
) -> Result<ObjectKey, ArchiveError> {
    validate_id(org_id)?;
    validate_id(source)?;
    validate_id(folder)?;
    validate_id(recording_id)?;
    validate_ext(ext)?;
    let (year, month, day) = utc_date(at_ms)?;
    Ok(ObjectKey(format!(
        "{org_id}/{source}/{year:04}/{month:02}/{day:02}/{folder}/{recording_id}.{ext}"
    )))
}

/// A file that belongs with a recording (its transcript): the audio key with its extension
/// replaced by `<suffix>.<ext>`, e.g. `….transcript.vtt`.
///
/// # Errors
/// [`ArchiveError::InvalidKey`] for a suffix or extension outside `[A-Za-z0-9]`.
pub fn companion_of(audio: &ObjectKey, suffix: &str, ext: &str) -> Result<ObjectKey, ArchiveError> {
    validate_ext(ext)?;
    if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(suffix, "suffix must be ASCII letters or digits"));
    }
    let stem = sidecar_for(audio);
    let stem = stem.as_str().strip_suffix(".json").unwrap_or(stem.as_str());
    Ok(ObjectKey(format!("{stem}.{suffix}.{ext}")))
}

/// Year, month and day (UTC) of a recording time `ms`, within years 0–9999.
fn utc_date(ms: i64) -> Result<(i32, u8, u8), ArchiveError> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| invalid(&ms.to_string(), "recording time out of range"))?;
    if !(0..=9999).contains(&t.year()) {
        return Err(invalid(
            &ms.to_string(),
            "recording time outside years 0-9999",
        ));
    }
    Ok((t.year(), u8::from(t.month()), t.day()))
}

/// The sidecar key of an audio object: same path, extension replaced by
/// `.json` (appended if the last segment has none).
pub fn sidecar_for(audio: &ObjectKey) -> ObjectKey {
    let key = audio.as_str();
    let name_start = key.rfind('/').map_or(0, |i| i + 1);
    let stem_end = match key[name_start..].rfind('.') {
        // Segments never start with '.', so a dot at index > 0 is an extension.
        Some(dot) if dot > 0 => name_start + dot,
        _ => key.len(),
    };
    ObjectKey(format!("{}.{SIDECAR_EXT}", &key[..stem_end]))
}

/// Lowercase extension of a recording's `fileName` if it is 1–5 ASCII
/// alphanumerics (and not `json`, which is reserved for sidecars); `"wav"`
/// otherwise, which is what Contact Center captures are.
pub fn ext_from_file_name(file_name: Option<&str>) -> String {
    file_name
        .and_then(|name| {
            let name = name.rsplit(['/', '\\']).next().unwrap_or(name);
            let (stem, ext) = name.rsplit_once('.')?;
            let ok = !stem.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && !ext.eq_ignore_ascii_case(SIDECAR_EXT);
            ok.then(|| ext.to_ascii_lowercase())
        })
        .unwrap_or_else(|| "wav".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calling_keys_follow_the_layout_contract() {
        // 2024-10-04T16:20:20Z
        let k = dated_key(
            "org-1",
            "calling",
            1_728_058_820_000,
            "ea0efc7c-f83a",
            "ea0efc7c-f83a",
            "mp3",
        )
        .unwrap();
        assert_eq!(
            k.as_str(),
            "org-1/calling/2024/10/04/ea0efc7c-f83a/ea0efc7c-f83a.mp3"
        );
        assert_eq!(
            sidecar_for(&k).as_str(),
            "org-1/calling/2024/10/04/ea0efc7c-f83a/ea0efc7c-f83a.json"
        );
        let t = companion_of(&k, "transcript", "vtt").unwrap();
        assert_eq!(
            t.as_str(),
            "org-1/calling/2024/10/04/ea0efc7c-f83a/ea0efc7c-f83a.transcript.vtt"
        );
        assert!(dated_key("org-1", "calling", 0, "../x", "x", "mp3").is_err());
        assert!(dated_key("org-1", "calling", 0, "x", "x", "json").is_err());
        assert!(dated_key("org-1", "a/b", 0, "x", "x", "mp3").is_err());
        // The WxCC key is the same shape.
        assert_eq!(
            wxcc_audio("o", 1_728_058_820_000, "t", "r", "wav")
                .unwrap()
                .as_str(),
            dated_key("o", "wxcc", 1_728_058_820_000, "t", "r", "wav")
                .unwrap()
                .as_str()
        );
        assert!(companion_of(&k, "a/b", "vtt").is_err());
    }

    // 2024-03-05T23:59:59.999Z
    const T: i64 = 1_709_683_199_999;

    #[test]
    fn wxcc_key_is_date_partitioned_in_utc() {
        let key = wxcc_audio("org-1", T, "task_1", "rec.1", "wav").unwrap();
        assert_eq!(key.as_str(), "org-1/wxcc/2024/03/05/task_1/rec.1.wav");
        // One millisecond later is the next day.
        let key = wxcc_audio("org-1", T + 1, "task_1", "rec.1", "wav").unwrap();
        assert_eq!(key.as_str(), "org-1/wxcc/2024/03/06/task_1/rec.1.wav");
        assert_eq!(key.to_string(), key.as_str());
        let key = wxcc_audio("o", 0, "t", "r", "mp3").unwrap();
        assert_eq!(key.as_str(), "o/wxcc/1970/01/01/t/r.mp3");
    }

    #[test]
    fn traversal_and_odd_components_are_rejected() {
        let bad = [
            "", "..", ".", ".hidden", "a/b", "a\\b", "a..b", "a\nb", "a\0b", "a b", "ä", "a%2f",
        ];
        for b in bad {
            for pos in 0..3 {
                let mut ids = ["org", "task", "rec"];
                ids[pos] = b;
                let err = wxcc_audio(ids[0], T, ids[1], ids[2], "wav").unwrap_err();
                assert!(
                    matches!(err, ArchiveError::InvalidKey { .. }),
                    "{b:?} at {pos}: {err}"
                );
                assert!(!err.is_transient());
            }
        }
        let long = "a".repeat(201);
        assert!(wxcc_audio(&long, T, "t", "r", "wav").is_err());
        assert!(wxcc_audio("o", T, "t", "r", "").is_err());
        assert!(wxcc_audio("o", T, "t", "r", "w/v").is_err());
        assert!(wxcc_audio("o", T, "t", "r", "json").is_err());
        assert!(wxcc_audio("o", i64::MAX, "t", "r", "wav").is_err());
    }

    #[test]
    fn sidecar_replaces_extension() {
        let audio = wxcc_audio("org", T, "task", "rec.1", "wav").unwrap();
        assert_eq!(
            sidecar_for(&audio).as_str(),
            "org/wxcc/2024/03/05/task/rec.1.json"
        );
        let plain = ObjectKey::new("a/b/c").unwrap();
        assert_eq!(sidecar_for(&plain).as_str(), "a/b/c.json");
    }

    #[test]
    fn extension_from_file_name() {
        assert_eq!(ext_from_file_name(Some("call.WAV")), "wav");
        assert_eq!(ext_from_file_name(Some("x.tar.mp3")), "mp3");
        assert_eq!(ext_from_file_name(Some("dir/x.opus")), "opus");
        assert_eq!(ext_from_file_name(Some("noext")), "wav");
        assert_eq!(ext_from_file_name(Some(".wav")), "wav");
        assert_eq!(ext_from_file_name(Some("x.toolong")), "wav");
        assert_eq!(ext_from_file_name(Some("x.w-v")), "wav");
        assert_eq!(ext_from_file_name(Some("x.json")), "wav");
        assert_eq!(ext_from_file_name(Some("x.")), "wav");
        assert_eq!(ext_from_file_name(None), "wav");
    }

    #[test]
    fn generic_keys_are_validated() {
        assert!(ObjectKey::new("manifests/2024/part-0.parquet").is_ok());
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../a",
            "a/../b",
            ".wxvault-staging/x",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }
}
