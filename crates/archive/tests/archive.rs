//! Behaviour of `Archive` against both backends: a local folder and the
//! in-process S3 server (`archive::testing::TestS3`), through the same tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use archive::layout::{self, ObjectKey};
use archive::testing::TestS3;
use archive::{Archive, ArchiveError, PART_SIZE, PutStatus, StorageConfig};
use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// An archive plus the directory its bytes physically land in, so tests can
/// check for stray files and rewrites.
struct Backend {
    archive: Archive,
    /// Directory holding the objects of the archive root.
    objects_dir: PathBuf,
    /// Everything the backend writes (staging, upload parts, metadata).
    data_dir: PathBuf,
    s3: Option<TestS3>,
    _tmp: TempDir,
}

impl Backend {
    async fn local() -> Backend {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("archive");
        let archive =
            Archive::open(&StorageConfig::new(format!("file://{}", dir.display()))).unwrap();
        let dir = dir.canonicalize().unwrap();
        Backend {
            archive,
            objects_dir: dir.clone(),
            data_dir: dir,
            s3: None,
            _tmp: tmp,
        }
    }

    async fn s3() -> Backend {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("s3");
        let s3 = TestS3::start(&root, "vault").await;
        let archive = Archive::open_s3_with_keys(
            &s3.storage_config("tenant/one"),
            s3.access_key(),
            s3.secret_key(),
        )
        .unwrap();
        let root = root.canonicalize().unwrap();
        Backend {
            archive,
            objects_dir: root.join("vault/tenant/one"),
            data_dir: root,
            s3: Some(s3),
            _tmp: tmp,
        }
    }

    fn file_of(&self, key: &ObjectKey) -> PathBuf {
        self.objects_dir.join(key.as_str())
    }

    /// Every file the backend holds, relative to its data directory.
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.data_dir, &mut out);
        let mut rel: Vec<String> = out
            .iter()
            .map(|p| {
                p.strip_prefix(&self.data_dir)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        rel.sort();
        rel
    }

    /// Files that are neither the given objects nor the S3 server's own
    /// per-object bookkeeping (`.bucket-*` files at its root): must be empty
    /// after any failed or finished put.
    fn stray_files(&self, objects: &[&ObjectKey]) -> Vec<String> {
        let expected: Vec<String> = objects
            .iter()
            .map(|k| {
                self.file_of(k)
                    .strip_prefix(&self.data_dir)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        self.files()
            .into_iter()
            .filter(|f| {
                let bookkeeping = self.s3.is_some() && f.starts_with(".bucket-");
                !bookkeeping && !expected.contains(f)
            })
            .collect()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn total_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn key(n: u32) -> ObjectKey {
    // 2024-03-05T12:00:00Z
    layout::wxcc_audio(
        "org-a",
        1_709_640_000_000,
        "task-1",
        &format!("rec-{n}"),
        "wav",
    )
    .unwrap()
}

/// Deterministic content: byte `i` of a generated body.
fn byte_at(i: usize, seed: u8) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8 ^ seed
}

fn body_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| byte_at(i, seed)).collect()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A lazily generated body of `len` bytes in `CHUNK`-sized chunks: the whole
/// body never exists in memory at once.
fn generated(len: usize, seed: u8) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    stream::iter((0..len).step_by(CHUNK)).map(move |start| {
        let end = (start + CHUNK).min(len);
        Ok(Bytes::from_iter((start..end).map(|i| byte_at(i, seed))))
    })
}

fn generated_sha(len: usize, seed: u8) -> String {
    let mut h = Sha256::new();
    for start in (0..len).step_by(CHUNK) {
        let end = (start + CHUNK).min(len);
        let chunk: Vec<u8> = (start..end).map(|i| byte_at(i, seed)).collect();
        h.update(&chunk);
    }
    hex::encode(h.finalize())
}

fn chunks_of(data: Vec<u8>) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    let data = Bytes::from(data);
    let n = data.len().div_ceil(CHUNK);
    stream::iter((0..n).map(move |i| Ok(data.slice(i * CHUNK..((i + 1) * CHUNK).min(data.len())))))
}

/// `good` bytes of content, then an I/O error, as a broken download would.
fn failing_after(good: usize) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    generated(good, 7).chain(stream::iter([Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "peer reset",
    ))]))
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::local().await).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::s3().await).await;
                }
            )*
        }
    };
}

both_backends!(
    round_trip_small_and_empty,
    large_body_is_streamed_in_parts,
    size_mismatch_leaves_nothing,
    source_error_leaves_nothing,
    existing_identical_is_already_present_without_rewrite,
    existing_different_is_conflict_and_kept,
    racing_writer_is_never_overwritten,
    put_if_absent_semantics,
    list_is_relative_sorted_and_hides_staging,
);

