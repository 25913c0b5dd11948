//! Regression tests for the review fixes of the cross-process refresh (issue 9 §3), against a
//! simulator that rotates refresh tokens and revokes the old one on every refresh, so that a
//! refresh token used twice — or one whose rotated successor is lost — shows as
//! `invalid_grant`. The token endpoint is slowed down ([`Faults::token_latency_ms`]: received
//! at once, processed after the delay) to hold a refresh in flight while the test acts.

use std::time::Duration;

use engine::budget::BudgetPolicy;
use engine::tokens::REFRESH_SCOPE;
use secrecy::{ExposeSecret, SecretString};
use vault::OrgStatus;
use webex::TokenProvider;
use webex::http::RetryPolicy;
use webex::oauth::{ClientAuth, ClientCredentials, OAuthClient};
use webex_sim::{Faults, SimClient, SimConfig, SimServer};

use crate::common::{Process, add_org, backends, stored_tokens, token_requests, wait_until};

/// Budget far above anything these tests send: the budget is not under test here.
const UNLIMITED: u32 = 60_000;
/// How long a condition that should hold soon may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

async fn rotating_sim() -> SimServer {
    SimServer::start(
        SimConfig {
            rotate_refresh_tokens: true,
            rate_limit_per_minute: None,
            realtime_clock: false,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn slow_token_endpoint(sim: &SimServer, ms: u64) {
    sim.handle().set_faults(Faults {
        token_latency_ms: ms,
        ..Faults::default()
    });
}

/// What the first refresh saved is the live grant: with the faults off, another process
/// refreshes with it (the second grant Webex gives) and Webex never sees a dead refresh token.
async fn saved_grant_is_live(
    backend: &crate::common::Backend,
    sim: SimServer,
    org: &vault::Org,
    policy: BudgetPolicy,
    access_token: String,
) {
    let name = backend.name();
    sim.handle().set_faults(Faults::default());
    let c = Process::start(backend, &sim, org, policy).await;
    c.tokens
        .refresh_after_unauthorized(&SecretString::from(access_token))
        .await
        .unwrap_or_else(|e| panic!("{name}: refresh with the saved tokens: {e}"));
    let stats = sim.handle().stats();
    assert_eq!(stats.refresh_grants, 2, "{name}");
    assert_eq!(stats.invalid_grant, 0, "{name}");
    sim.shutdown().await;
}

/// A token endpoint slower than the `token_refresh` lease's TTL: the holder renews its lease
/// while the request runs, so a second process refused by the same token waits for the
/// holder's answer instead of taking the lease and refreshing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_slower_than_its_lease_keeps_the_lease() {
    /// Renewed every third of this.
    const LEASE_TTL: Duration = Duration::from_millis(900);
    /// More than three TTLs: without renewals the lease would lapse during the request.
    const TOKEN_LATENCY_MS: u64 = 3_000;
    for backend in backends().await {
        let name = backend.name();
        let sim = rotating_sim().await;
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        let policy = BudgetPolicy::per_minute(UNLIMITED);
        let a = Process::start_with_lease_ttl(&backend, &sim, &org, policy, LEASE_TTL).await;
        let b = Process::start_with_lease_ttl(&backend, &sim, &org, policy, LEASE_TTL).await;
        let (t0, r0) = stored_tokens(&db, &org).await;
        let rejected = SecretString::from(t0);
        slow_token_endpoint(&sim, TOKEN_LATENCY_MS);

        let first = tokio::spawn({
            let (tokens, rejected) = (a.tokens.clone(), rejected.clone());
            async move { tokens.refresh_after_unauthorized(&rejected).await }
        });
        assert!(
            wait_until(PATIENCE, || async { token_requests(&sim) == 1 }).await,
            "{name}: A's refresh reached the simulator"
        );
        // B gets a 401 for the same token while A's request is held at the simulator.
        let second = b
            .tokens
            .refresh_after_unauthorized(&rejected)
            .await
            .unwrap_or_else(|e| panic!("{name}: B: {e}"));
        let first = first
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: A: {e}"));

        let stats = sim.handle().stats();
        assert_eq!(
            token_requests(&sim),
            1,
            "{name}: B refreshed as well (A's lease lapsed during its slow request)"
        );
        assert_eq!(stats.refresh_grants, 1, "{name}");
        assert_eq!(stats.invalid_grant, 0, "{name}");
        assert_eq!(
            first.expose_secret(),
            second.expose_secret(),
            "{name}: B uses the token A stored"
        );
        let (t1, r1) = stored_tokens(&db, &org).await;
        assert_eq!(t1, first.expose_secret(), "{name}");
        assert_ne!(r1, r0, "{name}: the rotated refresh token is stored");
        sim.shutdown().await;
    }
}

/// The caller that started a refresh is dropped while Webex is answering: the answer (with a
/// rotated refresh token, the only live copy of the grant) is saved all the same, the lease is
/// released, and the next refresh — by another process — works with what was saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_survives_its_caller_being_dropped() {
    const TOKEN_LATENCY_MS: u64 = 1_500;
    for backend in backends().await {
        let name = backend.name();
        let sim = rotating_sim().await;
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        let policy = BudgetPolicy::per_minute(UNLIMITED);
        let a = Process::start(&backend, &sim, &org, policy).await;
        let (t0, r0) = stored_tokens(&db, &org).await;
        slow_token_endpoint(&sim, TOKEN_LATENCY_MS);

        let caller = tokio::spawn({
            let (tokens, rejected) = (a.tokens.clone(), SecretString::from(t0.clone()));
            async move { tokens.refresh_after_unauthorized(&rejected).await }
        });
        assert!(
            wait_until(PATIENCE, || async { token_requests(&sim) == 1 }).await,
            "{name}: the refresh reached the simulator"
        );
        caller.abort();
        let joined = caller.await;
        assert!(
            joined.as_ref().is_err_and(|e| e.is_cancelled()),
            "{name}: the caller was dropped before Webex answered ({:?})",
            joined.map(|r| r.map(|_| ()))
        );

        assert!(
            wait_until(PATIENCE, || async {
                stored_tokens(&db, &org).await.1 != r0
            })
            .await,
            "{name}: the rotated refresh token was lost with the caller"
        );
        assert!(
            wait_until(PATIENCE, || async {
                db.lease(&org, REFRESH_SCOPE).await.unwrap().is_none()
            })
            .await,
            "{name}: the refresh lease is released"
        );
        let (t1, _) = stored_tokens(&db, &org).await;
        assert_ne!(t1, t0, "{name}: the new access token is stored");

        saved_grant_is_live(&backend, sim, &org, policy, t1).await;
    }
}

/// Process A holds the org's tokens and refreshes; process B (standing in for one that took
/// the lease after A's ran out) rotates the grant and stores its tokens while A's request is
/// on its way. Webex refuses A's refresh token with `invalid_grant`; A must see B's rotation
/// in the vault and adopt B's tokens, not mark the org `needs_reauth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_grant_after_another_process_rotated_adopts_its_tokens() {
    const TOKEN_LATENCY_MS: u64 = 1_500;
    for backend in backends().await {
        let name = backend.name();
        let sim = rotating_sim().await;
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        let a = Process::start(&backend, &sim, &org, BudgetPolicy::per_minute(UNLIMITED)).await;
        let (t0, r0) = stored_tokens(&db, &org).await;
        slow_token_endpoint(&sim, TOKEN_LATENCY_MS);

        let refused = tokio::spawn({
            let (tokens, rejected) = (a.tokens.clone(), SecretString::from(t0));
            async move { tokens.refresh_after_unauthorized(&rejected).await }
        });
        assert!(
            wait_until(PATIENCE, || async { token_requests(&sim) == 1 }).await,
            "{name}: A's refresh reached the simulator"
        );
        // B refreshes with the same refresh token (answered at once) and stores the result.
        sim.handle().set_faults(Faults::default());
        let oauth = OAuthClient::new(
            webex::http::build_client(),
            sim.base_url(),
            RetryPolicy::default(),
        );
        let creds = ClientCredentials {
            client_id: SimClient::DEMO_CLIENT_ID.into(),
            client_secret: SecretString::from(SimClient::DEMO_CLIENT_SECRET.to_owned()),
            auth: ClientAuth::Form,
        };
        let sent_at = sim.handle().now_ms();
        let by_b = oauth
            .refresh(&creds, &SecretString::from(r0))
            .await
            .expect("B refreshes");
        let now = db.org_by_id(org.id).await.unwrap().unwrap();
        db.save_tokens(&now, &engine::onboard::token_update(&by_b, sent_at))
            .await
            .unwrap();

        let adopted = refused
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: A: {e}"));
        assert_eq!(
            sim.handle().stats().invalid_grant,
            1,
            "{name}: A's refresh token was refused (the path under test ran)"
        );
        assert_eq!(
            adopted.expose_secret(),
            by_b.access_token.expose_secret(),
            "{name}: A uses B's access token"
        );
        let stored = db.org_by_id(org.id).await.unwrap().unwrap();
        assert!(
            matches!(stored.status, OrgStatus::Active),
            "{name}: {:?}",
            stored.status
        );
        let events = db.recent_events(Some(&stored), 50).await.unwrap();
        assert!(
            events.iter().all(|e| e.kind != "needs_reauth"),
            "{name}: {events:?}"
        );
        assert!(matches!(a.tokens.org().await.status, OrgStatus::Active));
        a.call(sim.handle().now_ms())
            .await
            .unwrap_or_else(|e| panic!("{name}: A calls the API with the adopted token: {e}"));
        sim.shutdown().await;
    }
}

