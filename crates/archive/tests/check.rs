//! `Archive::check`, the readiness check behind `/readyz`: a usable archive passes and is left
//! as it was; a vanished folder, wrong credentials or a missing bucket fail, naming what is
//! wrong without a secret.

use archive::testing::TestS3;
use archive::{Archive, StorageConfig};

fn local(path: &std::path::Path) -> Archive {
    Archive::open(&StorageConfig {
        url: format!("file://{}", path.display()),
        endpoint: None,
        region: None,
        allow_http: false,
        multipart_threshold: archive::DEFAULT_MULTIPART_THRESHOLD,
        sse: None,
    })
    .unwrap()
}

/// Every file under `dir`, staging files included.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_local_archive_passes_and_keeps_no_probe_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    let archive = local(&root);
    for _ in 0..3 {
        archive.check().await.unwrap();
    }
    assert!(files_under(&root).is_empty(), "{:?}", files_under(&root));
    assert!(archive.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_vanished_local_folder_fails_and_is_not_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    let archive = local(&root);
    let shown = archive.describe();
    std::fs::remove_dir_all(&root).unwrap();
    let err = archive.check().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(shown.trim_start_matches("file://")) && text.contains("missing"),
        "{text}"
    );
    assert!(
        err.is_transient(),
        "a folder may come back (a remount): {text}"
    );
    assert!(
        !root.exists(),
        "the check must not re-create the archive folder"
    );

    std::fs::write(&root, b"a file, not a folder").unwrap();
    let text = archive.check().await.unwrap_err().to_string();
    assert!(text.contains("not a directory"), "{text}");
}

#[tokio::test]
async fn an_s3_archive_passes_with_its_keys_and_fails_without_showing_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(tmp.path(), "bkt").await;
    let good =
        Archive::open_s3_with_keys(&s3.storage_config("p"), s3.access_key(), s3.secret_key())
            .unwrap();
    good.check().await.unwrap();
    assert!(good.list("").await.unwrap().is_empty());

    let wrong_secret = "wrong-secret-never-shown-7f3a";
    let bad =
        Archive::open_s3_with_keys(&s3.storage_config("p"), s3.access_key(), wrong_secret).unwrap();
    let err = bad.check().await.unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains(wrong_secret) && !text.contains(s3.secret_key()),
        "{text}"
    );
    assert!(text.contains("403"), "{text}");

    let mut missing = s3.storage_config("");
    missing.url = "s3://no-such-bucket".into();
    let err = Archive::open_s3_with_keys(&missing, s3.access_key(), s3.secret_key())
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(".wxvault-staging"), "{err}");
}
