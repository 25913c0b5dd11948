//! Multipart uploads that a crash cannot orphan.
//!
//! A large body is uploaded in parts to a staging key `.wxvault-staging/<id>`. Before the store
//! is asked to create the upload, a small marker object `.wxvault-staging/<id>.upload` records
//! the final key and the staging key; once the store has answered, the marker is rewritten with
//! the store's upload id, before the first part goes up (a process killed in between leaves a
//! marker without the id: the sweep finds that upload by its staging key, see `upload_ids`).
//! While the upload lives, a heartbeat rewrites the marker every
//! [`MARKER_REFRESH`], and the marker is deleted once the object is in place (or the upload was
//! aborted). A process killed mid-upload leaves its marker behind, untouched from then on.
//! `sweep::remove_stale` (run at the start of `sync` and of every worker) aborts the upload of each
//! marker not touched for longer than the given age, deletes its staging data and the marker.
//!
//! object_store's `MultipartStore` has create / put_part / complete / abort but no listing of
//! unfinished uploads; the marker is what makes them findable. An upload whose marker is still
//! being refreshed belongs to a live process (here or on another machine) and is never touched.
//! Interrupted uploads are aborted, not resumed: resuming would need the hash state of the
//! parts already sent, and the download they came from restarts from byte 0 anyway.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    MultipartId, MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload, PutPayloadMut,
    PutResult, UploadPart,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::open::Multipart;
use crate::{ArchiveError, MAX_PARTS_IN_FLIGHT, PART_SIZE};

/// Top-level folder of in-progress large uploads and their markers. Invisible to
/// [`crate::Archive::list`]; no layout key can collide with it (key segments never start
/// with `.`).
pub(crate) const STAGING_PREFIX: &str = ".wxvault-staging";

/// Suffix of an upload's marker object, next to its staging object.
pub(crate) const MARKER_SUFFIX: &str = ".upload";

/// How often a live upload rewrites its marker.
pub const MARKER_REFRESH: Duration = Duration::from_secs(60);

/// Markers (and staging data) untouched for this long belong to an upload whose process died:
/// fifteen refresh periods, which also absorbs clock skew between a machine and its store.
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(15 * 60);

/// What a marker records about one in-flight upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// Final key (relative to the archive root), for the operator reading a leftover.
    pub key: String,
    /// Staging key the parts go to (relative to the archive root).
    pub staging: String,
    /// The store's multipart upload id; `None` for stores without one (local folder).
    pub upload_id: Option<String>,
    /// RFC 3339 time the upload started.
    pub started: String,
    /// How many times the heartbeat has rewritten the marker.
    pub refreshed: u64,
}

impl Marker {
    pub fn path(id: &str) -> Path {
        Path::from_iter([STAGING_PREFIX, &format!("{id}{MARKER_SUFFIX}")])
    }

    pub fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).expect("a marker always serializes"))
    }
}

/// Writes (or rewrites) a marker.
pub(crate) async fn write_marker(
    store: &dyn ObjectStore,
    path: &Path,
    marker: &Marker,
) -> object_store::Result<PutResult> {
    let opts = PutOptions {
        mode: PutMode::Overwrite,
        ..PutOptions::default()
    };
    store.put_opts(path, marker.payload(), opts).await
}

/// Rewrites a marker every `every` until stopped; stopping waits for a rewrite in progress, so
/// none can land after the marker is deleted. Runs from the marker's first write on, so even a
/// create that takes long keeps its marker fresh.
pub(crate) struct Heartbeat {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Locked for each write, so that writes land in the order the marker changed.
    marker: Arc<tokio::sync::Mutex<Marker>>,
}

