//! Grants kept alive on the simulator's clock (no sleeping), warnings before they lapse, and
//! notices delivered to the notification webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use engine::{Config, Engine, FnClock};
use serde_json::Value;
use webex_sim::{DatasetSpec, SimConfig};

use crate::harness::*;

const DAY: u64 = 86_400;

/// What the receiver has got, and how many deliveries it has seen.
type Received = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>);

/// A notification receiver that refuses the first delivery and records the rest.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((got, calls)): State<Received>, body: axum::Json<Value>| async move {
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    if *n == 1 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(body.0);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((got.clone(), calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

async fn setup(webhook: Option<&str>) -> (Env, Engine, String, String) {
    // Integration-style lifetimes (14 d access, 90 d refresh) so only the keep-alive rule refreshes.
    let sim = SimConfig {
        dataset: DatasetSpec::small(),
        rate_limit_per_minute: None,
        realtime_clock: false,
        access_ttl_secs: 14 * DAY,
        refresh_ttl_secs: 90 * DAY,
        ..SimConfig::default()
    };
    let env = Env::start_with(sim, None).await;
    let mut config = Config::load(Some(&env.config_path)).unwrap();
    config.notify.webhook_url = webhook.map(str::to_string);
    config.notify.reconnect_url = Some("https://vault.example.test/reconnect/{org}".into());
    vault::init_key_file(std::path::Path::new(&config.vault.master_key_file)).unwrap();
    let h = env.handle();
    let engine = Engine::open(
        config,
        Some(MASTER_KEY),
        Arc::new(FnClock(move || h.now_ms())),
    )
    .await
    .unwrap();
    let org = env.handle().orgs()[0].clone();
    let grant = add_org_to_engine(&env, &engine, "acme", &org.org_id).await;
    (env, engine, org.org_id, grant.refresh_token)
}

fn refreshes(env: &Env) -> u64 {
    env.handle()
        .stats()
        .by_endpoint
        .get("access_token")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_org_is_refreshed_every_few_days_and_warned_before_it_lapses() {
    let (env, engine, _, _) = setup(None).await;
    let r = engine.keep_alive().await.unwrap();
    assert!(
        !r[0].refreshed && r[0].notices.is_empty(),
        "a fresh grant needs nothing: {r:?}"
    );

    env.handle().advance_clock(Duration::from_secs(DAY));
    assert!(
        !engine.keep_alive().await.unwrap()[0].refreshed,
        "not every day"
    );
    assert_eq!(refreshes(&env), 0);

    env.handle()
        .advance_clock(Duration::from_secs(2 * DAY + 60));
    let r = engine.keep_alive().await.unwrap();
    assert!(
        r[0].refreshed,
        "an idle grant is refreshed after three days: {r:?}"
    );
    assert_eq!(refreshes(&env), 1);
    // The simulator, like Webex in the samples, counts the refresh token's life down: say so.
    assert!(
        r[0].notices
            .iter()
            .any(|n| n.event == "refresh_not_extended"),
        "{r:?}"
    );
    assert!(
        !engine.keep_alive().await.unwrap()[0].refreshed,
        "not again right away"
    );
    assert_eq!(refreshes(&env), 1);

    // 80 days in: the refresh token has about 10 days left.
    env.handle().advance_clock(Duration::from_secs(77 * DAY));
    let r = engine.keep_alive().await.unwrap();
    let warn = r[0]
        .notices
        .iter()
        .find(|n| n.event == "refresh_expiring")
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(warn.reason.contains("day"), "{warn:?}");
    assert_eq!(
        warn.reconnect_url.as_deref(),
        Some("https://vault.example.test/reconnect/acme")
    );
    assert_eq!(warn.reconnect_command, "wxvault connect --name acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_reported_to_the_webhook_with_the_fix() {
    let (url, got) = receiver().await;
    let (env, engine, org_id, refresh_token) = setup(Some(&url)).await;
    env.handle().revoke_grants(&org_id);
    env.handle()
        .advance_clock(Duration::from_secs(3 * DAY + 60));
    let r = engine.keep_alive().await.unwrap();
    let notices: Vec<_> = r.iter().flat_map(|r| r.notices.clone()).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].event, "needs_reauth");
    assert_eq!(
        engine.notify(&notices).await,
        1,
        "delivered after one refused attempt"
    );
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let n = &got[0];
    assert_eq!(n["event"], "needs_reauth");
    assert_eq!(n["org"], "acme");
    assert_eq!(n["org_id"], org_id.as_str());
    let reason = n["reason"].as_str().unwrap();
    assert!(
        reason.contains("password") && reason.contains("reconnect"),
        "{reason}"
    );
    assert_eq!(
        n["reconnect_url"],
        "https://vault.example.test/reconnect/acme"
    );
    let body = n.to_string();
    assert!(
        !body.contains(&refresh_token) && !body.contains(&env.client.client_secret),
        "no secret in notices"
    );

    // The org is now marked; the next pass reports it without asking Webex again.
    let before = refreshes(&env);
    let again = engine.keep_alive().await.unwrap();
    assert_eq!(again[0].notices[0].event, "needs_reauth");
    assert_eq!(refreshes(&env), before);
}