async fn round_trip_small_and_empty(b: Backend) {
    let data = body_bytes(300 * 1024, 1);
    let k = key(1);
    let out = b
        .archive
        .put_stream(&k, chunks_of(data.clone()), Some(data.len() as u64))
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    assert_eq!(out.sha256, sha_hex(&data));
    assert_eq!(out.size, data.len() as u64);
    assert_eq!(b.archive.head(&k).await.unwrap(), Some(data.len() as u64));
    assert_eq!(b.archive.get_bytes(&k).await.unwrap(), data);
    assert_eq!(
        b.archive.sha256_of(&k).await.unwrap(),
        Some((sha_hex(&data), data.len() as u64))
    );
    assert_eq!(std::fs::read(b.file_of(&k)).unwrap(), data);

    let empty = key(2);
    let out = b
        .archive
        .put_stream(&empty, stream::empty::<Result<Bytes, io::Error>>(), Some(0))
        .await
        .unwrap();
    assert_eq!((out.size, out.status), (0, PutStatus::Created));
    assert_eq!(out.sha256, sha_hex(b""));
    assert_eq!(b.archive.head(&empty).await.unwrap(), Some(0));

    let missing = key(3);
    assert_eq!(b.archive.head(&missing).await.unwrap(), None);
    assert_eq!(b.archive.sha256_of(&missing).await.unwrap(), None);
    assert!(b.archive.get_bytes(&missing).await.is_err());
    assert!(b.stray_files(&[&k, &empty]).is_empty(), "{:?}", b.files());
}

async fn large_body_is_streamed_in_parts(b: Backend) {
    let len = 20 * MIB + 12345;
    let k = key(1);
    // While the source produces its last chunk, at least one full part must
    // already be stored by the backend: the body is not buffered whole.
    let stored_before_end = Arc::new(AtomicU64::new(0));
    let probe = stored_before_end.clone();
    let data_dir = b.data_dir.clone();
    // The last chunk is held back until a full part has reached the backend (or 60 s passed):
    // a put that buffered the whole body first would never get there.
    let body = generated(len, 3)
        .enumerate()
        .then(move |(i, chunk)| {
            let (probe, data_dir) = (probe.clone(), data_dir.clone());
            async move {
                if (i + 1) * CHUNK >= len {
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
                    while total_bytes(&data_dir) < PART_SIZE as u64
                        && tokio::time::Instant::now() < deadline
                    {
                        tick.tick().await;
                    }
                    probe.store(total_bytes(&data_dir), Ordering::SeqCst);
                }
                chunk
            }
        })
        .boxed();
    let out = b
        .archive
        .put_stream(&k, body, Some(len as u64))
        .await
        .unwrap();
    assert!(
        stored_before_end.load(Ordering::SeqCst) >= PART_SIZE as u64,
        "only {} bytes stored before the body ended",
        stored_before_end.load(Ordering::SeqCst)
    );
    assert_eq!(out.status, PutStatus::Created);
    assert_eq!(out.size, len as u64);
    assert_eq!(out.sha256, generated_sha(len, 3));
    assert_eq!(
        b.archive.sha256_of(&k).await.unwrap(),
        Some((out.sha256.clone(), len as u64))
    );
    assert_eq!(
        b.archive.list("").await.unwrap(),
        vec![(k.to_string(), len as u64)]
    );
    assert!(b.stray_files(&[&k]).is_empty(), "{:?}", b.files());
}

async fn size_mismatch_leaves_nothing(b: Backend) {
    let cases = [
        (1000usize, 1001u64),                         // short, single part
        (1000, 999),                                  // long, single part
        (PART_SIZE * 2 + 10, (PART_SIZE * 3) as u64), // short, multipart: aborted
        (PART_SIZE * 3, (PART_SIZE + 5) as u64),      // long, multipart: stops early
    ];
    for (i, (len, expected)) in cases.into_iter().enumerate() {
        let k = key(i as u32);
        let err = b
            .archive
            .put_stream(&k, generated(len, 1), Some(expected))
            .await
            .unwrap_err();
        match &err {
            ArchiveError::SizeMismatch {
                key,
                expected: e,
                got,
            } => {
                assert_eq!(key, k.as_str());
                assert_eq!(*e, expected);
                assert_ne!(*got, expected);
            }
            other => panic!("case {i}: {other}"),
        }
        assert!(err.is_transient());
        assert_eq!(b.archive.head(&k).await.unwrap(), None, "case {i}");
        assert!(b.stray_files(&[]).is_empty(), "case {i}: {:?}", b.files());
    }
    assert!(b.archive.list("").await.unwrap().is_empty());
}

