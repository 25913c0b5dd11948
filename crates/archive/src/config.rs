//! The archive's view of the `[storage]` section.

use serde::{Deserialize, Serialize};

/// Bodies larger than this are uploaded in parts unless the configuration says otherwise.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

/// Smallest accepted `multipart_threshold` (1 MiB): below it every recording would become a
/// multipart upload with its per-upload marker and extra requests.
pub const MIN_MULTIPART_THRESHOLD: u64 = 1024 * 1024;

/// Largest accepted `multipart_threshold` (64 MiB). A body up to the threshold is held in
/// memory before its single put, once per transfer in flight, and goes up in one request that
/// must finish within the request timeout; the bound keeps a misconfiguration from exhausting
/// memory or timing out on a slow link.
pub const MAX_MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;

/// Where the archive lives; one section of the wxvault configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StorageConfig {
    /// `file:///abs/path`, `file://relative/path`, a bare path, `s3://bucket[/prefix]`,
    /// `gs://bucket[/prefix]` or `az://container[/prefix]`.
    pub url: String,
    /// Endpoint of an S3-compatible store, a GCS emulator or an Azure blob endpoint (with
    /// the account in the path for Azurite), e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; defaults to `AWS_REGION`/`AWS_DEFAULT_REGION` or `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (local test stores only).
    #[serde(default)]
    pub allow_http: bool,
    /// Bodies larger than this many bytes are uploaded in parts; smaller ones in one put.
    #[serde(default = "default_threshold")]
    pub multipart_threshold: u64,
    /// S3 server-side encryption; `None` leaves it to the bucket's default.
    #[serde(default)]
    pub sse: Option<Sse>,
}

fn default_threshold() -> u64 {
    DEFAULT_MULTIPART_THRESHOLD
}

impl StorageConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        StorageConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            allow_http: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            sse: None,
        }
    }
}

/// S3 server-side encryption of every object wxvault writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub enum Sse {
    /// SSE-S3: keys managed by S3 (`x-amz-server-side-encryption: AES256`).
    S3,
    /// SSE-KMS with this KMS key (id, ARN or alias;
    /// `x-amz-server-side-encryption: aws:kms` plus the key id header).
    Kms {
        /// The KMS key id, ARN or alias.
        key_id: String,
    },
}
