//! The happy path and its invariants: exactly the simulator's recordings, verified, with
//! sidecars; reruns store nothing twice; no secret leaks anywhere.

use serde_json::Value;
use webex_sim::DatasetSpec;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_archives_exactly_the_simulators_recordings() {
    let env = Env::start(DatasetSpec::small()).await;
    let orgs = env.handle().orgs();
    let org = &orgs[0];
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    let out = env.sync_all(3, &["--org", "acme", "--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json report ({e}):\n{}", text(&out)));
    let expected = expected_recordings(&env.handle(), &org.org_id, now - 3 * 86_400_000, now);
    assert!(
        expected.len() >= 5,
        "the small dataset should have recordings to archive"
    );
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
    let org_report = &report["orgs"][0];
    let archived = org_report["archived"].as_u64().unwrap();
    let on_disk = files(&env.archive_dir())
        .keys()
        .filter(|k| k.ends_with(".wav"))
        .count() as u64;
    assert!(
        archived >= expected.len() as u64 && archived == on_disk,
        "{report:#}"
    );
    // Off a terminal a plain progress line shows the run is alive (at most one a minute).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("progress acme: "))
        .collect();
    assert!(
        !progress.is_empty() && progress[0].contains("window(s) listed"),
        "{stderr}"
    );
    // Exit code 0 unless the dataset holds a task whose capture never came within the grace period.
    let missing = org_report["missing"].as_array().map_or(0, Vec::len);
    assert_eq!(
        out.status.code(),
        Some(if missing == 0 { 0 } else { 2 }),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_follows_the_v1_contract() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    env.sync_all(3, &["--org", "acme"]).await;
    let expected = expected_recordings(&env.handle(), &org.org_id, now - 3 * 86_400_000, now);
    let manifest = env.handle().manifest(&org.org_id);
    let mut with_agent = 0;
    for r in &expected {
        let key = audio_key(&org.org_id, r);
        let sidecar_path = env
            .archive_dir()
            .join(format!("{}.json", key.rsplit_once('.').unwrap().0));
        let v: Value = serde_json::from_slice(&std::fs::read(&sidecar_path).unwrap()).unwrap();
        assert_eq!(v["schema"], "wxvault.recording.v1");
        assert_eq!(v["org_id"], org.org_id.as_str());
        assert_eq!(v["source"], "wxcc");
        assert_eq!(v["task_id"], r.task_id.as_str());
        assert_eq!(v["recording_id"], r.recording_id.as_str());
        assert_eq!(v["sha256"], r.sha256.as_str());
        assert_eq!(v["size_bytes"].as_u64(), Some(r.size_bytes));
        assert_eq!(v["object_key"], key.as_str());
        assert!(v["archived_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert!(
            v["task"].get("createdTime").is_some(),
            "task attributes as received: {v:#}"
        );
        assert_eq!(v["recording"]["fileName"], r.file_name.as_str());
        assert!(
            v["recording"].get("filePath").is_none(),
            "signed links must not be kept"
        );
        let task = manifest
            .tasks
            .iter()
            .find(|t| t.task_id == r.task_id)
            .unwrap();
        if task.owner_ci_id.is_some() {
            let agents = v["agents"].as_array().unwrap();
            if agents
                .iter()
                .any(|a| a["name"].is_string() && a["email"].is_string())
            {
                with_agent += 1;
            }
        }
    }
    assert!(
        with_agent > 0,
        "agent enrichment from the users API should name at least one agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_stores_nothing_twice() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    env.sync_all(3, &[]).await;
    let before = files(&env.archive_dir());
    let media_before = env
        .handle()
        .stats()
        .by_endpoint
        .get("media")
        .copied()
        .unwrap_or(0);
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["orgs"][0]["archived"].as_u64(),
        Some(0),
        "{report:#}"
    );
    assert_eq!(
        files(&env.archive_dir()),
        before,
        "a rerun must not change the archive"
    );
    let media_after = env
        .handle()
        .stats()
        .by_endpoint
        .get("media")
        .copied()
        .unwrap_or(0);
    assert_eq!(media_after, media_before, "a rerun must not download again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_output_or_database() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    let grant = env.add_org("acme", &org.org_id).await;
    let out = env.sync_all(3, &["-vv", "--json"]).await;
    let status = env.run(&["status", "--json"], &[]).await;
    let list = env.run(&["org", "list", "--json"], &[]).await;
    let db = std::fs::read(env.db_path()).unwrap();
    let mut wal = env.db_path().into_os_string();
    wal.push("-wal");
    let wal = std::fs::read(wal).unwrap_or_default();
    let opaque = |t: &str| t.split('_').next().unwrap().to_string();
    for secret in [
        grant.access_token.clone(),
        grant.refresh_token.clone(),
        opaque(&grant.access_token),
        opaque(&grant.refresh_token),
        env.client.client_secret.clone(),
        MASTER_KEY.to_string(),
    ] {
        for (what, hay) in [
            ("sync output", text(&out)),
            ("status", text(&status)),
            ("org list", text(&list)),
        ] {
            assert!(!hay.contains(&secret), "a secret leaked into {what}");
        }
        for (what, bytes) in [("database", &db), ("database WAL", &wal)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret is in the {what} in plaintext"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_archives_the_same() {
    let Some(pg) = vault::testing::TempPostgres::create().await else {
        eprintln!("PostgreSQL not reachable; WXVAULT_REQUIRE_PG unset, skipping");
        return;
    };
    let extra = "\n[sync]\nbatch_concurrency = 2\n";
    let env = Env::start_with(small_with_client(), Some(extra)).await;
    let cfg = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("sqlite://state/wxvault.db", pg.url());
    std::fs::write(&env.config_path, cfg).unwrap();
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    let out = env.sync_all(3, &[]).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
    let again = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["orgs"][0]["archived"].as_u64(), Some(0));
}
