//! Time-dependent behaviour on the simulator's controllable clock (no sleeping): captures that
//! arrive late, the grace period, token refresh; and one org's revoked grant not stopping another.

use std::time::Duration;

use engine::{OrgOutcome, SyncOptions};
use serde_json::Value;
use webex_sim::DatasetSpec;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_captures_wait_then_arrive_and_never_arriving_ones_go_missing() {
    let env = Env::start(DatasetSpec::small()).await;
    let engine = engine_on_sim_clock(&env).await;
    let sim_org = env.handle().orgs()[0].clone();
    let t0 = env.handle().now_ms();
    add_org_to_engine(&env, &engine, "acme", &sim_org.org_id).await;
    let window = SyncOptions {
        orgs: vec![],
        from_ms: Some(t0 - 3 * 86_400_000),
        to_ms: Some(t0),
        rescan: false,
    };
    let manifest = env.handle().manifest(&sim_org.org_id);
    let telephony: Vec<_> = manifest
        .tasks
        .iter()
        .filter(|t| t.channel_type == "telephony" && t.created_ms >= t0 - 3 * 86_400_000)
        .collect();
    let late = manifest
        .recordings
        .iter()
        .chain(manifest.optional_recordings.iter())
        .filter(|r| r.available_at_ms > t0 && telephony.iter().any(|t| t.task_id == r.task_id))
        .count();
    assert!(
        late > 0,
        "the small dataset needs captures that appear after the first sync"
    );

    let first = engine.sync(&window).await.unwrap();
    let o = &first.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok);
    assert!(
        o.pending_capture > 0,
        "tasks whose capture is not there yet are pending: {o:?}"
    );

    // Two days and a bit later: late captures exist, requested-but-never-captured tasks are missing,
    // and the access token (12 h) has had to be refreshed on the way.
    env.handle().advance_clock(Duration::from_secs(49 * 3600));
    let refreshes_before = env
        .handle()
        .stats()
        .by_endpoint
        .get("access_token")
        .copied()
        .unwrap_or(0);
    let second = engine.sync(&window).await.unwrap();
    let o = &second.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:?}");
    assert_eq!(
        o.pending_capture, 0,
        "nothing can still be pending after the grace period: {o:?}"
    );
    let refreshes_after = env
        .handle()
        .stats()
        .by_endpoint
        .get("access_token")
        .copied()
        .unwrap_or(0);
    assert!(
        refreshes_after > refreshes_before,
        "the expired access token must have been refreshed"
    );

    // Only requested captures go missing; a task Webex never said about ends absent.
    let never: Vec<_> = telephony
        .iter()
        .filter(|t| {
            t.capture_requested == Some(true)
                && !manifest
                    .recordings
                    .iter()
                    .chain(manifest.optional_recordings.iter())
                    .any(|r| r.task_id == t.task_id && !r.segment)
        })
        .collect();
    let missing = first.orgs[0].missing.len() + o.missing.len();
    assert_eq!(
        missing,
        never.len(),
        "every requested capture that never came is reported missing once: {o:?}"
    );
    assert_eq!(second.exit_code(), if never.is_empty() { 0 } else { 2 });
    let now = env.handle().now_ms();
    let expected: Vec<_> =
        expected_recordings(&env.handle(), &sim_org.org_id, t0 - 3 * 86_400_000, now)
            .into_iter()
            .filter(|r| r.task_created_ms < t0)
            .collect();
    assert_archive_matches(&files(&env.archive_dir()), &sim_org.org_id, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_marks_one_org_and_the_other_carries_on() {
    let env = Env::start(DatasetSpec::small()).await;
    let orgs = env.handle().orgs();
    assert!(orgs.len() >= 2, "the small dataset has two orgs");
    env.add_org("alpha", &orgs[0].org_id).await;
    env.add_org("beta", &orgs[1].org_id).await;
    env.handle().revoke_grants(&orgs[0].org_id);
    // `org add` refreshed each grant once.
    let token_calls = || {
        env.handle()
            .stats()
            .by_endpoint
            .get("access_token")
            .copied()
            .unwrap_or(0)
    };
    let after_add = token_calls();
    let now = env.handle().now_ms();
    let out = env.sync_all(3, &["--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        token_calls(),
        after_add + 1,
        "one refused refresh, no storm"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        report["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["org"] == n)
            .unwrap()
            .clone()
    };
    let alpha = by_name("alpha");
    let beta = by_name("beta");
    assert_eq!(alpha["outcome"]["state"], "needs_reauth", "{report:#}");
    let reason = alpha["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("password") && reason.contains("revoked"),
        "plain explanation: {reason}"
    );
    assert_eq!(beta["outcome"]["state"], "ok", "{report:#}");
    check_archive(&env, &orgs[1].org_id, now - 3 * 86_400_000, now);
    assert!(
        files(&env.archive_dir())
            .keys()
            .all(|k| !k.starts_with(&orgs[0].org_id))
    );

    let status = env.run(&["status", "--json"], &[]).await;
    let views: Value = serde_json::from_slice(&status.stdout).unwrap();
    let alpha_status = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["org"]["name"] == "alpha")
        .unwrap();
    assert_eq!(
        alpha_status["org"]["status"]["state"], "needs_reauth",
        "{views:#}"
    );
    // A later run does not hammer Webex for the dead grant.
    let before = env
        .handle()
        .stats()
        .by_endpoint
        .get("access_token")
        .copied()
        .unwrap_or(0);
    env.sync_all(3, &[]).await;
    assert_eq!(
        env.handle()
            .stats()
            .by_endpoint
            .get("access_token")
            .copied()
            .unwrap_or(0),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_token_is_refreshed_once_on_401() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    // Tokens stored without an expiry (an org imported before `org add` refreshed once): wxvault
    // learns of the expiry from a 401.
    {
        let engine = engine_on_sim_clock(&env).await;
        let grant =
            env.handle()
                .issue_grant(&env.client.client_id, &org.org_id, &["cjp:config_read"]);
        engine
            .vault
            .add_org(vault::NewOrg {
                name: "acme".into(),
                org_id: org.org_id.clone(),
                region: "us1".into(),
                client_id: env.client.client_id.clone(),
                client_secret: secrecy::SecretString::from(env.client.client_secret.clone()),
                client_auth: "form".into(),
                sources: vec!["wxcc".into()],
                tokens: vault::TokenUpdate {
                    access_token: Some(secrecy::SecretString::from(grant.access_token)),
                    access_expires_at_ms: None,
                    refresh_token: Some(secrecy::SecretString::from(grant.refresh_token)),
                    refresh_expires_at_ms: None,
                    scopes: None,
                    refreshed_at_ms: None,
                },
            })
            .await
            .unwrap();
    }
    env.handle().advance_clock(Duration::from_secs(13 * 3600));
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["orgs"][0]["outcome"]["state"], "ok", "{report:#}");
    assert!(report["orgs"][0]["archived"].as_u64().unwrap() > 0);
    assert_eq!(
        env.handle()
            .stats()
            .by_endpoint
            .get("access_token")
            .copied(),
        Some(1),
        "exactly one refresh"
    );
    let list = env.run(&["org", "list", "--json"], &[]).await;
    let orgs: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        orgs[0]["access_expires_at_ms"].as_i64().is_some(),
        "the refresh response's expiry is persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_hoc_window_ahead_of_the_cursor_leaves_no_gap() {
    let env = Env::start(DatasetSpec::small()).await;
    let engine = engine_on_sim_clock(&env).await;
    let org = env.handle().orgs()[0].clone();
    add_org_to_engine(&env, &engine, "acme", &org.org_id).await;
    let t0 = env.handle().now_ms();
    let day = 86_400_000;
    let run = |from: Option<i64>, to: Option<i64>| SyncOptions {
        orgs: vec![],
        from_ms: from,
        to_ms: to,
        rescan: false,
    };
    // Day one, then an ad-hoc run for the last day: the day in between is a gap.
    engine
        .sync(&run(Some(t0 - 3 * day), Some(t0 - 2 * day)))
        .await
        .unwrap();
    let o = engine.vault.org_by_name("acme").await.unwrap().unwrap();
    assert_eq!(
        engine.vault.last_window_end(&o, "wxcc").await.unwrap(),
        Some(t0 - 2 * day)
    );
    engine.sync(&run(Some(t0 - day), Some(t0))).await.unwrap();
    assert_eq!(
        engine.vault.last_window_end(&o, "wxcc").await.unwrap(),
        Some(t0 - 2 * day),
        "a window ahead of the cursor does not move it"
    );
    // The next default run starts at the cursor and fills the gap.
    let report = engine.sync(&run(None, Some(t0))).await.unwrap();
    assert_eq!(
        report.orgs[0].outcome,
        OrgOutcome::Ok,
        "{:?}",
        report.orgs[0]
    );
    assert_eq!(report.orgs[0].window_from, rfc3339(t0 - 2 * day));
    check_archive(&env, &org.org_id, t0 - 3 * day, t0);
    assert_eq!(
        engine.vault.last_window_end(&o, "wxcc").await.unwrap(),
        Some(t0)
    );
}
