//! Failure paths of multipart uploads and of the clean-up, against object_store's in-memory
//! store wrapped to fail (or misbehave) where a cloud store can.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::open::Multipart;
use crate::upload::{Marker, STAGING_PREFIX};
use crate::{Archive, ArchiveError, MIN_MULTIPART_THRESHOLD, ObjectKey, PutStatus};

/// An in-memory store with switchable faults and counters.
#[derive(Debug, Default)]
struct Faulty {
    inner: InMemory,
    fail_abort: AtomicBool,
    /// Parts with this index or above fail.
    fail_part_from: AtomicUsize,
    /// `copy_if_not_exists` answers Ok without copying (an unfinished asynchronous copy).
    fake_copy: AtomicBool,
    creates: AtomicUsize,
    aborts: AtomicUsize,
    marker_writes: tokio::sync::watch::Sender<usize>,
}

fn boom(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("{what} refused by the test store").into(),
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().ends_with(".upload") {
            self.marker_writes.send_modify(|n| *n += 1);
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        if self.fake_copy.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[async_trait]
impl MultipartStore for Faulty {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create_multipart(path).await
    }
    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        if part_idx >= self.fail_part_from.load(Ordering::SeqCst) {
            return Err(boom("part"));
        }
        self.inner.put_part(path, id, part_idx, data).await
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }
    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        if self.fail_abort.load(Ordering::SeqCst) {
            return Err(boom("abort"));
        }
        self.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort_multipart(path, id).await
    }
}

fn faulty() -> Arc<Faulty> {
    Arc::new(Faulty {
        fail_part_from: AtomicUsize::new(usize::MAX),
        ..Faulty::default()
    })
}

fn archive_on(store: &Arc<Faulty>, azure: bool) -> Archive {
    let objects: Arc<dyn ObjectStore> = store.clone();
    Archive {
        store: objects.clone(),
        multipart: Some(Multipart {
            store: store.clone(),
            prefix: None,
            azure_objects: azure.then_some(objects),
            s3_uploads: None,
        }),
        description: "memory://faulty".into(),
        local_root: None,
        multipart_threshold: MIN_MULTIPART_THRESHOLD,
        marker_refresh: crate::MARKER_REFRESH,
    }
}

fn key() -> ObjectKey {
    crate::layout::wxcc_audio("org-a", 1_709_640_000_000, "task-1", "rec-1", "wav").unwrap()
}

fn body(len: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![0x5au8; len]
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

async fn staging(store: &Faulty) -> Vec<String> {
    let mut names: Vec<String> = store
        .inner
        .list(Some(&Path::from(STAGING_PREFIX)))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    names.sort();
    names
}

const BIG: usize = 20 * 1024 * 1024;

#[tokio::test]
async fn a_failed_abort_keeps_the_marker_for_the_sweep() {
    let store = faulty();
    store.fail_part_from.store(1, Ordering::SeqCst);
    store.fail_abort.store(true, Ordering::SeqCst);
    let archive = archive_on(&store, false);
    let err = archive
        .put_stream(&key(), body(BIG), None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let left = staging(&store).await;
    assert_eq!(left.len(), 1, "the marker stays: {left:?}");
    assert!(left[0].ends_with(".upload"), "{left:?}");

    // The sweep keeps it while the abort keeps failing, and removes it once the abort works.
    let e = archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Cleanup { failed: 1, .. }), "{e}");
    assert_eq!(staging(&store).await, left);
    store.fail_abort.store(false, Ordering::SeqCst);
    assert_eq!(
        archive.remove_stale_staging(Duration::ZERO).await.unwrap(),
        1
    );
    assert_eq!(store.aborts.load(Ordering::SeqCst), 1);
    assert!(staging(&store).await.is_empty());
}

#[tokio::test]
async fn a_successful_abort_removes_the_marker() {
    let store = faulty();
    store.fail_part_from.store(1, Ordering::SeqCst);
    let archive = archive_on(&store, false);
    archive
        .put_stream(&key(), body(BIG), None)
        .await
        .unwrap_err();
    assert_eq!(store.aborts.load(Ordering::SeqCst), 1);
    assert!(staging(&store).await.is_empty());
}

async fn put_marker(store: &Faulty, name: &str, bytes: Vec<u8>) -> Path {
    let path = Path::from_iter([STAGING_PREFIX, &format!("{name}.upload")]);
    store.inner.put(&path, bytes.into()).await.unwrap();
    path
}

