//! Uploads whose id never reached their marker: the process died after asking the store to
//! create the upload and before (or while) the store's answer arrived.

use super::*;
use archive::testing::HeldAnswer;

/// A marker as `put_stream` writes it before the store is asked to create the upload.
fn id_less_marker(key: &ObjectKey, id: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "key": key.to_string(),
            "staging": format!(".wxvault-staging/{id}"),
            "upload_id": null,
            "started": "2026-12-01T00:00:00Z",
            "refreshed": 0,
        })
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_upload_killed_before_its_id_was_recorded_is_found_by_key_and_aborted() {
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    let k = key(40);
    // The store creates the upload and its answer never arrives; the process is "killed".
    s3.hold_answers(Some(HeldAnswer::CreateMultipartUpload));
    let task = start_large_put(&c.archive, &k, 6);
    until("the upload created in the store", || async {
        !s3.open_uploads().is_empty()
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    s3.hold_answers(None);
    let marker = marker_json(&c.archive)
        .await
        .expect("the marker went up first");
    assert!(marker["upload_id"].is_null(), "{marker}");
    assert_eq!(marker["key"], k.to_string());

    // Young, it may be a live upload elsewhere: kept.
    assert_eq!(c.archive.clean_interrupted_uploads().await.unwrap(), 0);
    assert_eq!(s3.open_uploads().len(), 1, "{:?}", s3.open_uploads());

    // Stale: the store's listing names the upload by its staging key, and it is aborted.
    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the marker");
    assert!(
        s3.open_uploads().is_empty(),
        "orphan upload: {:?}",
        s3.open_uploads()
    );
    assert!(staging(&c.archive).await.is_empty());
    assert!(
        s3.requests()
            .iter()
            .any(|r| r.method == "GET" && r.target.contains("uploads")),
        "the unfinished uploads were listed"
    );

    // The next attempt stores the recording.
    stores_large(&c.archive, &k, 6).await;
    assert!(staging(&c.archive).await.is_empty());
}

/// A marker without an id whose upload the store never created (the process died before the
/// request arrived) goes by itself: an upload of a key it is only a prefix of stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_id_less_marker_without_an_upload_goes_alone() {
    use object_store::multipart::MultipartStore;
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    c.archive
        .store()
        .put(
            &Path::from(".wxvault-staging/5d1e.upload"),
            id_less_marker(&key(41), "5d1e").into(),
        )
        .await
        .unwrap();
    let raw = raw_s3(s3);
    raw.create_multipart(&Path::from("tenant/.wxvault-staging/5d1e-other"))
        .await
        .unwrap();
    assert_eq!(s3.open_uploads().len(), 1);

    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the marker");
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(s3.open_uploads().len(), 1, "the other key's upload stays");
}

/// On Azure an upload is aborted by key: a marker without an id still discards the blocks
/// staged under its staging key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_an_id_less_marker_discards_the_staged_blocks() {
    use object_store::multipart::MultipartStore;
    let Some(azurite) = Azurite::from_env() else {
        return;
    };
    let container = unique_name("wx");
    azurite.create_container(&container).await;
    let cfg = with_threshold(azurite.storage_config(&container, "tenant"));
    let archive = Archive::open_azure_with_key(&cfg, Azurite::ACCOUNT, Azurite::KEY).unwrap();
    let raw = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(Azurite::ACCOUNT)
        .with_access_key(Azurite::KEY)
        .with_container_name(&container)
        .with_endpoint(cfg.endpoint.clone().unwrap())
        .with_allow_http(true)
        .build()
        .unwrap();
    let staging_key = Path::from("tenant/.wxvault-staging/7a2c");
    let no_id = String::new();
    let part = raw
        .put_part(&staging_key, &no_id, 0, Bytes::from(vec![3u8; 4096]).into())
        .await
        .unwrap();
    archive
        .store()
        .put(
            &Path::from(".wxvault-staging/7a2c.upload"),
            id_less_marker(&key(43), "7a2c").into(),
        )
        .await
        .unwrap();
    let removed = archive.remove_stale_staging(Duration::ZERO).await.unwrap();
    assert!(removed >= 1, "{removed}");
    assert!(staging(&archive).await.is_empty());
    // The staged block is gone: it can no longer be committed.
    assert!(
        raw.complete_multipart(&staging_key, &no_id, vec![part])
            .await
            .is_err(),
        "the staged block survived the sweep"
    );
}