async fn source_error_leaves_nothing(b: Backend) {
    for (i, good) in [10 * 1024, PART_SIZE * 2 + 100].into_iter().enumerate() {
        let k = key(i as u32);
        let err = b
            .archive
            .put_stream(&k, failing_after(good), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::Source(_)), "{err}");
        assert!(err.is_transient());
        assert!(err.to_string().contains("peer reset"), "{err}");
        assert_eq!(b.archive.head(&k).await.unwrap(), None);
        assert!(b.stray_files(&[]).is_empty(), "{:?}", b.files());
    }
}

fn fingerprint(path: &Path) -> (std::time::SystemTime, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.modified().unwrap(), m.ino(), m.len())
}

async fn existing_identical_is_already_present_without_rewrite(b: Backend) {
    for (i, len) in [4096usize, PART_SIZE + MIB].into_iter().enumerate() {
        let k = key(i as u32);
        let first = b
            .archive
            .put_stream(&k, generated(len, 5), Some(len as u64))
            .await
            .unwrap();
        let before = fingerprint(&b.file_of(&k));
        let consumed = Arc::new(AtomicU64::new(0));
        let counter = consumed.clone();
        let body = generated(len, 5).inspect(move |c| {
            counter.fetch_add(c.as_ref().unwrap().len() as u64, Ordering::SeqCst);
        });
        let again = b
            .archive
            .put_stream(&k, body, Some(len as u64))
            .await
            .unwrap();
        assert_eq!(again.status, PutStatus::AlreadyPresent);
        assert_eq!((again.sha256, again.size), (first.sha256, first.size));
        assert_eq!(consumed.load(Ordering::SeqCst), len as u64, "body drained");
        assert_eq!(fingerprint(&b.file_of(&k)), before, "object was rewritten");
        // A broken re-download of an existing object is still an error.
        let err = b
            .archive
            .put_stream(&k, generated(len - 1, 5), Some(len as u64))
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::SizeMismatch { .. }), "{err}");
        assert_eq!(fingerprint(&b.file_of(&k)), before);
    }
}

async fn existing_different_is_conflict_and_kept(b: Backend) {
    for (i, len) in [4096usize, PART_SIZE + MIB].into_iter().enumerate() {
        let k = key(i as u32);
        let old = b
            .archive
            .put_stream(&k, generated(len, 5), None)
            .await
            .unwrap();
        let err = b
            .archive
            .put_stream(&k, generated(len, 6), None)
            .await
            .unwrap_err();
        match &err {
            ArchiveError::Conflict {
                key,
                existing_sha256,
                new_sha256,
            } => {
                assert_eq!(key, k.as_str());
                assert_eq!(existing_sha256, &old.sha256);
                assert_eq!(new_sha256, &generated_sha(len, 6));
            }
            other => panic!("{other}"),
        }
        assert!(!err.is_transient());
        assert_eq!(
            b.archive.sha256_of(&k).await.unwrap(),
            Some((old.sha256, len as u64))
        );
    }
    assert!(
        b.stray_files(&[&key(0), &key(1)]).is_empty(),
        "{:?}",
        b.files()
    );
}

/// Another writer creates the key while our body is still streaming: the
/// final create-if-absent step must refuse to replace it.
async fn racing_writer_is_never_overwritten(b: Backend) {
    for (i, len) in [100 * 1024usize, PART_SIZE * 2 + MIB]
        .into_iter()
        .enumerate()
    {
        for same in [false, true] {
            let k = key((i * 2 + usize::from(same)) as u32);
            let theirs = Bytes::from(body_bytes(len, if same { 9 } else { 8 }));
            let archive = b.archive.clone();
            let (k2, theirs2) = (k.clone(), theirs.clone());
            let body = generated(len, 9).enumerate().then(move |(n, chunk)| {
                let (archive, k, theirs) = (archive.clone(), k2.clone(), theirs2.clone());
                async move {
                    if (n + 1) * CHUNK >= len {
                        let status = archive.put_if_absent(&k, theirs).await.unwrap();
                        assert_eq!(status, PutStatus::Created);
                    }
                    chunk
                }
            });
            let result = b.archive.put_stream(&k, Box::pin(body), None).await;
            if same {
                assert_eq!(result.unwrap().status, PutStatus::AlreadyPresent);
            } else {
                let err = result.unwrap_err();
                assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
            }
            assert_eq!(b.archive.get_bytes(&k).await.unwrap(), theirs);
        }
    }
    let keys: Vec<ObjectKey> = (0..4).map(key).collect();
    let refs: Vec<&ObjectKey> = keys.iter().collect();
    assert!(b.stray_files(&refs).is_empty(), "{:?}", b.files());
}

