//! The clean-up of interrupted uploads (see the `upload` module docs): markers not touched for
//! longer than a given age belong to dead processes; their uploads are aborted and their
//! staging data and markers deleted. Markers still being refreshed belong to live uploads,
//! here or on another machine, and nothing of theirs is touched.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore};

use crate::ArchiveError;
use crate::open::Multipart;
use crate::s3_uploads::{Listing, S3Uploads};
use crate::upload::{
    MARKER_REFRESH, MARKER_SUFFIX, Marker, STAGING_PREFIX, abort_upload, delete, local_io_error,
};

/// The upload id a staging entry belongs to: `<id>`, `<id>.upload` or a local part file
/// `<id>#<n>`.
fn upload_of(name: &str) -> &str {
    let name = name.strip_suffix(MARKER_SUFFIX).unwrap_or(name);
    name.split('#').next().unwrap_or(name)
}

/// Removes what interrupted uploads left: see the module docs. Returns how many staging
/// objects, part files and markers were removed.
pub(crate) async fn remove_stale(
    store: &dyn ObjectStore,
    multipart: Option<&Multipart>,
    local_root: Option<&std::path::Path>,
    older_than: Duration,
) -> Result<usize, ArchiveError> {
    let now = SystemTime::now();
    let is_stale = |modified: SystemTime| {
        now.duration_since(modified)
            .is_ok_and(|age| age >= older_than)
    };
    let staging_dir = Path::from(STAGING_PREFIX);
    let entries: Vec<object_store::ObjectMeta> = store
        .list(Some(&staging_dir))
        .try_collect()
        .await
        .map_err(|e| ArchiveError::store(STAGING_PREFIX, e))?;

    // Uploads whose marker is fresh are alive somewhere: their staging data stays.
    let mut live = HashSet::new();
    let mut live_markers = Vec::new();
    let mut stale_markers = Vec::new();
    let mut others = Vec::new();
    for meta in entries {
        let name = meta.location.filename().unwrap_or_default().to_owned();
        if name.ends_with(MARKER_SUFFIX) {
            if is_stale(meta.last_modified.into()) {
                stale_markers.push(meta);
            } else {
                live.insert(upload_of(&name).to_owned());
                live_markers.push(meta.location);
            }
        } else {
            others.push(meta);
        }
    }

    // One marker that cannot be handled (a refused abort, an unreadable object) must not keep
    // the others from being cleaned: each failure is logged and counted, the first reported.
    let mut sweep = Sweep::default();
    let finals = match multipart {
        Some(mp) if mp.s3_uploads.is_some() && !stale_markers.is_empty() => {
            FinalKeys::Check(live_keys(store, &live_markers).await)
        }
        _ => FinalKeys::Skip,
    };
    for stale in &stale_markers {
        let outcome = sweep_marker(store, multipart, &staging_dir, stale, &finals).await;
        sweep.record(outcome);
    }

    for meta in others {
        let name = meta.location.filename().unwrap_or_default();
        if live.contains(upload_of(name)) || !is_stale(meta.last_modified.into()) {
            continue;
        }
        let outcome = delete(store, &meta.location).await.map(usize::from);
        sweep.record(outcome);
    }

    // The local backend writes parts to `<staging>#<n>` files, which it does not list; remove
    // those directly.
    if let Some(root) = local_root {
        let dir = root.join(STAGING_PREFIX);
        let files = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.collect::<Result<Vec<_>, _>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
        .map_err(|e| ArchiveError::store(STAGING_PREFIX, local_io_error(&dir, e)));
        let files = match files {
            Ok(files) => files,
            Err(e) => {
                sweep.record(Err(e));
                Vec::new()
            }
        };
        for entry in files {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(is_stale);
            if !stale || !name.contains('#') || live.contains(upload_of(&name)) {
                continue;
            }
            let path = entry.path();
            let outcome = match std::fs::remove_file(&path) {
                Ok(()) => Ok(1),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(ArchiveError::store(
                    STAGING_PREFIX,
                    local_io_error(&path, e),
                )),
            };
            sweep.record(outcome);
        }
    }
    sweep.finish()
}

/// Tally of one clean-up: what was removed, what failed.
#[derive(Default)]
struct Sweep {
    removed: usize,
    failed: usize,
    first: Option<ArchiveError>,
}

impl Sweep {
    fn record(&mut self, outcome: Result<usize, ArchiveError>) {
        match outcome {
            Ok(n) => self.removed += n,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not clean up an interrupted upload; the next clean-up retries it"
                );
                self.failed += 1;
                self.first.get_or_insert(e);
            }
        }
    }

    fn finish(self) -> Result<usize, ArchiveError> {
        match self.first {
            None => Ok(self.removed),
            Some(first) => Err(ArchiveError::Cleanup {
                failed: self.failed,
                removed: self.removed,
                first: Box::new(first),
            }),
        }
    }
}

