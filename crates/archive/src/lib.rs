//! Object-store sink for wxvault: key layout, verified streaming puts, sidecars.
//!
//! This crate knows nothing of Webex or of the state database. It offers one
//! guarantee the rest of wxvault is built on: **an object is never overwritten
//! with different bytes, and an object only ever appears complete.**
//!
//! * [`Archive::put_stream`] streams a body (a recording download) to a key with
//!   bounded memory, hashing it (sha256) and counting it on the way. A body that
//!   fails or has the wrong length leaves nothing behind.
//! * Bodies up to [`StorageConfig::multipart_threshold`] are written with a
//!   single create-if-absent put (`PutMode::Create`: `If-None-Match: *` on S3
//!   and Azure, `x-goog-if-generation-match: 0` on GCS, a hard link locally).
//!   Larger bodies are uploaded in parts to a private staging key
//!   (`.wxvault-staging/<uuid>`, which no layout key can collide with because
//!   key segments never start with `.`) and then linked into place with
//!   `copy_if_not_exists`: a hard link on the local file system, a multipart
//!   copy completed with `If-None-Match: *` on S3, a copy with
//!   `x-goog-if-generation-match: 0` on GCS and with `If-None-Match: *` on
//!   Azure. All refuse to replace an existing object, so two writers racing on
//!   one key cannot overwrite each other; the loser compares hashes instead.
//! * A marker object per multipart upload, refreshed while it runs, lets
//!   [`Archive::clean_interrupted_uploads`] abort uploads whose process was
//!   killed, so no orphan parts stay behind (see `upload.rs`).
//! * When the key already exists, the incoming bytes are hashed and compared:
//!   identical is success ([`PutStatus::AlreadyPresent`], the idempotent re-run
//!   after a crash), different is [`ArchiveError::Conflict`].
//!
//! Backends: `file://` (the embedded default), `s3://bucket/prefix` (any
//! S3-compatible endpoint, optional SSE-S3 / SSE-KMS), `gs://bucket/prefix` and
//! `az://container/prefix`. The `test-s3` feature provides [`testing::TestS3`],
//! an in-process S3 server for tests.

mod check;
mod config;
mod error;
pub mod layout;
mod open;
mod s3_uploads;
mod settle;
pub mod sidecar;
mod sweep;
mod tally;
#[cfg(feature = "test-s3")]
pub mod testing;
mod upload;
#[cfg(test)]
mod upload_tests;

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload, PutPayloadMut};
use sha2::{Digest, Sha256};

pub use config::{
    DEFAULT_MULTIPART_THRESHOLD, MAX_MULTIPART_THRESHOLD, MIN_MULTIPART_THRESHOLD, Sse,
    StorageConfig,
};
pub use error::{ArchiveError, Cloud};
pub use layout::ObjectKey;
pub use upload::{MARKER_REFRESH, STALE_UPLOAD_AGE};

use open::{Keys, Multipart};
use settle::exists;
use tally::{Tally, source_error};
use upload::{Heartbeat, Marker, Parts, STAGING_PREFIX, StoreUpload};

/// Size of each uploaded part. S3 requires at least 5 MiB for all parts but
/// the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploaded concurrently by one [`Archive::put_stream`].
///
/// Peak buffered memory per `put_stream` is about the multipart threshold
/// (the body is read up to it to decide between one put and parts) plus
/// `PART_SIZE × MAX_PARTS_IN_FLIGHT` for the parts in flight.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

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
    /// Multipart interface with upload ids (cloud stores); the local folder uses
    /// `ObjectStore::put_multipart`.
    multipart: Option<Multipart>,
    description: Arc<str>,
    /// Root folder of a `file://` archive, for cleaning staging files that
    /// `object_store` does not list.
    local_root: Option<Arc<PathBuf>>,
    multipart_threshold: u64,
    marker_refresh: Duration,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own Debug may include credentials; never print it.
        f.debug_struct("Archive")
            .field("location", &self.description)
            .finish_non_exhaustive()
    }
}

