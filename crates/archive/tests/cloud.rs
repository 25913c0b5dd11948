//! The archive against real object-store implementations: the in-process S3 server (always),
//! Azurite (`WXVAULT_TEST_AZURITE`) and the GCS emulator (`WXVAULT_TEST_GCS`). Without an
//! emulator's variable its tests print one line and pass; CI sets `WXVAULT_REQUIRE_AZURITE` /
//! `WXVAULT_REQUIRE_GCS`, which turns a missing emulator into a failure.
//!
//! No GCS emulator in the package registries implements the XML API writes object_store's GCS
//! client uses (object PUT with `x-goog-if-generation-match`, multipart uploads, copy): the GCS
//! tests cover what the emulator serves — reads, listing, deletes, adopting an identical object,
//! refusing a different one, cleaning staging data. NOTES.md ("GCS emulator gap") has the
//! requests and answers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use archive::layout::{self, ObjectKey};
use archive::testing::{Azurite, Gcs, TestS3, unique_name};
use archive::{Archive, ArchiveError, PutStatus, StorageConfig};
use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// The threshold every test archive uses: bodies above 1 MiB go in parts.
const THRESHOLD: u64 = MIB as u64;
/// Two parts (8 MiB + the rest) above the threshold.
const LARGE: usize = 9 * MIB + 12_345;

struct Cloud {
    archive: Archive,
    s3: Option<TestS3>,
    _tmp: Option<TempDir>,
}

fn with_threshold(mut cfg: StorageConfig) -> StorageConfig {
    cfg.multipart_threshold = THRESHOLD;
    cfg
}

async fn s3() -> Option<Cloud> {
    s3_with(|cfg| cfg).await
}

async fn s3_with(adjust: impl FnOnce(StorageConfig) -> StorageConfig) -> Option<Cloud> {
    let tmp = TempDir::new().unwrap();
    let s3 = TestS3::start(tmp.path(), "vault").await;
    let cfg = adjust(with_threshold(s3.storage_config("tenant")));
    let archive = Archive::open_s3_with_keys(&cfg, s3.access_key(), s3.secret_key()).unwrap();
    Some(Cloud {
        archive,
        s3: Some(s3),
        _tmp: Some(tmp),
    })
}

async fn azure() -> Option<Cloud> {
    let azurite = Azurite::from_env()?;
    let container = unique_name("wx");
    azurite.create_container(&container).await;
    let cfg = with_threshold(azurite.storage_config(&container, "tenant"));
    let archive = Archive::open_azure_with_key(&cfg, Azurite::ACCOUNT, Azurite::KEY).unwrap();
    Some(Cloud {
        archive,
        s3: None,
        _tmp: None,
    })
}

fn key(n: u32) -> ObjectKey {
    layout::wxcc_audio(
        "org-a",
        1_709_640_000_000,
        "task-1",
        &format!("rec-{n}"),
        "wav",
    )
    .unwrap()
}

fn byte_at(i: usize, seed: u8) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8 ^ seed
}

fn body_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| byte_at(i, seed)).collect()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn chunks(data: Vec<u8>) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    let data = Bytes::from(data);
    let n = data.len().div_ceil(CHUNK);
    stream::iter((0..n).map(move |i| Ok(data.slice(i * CHUNK..((i + 1) * CHUNK).min(data.len())))))
}

/// Names under `.wxvault-staging/` (markers end in `.upload`).
async fn staging(archive: &Archive) -> Vec<String> {
    let store = archive.store();
    let mut names: Vec<String> = store
        .list(Some(&Path::from(".wxvault-staging")))
        .map(|m| m.unwrap().location.filename().unwrap().to_owned())
        .collect()
        .await;
    names.sort();
    names
}

async fn marker_json(archive: &Archive) -> Option<serde_json::Value> {
    let name = staging(archive)
        .await
        .into_iter()
        .find(|n| n.ends_with(".upload"))?;
    let got = archive
        .store()
        .get(&Path::from_iter([".wxvault-staging", &name]))
        .await
        .ok()?;
    serde_json::from_slice(&got.bytes().await.ok()?).ok()
}

/// Waits (bounded) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

macro_rules! cloud_tests {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::s3().await.unwrap()).await;
                }
            )*
        }
        mod azure {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(cloud) = super::azure().await {
                        super::$name(cloud).await;
                    }
                }
            )*
        }
    };
}