/// Handles one stale marker: aborts its upload, removes its staging object and the marker.
/// Returns how many objects were removed; on an error the marker stays for the next sweep, and
/// so it does (its staging upload aborted) while a live upload puts the same key into place
/// (see [`abort_copy_into_place`]).
async fn sweep_marker(
    store: &dyn ObjectStore,
    multipart: Option<&Multipart>,
    staging_dir: &Path,
    stale: &object_store::ObjectMeta,
    finals: &FinalKeys,
) -> Result<usize, ArchiveError> {
    let path = &stale.location;
    let marker: Option<Marker> = match store.get(path).await {
        // Rewritten since it was listed: alive after all.
        Ok(got) if got.meta.last_modified > stale.last_modified => return Ok(0),
        Ok(got) => match got.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(object_store::Error::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(ArchiveError::store(path.to_string(), e)),
        },
        Err(object_store::Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(ArchiveError::store(path.to_string(), e)),
    };
    let mut removed = 0;
    if let Some(marker) = &marker {
        // Only ever below the staging folder, whatever the marker says.
        let staging = Path::parse(&marker.staging)
            .ok()
            .filter(|p| p.prefix_matches(staging_dir) && p != staging_dir);
        if let (Some(mp), Some(staging)) = (multipart, &staging) {
            for id in upload_ids(mp, marker, staging).await? {
                match abort_upload(mp, &mp.full(staging), &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    // An upload completed before the crash is no longer known to the store
                    // (some stores refuse its id instead of answering 404): its staging object
                    // or its final object says so. Otherwise keep the marker and report.
                    Err(e) => {
                        let finished = store.head(staging).await.is_ok()
                            || match Path::parse(&marker.key) {
                                Ok(key) => store.head(&key).await.is_ok(),
                                Err(_) => false,
                            };
                        if !finished {
                            return Err(ArchiveError::store(marker.staging.clone(), e));
                        }
                    }
                }
                tracing::info!(key = %marker.key, started = %marker.started, "aborted an interrupted upload");
            }
        }
        // The staging key was the dead upload's alone; the final key may be a live one's too.
        if let (Some(mp), FinalKeys::Check(live)) = (multipart, finals)
            && let Some(s3) = &mp.s3_uploads
            && !abort_copy_into_place(mp, s3, marker, stale.last_modified.into(), live).await?
        {
            return Ok(0);
        }
        // A staging object completed before the crash goes with its marker.
        if let Some(staging) = &staging
            && store.head(staging).await.is_ok()
            && delete(store, staging).await?
        {
            removed += 1;
        }
    }
    delete(store, path).await?;
    Ok(removed + 1)
}

/// The uploads a stale marker stands for. A marker holds the store's upload id from the moment
/// the store answered; one without it belongs to a process that died before (or while) the
/// upload was created. On S3 the staging key's unfinished uploads are listed as well, which
/// also finds an upload whose create object_store retried after its first answer was lost.
/// Azure aborts by key (one empty id). GCS offers no listing through object_store: an upload
/// whose id was never recorded (it holds no part: parts go up only after the marker has the
/// id) is left to the bucket's lifecycle rule for incomplete multipart uploads, and the log
/// says so.
///
/// # Errors
/// A listing that failed (not refused) for a marker without an id: the marker stays so that
/// the next sweep lists again. With an id, the recorded upload is aborted all the same (the
/// marker may then stay for the final key's listing, see [`abort_copy_into_place`]).
async fn upload_ids(
    mp: &Multipart,
    marker: &Marker,
    staging: &Path,
) -> Result<Vec<MultipartId>, ArchiveError> {
    let mut ids: Vec<MultipartId> = marker.upload_id.iter().cloned().collect();
    if mp.azure_objects.is_some() {
        return Ok(vec![MultipartId::new()]);
    }
    let listed = match &mp.s3_uploads {
        Some(s3) => match s3.ids(&mp.full(staging)).await {
            Ok(Listing::Found(found)) => Some(found),
            Ok(Listing::Refused(why)) => {
                refused(&marker.staging, &why);
                None
            }
            Err(e) if ids.is_empty() => {
                return Err(ArchiveError::store(marker.staging.clone(), e));
            }
            Err(e) => {
                tracing::warn!(
                    staging = %marker.staging,
                    error = %redact::redact_urls_in(&e.to_string()),
                    "could not list the unfinished uploads of a dead upload's staging key; \
                     aborting the one its marker names"
                );
                None
            }
        },
        None => None,
    };
    match listed {
        Some(found) => {
            for upload in found {
                if !ids.contains(&upload.id) {
                    ids.push(upload.id);
                }
            }
        }
        None if ids.is_empty() => tracing::warn!(
            key = %marker.key,
            staging = %marker.staging,
            "an interrupted upload may have been started without its id being recorded; \
             it holds no data, and a lifecycle rule that removes incomplete multipart \
             uploads removes it"
        ),
        None => {}
    }
    Ok(ids)
}

fn refused(key: &str, why: &str) {
    tracing::warn!(
        key = %key,
        answer = %why,
        "the store does not list unfinished multipart uploads here (on S3 allow \
         s3:ListBucketMultipartUploads); what a killed process left unnamed stays until the \
         bucket's lifecycle rule for incomplete multipart uploads removes it"
    );
}

/// After an upload on S3 ended (completed, or aborted on a failure): aborts the staging key's
/// other unfinished uploads (a create object_store retried after its first answer was lost
/// leaves one; it holds no data). Returns whether the marker may go: not when such an upload
/// could not be aborted (the sweep retries). A listing that fails is logged and not waited
/// for: what it would find holds no data, and the lifecycle rule removes it.
pub(crate) async fn abort_strays(mp: &Multipart, staging: &Path) -> bool {
    let Some(s3) = &mp.s3_uploads else {
        return true;
    };
    let full = mp.full(staging);
    let found = match s3.ids(&full).await {
        Ok(Listing::Found(found)) => found,
        Ok(Listing::Refused(why)) => {
            refused(staging.as_ref(), &why);
            return true;
        }
        Err(e) => {
            tracing::warn!(
                staging = %staging,
                error = %redact::redact_urls_in(&e.to_string()),
                "could not check a finished upload's staging key for unfinished uploads"
            );
            return true;
        }
    };
    let mut clean = true;
    for upload in found {
        match abort_upload(mp, &full, &upload.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(
                    staging = %staging,
                    error = %redact::redact_urls_in(&e.to_string()),
                    "could not abort a stray upload of a finished upload's staging key; its \
                     marker is kept for the clean-up of interrupted uploads"
                );
                clean = false;
            }
        }
    }
    clean
}

