//! Ending a put: confirming a copy into place, settling with an object already at the key,
//! and stopping an upload's heartbeat with or without its marker.

use object_store::path::Path;

use crate::upload::{self, Heartbeat};
use crate::{Archive, ArchiveError, ObjectKey, PutOutcome, PutStatus};

impl Archive {
    /// Checks that the copy into place left an object of `size` bytes at `key`.
    ///
    /// # Errors
    /// A transient [`ArchiveError::Store`] when the object is missing or has another size.
    pub(crate) async fn verify_copied(
        &self,
        key: &ObjectKey,
        size: u64,
    ) -> Result<(), ArchiveError> {
        let found = self.head(key).await?;
        if found == Some(size) {
            return Ok(());
        }
        let found = found.map_or_else(|| "no object".to_owned(), |n| format!("{n} bytes"));
        Err(ArchiveError::store(
            key.as_str(),
            object_store::Error::Generic {
                store: "archive",
                source: format!(
                    "the copy into place reported success but the destination has {found}, \
                     expected {size} bytes; retry later"
                )
                .into(),
            },
        ))
    }

    /// Stops an upload's heartbeat and, when `remove_marker`, removes its marker (best effort:
    /// a leftover marker is cleaned up once stale). A marker kept (the abort failed, the copy is
    /// unconfirmed) goes stale now that the heartbeat stopped, and the sweep retries.
    pub(crate) async fn finish_upload(
        &self,
        heartbeat: Heartbeat,
        marker_path: &Path,
        remove_marker: bool,
    ) {
        heartbeat.stop().await;
        if !remove_marker {
            return;
        }
        if let Err(e) = upload::delete(self.store.as_ref(), marker_path).await {
            tracing::warn!(
                marker = %marker_path,
                error = %redact::redact_urls_in(&e.to_string()),
                "could not remove the upload marker"
            );
        }
    }

    /// The key exists: report `AlreadyPresent` if it holds exactly the
    /// offered bytes, `Conflict` otherwise.
    pub(crate) async fn settle_existing(
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

    /// Best-effort removal of a completed staging object (a leftover is invisible to
    /// [`Archive::list`] and the sweep removes it), and on S3 of any other unfinished upload
    /// to the staging key (see `sweep::abort_strays`). Returns whether the marker may go: not
    /// while such an upload may be left.
    pub(crate) async fn remove_staging(&self, staging: &Path) -> bool {
        if let Err(e) = self.store.delete(staging).await {
            tracing::warn!(
                staging = %staging,
                error = %redact::redact_urls_in(&e.to_string()),
                "could not remove staging object"
            );
        }
        self.strays_aborted(staging).await
    }

    /// On S3, aborts the staging key's other unfinished uploads once its own has ended (see
    /// `sweep::abort_strays`); whether the marker may go.
    pub(crate) async fn strays_aborted(&self, staging: &Path) -> bool {
        match &self.multipart {
            Some(mp) => crate::sweep::abort_strays(mp, staging).await,
            None => true,
        }
    }
}

/// The store reports that the key exists: `AlreadyExists`, or a failed precondition
/// (`If-None-Match: *` answered 412 by stores that do not map it).
pub(crate) fn exists(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}