impl Archive {
    /// Opens the archive described by `cfg`.
    ///
    /// * `file:///abs/path`, `file://relative/path` or a bare path open a local
    ///   folder, created if missing.
    /// * `s3://bucket[/prefix]` opens an S3 bucket with credentials from
    ///   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` (and
    ///   the other `AWS_*` variables `object_store` understands).
    /// * `gs://bucket[/prefix]` opens a Google Cloud Storage bucket with
    ///   credentials from `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_SERVICE_ACCOUNT_KEY`
    ///   / `GOOGLE_APPLICATION_CREDENTIALS` or the instance's service account;
    ///   with a plain-HTTP or loopback `endpoint` it talks to a GCS emulator without
    ///   authentication; another `endpoint` needs a service-account key from the environment.
    /// * `az://container[/prefix]` opens an Azure blob container of the account
    ///   `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS, a
    ///   service principal or a managed identity (the `AZURE_*` variables).
    ///
    /// `endpoint`, `region` and `allow_http` override the environment.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] for an unsupported scheme, an empty bucket or
    /// path, an invalid prefix or endpoint, a plain-HTTP endpoint without
    /// `allow_http`, a multipart threshold out of range, encryption settings on
    /// a non-S3 archive, or a local folder that cannot be created.
    pub fn open(cfg: &StorageConfig) -> Result<Archive, ArchiveError> {
        open::check_threshold(cfg)?;
        let url = cfg.url.trim();
        let opened = if let Some(rest) = url.strip_prefix("s3://") {
            open::open_s3(cfg, rest, None)?
        } else if let Some(rest) = url.strip_prefix("gs://") {
            open::open_gcs(cfg, rest)?
        } else if let Some(rest) = url.strip_prefix("az://") {
            open::open_azure(cfg, rest, None)?
        } else if let Some(rest) = url.strip_prefix("file://") {
            open::open_local(FsPath::new(rest))?
        } else if url.contains("://") {
            return Err(open::check_scheme(url).unwrap_err());
        } else {
            open::open_local(FsPath::new(url))?
        };
        Ok(Archive::from_opened(opened, cfg))
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
        open::check_threshold(cfg)?;
        let opened = open::open_s3(
            cfg,
            rest,
            Some(Keys {
                access_key,
                secret_key,
            }),
        )?;
        Ok(Archive::from_opened(opened, cfg))
    }

    /// Opens an `az://` archive with an explicit storage account and shared key instead of the
    /// environment (tests against Azurite).
    ///
    /// # Errors
    /// As [`Archive::open`]; also [`ArchiveError::Config`] when `cfg.url` is not an `az://`
    /// URL.
    pub fn open_azure_with_key(
        cfg: &StorageConfig,
        account: &str,
        key: &str,
    ) -> Result<Archive, ArchiveError> {
        let Some(rest) = cfg.url.trim().strip_prefix("az://") else {
            return Err(ArchiveError::config(
                "url",
                "an explicit Azure account key needs an az://CONTAINER[/PREFIX] url",
            ));
        };
        open::check_threshold(cfg)?;
        let opened = open::open_azure(cfg, rest, Some((account, key)))?;
        Ok(Archive::from_opened(opened, cfg))
    }

