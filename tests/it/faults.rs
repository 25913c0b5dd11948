//! The fault knobs: 5xx, 429, truncated bodies, expired links, and kill -9 in the middle.

use std::time::Duration;

use serde_json::Value;
use webex_sim::{DatasetSpec, Faults, SimConfig};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_5xx_429_and_truncated_bodies() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    env.handle().set_faults(Faults {
        error_5xx_rate: 0.15,
        rate_429_rate: 0.1,
        truncate_rate: 0.25,
        ..Faults::default()
    });
    // Transient failures are retried within the run and, if they persist, on the next run.
    let mut runs = 0;
    loop {
        runs += 1;
        let out = env.sync_all(3, &["--json"]).await;
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let o = &report["orgs"][0];
        assert_eq!(
            o["outcome"]["state"], "ok",
            "faults are transient; the org must not fail: {report:#}"
        );
        assert!(
            o["failed"].as_array().unwrap().is_empty(),
            "transient faults must not become failures: {report:#}"
        );
        if o["transient_left"].as_u64() == Some(0) {
            break;
        }
        assert!(runs < 4, "still not done after {runs} runs: {report:#}");
    }
    let stats = env.handle().stats();
    assert!(
        stats.injected_5xx > 0 && stats.throttled_429 > 0,
        "the faults should have fired: {stats:?}"
    );
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_are_not_failures() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    env.handle().set_faults(Faults {
        url_expiry_secs: Some(0),
        ..Faults::default()
    });
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &report["orgs"][0];
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing could be downloaded: {report:#}"
    );
    assert_eq!(o["archived"].as_u64(), Some(0));
    assert!(o["transient_left"].as_u64().unwrap() > 0);
    assert!(
        o["failed"].as_array().unwrap().is_empty(),
        "an expired link is not a failure: {report:#}"
    );
    let captures_first = env
        .handle()
        .stats()
        .by_endpoint
        .get("captures")
        .copied()
        .unwrap_or(0);
    assert!(
        captures_first > report["orgs"][0]["tasks_seen"].as_u64().unwrap() / 10,
        "an expired link must trigger a fresh captures query"
    );
    env.handle().set_faults(Faults::default());
    let out = env.sync_all(3, &[]).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_resume_loses_and_duplicates_nothing() {
    let sim = SimConfig {
        dataset: DatasetSpec::small(),
        rate_limit_per_minute: None,
        faults: Faults {
            latency_ms: 15,
            ..Faults::default()
        },
        realtime_clock: false,
        ..SimConfig::default()
    };
    let env = Env::start_with(
        sim,
        Some("\n[sync]\nbatch_concurrency = 1\ndownloads_per_batch = 1\n"),
    )
    .await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let now = env.handle().now_ms();
    let from = rfc3339(now - 3 * 86_400_000);
    let to = rfc3339(now + 1);
    let mut child = env
        .command(&["sync", "--from", &from, "--to", &to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let h = env.handle();
    let started = wait_until(Duration::from_secs(60), || async {
        h.stats().by_endpoint.get("media").copied().unwrap_or(0) >= 3
    })
    .await;
    assert!(started, "the sync never started downloading");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run should have been killed mid-way");
    let partial = files(&env.archive_dir());
    let expected = expected_recordings(&env.handle(), &org.org_id, now - 3 * 86_400_000, now);
    assert!(
        partial.len() < expected.len() * 2,
        "the kill came too late to test anything ({} of {} objects)",
        partial.len(),
        expected.len() * 2
    );
    env.handle().set_faults(Faults::default());
    let out = env.run(&["sync", "--from", &from, "--to", &to], &[]).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    let archive = files(&env.archive_dir());
    // Whatever the kill left behind must be either absent or the exact final object.
    for (k, v) in &partial {
        if let Some(now_v) = archive.get(k) {
            assert_eq!(now_v, v, "{k} changed after the resume");
        }
    }
    let archive: std::collections::BTreeMap<_, _> = archive
        .into_iter()
        .filter(|(k, _)| !k.contains('#'))
        .collect();
    assert_archive_matches(&archive, &org.org_id, &expected);
}

/// The API host down: the run gives up on it after a few connection attempts, with one line
/// naming the host instead of a warning per retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_api_host_ends_the_org_quickly_with_one_line() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{closed}");
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    let sim_base = env.sim.base_url().to_string();
    assert!(config.contains(&sim_base));
    std::fs::write(
        &env.config_path,
        config.replace(&sim_base, &format!("http://{host}/")),
    )
    .unwrap();
    let out = env.sync_all(3, &[]).await;
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    // The log: at most the breaker's warning and the org's sync_failed notice; no retry chatter.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warns: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(warns.len() <= 2, "{} warnings: {stderr}", warns.len());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("cannot reach {host}"))),
        "{stderr}"
    );
    // The report: one line for the org, naming the host.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report_lines: Vec<&str> = stdout.lines().filter(|l| l.contains(&host)).collect();
    assert_eq!(report_lines.len(), 1, "{stdout}");
    assert!(report_lines[0].contains("cannot reach"), "{stdout}");
    assert!(all.contains("api_base"), "{all}");
}