/// The uploads (not their parts) the in-process S3 server holds open.
fn uploads(s3: &archive::testing::TestS3) -> usize {
    s3.open_uploads()
        .iter()
        .filter(|f| f.starts_with(".upload-"))
        .count()
}

/// A large put to `k` that stores its first part, then is "killed" (its task aborted).
async fn killed_after_a_part(c: &Cloud, k: &ObjectKey, seed: u8) {
    let s3 = c.s3.as_ref().unwrap();
    let body = chunks(body_bytes(LARGE, seed)).chain(stream::pending());
    let (archive, k) = (c.archive.clone(), k.clone());
    let task = tokio::spawn(async move { archive.put_stream(&k, Box::pin(body), None).await });
    until("a stored part", || async {
        s3.open_uploads().iter().any(|f| f.contains(".part-"))
    })
    .await;
    task.abort();
    let _ = task.await;
}

/// A raw client of the in-process S3 server, for uploads made behind the archive's back.
fn raw_s3(s3: &archive::testing::TestS3) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_bucket_name(s3.bucket())
        .with_region("us-east-1")
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// Makes the marker `name` (under the test S3 root of `c`) look untouched for `age`.
fn age_marker(c: &Cloud, name: &str, age: Duration) {
    let path = c
        ._tmp
        .as_ref()
        .unwrap()
        .path()
        .join("vault/tenant/.wxvault-staging")
        .join(name);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_copy_into_place_killed_midway_is_aborted_by_the_sweep() {
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    let k = key(44);
    // The upload completes; the copy to the final key (a multipart copy on S3) never does.
    s3.hold_answers(Some(HeldAnswer::UploadPartCopy));
    let task = start_large_put(&c.archive, &k, 8);
    until("the copy into place under way", || async {
        s3.requests().iter().any(|r| {
            r.method == "PUT"
                && r.target.contains("partNumber=")
                && r.header("x-amz-copy-source").is_some()
        })
    })
    .await;
    task.abort();
    let _ = task.await;
    s3.hold_answers(None);
    assert_eq!(uploads(s3), 1, "{:?}", s3.open_uploads());

    c.archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert!(
        s3.open_uploads().is_empty(),
        "the copy's upload is left: {:?}",
        s3.open_uploads()
    );
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(c.archive.head(&k).await.unwrap(), None);
}

/// A dead upload's marker names a key that a live upload is putting into place: the dead
/// marker waits, whole; once no live marker names the key, the dead copy is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_live_copy_into_the_same_key_is_left_alone() {
    use object_store::multipart::MultipartStore;
    // Markers untouched for this long are dead; the dead one is aged twice that, the live
    // one is written just before each sweep.
    const STALE: Duration = Duration::from_secs(10);
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    let k = key(45);
    raw_s3(s3)
        .create_multipart(&Path::from(format!("tenant/{k}")))
        .await
        .unwrap();
    let store = c.archive.store();
    let marker = |id: &str| {
        Bytes::from(
            serde_json::json!({
                "key": k.to_string(),
                "staging": format!(".wxvault-staging/{id}"),
                "upload_id": null,
                "started": "2026-12-01T00:00:00Z",
                "refreshed": 0,
            })
            .to_string(),
        )
    };
    for id in ["dead", "live"] {
        store
            .put(
                &Path::from(format!(".wxvault-staging/{id}.upload")),
                marker(id).into(),
            )
            .await
            .unwrap();
    }
    age_marker(&c, "dead.upload", 2 * STALE);
    let removed = c.archive.remove_stale_staging(STALE).await.unwrap();
    assert_eq!(removed, 0, "the dead marker waits for the live upload");
    assert_eq!(
        staging(&c.archive).await,
        vec!["dead.upload".to_owned(), "live.upload".to_owned()]
    );
    assert_eq!(uploads(s3), 1, "the live copy stays");

    // The live upload ends without its copy (its process dies after the sweep's look).
    store
        .delete(&Path::from(".wxvault-staging/live.upload"))
        .await
        .unwrap();
    let removed = c.archive.remove_stale_staging(STALE).await.unwrap();
    assert_eq!(removed, 1, "the dead marker");
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(uploads(s3), 0, "{:?}", s3.open_uploads());
}

