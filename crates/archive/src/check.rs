//! Readiness of the archive, for `/readyz` and the workers' health endpoint: a cheap call that
//! proves the store answers with the configured credentials, without writing an object.

use std::path::Path as FsPath;

use futures::StreamExt as _;
use object_store::path::Path;

use crate::{Archive, ArchiveError, STAGING_PREFIX};

impl Archive {
    /// Checks that the archive can be used now.
    ///
    /// - `file://`: the archive folder still exists and takes new files (a probe file is
    ///   created under the staging folder and removed again). The folder is never re-created
    ///   here: a folder that vanished (an unmounted volume) must show as not ready rather than
    ///   fill the mount point's parent.
    /// - object stores: the first page of a listing of the staging prefix (one request, the
    ///   same permission a sync's clean-up of interrupted uploads needs).
    ///
    /// Not bounded in time beyond the store's own timeouts; a readiness probe wraps it in its
    /// own timeout.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] naming the folder or prefix and the store's reason (URLs
    /// redacted), or [`ArchiveError::MissingCredentials`] for an S3 archive without credentials.
    pub async fn check(&self) -> Result<(), ArchiveError> {
        if let Some(root) = &self.local_root {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || check_local(&root))
                .await
                .map_err(|e| {
                    ArchiveError::store(
                        STAGING_PREFIX,
                        object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(e),
                        },
                    )
                })?;
        }
        let staging = Path::from(STAGING_PREFIX);
        let mut listing = self.store.list(Some(&staging));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(ArchiveError::store(STAGING_PREFIX, e)),
        }
    }
}

/// The local half of [`Archive::check`]; blocking file-system calls.
fn check_local(root: &FsPath) -> Result<(), ArchiveError> {
    let fail = |path: &FsPath, what: &str, e: std::io::Error| {
        ArchiveError::store(
            path.display().to_string(),
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("{what}: {e}").into(),
            },
        )
    };
    let meta = std::fs::metadata(root)
        .map_err(|e| fail(root, "the archive folder is missing or unreadable", e))?;
    if !meta.is_dir() {
        return Err(fail(
            root,
            "the archive folder is unusable",
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    // `create_dir`, not `create_dir_all`: it fails when the root itself has gone meanwhile.
    let staging = root.join(STAGING_PREFIX);
    match std::fs::create_dir(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(&staging, "cannot create the staging folder", e)),
    }
    // A leftover probe (a kill between create and remove) is a staging object like any other:
    // invisible to listings and removed by the clean-up of stale staging data.
    let probe = staging.join(format!("ready-{}", uuid::Uuid::new_v4()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| fail(&probe, "the archive folder takes no new files", e))?;
    std::fs::remove_file(&probe).map_err(|e| fail(&probe, "cannot remove a probe file", e))
}