/// A refresh whose `token_refresh` lease is taken over while Webex is still answering (the
/// process was paused, or its database was out for the whole TTL) still waits for the answer and
/// saves it: the request has been sent and may have rotated the refresh token, and dropping the
/// answer would leave only a revoked refresh token in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_that_loses_its_lease_mid_request_still_saves_the_answer() {
    const TOKEN_LATENCY_MS: u64 = 2_000;
    const LEASE_TTL: Duration = Duration::from_millis(600);
    for backend in backends().await {
        let name = backend.name();
        let sim = rotating_sim().await;
        let db = backend.open().await;
        let org = add_org(&db, &sim).await;
        let policy = BudgetPolicy::per_minute(UNLIMITED);
        let a = Process::start_with_lease_ttl(&backend, &sim, &org, policy, LEASE_TTL).await;
        let (t0, r0) = stored_tokens(&db, &org).await;
        slow_token_endpoint(&sim, TOKEN_LATENCY_MS);

        let caller = tokio::spawn({
            let (tokens, rejected) = (a.tokens.clone(), SecretString::from(t0.clone()));
            async move { tokens.refresh_after_unauthorized(&rejected).await }
        });
        assert!(
            wait_until(PATIENCE, || async { token_requests(&sim) == 1 }).await,
            "{name}: the refresh reached the simulator"
        );
        // Another process takes the lease over while Webex has A's request.
        let held = db
            .lease(&org, REFRESH_SCOPE)
            .await
            .unwrap()
            .expect("A holds the lease");
        assert!(
            db.release_lease(&org, REFRESH_SCOPE, &held.holder)
                .await
                .unwrap()
        );
        let intruder = vault::LeaseHolder {
            id: "another-process".into(),
            host: "elsewhere".into(),
            pid: 1,
        };
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        assert!(matches!(
            db.acquire_lease(&org, REFRESH_SCOPE, &intruder, now, 60_000)
                .await
                .unwrap(),
            vault::LeaseAcquire::Acquired(_)
        ));

        let answer = tokio::time::timeout(PATIENCE, caller)
            .await
            .expect("the refresh ends")
            .expect("the caller did not panic");
        assert!(
            answer.is_ok(),
            "{name}: the answer Webex gave is used, not dropped: {:?}",
            answer.err().map(|e| e.to_string())
        );
        let (t1, r1) = stored_tokens(&db, &org).await;
        assert_ne!(r1, r0, "{name}: the rotated refresh token is stored");
        assert_ne!(t1, t0, "{name}: the new access token is stored");

        db.release_lease(&org, REFRESH_SCOPE, &intruder.id)
            .await
            .unwrap();
        saved_grant_is_live(&backend, sim, &org, policy, t1).await;
    }
}