cloud_tests!(
    small_put_is_one_create_only_request,
    large_put_goes_in_parts_behind_a_marker,
    different_bytes_never_overwrite_identical_are_adopted,
    interrupted_upload_is_aborted_once_its_marker_is_stale,
    stale_staging_is_cleaned_and_objects_stay,
    a_live_upload_refreshes_its_marker,
);

async fn small_put_is_one_create_only_request(c: Cloud) {
    let data = body_bytes(300 * 1024, 1);
    let k = key(1);
    // No marker while a small body streams: it is never a multipart upload.
    let archive = c.archive.clone();
    let saw_marker = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = saw_marker.clone();
    let body = chunks(data.clone()).then(move |chunk| {
        let (archive, flag) = (archive.clone(), flag.clone());
        async move {
            if !staging(&archive).await.is_empty() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            chunk
        }
    });
    let out = c
        .archive
        .put_stream(&k, Box::pin(body), Some(data.len() as u64))
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    assert_eq!(out.sha256, sha_hex(&data));
    assert!(!saw_marker.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(c.archive.get_bytes(&k).await.unwrap(), data);
    assert_eq!(
        c.archive.list("").await.unwrap(),
        vec![(k.to_string(), data.len() as u64)]
    );
    if let Some(s3) = &c.s3 {
        let requests = s3.requests();
        assert!(
            !requests.iter().any(|r| r.target.contains("uploads")),
            "no multipart upload for a small body"
        );
        let put = requests
            .iter()
            .find(|r| r.method == "PUT" && r.target.contains("rec-1.wav"))
            .expect("the object PUT");
        assert_eq!(put.header("if-none-match"), Some("*"), "create-only put");
    }
}

async fn large_put_goes_in_parts_behind_a_marker(c: Cloud) {
    let data = body_bytes(LARGE, 3);
    let k = key(2);
    // While the body's last chunk is produced, the upload's marker names the key.
    let archive = c.archive.clone();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let slot = seen.clone();
    let total = data.len();
    let body = chunks(data.clone()).enumerate().then(move |(i, chunk)| {
        let (archive, slot) = (archive.clone(), slot.clone());
        async move {
            if (i + 1) * CHUNK >= total {
                *slot.lock().unwrap() = marker_json(&archive).await;
            }
            chunk
        }
    });
    let out = c
        .archive
        .put_stream(&k, Box::pin(body), Some(LARGE as u64))
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.size, out.sha256.as_str()),
        (PutStatus::Created, LARGE as u64, sha_hex(&data).as_str())
    );
    let marker = seen
        .lock()
        .unwrap()
        .clone()
        .expect("a marker during the upload");
    assert_eq!(marker["key"], k.as_str(), "{marker}");
    assert!(marker["upload_id"].is_string(), "{marker}");
    assert_eq!(
        c.archive.sha256_of(&k).await.unwrap(),
        Some((sha_hex(&data), LARGE as u64))
    );
    assert_eq!(
        c.archive.list("").await.unwrap(),
        vec![(k.to_string(), LARGE as u64)]
    );
    assert!(
        staging(&c.archive).await.is_empty(),
        "{:?}",
        staging(&c.archive).await
    );
    if let Some(s3) = &c.s3 {
        let requests = s3.requests();
        let parts = requests
            .iter()
            .filter(|r| r.method == "PUT" && r.target.contains("partNumber="))
            .count();
        // Two parts of the body, one part of the create-only copy into place.
        assert!(parts >= 2, "{parts} parts");
        let completes: Vec<_> = requests
            .iter()
            .filter(|r| {
                r.method == "POST"
                    && r.target.contains("uploadId=")
                    && r.target.contains("rec-2.wav")
            })
            .collect();
        assert_eq!(completes.len(), 1);
        assert_eq!(completes[0].header("if-none-match"), Some("*"));
        assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    }
}