    /// The underlying store, rooted at the archive's prefix: staging data and markers included
    /// (for tests and tools that inspect what an upload left).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    fn from_opened(opened: open::Opened, cfg: &StorageConfig) -> Archive {
        Archive {
            store: opened.store,
            multipart: opened.multipart,
            description: opened.description.into(),
            local_root: opened.local_root.map(Arc::new),
            multipart_threshold: cfg.multipart_threshold,
            marker_refresh: MARKER_REFRESH,
        }
    }

    /// The same archive with upload markers refreshed every `every` instead of
    /// [`MARKER_REFRESH`]; for tests that watch the heartbeat.
    pub fn with_marker_refresh(mut self, every: Duration) -> Archive {
        self.marker_refresh = every;
        self
    }

    /// Human-readable location, e.g. `file:///var/lib/wxvault/archive` or
    /// `s3://bucket/prefix (endpoint http://127.0.0.1:9000)`. Never contains
    /// credentials.
    pub fn describe(&self) -> String {
        self.description.to_string()
    }

    /// Bodies larger than this many bytes are uploaded in parts.
    pub fn multipart_threshold(&self) -> u64 {
        self.multipart_threshold
    }

    /// Streams `body` to `key`, hashing and counting it; never overwrites.
    ///
    /// Memory stays bounded: at most the multipart threshold plus
    /// `PART_SIZE × MAX_PARTS_IN_FLIGHT` is buffered, whatever the body's size.
    /// If `key` already exists, the body is drained and hashed and compared
    /// with the existing object: identical → `Ok` with
    /// [`PutStatus::AlreadyPresent`]. Otherwise the object appears atomically
    /// and complete, or not at all.
    ///
    /// # Errors
    /// * [`ArchiveError::Source`] — the body stream failed; nothing was stored.
    /// * [`ArchiveError::SizeMismatch`] — `expected_len` was given and the body
    ///   was shorter or longer; nothing was stored.
    /// * [`ArchiveError::Conflict`] — a different object exists at `key`; it
    ///   was left untouched.
    /// * [`ArchiveError::Store`] — the object store failed; nothing partial is
    ///   visible at `key` (an upload whose abort failed too is aborted later by
    ///   [`Archive::clean_interrupted_uploads`] through its marker).
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
        let threshold = self.multipart_threshold;
        // The up-front check saves uploading a large body that cannot be used. A local store
        // enforces create-only itself (hard link), so a body known to fit one put skips it: the
        // create fails with AlreadyExists and is settled the same way.
        let small_local = self.local_root.is_some() && expected_len.is_some_and(|l| l <= threshold);
        if !small_local && self.head(key).await?.is_some() {
            while let Some(chunk) = body.next().await {
                tally.add(&chunk.map_err(source_error)?)?;
            }
            let (sha256, size) = tally.finish()?;
            return self.settle_existing(key, sha256, size).await;
        }

        // Read up to the threshold: smaller bodies need a single request. A body announced
        // above the threshold goes up in parts straight away, without buffering the threshold.
        let parts_now = expected_len.is_some_and(|l| l > threshold);
        let mut first = PutPayloadMut::new();
        let mut rest_pending = None;
        while !parts_now && let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(source_error)?;
            tally.add(&chunk)?;
            if (first.content_length() + chunk.len()) as u64 > threshold {
                rest_pending = Some(chunk);
                break;
            }
            first.push(chunk);
        }

        if rest_pending.is_none() && !parts_now {
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
                Err(e) if exists(&e) => self.settle_existing(key, sha256, size).await,
                Err(e) => Err(ArchiveError::store(key.as_str(), e)),
            };
        }

        let id = uuid::Uuid::new_v4().to_string();
        let staging = Path::from_iter([STAGING_PREFIX, &id]);
        let marker_path = Marker::path(&id);
        let marker = Marker {
            key: key.to_string(),
            staging: staging.to_string(),
            upload_id: None,
            started: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            refreshed: 0,
        };
        // The marker goes up before the store creates anything, so that a process killed at
        // any later moment (even before the store's answer with the upload id arrives) leaves
        // an upload the clean-up can find: by its id once the marker has it, by its staging
        // key until then (see `sweep::remove_stale`).
        upload::write_marker(self.store.as_ref(), &marker_path, &marker)
            .await
            .map_err(|e| ArchiveError::store(key.as_str(), e))?;
        let heartbeat = Heartbeat::start(
            Arc::clone(&self.store),
            marker_path.clone(),
            marker,
            self.marker_refresh,
        );
        let created: object_store::Result<(Box<dyn MultipartUpload>, Option<String>)> =
            match &self.multipart {
                Some(mp) => StoreUpload::create(mp, &staging).await.map(|upload| {
                    let id = upload.id().to_owned();
                    (Box::new(upload) as Box<dyn MultipartUpload>, Some(id))
                }),
                None => self
                    .store
                    .put_multipart(&staging)
                    .await
                    .map(|upload| (upload, None)),
            };
        let (upload, upload_id) = match created {
            Ok(created) => created,
            Err(e) => {
                // The store may have created the upload all the same: the marker stays for
                // the clean-up.
                self.finish_upload(heartbeat, &marker_path, false).await;
                return Err(ArchiveError::store(key.as_str(), e));
            }
        };
        let mut parts = Parts::new(upload);
        if let Some(id) = &upload_id
            && let Err(e) = heartbeat.record_upload_id(id).await
        {
            let aborted = parts.abort().await;
            if let Err(abort) = &aborted {
                // The marker without the id stays: the clean-up finds the upload by its key.
                tracing::warn!(
                    key = %key,
                    error = %redact::redact_urls_in(&abort.to_string()),
                    "could not abort a multipart upload whose marker could not be completed; \
                     the clean-up of interrupted uploads aborts it later"
                );
            }
            let clean = aborted.is_ok() && self.strays_aborted(&staging).await;
            self.finish_upload(heartbeat, &marker_path, clean).await;
            return Err(ArchiveError::store(key.as_str(), e));
        }
        let streamed = async {
            for chunk in first.freeze().into_iter().chain(rest_pending) {
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
                let aborted = parts.abort().await;
                if let Err(abort) = &aborted {
                    tracing::warn!(
                        key = %key,
                        error = %redact::redact_urls_in(&abort.to_string()),
                        "could not abort a multipart upload; its marker is kept so that the \
                         clean-up of interrupted uploads aborts it later"
                    );
                }
                let clean = aborted.is_ok() && self.strays_aborted(&staging).await;
                self.finish_upload(heartbeat, &marker_path, clean).await;
                return Err(e);
            }
        };

        let linked = self
            .store
            .copy_if_not_exists(&staging, &key.to_path())
            .await;
        match linked {
            Ok(()) => {
                // A server-side copy may report success before it is complete (Azure copies
                // asynchronously): only a destination of the full size proves it. Otherwise
                // the staging object and its marker stay (the sweep removes them) and the
                // caller retries.
                if let Err(e) = self.verify_copied(key, size).await {
                    self.finish_upload(heartbeat, &marker_path, false).await;
                    return Err(e);
                }
                let clean = self.remove_staging(&staging).await;
                self.finish_upload(heartbeat, &marker_path, clean).await;
                Ok(PutOutcome {
                    sha256,
                    size,
                    status: PutStatus::Created,
                })
            }
            Err(e) => {
                let clean = self.remove_staging(&staging).await;
                self.finish_upload(heartbeat, &marker_path, clean).await;
                if exists(&e) {
                    self.settle_existing(key, sha256, size).await
                } else {
                    Err(ArchiveError::store(key.as_str(), e))
                }
            }
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
                Err(e) if exists(&e) => {}
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

    /// Aborts and removes what uploads killed mid-way left behind: the multipart
    /// upload of each marker not refreshed for `older_than`, its staging object,
    /// and staging data without a live marker older than `older_than`. Returns
    /// how many staging objects, part files and markers were removed.
    ///
    /// A live upload (in this or another process, on any machine) refreshes its
    /// marker every [`MARKER_REFRESH`], so any `older_than` well above that
    /// (such as [`STALE_UPLOAD_AGE`]) never touches it.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when listing, reading, aborting or deleting fails.
    pub async fn remove_stale_staging(&self, older_than: Duration) -> Result<usize, ArchiveError> {
        sweep::remove_stale(
            self.store.as_ref(),
            self.multipart.as_ref(),
            self.local_root.as_deref().map(PathBuf::as_path),
            older_than,
        )
        .await
    }

    /// [`Archive::remove_stale_staging`] with [`STALE_UPLOAD_AGE`]: what `sync`
    /// and every worker run when they start.
    ///
    /// # Errors
    /// As [`Archive::remove_stale_staging`].
    pub async fn clean_interrupted_uploads(&self) -> Result<usize, ArchiveError> {
        self.remove_stale_staging(STALE_UPLOAD_AGE).await
    }
}