/// Whether the sweep also looks for unfinished copies into place (S3 only).
enum FinalKeys {
    Skip,
    /// The final keys of the live uploads, or the error that kept one live marker from being
    /// read (then no copy is aborted this time: it could be a live one's).
    Check(Result<HashSet<String>, ArchiveError>),
}

/// The final keys the live markers name.
///
/// # Errors
/// A live marker that cannot be read or parsed: its key is unknown, so no copy is safe to
/// abort this time.
async fn live_keys(
    store: &dyn ObjectStore,
    markers: &[Path],
) -> Result<HashSet<String>, ArchiveError> {
    let mut keys = HashSet::new();
    for path in markers {
        let got = match store.get(path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(bytes) => {
                let marker = serde_json::from_slice::<Marker>(&bytes).map_err(|e| {
                    ArchiveError::store(
                        path.to_string(),
                        object_store::Error::Generic {
                            store: "archive",
                            source: format!("not an upload marker: {e}").into(),
                        },
                    )
                })?;
                keys.insert(marker.key);
            }
            // Finished since it was listed.
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(ArchiveError::store(path.to_string(), e)),
        }
    }
    Ok(keys)
}

/// On S3, putting a finished upload into place is itself a multipart upload to the final key
/// (object_store's copy-if-absent: create, copy the staging object as one part, complete with
/// `If-None-Match: *`). A process killed during that copy leaves an upload at the final key
/// that no marker names by id; the dead upload's marker names the key. The key's unfinished
/// uploads the store created before the dead upload's marker was last refreshed (plus two
/// refresh periods) are aborted; later ones belong to another, live upload.
///
/// Returns `false` when a live upload names the same key: the dead marker then waits for a
/// sweep after the live upload has finished.
///
/// # Errors
/// A live marker that could not be read, or a listing or abort that failed: the marker stays
/// for the next sweep.
async fn abort_copy_into_place(
    mp: &Multipart,
    s3: &S3Uploads,
    marker: &Marker,
    last_refreshed: SystemTime,
    live: &Result<HashSet<String>, ArchiveError>,
) -> Result<bool, ArchiveError> {
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            return Err(ArchiveError::store(
                marker.staging.clone(),
                object_store::Error::Generic {
                    store: "archive",
                    source: format!("a live upload's marker could not be read: {e}").into(),
                },
            ));
        }
    };
    let Ok(key) = Path::parse(&marker.key) else {
        return Ok(true);
    };
    if live.contains(&marker.key) {
        return Ok(false);
    }
    let full = mp.full(&key);
    let found = match s3
        .ids(&full)
        .await
        .map_err(|e| ArchiveError::store(marker.key.clone(), e))?
    {
        Listing::Found(found) => found,
        Listing::Refused(why) => {
            refused(&marker.key, &why);
            return Ok(true);
        }
    };
    // Refreshes come every period plus the write's own time: two periods bound when the dead
    // process last ran. A live upload of the key missing from `live` (its marker written after
    // the look) started far later: the dead marker had been stale for the sweep's age.
    let died_by = last_refreshed + 2 * MARKER_REFRESH;
    for upload in found {
        if upload.initiated.is_some_and(|at| at > died_by) {
            continue;
        }
        match abort_upload(mp, &full, &upload.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                tracing::info!(key = %marker.key, "aborted an interrupted copy into place");
            }
            Err(e) => return Err(ArchiveError::store(marker.key.clone(), e)),
        }
    }
    Ok(true)
}
