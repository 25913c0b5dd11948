//! Object-store sink for wxvault: key layout, verified streaming puts, sidecars.
//!
//! This crate knows nothing of Webex or of the state database. It offers one
//! guarantee the rest of wxvault is built on: **an object is never overwritten
//! with different bytes, and an object only ever appears complete.**
//!
//! * [`Archive::put_stream`] streams a body (a recording download) to a key with
//!   bounded memory, hashing it (sha256) and counting it on the way. A body that
//!   fails or has the wrong length leaves nothing behind.
//! * Bodies that fit in one part are written with a single create-if-absent
//!   put. Larger bodies are uploaded in parts to a private staging key
//!   (`.wxvault-staging/<uuid>`, which no layout key can collide with because
//!   key segments never start with `.`) and then linked into place with
//!   `copy_if_not_exists`: a hard link on the local file system, a multipart
//!   copy completed with `If-None-Match: *` on S3. Both refuse to replace an
//!   existing object, so two writers racing on one key cannot overwrite each
//!   other; the loser compares hashes instead.
//! * When the key already exists, the incoming bytes are hashed and compared:
//!   identical is success ([`PutStatus::AlreadyPresent`], the idempotent re-run
//!   after a crash), different is [`ArchiveError::Conflict`].
//!
//! Backends: `file://` (the embedded default) and `s3://bucket/prefix`, any
//! S3-compatible endpoint. The `test-s3` feature provides [`testing::TestS3`],
//! an in-process S3 server for tests.

mod check;
mod error;
pub mod layout;
pub mod sidecar;
#[cfg(feature = "test-s3")]
pub mod testing;

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload, PutPayloadMut, PutResult,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

pub use error::ArchiveError;
pub use layout::ObjectKey;

/// Size of each uploaded part. S3 requires at least 5 MiB for all parts but
/// the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploaded concurrently by one [`Archive::put_stream`].
///
/// Peak buffered memory per `put_stream` is about
/// `PART_SIZE × (MAX_PARTS_IN_FLIGHT + 1)` = 24 MiB: the parts in flight plus
/// the part being filled (plus whatever single chunk the source yields).
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// Top-level folder of in-progress large uploads. Invisible to [`Archive::list`].
const STAGING_PREFIX: &str = ".wxvault-staging";

/// Where the archive lives; one section of the wxvault configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StorageConfig {
    /// `file:///abs/path`, `file://relative/path`, a bare path, or
    /// `s3://bucket[/prefix]`.
    pub url: String,
    /// S3 endpoint for S3-compatible stores (MinIO, R2, …), e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; defaults to `AWS_REGION`/`AWS_DEFAULT_REGION` or `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (local test stores only).
    #[serde(default)]
    pub allow_http: bool,
}

/// Result of a successful [`Archive::put_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Lowercase hex sha256 of the bytes at the key (which equal the bytes offered).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the object was written now or was already there.
    pub status: PutStatus,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    /// The object did not exist and now does.
    Created,
    /// An identical object already existed; nothing was written.
    AlreadyPresent,
    /// A different object already exists and was left untouched
    /// (only from [`Archive::put_if_absent`]; `put_stream` reports
    /// [`ArchiveError::Conflict`] instead).
    ExistsDifferent,
}

/// Handle on the archive. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    description: Arc<str>,
    /// Root folder of a `file://` archive, for cleaning staging files that
    /// `object_store` does not list.
    local_root: Option<Arc<PathBuf>>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own Debug may include credentials; never print it.
        f.debug_struct("Archive")
            .field("location", &self.description)
            .finish_non_exhaustive()
    }
}

/// Explicit S3 credentials for [`Archive::open_s3_with_keys`].
struct Keys<'a> {
    access_key: &'a str,
    secret_key: &'a str,
}