/// Credentials that may not list unfinished uploads: large puts still succeed and leave no
/// marker; the sweep aborts what markers name and removes the markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_the_listing_permission_puts_and_sweeps_what_markers_name() {
    use archive::testing::ListingFailure;
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    s3.fail_upload_listing(Some(ListingFailure::AccessDenied));
    let data = body_bytes(LARGE, 9);
    let out = c
        .archive
        .put_stream(&key(47), chunks(data.clone()), None)
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    assert!(staging(&c.archive).await.is_empty(), "the marker went");

    // A killed upload whose marker has the id: aborted by id.
    killed_after_a_part(&c, &key(48), 10).await;
    // And an id-less marker, which names nothing the store can be asked about.
    c.archive
        .store()
        .put(
            &Path::from(".wxvault-staging/6c3b.upload"),
            id_less_marker(&key(49), "6c3b").into(),
        )
        .await
        .unwrap();
    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 2, "both markers");
    assert!(staging(&c.archive).await.is_empty());
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
}

/// A listing that fails for a reason that may pass: a finished upload's marker goes all the
/// same (what the listing would find holds no data); a dead upload's recorded upload is
/// aborted, and its marker stays until a listing of its final key works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_failing_listing_keeps_a_dead_markers_until_it_works() {
    use archive::testing::ListingFailure;
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    s3.fail_upload_listing(Some(ListingFailure::ServiceUnavailable));
    let k = key(50);
    stores_large(&c.archive, &k, 11).await;
    assert!(staging(&c.archive).await.is_empty(), "the marker went");

    killed_after_a_part(&c, &key(51), 12).await;
    let err = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Cleanup { .. }), "{err}");
    assert!(
        s3.open_uploads().is_empty(),
        "the recorded upload is aborted: {:?}",
        s3.open_uploads()
    );
    assert_eq!(staging(&c.archive).await.len(), 1, "the marker stays");

    s3.fail_upload_listing(None);
    c.archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(c.archive.head(&key(51)).await.unwrap(), None);
    assert_eq!(
        c.archive.sha256_of(&k).await.unwrap(),
        Some((sha_hex(&body_bytes(LARGE, 11)), LARGE as u64)),
        "the archived object is untouched"
    );
}

/// An upload whose create was answered twice (object_store retried it after the first answer
/// was lost) is aborted with the one the marker recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_every_upload_to_a_dead_markers_staging_key_is_aborted() {
    let c = s3().await.unwrap();
    let s3 = c.s3.as_ref().unwrap();
    let raw = raw_s3(s3);
    use object_store::multipart::MultipartStore;
    let staging_key = Path::from("tenant/.wxvault-staging/9f00");
    let lost = raw.create_multipart(&staging_key).await.unwrap();
    let recorded = raw.create_multipart(&staging_key).await.unwrap();
    assert_ne!(lost, recorded);
    raw.put_part(&staging_key, &lost, 0, Bytes::from(vec![1u8; 1024]).into())
        .await
        .unwrap();
    let marker = serde_json::json!({
        "key": key(46).to_string(),
        "staging": ".wxvault-staging/9f00",
        "upload_id": recorded,
        "started": "2026-12-01T00:00:00Z",
        "refreshed": 0,
    });
    c.archive
        .store()
        .put(
            &Path::from(".wxvault-staging/9f00.upload"),
            Bytes::from(marker.to_string()).into(),
        )
        .await
        .unwrap();
    assert!(s3.open_uploads().len() >= 2);
    c.archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    assert!(staging(&c.archive).await.is_empty());
}
