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

    /// No AWS credentials could be found for an `s3://` archive: none in the environment, and
    /// the last resort, the EC2 instance-metadata endpoint, did not answer with any. A storage
    /// configuration problem, never transient.
    #[error(
        "no AWS credentials were found for the S3 archive (while accessing {key}). wxvault reads them from \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary keys), from a web identity \
         (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), from the container credential endpoint \
         (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI), and finally from the EC2 \
         instance metadata service; AWS_PROFILE and ~/.aws/credentials are not read, so export the profile's keys \
         instead. Set one of these for the `wxvault` process and run again"
    )]
    MissingCredentials {
        /// Key (or prefix) being accessed.
        key: String,
    },

    /// The object store failed. URLs in the store's message are redacted.
    #[error(
        "object store operation on {key} failed: {}",
        redact::redact_urls_in(&source.to_string())
    )]
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
            | ArchiveError::MissingCredentials { .. }
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

    /// Wraps a store error, recognising the one that means "no credentials anywhere": the
    /// object store then reports a failed request to the instance-metadata endpoint, which
    /// tells an operator nothing about what to set.
    pub(crate) fn store(key: impl Into<String>, source: object_store::Error) -> Self {
        if is_instance_metadata_failure(&source) {
            return ArchiveError::MissingCredentials { key: key.into() };
        }
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

/// Paths of the EC2 instance-metadata credential requests (`/latest/api/token` for the IMDSv2
/// session token, then `/latest/meta-data/iam/security-credentials/…`). The S3 client falls back
/// to them only when no other credential source is configured, so an error about them means no
/// credentials were found.
const METADATA_PATHS: [&str; 2] = [
    "/latest/api/token",
    "/latest/meta-data/iam/security-credentials",
];

fn is_instance_metadata_failure(e: &object_store::Error) -> bool {
    let object_store::Error::Generic { store, source } = e else {
        return false;
    };
    if *store != "S3" {
        return false;
    }
    let mut cause: Option<&(dyn StdError + 'static)> = Some(source.as_ref());
    while let Some(c) = cause {
        let text = c.to_string();
        if METADATA_PATHS.iter().any(|p| text.contains(p)) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url (http://169.254.169.254/latest/api/token)")]
    struct ImdsDown;

    #[derive(Debug, thiserror::Error)]
    #[error(
        "Error performing PUT http://127.0.0.1:9/b/k?x-id=PutObject in 2ms: https://u:pw@h/?token=t"
    )]
    struct Other;

    #[test]
    fn an_unanswered_metadata_endpoint_means_no_credentials() {
        let e = ArchiveError::store(
            "org/a.wav",
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(ImdsDown),
            },
        );
        assert!(matches!(e, ArchiveError::MissingCredentials { .. }), "{e}");
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(!text.contains("169.254"), "{text}");
        assert!(
            text.contains("no AWS credentials")
                && text.contains("AWS_ACCESS_KEY_ID")
                && text.contains("AWS_WEB_IDENTITY_TOKEN_FILE")
                && text.contains("~/.aws/credentials"),
            "{text}"
        );
    }

    #[test]
    fn other_store_errors_stay_and_lose_url_secrets() {
        let e = ArchiveError::store(
            "org/a.wav",
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(Other),
            },
        );
        assert!(matches!(e, ArchiveError::Store { .. }));
        let text = e.to_string();
        assert!(!text.contains("pw@") && !text.contains("token=t"), "{text}");
        assert!(text.contains("http://127.0.0.1:9/b/k?***"), "{text}");
    }
}