impl Archive {
    /// Opens the archive described by `cfg`.
    ///
    /// `file:///abs/path`, `file://relative/path` or a bare path open a local
    /// folder, created if missing. `s3://bucket[/prefix]` opens an S3 bucket
    /// with credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN` (and the other `AWS_*` variables `object_store`
    /// understands); `endpoint`, `region` and `allow_http` override them.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] for an unsupported scheme, an empty bucket or
    /// path, an invalid prefix or endpoint, a plain-HTTP endpoint without
    /// `allow_http`, or a local folder that cannot be created.
    pub fn open(cfg: &StorageConfig) -> Result<Archive, ArchiveError> {
        let url = cfg.url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            return open_s3(cfg, rest, None);
        }
        let path = match url.strip_prefix("file://") {
            Some(rest) => rest,
            None if url.contains("://") => {
                return Err(ArchiveError::config(
                    "url",
                    format!(
                        "unsupported scheme in {:?}; use file://PATH, a bare path or s3://BUCKET/PREFIX",
                        redact::redact_url(url)
                    ),
                ));
            }
            None => url,
        };
        open_local(FsPath::new(path))
    }

    /// Opens an `s3://` archive with explicit credentials instead of the
    /// environment (config-provided credentials, tests).
    ///
    /// # Errors
    /// As [`Archive::open`]; also [`ArchiveError::Config`] when `cfg.url` is
    /// not an `s3://` URL or a key is empty.
    pub fn open_s3_with_keys(
        cfg: &StorageConfig,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Archive, ArchiveError> {
        let Some(rest) = cfg.url.trim().strip_prefix("s3://") else {
            return Err(ArchiveError::config(
                "url",
                "explicit S3 credentials need an s3://BUCKET[/PREFIX] url",
            ));
        };
        if access_key.is_empty() || secret_key.is_empty() {
            return Err(ArchiveError::config(
                "credentials",
                "the S3 access key and secret key must not be empty",
            ));
        }
        open_s3(
            cfg,
            rest,
            Some(Keys {
                access_key,
                secret_key,
            }),
        )
    }

    /// Human-readable location, e.g. `file:///var/lib/wxvault/archive` or
    /// `s3://bucket/prefix (endpoint http://127.0.0.1:9000)`. Never contains
    /// credentials.
    pub fn describe(&self) -> String {
        self.description.to_string()
    }

    /// Streams `body` to `key`, hashing and counting it; never overwrites.
    ///
    /// Memory stays bounded: at most `PART_SIZE × (MAX_PARTS_IN_FLIGHT + 1)`
    /// (24 MiB) is buffered, whatever the body's size. If `key` already
    /// exists, the body is drained and hashed and compared with the existing
    /// object: identical → `Ok` with [`PutStatus::AlreadyPresent`].
    /// Otherwise the object appears atomically and complete, or not at all.
    ///
    /// # Errors
    /// * [`ArchiveError::Source`] — the body stream failed; nothing was stored.
    /// * [`ArchiveError::SizeMismatch`] — `expected_len` was given and the body
    ///   was shorter or longer; nothing was stored.
    /// * [`ArchiveError::Conflict`] — a different object exists at `key`; it
    ///   was left untouched.
    /// * [`ArchiveError::Store`] — the object store failed; nothing partial is
    ///   visible at `key` (S3 may keep orphaned parts of an aborted upload
    ///   if the abort itself fails: configure a lifecycle rule for incomplete
    ///   multipart uploads).
    pub async fn put_stream<S, E>(
        &self,
        key: &ObjectKey,
        mut body: S,
        expected_len: Option<u64>,
    ) -> Result<PutOutcome, ArchiveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut tally = Tally::new(key, expected_len);
        // The up-front check saves uploading a large body that cannot be used. A local store
        // enforces create-only itself (hard link), so a body known to fit one part skips it: the
        // create fails with AlreadyExists and is settled the same way.
        let small_local =
            self.local_root.is_some() && expected_len.is_some_and(|l| l <= PART_SIZE as u64);
        if !small_local && self.head(key).await?.is_some() {
            while let Some(chunk) = body.next().await {
                tally.add(&chunk.map_err(source_error)?)?;
            }
            let (sha256, size) = tally.finish()?;
            return self.settle_existing(key, sha256, size).await;
        }

        // Read up to one part: small bodies need a single request.
        let mut first = PutPayloadMut::new();
        let mut rest_pending = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(source_error)?;
            tally.add(&chunk)?;
            if first.content_length() + chunk.len() > PART_SIZE {
                rest_pending = Some(chunk);
                break;
            }
            first.push(chunk);
        }

        let Some(overflow) = rest_pending else {
            let (sha256, size) = tally.finish()?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            return match self
                .store
                .put_opts(&key.to_path(), first.freeze(), opts)
                .await
            {
                Ok(_) => Ok(PutOutcome {
                    sha256,
                    size,
                    status: PutStatus::Created,
                }),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.settle_existing(key, sha256, size).await
                }
                Err(e) => Err(ArchiveError::store(key.as_str(), e)),
            };
        };

        let staging = Path::from_iter([STAGING_PREFIX, &uuid::Uuid::new_v4().to_string()]);
        let upload = self
            .store
            .put_multipart(&staging)
            .await
            .map_err(|e| ArchiveError::store(key.as_str(), e))?;
        let mut parts = Parts::new(upload);
        let streamed = async {
            for chunk in first.freeze().into_iter().chain([overflow]) {
                parts
                    .push(chunk)
                    .await
                    .map_err(|e| ArchiveError::store(key.as_str(), e))?;
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(source_error)?;
                tally.add(&chunk)?;
                parts
                    .push(chunk)
                    .await
                    .map_err(|e| ArchiveError::store(key.as_str(), e))?;
            }
            let summary = tally.finish()?;
            parts
                .complete()
                .await
                .map_err(|e| ArchiveError::store(key.as_str(), e))?;
            Ok(summary)
        }
        .await;
        let (sha256, size) = match streamed {
            Ok(summary) => summary,
            Err(e) => {
                parts.abort().await;
                return Err(e);
            }
        };

        let linked = self
            .store
            .copy_if_not_exists(&staging, &key.to_path())
            .await;
        self.remove_staging(&staging).await;
        match linked {
            Ok(()) => Ok(PutOutcome {
                sha256,
                size,
                status: PutStatus::Created,
            }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.settle_existing(key, sha256, size).await
            }
            Err(e) => Err(ArchiveError::store(key.as_str(), e)),
        }
    }

    /// Creates a small object (a sidecar) if absent; never overwrites.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the store fails. An existing different
    /// object is not an error: it yields [`PutStatus::ExistsDifferent`] and is
    /// left as it is, for the caller to decide.
    pub async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<PutStatus, ArchiveError> {
        let path = key.to_path();
        // Checking first keeps stores that ignore `If-None-Match` from
        // overwriting in the common (non-racing) case. A local store enforces create-only itself.
        if self.local_root.is_some() || self.head(key).await?.is_none() {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
                .await
            {
                Ok(_) => return Ok(PutStatus::Created),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(ArchiveError::store(key.as_str(), e)),
            }
        }
        let existing = self.get_bytes(key).await?;
        Ok(if existing == bytes {
            PutStatus::AlreadyPresent
        } else {
            PutStatus::ExistsDifferent
        })
    }

    /// Size of the object at `key`, or `None` if there is none.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the store fails.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, ArchiveError> {
        match self.store.head(&key.to_path()).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(key.as_str(), e)),
        }
    }

    /// The whole object in memory; for small objects (sidecars) and tests.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the object is missing (`NotFound`) or the
    /// store fails.
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, ArchiveError> {
        let result = self
            .store
            .get(&key.to_path())
            .await
            .map_err(|e| ArchiveError::store(key.as_str(), e))?;
        result
            .bytes()
            .await
            .map_err(|e| ArchiveError::store(key.as_str(), e))
    }

    /// Streaming sha256 (lowercase hex) and size of the object at `key`, or
    /// `None` if there is none.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the store fails.
    pub async fn sha256_of(&self, key: &ObjectKey) -> Result<Option<(String, u64)>, ArchiveError> {
        let result = match self.store.get(&key.to_path()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(ArchiveError::store(key.as_str(), e)),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ArchiveError::store(key.as_str(), e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some((hex::encode(hasher.finalize()), size)))
    }

    /// All objects under `prefix` (whole `/`-separated segments, e.g.
    /// `"org/wxcc/2024"`; `""` for everything), as keys relative to the archive
    /// root with their sizes, sorted by key. In-progress uploads are not listed.
    ///
    /// # Errors
    /// [`ArchiveError::InvalidKey`] for a prefix with empty, `.` or `..`
    /// segments; [`ArchiveError::Store`] when the store fails.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        let trimmed = prefix.trim_matches('/');
        let prefix_path = if trimmed.is_empty() {
            None
        } else {
            Some(Path::parse(trimmed).map_err(|_| ArchiveError::InvalidKey {
                component: prefix.to_owned(),
                reason: "list prefix has an empty, '.' or '..' segment",
            })?)
        };
        let mut out: Vec<(String, u64)> = self
            .store
            .list(prefix_path.as_ref())
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_filter(|(key, _)| {
                futures::future::ready(key.split('/').next() != Some(STAGING_PREFIX))
            })
            .try_collect()
            .await
            .map_err(|e| ArchiveError::store(prefix, e))?;
        out.sort();
        Ok(out)
    }

    /// Deletes staging data older than `older_than` left by uploads that were
    /// killed mid-way (a crash between upload and link). Returns how many
    /// staging objects or files were removed.
    ///
    /// Choose `older_than` well above the longest upload (e.g. a day): a
    /// younger staging object may belong to an upload still running in
    /// another process. On S3, parts of never-completed multipart uploads are
    /// not objects and are not seen here; a bucket lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) removes them.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when listing or deleting fails.
    pub async fn remove_stale_staging(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, ArchiveError> {
        let now = std::time::SystemTime::now();
        let is_stale = |modified: std::time::SystemTime| {
            now.duration_since(modified)
                .is_ok_and(|age| age >= older_than)
        };
        let staging = Path::from(STAGING_PREFIX);
        let stale: Vec<Path> = self
            .store
            .list(Some(&staging))
            .try_filter_map(|meta| {
                let modified: std::time::SystemTime = meta.last_modified.into();
                futures::future::ready(Ok(is_stale(modified).then_some(meta.location)))
            })
            .try_collect()
            .await
            .map_err(|e| ArchiveError::store(STAGING_PREFIX, e))?;
        let mut removed = 0;
        for path in stale {
            match self.store.delete(&path).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ArchiveError::store(path.to_string(), e)),
            }
        }
        // The local backend writes parts to `<staging>#<n>` files, which it
        // does not list; remove those directly.
        if let Some(root) = &self.local_root {
            let dir = root.join(STAGING_PREFIX);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries.collect::<Result<Vec<_>, _>>(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            }
            .map_err(|e| ArchiveError::store(STAGING_PREFIX, local_io_error(&dir, e)))?;
            for entry in entries {
                let path = entry.path();
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(is_stale);
                if stale && entry.file_name().to_string_lossy().contains('#') {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(ArchiveError::store(
                                STAGING_PREFIX,
                                local_io_error(&path, e),
                            ));
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The key exists: report `AlreadyPresent` if it holds exactly the
    /// offered bytes, `Conflict` otherwise.
    async fn settle_existing(
        &self,
        key: &ObjectKey,
        sha256: String,
        size: u64,
    ) -> Result<PutOutcome, ArchiveError> {
        let Some((existing_sha256, existing_size)) = self.sha256_of(key).await? else {
            // Deleted between the existence check and the read: nothing to
            // compare with, let the caller retry.
            return Err(ArchiveError::store(
                key.as_str(),
                object_store::Error::NotFound {
                    path: key.to_string(),
                    source: "object disappeared while comparing with it".into(),
                },
            ));
        };
        if existing_sha256 == sha256 && existing_size == size {
            Ok(PutOutcome {
                sha256,
                size,
                status: PutStatus::AlreadyPresent,
            })
        } else {
            Err(ArchiveError::Conflict {
                key: key.to_string(),
                existing_sha256,
                new_sha256: sha256,
            })
        }
    }

    /// Best-effort removal of a completed staging object; a leftover is
    /// invisible to [`Archive::list`] and harmless.
    async fn remove_staging(&self, staging: &Path) {
        if let Err(e) = self.store.delete(staging).await {
            tracing::warn!(staging = %staging, error = %e, "could not remove staging object");
        }
    }
}

fn local_io_error(path: &FsPath, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    }
}

fn source_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> ArchiveError {
    ArchiveError::Source(Box::new(e))
}

/// Running sha256 and length of a body, checked against the announced length.
struct Tally<'a> {
    key: &'a ObjectKey,
    expected: Option<u64>,
    hasher: Sha256,
    size: u64,
}