async fn put_if_absent_semantics(b: Backend) {
    let audio = key(1);
    let side = layout::sidecar_for(&audio);
    let v1 = Bytes::from_static(b"{\"schema\":\"wxvault.recording.v1\"}");
    let v2 = Bytes::from_static(b"{\"schema\":\"something else\"}");
    assert_eq!(
        b.archive.put_if_absent(&side, v1.clone()).await.unwrap(),
        PutStatus::Created
    );
    let before = fingerprint(&b.file_of(&side));
    assert_eq!(
        b.archive.put_if_absent(&side, v1.clone()).await.unwrap(),
        PutStatus::AlreadyPresent
    );
    assert_eq!(
        b.archive.put_if_absent(&side, v2).await.unwrap(),
        PutStatus::ExistsDifferent
    );
    assert_eq!(b.archive.get_bytes(&side).await.unwrap(), v1);
    assert_eq!(fingerprint(&b.file_of(&side)), before);
    assert!(side.as_str().ends_with("/rec-1.json"));
}

async fn list_is_relative_sorted_and_hides_staging(b: Backend) {
    let mk = |org: &str, ms: i64, rec: &str| layout::wxcc_audio(org, ms, "t", rec, "wav").unwrap();
    let keys = [
        mk("org-b", 1_709_640_000_000, "r1"),              // 2024-03-05
        mk("org-a", 1_709_640_000_000, "r2"),              // 2024-03-05
        mk("org-a", 1_709_640_000_000 + 86_400_000, "r1"), // 2024-03-06
        mk("org-ab", 1_709_640_000_000, "r1"),
    ];
    for (i, k) in keys.iter().enumerate() {
        b.archive
            .put_if_absent(k, Bytes::from(vec![b'x'; i + 1]))
            .await
            .unwrap();
    }
    // A leftover from a crashed upload must stay invisible.
    std::fs::create_dir_all(b.objects_dir.join(".wxvault-staging")).unwrap();
    std::fs::write(b.objects_dir.join(".wxvault-staging/leftover"), b"junk").unwrap();

    let all = b.archive.list("").await.unwrap();
    assert_eq!(
        all,
        vec![
            ("org-a/wxcc/2024/03/05/t/r2.wav".to_owned(), 2),
            ("org-a/wxcc/2024/03/06/t/r1.wav".to_owned(), 3),
            ("org-ab/wxcc/2024/03/05/t/r1.wav".to_owned(), 4),
            ("org-b/wxcc/2024/03/05/t/r1.wav".to_owned(), 1),
        ]
    );
    let org_a = b.archive.list("org-a").await.unwrap();
    assert_eq!(org_a.len(), 2, "{org_a:?}");
    let day = b.archive.list("org-a/wxcc/2024/03/06/").await.unwrap();
    assert_eq!(day, vec![("org-a/wxcc/2024/03/06/t/r1.wav".to_owned(), 3)]);
    assert!(b.archive.list("org-c").await.unwrap().is_empty());
    assert!(b.archive.list("a/../b").await.is_err());
}

#[tokio::test]
async fn open_local_variants() {
    let tmp = TempDir::new().unwrap();
    let cfg = StorageConfig::new;
    let bare = tmp.path().join("a/b");
    let archive = Archive::open(&cfg(bare.display().to_string())).unwrap();
    assert!(bare.is_dir());
    assert_eq!(
        archive.describe(),
        format!("file://{}", bare.canonicalize().unwrap().display())
    );
    let abs = tmp.path().join("c");
    Archive::open(&cfg(format!("file://{}", abs.display()))).unwrap();
    assert!(abs.is_dir());

    for bad in [
        "ftp://x/y",
        "gs://",
        "az://",
        "az://c/../x",
        "gs://b/.hidden",
        "",
        "s3://",
        "s3:///prefix",
        "s3://b/../x",
    ] {
        let err = Archive::open(&cfg(bad.to_owned())).unwrap_err();
        assert!(matches!(err, ArchiveError::Config { .. }), "{bad}: {err}");
        assert!(!err.is_transient());
    }
    let err = Archive::open_s3_with_keys(&cfg(format!("file://{}", abs.display())), "a", "b")
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Config { .. }));
}

