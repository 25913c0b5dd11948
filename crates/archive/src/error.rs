//! Errors of the archive sink.
//!
//! Error policy (see `docs/` and the design notes): every error is classified
//! once, here, through [`ArchiveError::is_transient`]. Transient errors (the
//! download stream broke, the store had an I/O or network failure) are worth
//! retrying with backoff; the others (bad configuration, an invalid key, a size
//! mismatch, a conflicting existing object) will fail the same way again and
//! must be recorded against the item or fixed by the operator.
//!
//! No variant ever carries credentials: configuration errors are built from the
//! storage URL and option names only.

use std::error::Error as StdError;

/// Everything that can go wrong while writing to or reading from the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The storage configuration cannot be used.
    #[error(
        "invalid storage configuration ({what}): {detail}; fix the `storage` section of the configuration"
    )]
    Config {
        /// Which setting is wrong (e.g. `url`, `endpoint`).
        what: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A key component is not safe to use as part of an object path.
    #[error("invalid object key component {component:?}: {reason}")]
    InvalidKey {
        /// The offending component (or whole key).
        component: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The body stream (typically the recording download) failed mid-way.
    /// Nothing was left at the destination key.
    #[error("reading the source stream failed, nothing was stored; retry later: {0}")]
    Source(#[source] Box<dyn StdError + Send + Sync>),

    /// The body had a different length than announced (truncated or padded
    /// download). Nothing was left at the destination key.
    #[error(
        "size mismatch for {key}: expected {expected} bytes, received {got}; nothing was stored, retry the download"
    )]
    SizeMismatch {
        /// Destination key.
        key: String,
        /// Announced length.
        expected: u64,
        /// Bytes actually received (may stop early once `expected` is exceeded).
        got: u64,
    },

    /// An object with different bytes already exists at the key. It was left
    /// untouched: the archive never overwrites.
    #[error(
        "{key} already exists with different content (existing sha256 {existing_sha256}, new sha256 {new_sha256}); the existing object was kept, investigate before removing it"
    )]
    Conflict {
        /// The key.
        key: String,
        /// sha256 (hex) of the object already stored.
        existing_sha256: String,
        /// sha256 (hex) of the bytes that were offered.
        new_sha256: String,
    },

    /// The object store failed.
    #[error("object store operation on {key} failed: {source}")]
    Store {
        /// Key (or prefix) being accessed.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

impl ArchiveError {
    /// Whether retrying the same operation later may succeed.
    ///
    /// Source stream failures, size mismatches (a truncated download) and
    /// store I/O errors are transient. Configuration, key validation and
    /// content conflicts are permanent, as are store errors that mean the
    /// configuration or the credentials are wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            ArchiveError::Source(_) | ArchiveError::SizeMismatch { .. } => true,
            ArchiveError::Config { .. }
            | ArchiveError::InvalidKey { .. }
            | ArchiveError::Conflict { .. } => false,
            ArchiveError::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
        }
    }

    pub(crate) fn store(key: impl Into<String>, source: object_store::Error) -> Self {
        ArchiveError::Store {
            key: key.into(),
            source,
        }
    }

    pub(crate) fn config(what: impl Into<String>, detail: impl Into<String>) -> Self {
        ArchiveError::Config {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
