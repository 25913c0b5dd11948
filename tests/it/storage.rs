//! S3 storage against a real in-process S3 implementation (s3s-fs).

use archive::Archive;
use archive::layout::ObjectKey;
use archive::testing::TestS3;
use sha2::{Digest, Sha256};
use webex_sim::DatasetSpec;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_into_s3() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(s3_root.path(), "recordings").await;
    let env = Env::start(DatasetSpec::small()).await;
    use_s3(&env, &s3.endpoint());
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    let aws = [
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
    ];
    let from = rfc3339(now - 3 * 86_400_000);
    let to = rfc3339(now + 1);
    let out = env.run(&["sync", "--from", &from, "--to", &to], &aws).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    assert!(
        !text(&out).contains(s3.secret_key()),
        "the S3 secret must not be printed"
    );

    let store =
        Archive::open_s3_with_keys(&s3.storage_config("wx"), s3.access_key(), s3.secret_key())
            .unwrap();
    let listed = store.list(&org.org_id).await.unwrap();
    let expected = expected_recordings(
        &env.handle(),
        &org.org_id,
        now - 3 * 86_400_000,
        env.handle().now_ms(),
    );
    assert_eq!(
        listed.len(),
        expected.len() * 2,
        "audio + sidecar per recording: {listed:?}"
    );
    for r in &expected {
        let key = audio_key(&org.org_id, r);
        let bytes = store.get_bytes(&archive_key(&key)).await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), r.sha256, "{key}");
    }
    // Nothing written to the local default location.
    assert!(!env.archive_dir().exists());
}

fn archive_key(k: &str) -> ObjectKey {
    let (stem, ext) = k.rsplit_once('.').unwrap();
    let parts: Vec<&str> = stem.split('/').collect();
    // org/wxcc/YYYY/MM/DD/task/recording
    let date = time::Date::from_calendar_date(
        parts[2].parse().unwrap(),
        time::Month::try_from(parts[3].parse::<u8>().unwrap()).unwrap(),
        parts[4].parse().unwrap(),
    )
    .unwrap();
    let ms = date.midnight().assume_utc().unix_timestamp() * 1000;
    archive::layout::wxcc_audio(parts[0], ms, parts[5], parts[6], ext).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_refusing_writes_stops_the_org_without_failing_recordings() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(s3_root.path(), "recordings").await;
    let env = Env::start(DatasetSpec::small()).await;
    use_s3(&env, &s3.endpoint());
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    let from = rfc3339(now - 3 * 86_400_000);
    let to = rfc3339(now + 1);
    let wrong = [
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
    ];
    let out = env
        .run(&["sync", "--json", "--from", &from, "--to", &to], &wrong)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &report["orgs"][0];
    assert_eq!(o["outcome"]["state"], "failed", "{report:#}");
    assert!(
        o["outcome"]["reason"].as_str().unwrap().contains("storage"),
        "{report:#}"
    );
    assert!(
        o["failed"].as_array().unwrap().is_empty(),
        "no recording is blamed for the store: {report:#}"
    );
    let status = env.run(&["status", "--json"], &wrong).await;
    let views: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(views[0]["counts"]["failed"], 0, "{views:#}");

    // With the right credentials the next run archives everything.
    let right = [
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
    ];
    let out = env
        .run(&["sync", "--json", "--from", &from, "--to", &to], &right)
        .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["orgs"][0]["outcome"]["state"], "ok", "{report:#}");
    let expected = expected_recordings(
        &env.handle(),
        &org.org_id,
        now - 3 * 86_400_000,
        env.handle().now_ms(),
    );
    let store =
        Archive::open_s3_with_keys(&s3.storage_config("wx"), s3.access_key(), s3.secret_key())
            .unwrap();
    assert_eq!(
        store.list(&org.org_id).await.unwrap().len(),
        expected.len() * 2
    );
}

/// `wxvault sync` into `az://` (Azurite): every recording byte-exact with its sidecar, the large
/// one (above `multipart_threshold`) through a multipart upload, no staging data left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_into_azure() {
    use archive::testing::{Azurite, unique_name};
    let Some(azurite) = Azurite::from_env() else {
        return;
    };
    let container = unique_name("wx");
    azurite.create_container(&container).await;
    let large = 9 * 1024 * 1024 + 44;
    let env = Env::start(DatasetSpec::small().with_large_recording(large)).await;
    let org = env.handle().orgs()[0].clone();
    // Added under the default file archive: `org add` gets no Azure account.
    env.add_org("acme", &org.org_id).await;
    let extra = format!(
        "\n[storage]\nurl = \"az://{container}/wx\"\nendpoint = \"{}\"\nallow_http = true\nmultipart_threshold = \"1MiB\"\n",
        azurite.endpoint()
    );
    let cfg = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("[storage]\nurl = \"file://archive\"\n", "");
    std::fs::write(&env.config_path, format!("{cfg}{extra}")).unwrap();
    let now = env.handle().now_ms();
    let from = rfc3339(now - 3 * 86_400_000);
    let to = rfc3339(now + 1);
    let out = env
        .run(&["sync", "--from", &from, "--to", &to], &azurite.env())
        .await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    assert!(
        !text(&out).contains(Azurite::KEY),
        "the account key must not be printed"
    );

    let store = Archive::open_azure_with_key(
        &azurite.storage_config(&container, "wx"),
        Azurite::ACCOUNT,
        Azurite::KEY,
    )
    .unwrap();
    assert_sync_archived(&store, &env, &org.org_id, now, large).await;
}

/// Every expected recording is in `store` byte-exact, with a sidecar naming its sha256 and
/// size, nothing else is there for the org, one of them is `large` bytes, and no upload left
/// staging data.
async fn assert_sync_archived(store: &Archive, env: &Env, org_id: &str, now: i64, large: u64) {
    let listed = store.list(org_id).await.unwrap();
    let expected = expected_recordings(
        &env.handle(),
        org_id,
        now - 3 * 86_400_000,
        env.handle().now_ms(),
    );
    assert_eq!(
        listed.len(),
        expected.len() * 2,
        "audio + sidecar per recording: {listed:?}"
    );
    let mut saw_large = false;
    for r in &expected {
        let key = archive_key(&audio_key(org_id, r));
        let bytes = store.get_bytes(&key).await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), r.sha256, "{key}");
        saw_large |= bytes.len() as u64 == large;
        let sidecar = store
            .get_bytes(&archive::layout::sidecar_for(&key))
            .await
            .unwrap();
        let sidecar: serde_json::Value = serde_json::from_slice(&sidecar).unwrap();
        assert_eq!(sidecar["sha256"], r.sha256, "{key}: {sidecar:#}");
        assert_eq!(
            sidecar["size_bytes"],
            bytes.len() as u64,
            "{key}: {sidecar:#}"
        );
    }
    assert!(saw_large, "the large recording was archived");
    use object_store::ObjectStore as _;
    let staging: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
        store
            .store()
            .list(Some(&object_store::path::Path::from(".wxvault-staging"))),
    )
    .await;
    assert!(staging.is_empty(), "{staging:?}");
}
