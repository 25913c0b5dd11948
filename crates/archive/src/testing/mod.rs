//! Test support (feature `test-s3`): an in-process S3 server, and clients for the Azurite and
//! GCS emulators that CI starts ([`Azurite`], [`Gcs`]).
//!
//! [`TestS3`] serves a real S3 implementation (`s3s` protocol layer over the
//! `s3s-fs` file-system backend, SigV4 authentication on) from
//! `127.0.0.1:<random port>`, so the archive's S3 code path is exercised
//! through HTTP exactly as against a remote store.
//!
//! `s3s-fs` ignores conditional writes, which real S3 honours; the server
//! therefore wraps it and enforces `If-None-Match: *` on `PutObject` and
//! `CompleteMultipartUpload` (returning `412 Precondition Failed`), so
//! never-overwrite behaviour is tested against the semantics of AWS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::StorageConfig;

mod emulators;
pub use emulators::{Azurite, Gcs, unique_name};

/// A running in-process S3 server. Stops when dropped.
pub struct TestS3 {
    addr: SocketAddr,
    root: PathBuf,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    bucket: String,
    access_key: String,
    secret_key: String,
    held: Arc<AtomicU8>,
    listing_failure: Arc<AtomicU8>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestS3")
            .field("endpoint", &self.endpoint())
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl TestS3 {
    /// Starts a server storing its data under `root` (created if missing) and
    /// creates `bucket`. Must be called inside a Tokio runtime; the server runs
    /// on it until the `TestS3` is dropped.
    ///
    /// # Panics
    /// If `root` cannot be created, the bucket name is not a valid directory
    /// name, or no port can be bound on 127.0.0.1: a test environment problem.
    pub async fn start(root: &Path, bucket: &str) -> TestS3 {
        std::fs::create_dir_all(root.join(bucket)).expect("create test S3 root and bucket");
        let root = std::fs::canonicalize(root).expect("resolve test S3 root");
        let fs = s3s_fs::FileSystem::new(&root).expect("open s3s-fs backend");
        let access_key = format!("AKTEST{}", uuid::Uuid::new_v4().simple())[..20].to_uppercase();
        let secret_key = uuid::Uuid::new_v4().simple().to_string();

        let data_root = root.clone();
        let held = Arc::new(AtomicU8::new(0));
        let listing_failure = Arc::new(AtomicU8::new(0));
        let mut builder = S3ServiceBuilder::new(ConditionalFs {
            inner: Arc::new(fs),
            root: root.clone(),
            write_lock: tokio::sync::Mutex::new(()),
            uploads: Arc::default(),
            held: Arc::clone(&held),
            listing_failure: Arc::clone(&listing_failure),
        });
        builder.set_access(ConditionalAccess { root });
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
        let service = builder.build().into_shared();
        let requests: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let log = Arc::clone(&requests);

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test S3 listener");
        let addr = listener.local_addr().expect("test S3 listener address");
        let server = tokio::spawn(async move {
            // Connections live in the set, so aborting the server task
            // (on drop) closes them too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let log = Arc::clone(&log);
                // Every request's method, target and headers are kept for tests to inspect,
                // so a test can prove a header reached the server, not just that it was set.
                let recording = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        log.lock()
                            .expect("request log")
                            .push(RecordedRequest::of(&req));
                        let service = service.clone();
                        async move { hyper::service::Service::call(&service, req).await }
                    },
                );
                connections.spawn(async move {
                    // A client hanging up mid-request is not a server failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), recording)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestS3 {
            addr,
            root: data_root,
            requests,
            bucket: bucket.to_owned(),
            access_key,
            secret_key,
            held,
            listing_failure,
            server,
        }
    }

    /// From now on, requests of kind `op` are carried out and never answered: the client is
    /// left as one killed before the answer arrived. `None` answers again.
    pub fn hold_answers(&self, op: Option<HeldAnswer>) {
        self.held
            .store(op.map_or(0, |op| op as u8), Ordering::SeqCst);
    }

    /// From now on, `ListMultipartUploads` fails as `failure` says; `None` answers again.
    pub fn fail_upload_listing(&self, failure: Option<ListingFailure>) {
        self.listing_failure
            .store(failure.map_or(0, |f| f as u8), Ordering::SeqCst);
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Access key id accepted by the server.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Secret key accepted by the server.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// A [`StorageConfig`] for `s3://<bucket>[/<prefix>]` on this server
    /// (plain HTTP allowed). Open it with
    /// [`Archive::open_s3_with_keys`](crate::Archive::open_s3_with_keys) and
    /// [`access_key`](Self::access_key)/[`secret_key`](Self::secret_key).
    pub fn storage_config(&self, prefix: &str) -> StorageConfig {
        let prefix = prefix.trim_matches('/');
        let mut cfg = StorageConfig::new(if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        });
        cfg.endpoint = Some(self.endpoint());
        cfg.region = Some("us-east-1".to_owned());
        cfg.allow_http = true;
        cfg
    }
}

impl TestS3 {
    /// Every request the server received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("request log").clone()
    }

    /// Multipart uploads started and neither completed nor aborted. The server keeps one
    /// `.upload-<id>.json` file per open upload and `.upload_id-<id>.part-<n>` per stored
    /// part at its data root; both are listed (sorted), so an empty answer means no upload and
    /// no part is left.
    pub fn open_uploads(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload-") || n.starts_with(".upload_id-"))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Requests [`TestS3::hold_answers`] can leave unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HeldAnswer {
    /// `CreateMultipartUpload`: the upload exists, its id never reaches the client.
    CreateMultipartUpload = 1,
    /// `UploadPartCopy`: the part is copied, the copy never completes.
    UploadPartCopy = 2,
}

/// How [`TestS3::fail_upload_listing`] fails `ListMultipartUploads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListingFailure {
    /// `403 AccessDenied`: credentials without `s3:ListBucketMultipartUploads`.
    AccessDenied = 1,
    /// `503 ServiceUnavailable`: a failure that passes.
    ServiceUnavailable = 2,
}

/// One request as the in-process S3 server received it (the `Authorization` header left out).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `PUT`, `POST`, …
    pub method: String,
    /// Path and query, e.g. `/bucket/key?uploads`.
    pub target: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    fn of<B>(req: &hyper::Request<B>) -> RecordedRequest {
        RecordedRequest {
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            headers: req
                .headers()
                .iter()
                .filter(|(name, _)| *name != hyper::header::AUTHORIZATION)
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Bucket, key and time of an upload's creation, by upload id.
type Created = (String, String, std::time::SystemTime);

/// `s3s-fs` plus the conditional-write semantics of AWS S3 and the listing of unfinished
/// multipart uploads (`ListMultipartUploads`), which `s3s-fs` does not implement.
struct ConditionalFs {
    inner: Arc<s3s_fs::FileSystem>,
    root: PathBuf,
    /// Makes "check absent, then write" atomic among conditional writes.
    write_lock: tokio::sync::Mutex<()>,
    /// Bucket and key of every upload created (`s3s-fs` keeps neither); an upload is open
    /// while `s3s-fs` still has its `.upload-<id>.json`.
    uploads: Arc<Mutex<BTreeMap<String, Created>>>,
    /// See [`TestS3::hold_answers`].
    held: Arc<AtomicU8>,
    /// See [`TestS3::fail_upload_listing`].
    listing_failure: Arc<AtomicU8>,
}

impl ConditionalFs {
    /// Never returns while answers to `op` are held.
    async fn maybe_hold(&self, op: HeldAnswer) {
        if self.held.load(Ordering::SeqCst) == op as u8 {
            std::future::pending::<()>().await;
        }
    }

    fn object_exists(&self, bucket: &str, key: &str) -> bool {
        object_exists(&self.root, bucket, key)
    }
}

fn object_exists(root: &Path, bucket: &str, key: &str) -> bool {
    // Keys from object_store never contain `..`; s3s-fs resolves them the
    // same way below its root.
    root.join(bucket).join(key).is_file()
}

/// Access checks: signed requests only (the s3s default), plus the
/// `If-None-Match: *` check of `CompleteMultipartUpload`.
///
/// s3s answers `CompleteMultipartUpload` with `200` and a keep-alive body,
/// so an error from the operation itself would arrive as an error document
/// inside a 200 response. AWS rejects a failed precondition up front with
/// `412`; checking here, before the operation starts, reproduces that.
/// (`ConditionalFs` checks again under its lock, so even a race between two
/// completes in this server cannot overwrite.)
struct ConditionalAccess {
    root: PathBuf,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for ConditionalAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }

    async fn complete_multipart_upload(
        &self,
        req: &mut S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<()> {
        if wants_create(req.input.if_none_match.as_deref())
            && object_exists(&self.root, &req.input.bucket, &req.input.key)
        {
            return Err(s3_error!(
                PreconditionFailed,
                "object exists (If-None-Match: *)"
            ));
        }
        Ok(())
    }
}

fn wants_create(if_none_match: Option<&str>) -> bool {
    if_none_match.is_some_and(|v| v.trim() == "*")
}

#[async_trait::async_trait]
impl S3 for ConditionalFs {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if !wants_create(req.input.if_none_match.as_deref()) {
            return self.inner.put_object(req).await;
        }
        let _guard = self.write_lock.lock().await;
        if self.object_exists(&req.input.bucket, &req.input.key) {
            return Err(s3_error!(
                PreconditionFailed,
                "object exists (If-None-Match: *)"
            ));
        }
        self.inner.put_object(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if !wants_create(req.input.if_none_match.as_deref()) {
            return self.inner.complete_multipart_upload(req).await;
        }
        let _guard = self.write_lock.lock().await;
        if self.object_exists(&req.input.bucket, &req.input.key) {
            return Err(s3_error!(
                PreconditionFailed,
                "object exists (If-None-Match: *)"
            ));
        }
        self.inner.complete_multipart_upload(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.inner.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.inner.head_object(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        // Created and registered in a task of its own: a client that hangs up mid-request
        // must not leave an upload this server's listing does not know.
        let (inner, uploads) = (Arc::clone(&self.inner), Arc::clone(&self.uploads));
        let created = tokio::spawn(async move {
            let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
            let created = inner.create_multipart_upload(req).await?;
            if let Some(id) = &created.output.upload_id {
                uploads
                    .lock()
                    .expect("uploads")
                    .insert(id.clone(), (bucket, key, std::time::SystemTime::now()));
            }
            Ok::<_, s3s::S3Error>(created)
        })
        .await
        .map_err(|e| s3_error!(InternalError, "create task: {e}"))??;
        self.maybe_hold(HeldAnswer::CreateMultipartUpload).await;
        Ok(created)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        match self.listing_failure.load(Ordering::SeqCst) {
            x if x == ListingFailure::AccessDenied as u8 => {
                return Err(s3_error!(
                    AccessDenied,
                    "not allowed to list multipart uploads"
                ));
            }
            x if x == ListingFailure::ServiceUnavailable as u8 => {
                return Err(s3_error!(ServiceUnavailable, "try again later"));
            }
            _ => {}
        }
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut open: Vec<(String, String, std::time::SystemTime)> = self
            .uploads
            .lock()
            .expect("uploads")
            .iter()
            .filter(|(id, (bucket, key, _))| {
                *bucket == input.bucket
                    && key.starts_with(&prefix)
                    && self.root.join(format!(".upload-{id}.json")).is_file()
            })
            .map(|(id, (_, key, at))| (key.clone(), id.clone(), *at))
            .collect();
        open.sort();
        let uploads = open
            .into_iter()
            .map(|(key, upload_id, at)| MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id),
                initiated: Some(Timestamp::from(at)),
                ..MultipartUpload::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..ListMultipartUploadsOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let copied = self.inner.upload_part_copy(req).await?;
        self.maybe_hold(HeldAnswer::UploadPartCopy).await;
        Ok(copied)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        // AWS answers an upload id it does not know (completed, aborted) with 404
        // NoSuchUpload; s3s-fs with 403.
        let id = &req.input.upload_id;
        if uuid::Uuid::parse_str(id).is_ok()
            && !self.root.join(format!(".upload-{id}.json")).is_file()
        {
            return Err(s3_error!(NoSuchUpload));
        }
        self.inner.abort_multipart_upload(req).await
    }
}