impl<'a> Tally<'a> {
    fn new(key: &'a ObjectKey, expected: Option<u64>) -> Self {
        Tally {
            key,
            expected,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Adds a chunk; fails as soon as the body is longer than announced, so
    /// an over-long body is not uploaded in full before being rejected.
    fn add(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        match self.expected {
            Some(expected) if self.size > expected => Err(self.mismatch(expected)),
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<(String, u64), ArchiveError> {
        match self.expected {
            Some(expected) if self.size != expected => Err(self.mismatch(expected)),
            _ => Ok((hex::encode(self.hasher.finalize()), self.size)),
        }
    }

    fn mismatch(&self, expected: u64) -> ArchiveError {
        ArchiveError::SizeMismatch {
            key: self.key.to_string(),
            expected,
            got: self.size,
        }
    }
}

/// A multipart upload fed in `PART_SIZE` parts with at most
/// `MAX_PARTS_IN_FLIGHT` concurrent part uploads.
///
/// Written instead of `object_store::WriteMultipart` so that every failure
/// path, including a failed final part, can still abort the upload.
struct Parts {
    upload: Box<dyn MultipartUpload>,
    in_flight: JoinSet<object_store::Result<()>>,
    pending: PutPayloadMut,
}

impl Parts {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Parts {
            upload,
            in_flight: JoinSet::new(),
            pending: PutPayloadMut::new(),
        }
    }

    async fn push(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
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

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        if self.pending.content_length() > 0 {
            self.send_pending(MAX_PARTS_IN_FLIGHT).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.upload.complete().await
    }

    /// Cancels in-flight parts and aborts the upload, so no staging data is
    /// left (the local backend deletes its staging file; S3 drops the parts).
    async fn abort(mut self) {
        self.in_flight.shutdown().await;
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "could not abort multipart upload");
        }
    }
}

fn open_local(path: &FsPath) -> Result<Archive, ArchiveError> {
    if path.as_os_str().is_empty() {
        return Err(ArchiveError::config("url", "the archive path is empty"));
    }
    std::fs::create_dir_all(path).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot create archive folder {}: {e}", path.display()),
        )
    })?;
    let root: PathBuf = std::fs::canonicalize(path).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot resolve archive folder {}: {e}", path.display()),
        )
    })?;
    let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot use archive folder {}: {e}", root.display()),
        )
    })?;
    Ok(Archive {
        store: Arc::new(store),
        description: format!("file://{}", root.display()).into(),
        local_root: Some(Arc::new(root)),
    })
}

