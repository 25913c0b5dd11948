//! Uploads whose id never reached their marker: the process died after asking the store to
//! create the upload and before (or while) the store's answer arrived.

use super::*;

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
    s3.hold_multipart_answers(true);
    let archive = c.archive.clone();
    let k2 = k.clone();
    let task = tokio::spawn(async move {
        archive
            .put_stream(&k2, chunks(body_bytes(LARGE, 6)), None)
            .await
    });
    until("the upload created in the store", || async {
        !s3.open_uploads().is_empty()
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    s3.hold_multipart_answers(false);
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
    let data = body_bytes(LARGE, 6);
    let out = c
        .archive
        .put_stream(&k, chunks(data.clone()), Some(LARGE as u64))
        .await
        .unwrap();
    assert_eq!(out.status, PutStatus::Created);
    assert_eq!(
        c.archive.sha256_of(&k).await.unwrap(),
        Some((sha_hex(&data), LARGE as u64))
    );
    assert!(staging(&c.archive).await.is_empty());
}

/// A marker without an id whose upload the store never created (the process died before the
/// request arrived) goes by itself: an upload of a key it is only a prefix of stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_id_less_marker_without_an_upload_goes_alone() {
    use object_store::aws::AmazonS3Builder;
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
    let raw = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_bucket_name(s3.bucket())
        .with_region("us-east-1")
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_allow_http(true)
        .build()
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_an_id_less_marker_is_cleaned_by_key() {
    let Some(c) = azure().await else { return };
    let store = c.archive.store();
    store
        .put(
            &Path::from(".wxvault-staging/7a2c.upload"),
            id_less_marker(&key(43), "7a2c").into(),
        )
        .await
        .unwrap();
    let removed = c
        .archive
        .remove_stale_staging(Duration::ZERO)
        .await
        .unwrap();
    assert!(removed >= 1, "{removed}");
    assert!(staging(&c.archive).await.is_empty());
    assert_eq!(c.archive.head(&key(43)).await.unwrap(), None);
}