async fn different_bytes_never_overwrite_identical_are_adopted(c: Cloud) {
    for (i, len) in [4096usize, LARGE].into_iter().enumerate() {
        let k = key(10 + i as u32);
        let old = body_bytes(len, 5);
        let first = c
            .archive
            .put_stream(&k, chunks(old.clone()), Some(len as u64))
            .await
            .unwrap();
        assert_eq!(first.status, PutStatus::Created);
        let err = c
            .archive
            .put_stream(&k, chunks(body_bytes(len, 6)), Some(len as u64))
            .await
            .unwrap_err();
        match &err {
            ArchiveError::Conflict {
                existing_sha256,
                new_sha256,
                ..
            } => {
                assert_eq!(existing_sha256, &sha_hex(&old));
                assert_eq!(new_sha256, &sha_hex(&body_bytes(len, 6)));
            }
            other => panic!("{other}"),
        }
        assert!(!err.is_transient());
        let again = c
            .archive
            .put_stream(&k, chunks(old.clone()), Some(len as u64))
            .await
            .unwrap();
        assert_eq!(again.status, PutStatus::AlreadyPresent);
        assert_eq!(c.archive.get_bytes(&k).await.unwrap(), old);
    }
    // A writer that slipped in between the existence check and the final write: the
    // conditional write refuses, the loser compares.
    for (i, len) in [100 * 1024usize, LARGE].into_iter().enumerate() {
        let k = key(20 + i as u32);
        let theirs = Bytes::from(body_bytes(len, 8));
        let (archive, k2, theirs2) = (c.archive.clone(), k.clone(), theirs.clone());
        let body = chunks(body_bytes(len, 9))
            .enumerate()
            .then(move |(n, chunk)| {
                let (archive, k, theirs) = (archive.clone(), k2.clone(), theirs2.clone());
                async move {
                    if (n + 1) * CHUNK >= len {
                        assert_eq!(
                            archive.put_if_absent(&k, theirs).await.unwrap(),
                            PutStatus::Created
                        );
                    }
                    chunk
                }
            });
        let err = c
            .archive
            .put_stream(&k, Box::pin(body), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
        assert_eq!(c.archive.get_bytes(&k).await.unwrap(), theirs);
    }
    assert!(staging(&c.archive).await.is_empty());
}

async fn interrupted_upload_is_aborted_once_its_marker_is_stale(c: Cloud) {
    let k = key(30);
    // 9 MiB arrive, then the download hangs: one part is up, the process is "killed".
    let body = chunks(body_bytes(LARGE, 4)).chain(stream::pending());
    let archive = c.archive.clone();
    let k2 = k.clone();
    let task = tokio::spawn(async move { archive.put_stream(&k2, Box::pin(body), None).await });
    let s3 = c.s3.as_ref();
    until("the marker and a stored part", || {
        let archive = c.archive.clone();
        async move {
            let marked = staging(&archive)
                .await
                .iter()
                .any(|n| n.ends_with(".upload"));
            let part = s3.is_none_or(|s3| s3.open_uploads().iter().any(|f| f.contains(".part-")));
            marked && part
        }
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    if let Some(s3) = s3 {
        assert!(
            !s3.open_uploads().is_empty(),
            "the killed upload left parts behind"
        );
    }

    // Young markers may belong to a live upload elsewhere: the start-up clean-up keeps them.
    assert_eq!(c.archive.clean_interrupted_uploads().await.unwrap(), 0);
    assert!(
        staging(&c.archive)
            .await
            .iter()
            .any(|n| n.ends_with(".upload"))
    );

    // Once stale, the upload is aborted and everything it left is gone.
    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert!(removed >= 1, "{removed}");
    assert!(
        staging(&c.archive).await.is_empty(),
        "{:?}",
        staging(&c.archive).await
    );
    if let Some(s3) = s3 {
        assert!(
            s3.open_uploads().is_empty(),
            "orphan parts: {:?}",
            s3.open_uploads()
        );
    }
    assert_eq!(c.archive.head(&k).await.unwrap(), None);
    // The next attempt stores the recording normally.
    stores_large(&c.archive, &k, 4).await;
}

/// A put of `LARGE` bytes (seeded by `seed`) to `k` creates the object, byte-exact.
async fn stores_large(archive: &Archive, k: &ObjectKey, seed: u8) {
    let data = body_bytes(LARGE, seed);
    let out = archive
        .put_stream(k, chunks(data.clone()), Some(LARGE as u64))
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    assert_eq!(
        archive.sha256_of(k).await.unwrap(),
        Some((sha_hex(&data), LARGE as u64))
    );
}

/// Starts a put of `LARGE` bytes (seeded by `seed`) to `k` in a task of its own, to be
/// aborted as a killed process would be.
fn start_large_put(
    archive: &Archive,
    k: &ObjectKey,
    seed: u8,
) -> tokio::task::JoinHandle<Result<archive::PutOutcome, ArchiveError>> {
    let (archive, k) = (archive.clone(), k.clone());
    tokio::spawn(async move {
        archive
            .put_stream(&k, chunks(body_bytes(LARGE, seed)), None)
            .await
    })
}

async fn stale_staging_is_cleaned_and_objects_stay(c: Cloud) {
    let store = c.archive.store();
    // A staging object whose upload never recorded a marker, and a marker of an upload that
    // completed before its process died (its upload id is no longer known to the store).
    store
        .put(
            &Path::from(".wxvault-staging/0b7c-old"),
            Bytes::from_static(b"complete").into(),
        )
        .await
        .unwrap();
    let marker = serde_json::json!({
        "key": "org-a/x.wav", "staging": ".wxvault-staging/1c8d-old",
        "upload_id": null, "started": "2026-01-01T00:00:00Z", "refreshed": 3,
    });
    store
        .put(
            &Path::from(".wxvault-staging/1c8d-old.upload"),
            Bytes::from(marker.to_string()).into(),
        )
        .await
        .unwrap();
    // An upload that completed into its staging object before the process died: the store no
    // longer knows its id, the staging object goes with the marker.
    store
        .put(
            &Path::from(".wxvault-staging/2e9f-done"),
            Bytes::from_static(b"whole").into(),
        )
        .await
        .unwrap();
    let marker = serde_json::json!({
        "key": "org-a/y.wav", "staging": ".wxvault-staging/2e9f-done",
        "upload_id": "00000000-0000-0000-0000-000000000000",
        "started": "2026-01-01T00:00:00Z", "refreshed": 1,
    });
    store
        .put(
            &Path::from(".wxvault-staging/2e9f-done.upload"),
            Bytes::from(marker.to_string()).into(),
        )
        .await
        .unwrap();
    let k = key(40);
    c.archive
        .put_if_absent(&k, Bytes::from_static(b"audio"))
        .await
        .unwrap();
    assert_eq!(staging(&c.archive).await.len(), 4);
    assert!(
        c.archive.list("").await.unwrap().len() == 1,
        "staging is hidden from list"
    );

    assert_eq!(
        c.archive.clean_interrupted_uploads().await.unwrap(),
        0,
        "all young"
    );
    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    // Three markers and their uploads; on Azure the abort itself deletes the staging blob it
    // discards (an empty block list committed, then deleted), so that one is not counted again.
    assert!((3..=4).contains(&removed), "removed {removed}");
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(
        c.archive.get_bytes(&k).await.unwrap(),
        Bytes::from_static(b"audio")
    );
}

async fn a_live_upload_refreshes_its_marker(c: Cloud) {
    let archive = c
        .archive
        .clone()
        .with_marker_refresh(Duration::from_millis(50));
    let k = key(50);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    // The body stops after 9 MiB until the test releases it.
    let tail = stream::once(async move {
        let _ = released.await;
        Ok::<_, io::Error>(Bytes::from_static(b"end"))
    });
    let body = chunks(body_bytes(LARGE, 2)).chain(tail);
    let a2 = archive.clone();
    let k2 = k.clone();
    let task = tokio::spawn(async move { a2.put_stream(&k2, Box::pin(body), None).await });
    until("the heartbeat refreshed the marker twice", || {
        let archive = archive.clone();
        async move {
            marker_json(&archive)
                .await
                .is_some_and(|m| m["refreshed"].as_u64().unwrap_or(0) >= 2)
        }
    })
    .await;
    release.send(()).unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(
        (out.status, out.size),
        (PutStatus::Created, LARGE as u64 + 3)
    );
    assert!(
        staging(&archive).await.is_empty(),
        "marker removed at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_headers_reach_the_s3_server() {
    use archive::Sse;
    for (sse, mode, key_id) in [
        (None, None, None),
        (Some(Sse::S3), Some("AES256"), None),
        (
            Some(Sse::Kms {
                key_id: "alias/wxvault-test".into(),
            }),
            Some("aws:kms"),
            Some("alias/wxvault-test"),
        ),
    ] {
        let c = s3_with(|mut cfg| {
            cfg.sse = sse.clone();
            cfg
        })
        .await
        .unwrap();
        c.archive
            .put_stream(&key(1), chunks(body_bytes(4096, 1)), None)
            .await
            .unwrap();
        c.archive
            .put_stream(&key(2), chunks(body_bytes(LARGE, 1)), None)
            .await
            .unwrap();
        let requests = c.s3.as_ref().unwrap().requests();
        let writes: Vec<_> = requests
            .iter()
            .filter(|r| {
                (r.method == "PUT" && !r.target.contains("partNumber="))
                    || (r.method == "POST" && r.target.contains("?uploads"))
            })
            .collect();
        // The small object, the marker, the staging upload and the copy's upload.
        assert!(writes.len() >= 4, "{writes:?}");
        for w in writes {
            assert_eq!(w.header("x-amz-server-side-encryption"), mode, "{w:?}");
            assert_eq!(
                w.header("x-amz-server-side-encryption-aws-kms-key-id"),
                key_id,
                "{w:?}"
            );
        }
    }
}

#[tokio::test]
async fn sse_is_refused_off_s3() {
    let mut cfg = StorageConfig::new("az://container");
    cfg.sse = Some(archive::Sse::S3);
    let err = Archive::open(&cfg).unwrap_err();
    assert!(matches!(err, ArchiveError::Config { .. }), "{err}");
    assert!(err.to_string().contains("sse"), "{err}");
    let mut cfg = StorageConfig::new("s3://b");
    cfg.multipart_threshold = 1000;
    assert!(
        Archive::open(&cfg)
            .unwrap_err()
            .to_string()
            .contains("multipart_threshold")
    );
}

#[path = "cloud/unrecorded.rs"]
mod unrecorded;

/// GCS: what the emulator serves (see the module docs).
mod gcs {
    use super::*;

    async fn open(gcs: &Gcs) -> (Archive, String) {
        let bucket = unique_name("wx");
        gcs.create_bucket(&bucket).await;
        let archive =
            Archive::open(&with_threshold(gcs.storage_config(&bucket, "tenant"))).unwrap();
        (archive, bucket)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_lists_adopts_identical_and_refuses_different() {
        let Some(gcs) = Gcs::from_env() else { return };
        let (archive, bucket) = open(&gcs).await;
        assert!(
            archive
                .describe()
                .starts_with(&format!("gs://{bucket}/tenant (endpoint http://"))
        );
        for (i, len) in [4096usize, LARGE].into_iter().enumerate() {
            let k = key(i as u32);
            let data = body_bytes(len, 7);
            gcs.seed(&bucket, &format!("tenant/{k}"), data.clone())
                .await;
            assert_eq!(archive.head(&k).await.unwrap(), Some(len as u64));
            assert_eq!(
                archive.sha256_of(&k).await.unwrap(),
                Some((sha_hex(&data), len as u64))
            );
            let again = archive
                .put_stream(&k, chunks(data.clone()), Some(len as u64))
                .await
                .unwrap();
            assert_eq!(again.status, PutStatus::AlreadyPresent);
            let err = archive
                .put_stream(&k, chunks(body_bytes(len, 8)), Some(len as u64))
                .await
                .unwrap_err();
            assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
            assert_eq!(archive.get_bytes(&k).await.unwrap(), data);
        }
        assert_eq!(archive.list("").await.unwrap().len(), 2);
        assert_eq!(archive.head(&key(9)).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_staging_and_markers_are_removed() {
        let Some(gcs) = Gcs::from_env() else { return };
        let (archive, bucket) = open(&gcs).await;
        let marker = serde_json::json!({
            "key": "org-a/x.wav", "staging": ".wxvault-staging/1c8d",
            "upload_id": "no-such-upload", "started": "2026-01-01T00:00:00Z", "refreshed": 0,
        });
        gcs.seed(
            &bucket,
            "tenant/.wxvault-staging/1c8d.upload",
            marker.to_string().into_bytes(),
        )
        .await;
        gcs.seed(&bucket, "tenant/.wxvault-staging/0b7c", b"left".to_vec())
            .await;
        gcs.seed(&bucket, "tenant/org-a/kept.wav", b"audio".to_vec())
            .await;
        assert_eq!(staging(&archive).await.len(), 2);
        assert_eq!(
            archive.list("").await.unwrap(),
            vec![("org-a/kept.wav".to_owned(), 5)]
        );
        assert_eq!(archive.clean_interrupted_uploads().await.unwrap(), 0);
        assert_eq!(
            archive.remove_stale_staging(Duration::ZERO).await.unwrap(),
            2
        );
        assert!(staging(&archive).await.is_empty());
        assert_eq!(archive.list("").await.unwrap().len(), 1);
    }
}