impl Drop for Heartbeat {
    /// An upload dropped mid-way (its task cancelled) stops refreshing its marker, as a killed
    /// process would, so the marker goes stale and the upload is cleaned up.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    pub fn start(
        store: Arc<dyn ObjectStore>,
        path: Path,
        marker: Marker,
        every: Duration,
    ) -> Heartbeat {
        let marker = Arc::new(tokio::sync::Mutex::new(marker));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (task_store, task_path, task_marker) =
            (Arc::clone(&store), path.clone(), Arc::clone(&marker));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let mut marker = task_marker.lock().await;
                marker.refreshed += 1;
                if let Err(e) = write_marker(task_store.as_ref(), &task_path, &marker).await {
                    tracing::warn!(
                        marker = %task_path,
                        error = %redact::redact_urls_in(&e.to_string()),
                        "could not refresh the upload marker"
                    );
                }
            }
        });
        Heartbeat {
            stop,
            task,
            store,
            path,
            marker,
        }
    }

    /// Adds the store's upload id to the marker and writes it; no refresh can write the marker
    /// without the id afterwards.
    pub async fn record_upload_id(&self, id: &str) -> object_store::Result<PutResult> {
        let mut marker = self.marker.lock().await;
        marker.upload_id = Some(id.to_owned());
        write_marker(self.store.as_ref(), &self.path, &marker).await
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

/// A multipart upload through [`MultipartStore`], which exposes the upload id the marker
/// records (`ObjectStore::put_multipart` hides it).
pub(crate) struct StoreUpload {
    mp: Multipart,
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    next: usize,
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
}

impl StoreUpload {
    /// Starts an upload to `path` (relative to the archive root).
    pub async fn create(mp: &Multipart, path: &Path) -> object_store::Result<StoreUpload> {
        let path = mp.full(path);
        let id = mp.store.create_multipart(&path).await?;
        Ok(StoreUpload {
            mp: mp.clone(),
            store: Arc::clone(&mp.store),
            path,
            id,
            next: 0,
            parts: Arc::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for StoreUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUpload")
            .field("path", &self.path)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for StoreUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next;
        self.next += 1;
        let (store, path, id, parts) = (
            Arc::clone(&self.store),
            self.path.clone(),
            self.id.clone(),
            Arc::clone(&self.parts),
        );
        Box::pin(async move {
            let part = store.put_part(&path, &id, idx, data).await?;
            let mut parts = parts.lock().expect("parts lock");
            if parts.len() <= idx {
                parts.resize(idx + 1, None);
            }
            parts[idx] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = self
            .parts
            .lock()
            .expect("parts lock")
            .iter()
            .cloned()
            .collect();
        let parts = parts.ok_or_else(|| object_store::Error::Generic {
            store: "archive",
            source: "a part of the multipart upload is missing".into(),
        })?;
        self.store
            .complete_multipart(&self.path, &self.id, parts)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        abort_upload(&self.mp, &self.path, &self.id).await
    }
}

/// Aborts the upload `id` to `path` (as the store sees it).
///
/// Azure has no abort (object_store's `abort_multipart` does nothing, and uncommitted blocks
/// would linger for a week): committing an empty block list discards every uncommitted block
/// of the blob, and deleting the then-empty blob leaves nothing. The path is a private staging
/// key, so committing it never exposes anything.
pub(crate) async fn abort_upload(
    mp: &Multipart,
    path: &Path,
    id: &MultipartId,
) -> object_store::Result<()> {
    match &mp.azure_objects {
        None => mp.store.abort_multipart(path, id).await,
        Some(objects) => {
            mp.store.complete_multipart(path, id, Vec::new()).await?;
            match objects.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// A multipart upload fed in `PART_SIZE` parts with at most `MAX_PARTS_IN_FLIGHT` concurrent
/// part uploads.
///
/// Written instead of `object_store::WriteMultipart` so that every failure path, including a
/// failed final part, can still abort the upload.
pub(crate) struct Parts {
    upload: Box<dyn MultipartUpload>,
    in_flight: JoinSet<object_store::Result<()>>,
    pending: PutPayloadMut,
}

impl Parts {
    pub fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Parts {
            upload,
            in_flight: JoinSet::new(),
            pending: PutPayloadMut::new(),
        }
    }

    pub async fn push(&mut self, mut bytes: bytes::Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            let room = PART_SIZE - self.pending.content_length();
            if bytes.len() < room {
                self.pending.push(bytes);
                return Ok(());
            }
            self.pending.push(bytes.split_to(room));
            self.send_pending(MAX_PARTS_IN_FLIGHT).await?;
        }
        Ok(())
    }

    /// Starts uploading the pending part once fewer than `limit` are in flight.
    async fn send_pending(&mut self, limit: usize) -> object_store::Result<()> {
        while self.in_flight.len() >= limit.max(1) {
            self.join_one().await?;
        }
        let part = std::mem::take(&mut self.pending).freeze();
        self.in_flight.spawn(self.upload.put_part(part));
        Ok(())
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(join_error)) => Err(object_store::Error::Generic {
                store: "archive",
                source: Box::new(join_error),
            }),
        }
    }

    pub async fn complete(&mut self) -> object_store::Result<PutResult> {
        if self.pending.content_length() > 0 {
            self.send_pending(MAX_PARTS_IN_FLIGHT).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.upload.complete().await
    }

    /// Cancels in-flight parts and aborts the upload, so no staging data is left (the local
    /// backend deletes its part files; S3 and GCS drop the parts; on Azure an empty block list
    /// is committed and the blob deleted, see [`abort_upload`]).
    ///
    /// # Errors
    /// The store's error when the abort failed: the caller must then keep the upload's marker
    /// so that `sweep::remove_stale` retries the abort once the marker is stale.
    pub async fn abort(mut self) -> object_store::Result<()> {
        self.in_flight.shutdown().await;
        self.upload.abort().await
    }
}

/// Deletes `path`; `false` when it was already gone.
pub(crate) async fn delete(store: &dyn ObjectStore, path: &Path) -> Result<bool, ArchiveError> {
    match store.delete(path).await {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(ArchiveError::store(path.to_string(), e)),
    }
}

pub(crate) fn local_io_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    }
}