#[tokio::test]
async fn s3_config_checks_and_no_secret_leaks() {
    let tmp = TempDir::new().unwrap();
    let s3 = TestS3::start(tmp.path(), "bkt").await;
    let mut cfg = s3.storage_config("");
    cfg.allow_http = false;
    let err = Archive::open_s3_with_keys(&cfg, s3.access_key(), s3.secret_key()).unwrap_err();
    assert!(err.to_string().contains("allow_http"), "{err}");

    let mut cfg = s3.storage_config("p");
    cfg.endpoint = Some(format!(
        "http://user:hunter2@{}",
        s3.endpoint().trim_start_matches("http://")
    ));
    let archive = Archive::open_s3_with_keys(&cfg, s3.access_key(), s3.secret_key()).unwrap();
    let shown = format!("{} {archive:?}", archive.describe());
    assert!(
        shown.starts_with("s3://bkt/p (endpoint http://127.0.0.1:"),
        "{shown}"
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains(s3.secret_key()),
        "{shown}"
    );

    // Wrong secret: the store refuses, and nothing about the secret leaks.
    let wrong_secret = "definitely-wrong-secret-value-123";
    let archive =
        Archive::open_s3_with_keys(&s3.storage_config(""), s3.access_key(), wrong_secret).unwrap();
    let err = archive
        .put_if_absent(&key(1), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Store { .. }), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong_secret), "{shown}");
}

#[tokio::test]
async fn stale_staging_is_removed_and_fresh_is_kept() {
    let b = Backend::local().await;
    let staging = b.objects_dir.join(".wxvault-staging");
    std::fs::create_dir_all(&staging).unwrap();
    // A completed staging object and a part file of a killed upload.
    std::fs::write(staging.join("0b7c-old"), b"complete").unwrap();
    std::fs::write(staging.join("1c8d-old#1"), b"partial").unwrap();
    let k = key(1);
    b.archive
        .put_if_absent(&k, Bytes::from_static(b"audio"))
        .await
        .unwrap();

    // Everything is younger than a day: nothing goes.
    let removed = b
        .archive
        .remove_stale_staging(std::time::Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert_eq!(b.stray_files(&[&k]).len(), 2);

    // With a zero age threshold both leftovers go; real objects stay.
    let removed = b
        .archive
        .remove_stale_staging(std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(b.stray_files(&[&k]).is_empty(), "{:?}", b.files());
    assert_eq!(b.archive.head(&k).await.unwrap(), Some(5));
}

#[tokio::test]
async fn stale_staging_on_s3() {
    let b = Backend::s3().await;
    std::fs::create_dir_all(b.objects_dir.join(".wxvault-staging")).unwrap();
    std::fs::write(b.objects_dir.join(".wxvault-staging/old"), b"complete").unwrap();
    let k = key(1);
    b.archive
        .put_if_absent(&k, Bytes::from_static(b"audio"))
        .await
        .unwrap();
    assert_eq!(
        b.archive
            .remove_stale_staging(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert!(!b.objects_dir.join(".wxvault-staging/old").exists());
    assert_eq!(b.archive.list("").await.unwrap().len(), 1);
}

fn age(path: &Path, by: std::time::Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - by)
        .unwrap();
}

/// Staging data of an upload whose marker is still refreshed belongs to a live upload (maybe in
/// another process) and stays, however old; once the marker is stale, all of it goes.
#[tokio::test]
async fn a_fresh_marker_keeps_old_staging_data() {
    let b = Backend::local().await;
    let staging = b.objects_dir.join(".wxvault-staging");
    std::fs::create_dir_all(&staging).unwrap();
    let two_days = std::time::Duration::from_secs(2 * 86_400);
    let day = std::time::Duration::from_secs(86_400);
    for name in ["aaaa", "aaaa#1"] {
        std::fs::write(staging.join(name), b"part").unwrap();
        age(&staging.join(name), two_days);
    }
    let marker = serde_json::json!({
        "key": "org-a/x.wav", "staging": ".wxvault-staging/aaaa",
        "upload_id": null, "started": "2026-01-01T00:00:00Z", "refreshed": 9,
    });
    std::fs::write(staging.join("aaaa.upload"), marker.to_string()).unwrap();

    assert_eq!(b.archive.remove_stale_staging(day).await.unwrap(), 0);
    assert_eq!(b.stray_files(&[]).len(), 3, "{:?}", b.files());

    age(&staging.join("aaaa.upload"), two_days);
    assert_eq!(b.archive.remove_stale_staging(day).await.unwrap(), 3);
    assert!(b.stray_files(&[]).is_empty(), "{:?}", b.files());
}