#[tokio::test]
async fn one_bad_marker_does_not_stop_the_cleanup() {
    let store = faulty();
    store.fail_abort.store(true, Ordering::SeqCst);
    let archive = archive_on(&store, false);
    // Sorted first: a marker whose abort the store refuses.
    let staging_a = Path::from_iter([STAGING_PREFIX, "a"]);
    let id = store.inner.create_multipart(&staging_a).await.unwrap();
    let marker = Marker {
        key: "org/x.wav".into(),
        staging: staging_a.to_string(),
        upload_id: Some(id),
        started: String::new(),
        refreshed: 0,
    };
    let a = put_marker(&store, "a", serde_json::to_vec(&marker).unwrap()).await;
    // Then a marker without an upload and leftover staging data: both removable.
    put_marker(&store, "b", b"{}".to_vec()).await;
    store
        .inner
        .put(
            &Path::from_iter([STAGING_PREFIX, "c"]),
            Bytes::from_static(b"x").into(),
        )
        .await
        .unwrap();

    let e = archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap_err();
    match &e {
        ArchiveError::Cleanup {
            failed, removed, ..
        } => assert_eq!((*failed, *removed), (1, 2), "{e}"),
        other => panic!("expected a clean-up error, got {other}"),
    }
    assert!(e.is_transient());
    assert_eq!(staging(&store).await, vec![a.to_string()]);
}

#[tokio::test]
async fn an_unconfirmed_copy_is_a_transient_failure_that_keeps_staging() {
    let store = faulty();
    store.fake_copy.store(true, Ordering::SeqCst);
    let archive = archive_on(&store, false);
    let err = archive
        .put_stream(&key(), body(BIG), None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("copy into place"), "{err}");
    assert_eq!(archive.head(&key()).await.unwrap(), None);
    let left = staging(&store).await;
    assert_eq!(left.len(), 2, "staging object and marker stay: {left:?}");

    // The retry (copy working again) writes the object; the sweep removes the leftovers.
    store.fake_copy.store(false, Ordering::SeqCst);
    let out = archive.put_stream(&key(), body(BIG), None).await.unwrap();
    assert_eq!((out.status, out.size), (PutStatus::Created, BIG as u64));
    // (The in-memory store answers Ok to deleting a missing object, so the count may include
    // the staging object twice; what matters is that nothing is left.)
    assert!(archive.remove_stale_staging(Duration::ZERO).await.unwrap() >= 2);
    assert!(staging(&store).await.is_empty());
}

#[tokio::test]
async fn a_known_large_body_starts_its_upload_without_buffering() {
    let store = faulty();
    let archive = archive_on(&store, false);
    let creates_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = creates_seen.clone();
    let watched = store.clone();
    // Each time the body is asked for a chunk, note how many uploads exist already.
    let body = body(BIG).map(move |chunk| {
        seen.lock()
            .unwrap()
            .push(watched.creates.load(Ordering::SeqCst));
        chunk
    });
    let out = archive
        .put_stream(&key(), Box::pin(body), Some(BIG as u64))
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    let seen = creates_seen.lock().unwrap();
    // Only the first chunk may be read before the upload starts (it is read after the
    // create; `map` runs when a chunk is produced).
    assert_eq!(
        seen.first(),
        Some(&1),
        "upload started before reading the body"
    );
}

#[tokio::test]
async fn azure_abort_commits_an_empty_block_list_and_deletes_the_blob() {
    let store = faulty();
    store.fail_part_from.store(1, Ordering::SeqCst);
    let archive = archive_on(&store, true);
    archive
        .put_stream(&key(), body(BIG), None)
        .await
        .unwrap_err();
    // object_store's Azure abort does nothing: the in-memory abort was never called, the blob
    // was committed empty (dropping its parts) and deleted, and the marker went with it.
    assert_eq!(store.aborts.load(Ordering::SeqCst), 0);
    assert!(staging(&store).await.is_empty());
}

#[tokio::test]
async fn a_live_upload_survives_a_sweep_with_a_small_age() {
    let store = faulty();
    let archive = archive_on(&store, false).with_marker_refresh(Duration::from_millis(40));
    let older_than = Duration::from_millis(500);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    // Half the body, then wait for the test to release the rest.
    let half = BIG / 2;
    let gated = body(half).chain(
        stream::once(async move {
            let _ = released.await;
            Ok(Bytes::new())
        })
        .chain(body(BIG - half)),
    );
    let put = {
        let archive = archive.clone();
        tokio::spawn(async move { archive.put_stream(&key(), Box::pin(gated), None).await })
    };
    // Wait until the marker was rewritten for longer than `older_than`: without the
    // heartbeat it would be stale by now.
    let mut writes = store.marker_writes.subscribe();
    writes.wait_for(|n| *n >= 15).await.unwrap();
    assert_eq!(archive.remove_stale_staging(older_than).await.unwrap(), 0);
    assert_eq!(store.aborts.load(Ordering::SeqCst), 0);
    assert_eq!(staging(&store).await.len(), 1, "the live marker stays");
    release.send(()).unwrap();
    let out = put.await.unwrap().unwrap();
    assert_eq!((out.status, out.size), (PutStatus::Created, BIG as u64));
    assert!(staging(&store).await.is_empty());
}
