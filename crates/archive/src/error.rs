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

    /// No credentials could be found for a cloud archive: none in the environment, and the last
    /// resort, the instance-metadata endpoint of the cloud, did not answer with any. A storage
    /// configuration problem, never transient.
    #[error(
        "no {cloud} credentials were found for the {scheme} archive (while accessing {key}). {hint} \
         Set them for the `wxvault` process and run again",
        scheme = cloud.scheme(),
        hint = cloud.hint()
    )]
    MissingCredentials {
        /// Key (or prefix) being accessed.
        key: String,
        /// Whose credentials are missing.
        cloud: Cloud,
    },

    /// A clean-up of interrupted uploads could not handle some of them; the others were
    /// cleaned. What failed stays in place and is retried by the next clean-up.
    #[error(
        "could not clean up {failed} interrupted upload object(s) ({removed} removed); they are \
         retried by the next clean-up; first failure: {first}"
    )]
    Cleanup {
        /// Markers, staging objects or part files that could not be handled.
        failed: usize,
        /// Objects removed anyway.
        removed: usize,
        /// The first failure.
        #[source]
        first: Box<ArchiveError>,
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
            ArchiveError::Cleanup { first, .. } => first.is_transient(),
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
        if let Some(cloud) = instance_metadata_failure(&source) {
            return ArchiveError::MissingCredentials {
                key: key.into(),
                cloud,
            };
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

/// The cloud whose credentials an archive needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon S3 (`s3://`).
    Aws,
    /// Google Cloud Storage (`gs://`).
    Gcp,
    /// Azure Blob Storage (`az://`).
    Azure,
}

impl Cloud {
    fn scheme(self) -> &'static str {
        match self {
            Cloud::Aws => "S3",
            Cloud::Gcp => "gs://",
            Cloud::Azure => "az://",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Cloud::Aws => {
                "wxvault reads them from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus \
                 AWS_SESSION_TOKEN for temporary keys), from a web identity \
                 (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), from the container credential \
                 endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or \
                 AWS_CONTAINER_CREDENTIALS_FULL_URI), and finally from the EC2 instance metadata \
                 service; AWS_PROFILE and ~/.aws/credentials are not read, so export the \
                 profile's keys instead."
            }
            Cloud::Gcp => {
                "wxvault reads a service-account key file from GOOGLE_SERVICE_ACCOUNT (or the key \
                 itself from GOOGLE_SERVICE_ACCOUNT_KEY), application default credentials from \
                 GOOGLE_APPLICATION_CREDENTIALS or ~/.config/gcloud, and finally the instance's \
                 service account from the GCE metadata server."
            }
            Cloud::Azure => {
                "wxvault reads AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, a SAS \
                 (AZURE_STORAGE_SAS_KEY), a service principal (AZURE_CLIENT_ID, \
                 AZURE_CLIENT_SECRET, AZURE_TENANT_ID), workload identity \
                 (AZURE_FEDERATED_TOKEN_FILE), and finally a managed identity from the instance \
                 metadata service."
            }
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cloud::Aws => "AWS",
            Cloud::Gcp => "Google Cloud",
            Cloud::Azure => "Azure",
        })
    }
}

/// Paths of the instance-metadata credential requests each cloud's client falls back to when
/// no other credential source is configured; an error about them means none was found.
const METADATA_PATHS: [(&str, Cloud); 4] = [
    // EC2: the IMDSv2 session token, then the role's credentials.
    ("/latest/api/token", Cloud::Aws),
    ("/latest/meta-data/iam/security-credentials", Cloud::Aws),
    ("/computeMetadata/v1/instance/service-accounts", Cloud::Gcp),
    ("/metadata/identity/oauth2/token", Cloud::Azure),
];

fn instance_metadata_failure(e: &object_store::Error) -> Option<Cloud> {
    let object_store::Error::Generic { source, .. } = e else {
        return None;
    };
    let mut cause: Option<&(dyn StdError + 'static)> = Some(source.as_ref());
    while let Some(c) = cause {
        let text = c.to_string();
        if let Some((_, cloud)) = METADATA_PATHS.iter().find(|(p, _)| text.contains(p)) {
            return Some(*cloud);
        }
        cause = c.source();
    }
    None
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

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url ({0})")]
    struct Unanswered(&'static str);

    #[test]
    fn each_cloud_names_its_own_credentials() {
        for (store, url, cloud, needle) in [
            (
                "GCS",
                "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
                Cloud::Gcp,
                "GOOGLE_SERVICE_ACCOUNT",
            ),
            (
                "MicrosoftAzure",
                "http://169.254.169.254/metadata/identity/oauth2/token",
                Cloud::Azure,
                "AZURE_STORAGE_ACCOUNT_KEY",
            ),
        ] {
            let e = ArchiveError::store(
                "org/a.wav",
                object_store::Error::Generic {
                    store,
                    source: Box::new(Unanswered(url)),
                },
            );
            assert!(
                matches!(e, ArchiveError::MissingCredentials { cloud: c, .. } if c == cloud),
                "{e}"
            );
            let text = e.to_string();
            assert!(text.contains(needle) && !text.contains("169.254"), "{text}");
            assert!(!e.is_transient());
        }
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