fn open_s3(
    cfg: &StorageConfig,
    bucket_and_prefix: &str,
    keys: Option<Keys<'_>>,
) -> Result<Archive, ArchiveError> {
    let (bucket, prefix) = bucket_and_prefix
        .split_once('/')
        .unwrap_or((bucket_and_prefix, ""));
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(ArchiveError::config(
            "url",
            format!("invalid bucket name {bucket:?}; expected s3://BUCKET[/PREFIX]"),
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix_path = if prefix.is_empty() {
        None
    } else {
        let valid = Path::parse(prefix)
            .ok()
            .filter(|p| p.parts().all(|part| !part.as_ref().starts_with('.')));
        Some(valid.ok_or_else(|| {
            ArchiveError::config(
                "url",
                format!("invalid prefix {prefix:?}: no empty, '.' or '..' segments"),
            )
        })?)
    };

    let mut builder = match &keys {
        Some(k) => AmazonS3Builder::new()
            .with_access_key_id(k.access_key)
            .with_secret_access_key(k.secret_key),
        None => AmazonS3Builder::from_env(),
    };
    builder = builder.with_bucket_name(bucket);
    let mut endpoint_shown = None;
    if let Some(endpoint) = cfg
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let mut parsed = url::Url::parse(endpoint).map_err(|e| {
            ArchiveError::config(
                "endpoint",
                format!("not a URL ({e}); expected e.g. https://s3.example.com"),
            )
        })?;
        match parsed.scheme() {
            "https" => {}
            "http" if cfg.allow_http => {}
            "http" => {
                return Err(ArchiveError::config(
                    "endpoint",
                    "plain-HTTP endpoint; set allow_http = true (local test stores only) or use https",
                ));
            }
            other => {
                return Err(ArchiveError::config(
                    "endpoint",
                    format!("unsupported scheme {other:?}; use https (or http with allow_http)"),
                ));
            }
        }
        builder = builder.with_endpoint(endpoint);
        // Never show userinfo or a query a user may have embedded in the endpoint.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        endpoint_shown = Some(redact::redact_url(parsed.as_str().trim_end_matches('/')));
    }
    if cfg.allow_http {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = cfg.region.as_deref().filter(|r| !r.is_empty()) {
        builder = builder.with_region(region);
    } else if keys.is_some()
        && let Some(region) = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
    {
        builder = builder.with_region(region);
    }
    // Native S3 (and stores that implement conditional writes) provide
    // copy-if-not-exists through a multipart copy completed with
    // `If-None-Match: *`. An explicit AWS_COPY_IF_NOT_EXISTS (e.g. R2's header
    // mode) wins when credentials come from the environment.
    if keys.is_some() || std::env::var_os("AWS_COPY_IF_NOT_EXISTS").is_none() {
        builder = builder.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    }
    let s3 = builder
        .build()
        .map_err(|e| ArchiveError::config("s3", redact::redact_urls_in(&e.to_string())))?;

    let mut description = format!("s3://{bucket}");
    let store: Arc<dyn ObjectStore> = match prefix_path {
        Some(p) => {
            description.push('/');
            description.push_str(p.as_ref());
            Arc::new(PrefixStore::new(s3, p))
        }
        None => Arc::new(s3),
    };
    if let Some(endpoint) = endpoint_shown {
        description.push_str(&format!(" (endpoint {endpoint})"));
    }
    Ok(Archive {
        store,
        description: description.into(),
        local_root: None,
    })
}
