//! The customer admin's path: invite → connect page → Webex → callback → success, and every way
//! it must refuse.

use reqwest::StatusCode;
use vault::{InviteStatus, OrgStatus};
use webex_sim::{ConsentMode, SimConfig};

use crate::harness::{App, Browser, HOUR, Options, query, sim_config, with_query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_connects_an_org_once_and_nothing_can_replay_it() {
    let app = App::start().await;
    let sim_org = app.handle().orgs()[0].clone();
    let link = app.invite("globex", None, 72 * HOUR).await;
    let mut b = Browser::new();
    let back = b.consent(&app, &link).await;
    let done = b.get(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains("id=\"result\">Connected<"),
        "{}",
        done.body
    );
    assert!(done.body.contains(&sim_org.org_id), "org id shown");
    assert!(
        done.body.contains("cjp:config_read"),
        "granted scopes shown"
    );
    assert!(done.body.contains("What happens next"));

    let org = app
        .engine
        .vault
        .org_by_name("globex")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.org_id, sim_org.org_id);
    assert_eq!(org.region, "us1", "the region picked on the page");
    assert_eq!(org.client_id, app.client.client_id);
    assert_eq!(org.status, OrgStatus::Active);
    assert!(org.refresh_expires_at_ms.is_some());
    let invites = app.engine.vault.invites().await.unwrap();
    assert_eq!(invites[0].status, InviteStatus::Used);

    // The same answer again (back button, a leaked URL): refused before Webex is asked.
    let exchanges = app.token_calls();
    let again = b.get(&back).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(again.body.contains("Nothing was stored"), "{}", again.body);
    assert_eq!(app.token_calls(), exchanges, "no second exchange");

    // The invite link is used up.
    let reopened = Browser::new().get(&link).await;
    assert_eq!(reopened.status, StatusCode::GONE, "{}", reopened.body);
    assert!(reopened.body.contains("already used"), "{}", reopened.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_or_mismatched_state_is_refused_and_does_not_burn_the_real_one() {
    let app = App::start().await;
    let link = app.invite("initech", Some("eu1"), 72 * HOUR).await;
    let mut b = Browser::new();
    let back = b.consent(&app, &link).await;

    // A state this browser never started.
    let forged = with_query(&back, "state", "forged-state-value");
    let page = b.get(&forged).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    // No state at all.
    let page = b.get(&app.url("/oauth/callback?code=abc")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    // The right answer in another browser (an attacker who got the URL): no session, refused.
    let mut other = Browser::new();
    let page = other.get(&back).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    // Another browser that has a connect session of its own: still not its state.
    let link2 = app.invite("someone-else", Some("us1"), 72 * HOUR).await;
    other.start_connect(&app, &link2).await;
    let page = other.get(&back).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        app.engine
            .vault
            .org_by_name("initech")
            .await
            .unwrap()
            .is_none()
    );

    // The browser that started it still finishes it.
    let done = b.get(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let org = app
        .engine
        .vault
        .org_by_name("initech")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.region, "eu1", "the invite's region");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_refused_and_nothing_is_stored() {
    let app = App::start().await;
    let mut b = Browser::new();
    let first = b
        .consent(&app, &app.invite("first", None, HOUR).await)
        .await;
    let code = query(&first, "code");
    assert_eq!(b.get(&first).await.status, StatusCode::OK);

    // A fresh, legitimate state from a second invite, carrying the first (used) code.
    let second = b
        .consent(&app, &app.invite("second", None, HOUR).await)
        .await;
    let replay = with_query(&second, "code", &code);
    let page = b.get(&replay).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("did not accept"), "{}", page.body);
    assert!(page.body.contains("Nothing was stored"), "{}", page.body);
    assert!(
        app.engine
            .vault
            .org_by_name("second")
            .await
            .unwrap()
            .is_none()
    );
    let invites = app.engine.vault.invites().await.unwrap();
    let second_invite = invites.iter().find(|i| i.org_name == "second").unwrap();
    assert_eq!(
        second_invite.status,
        InviteStatus::Open,
        "a failed connection does not use the invite up"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_unknown_and_withdrawn_invites_are_refused() {
    let app = App::start().await;
    let link = app.invite("late", None, HOUR).await;
    app.handle()
        .advance_clock(std::time::Duration::from_secs(2 * 3600));
    let mut b = Browser::new();
    let page = b.get(&link).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert!(page.body.contains(crate::harness::VENDOR), "who to ask");

    let page = b.get(&with_query(&link, "invite", "not-a-token")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);

    let link = app.invite("withdrawn", None, HOUR).await;
    let id = app.engine.vault.invites().await.unwrap()[0].id;
    app.engine.vault.revoke_invite(id).await.unwrap();
    let page = b.get(&link).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.body);
    assert!(page.body.contains("withdrawn"), "{}", page.body);

    // No invite at all: the connect page and the start form ask for the link.
    let page = Browser::new().get(&app.url("/connect")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    let page = Browser::new()
        .post(&app.url("/connect/start"), &[("csrf", "x")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_that_expires_at_webex_is_not_used() {
    let app = App::start().await;
    let link = app.invite("slow", None, HOUR).await;
    let mut b = Browser::new();
    let back = b.consent(&app, &link).await;
    // The admin took too long at Webex: the pending authorization (15 min) has lapsed.
    app.handle()
        .advance_clock(std::time::Duration::from_secs(20 * 60));
    let page = b.get(&back).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        app.engine
            .vault
            .org_by_name("slow")
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_form_needs_its_csrf_token() {
    let app = App::start().await;
    let link = app.invite("csrf", None, HOUR).await;
    let mut b = Browser::new();
    b.get(&link).await;
    let page = b
        .post(
            &app.url("/connect/start"),
            &[("csrf", "wrong"), ("region", "us1")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let page = b
        .post(&app.url("/connect/start"), &[("region", "us1")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let stats = app.handle().stats();
    assert_eq!(
        stats.by_endpoint.get("authorize").copied().unwrap_or(0),
        0,
        "never sent to Webex"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_blocked_and_missing_scope_answers_are_explained() {
    let app = App::start().await;
    for (mode, expect) in [
        (ConsentMode::Blocked, "blocked this integration"),
        (ConsentMode::Deny, "declined"),
    ] {
        app.handle().set_consent(mode);
        let mut b = Browser::new();
        let back = b
            .consent(&app, &app.invite("blocked", None, HOUR).await)
            .await;
        let page = b.get(&back).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains(expect), "{mode:?}: {}", page.body);
        assert!(page.body.contains("Control Hub"), "the fix: {}", page.body);
        assert!(
            page.body.contains(&app.client.client_id),
            "which integration"
        );
    }
    assert!(app.engine.vault.orgs().await.unwrap().is_empty());
    app.stop().await;

    let app = App::start_with(Options {
        sim: SimConfig {
            registered_scopes: vec!["spark:kms".into()],
            ..sim_config()
        },
        ..Options::default()
    })
    .await;
    let mut b = Browser::new();
    let back = b
        .consent(&app, &app.invite("scopeless", None, HOUR).await)
        .await;
    let page = b.get(&back).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("cjp:config_read"), "{}", page.body);
    assert!(page.body.contains("developer portal"), "{}", page.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_on_postgres_too() {
    let app = App::start_with(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
    let mut b = Browser::new();
    let page = b
        .connect(&app, &app.invite("pg-org", None, HOUR).await)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let org = app
        .engine
        .vault
        .org_by_name("pg-org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.status, OrgStatus::Active);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_link_again_keeps_a_connection_under_way() {
    let app = App::start().await;
    let link = app.invite("two-tabs", None, HOUR).await;
    let mut b = Browser::new();
    let back = b.consent(&app, &link).await;
    // A second tab opens the same link: same session, so the first tab's answer still counts.
    let again = b.get(&link).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(again.set_cookies().is_empty(), "no new session");
    let done = b.get(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webex_org_is_connected_once_and_a_reconnect_must_be_the_same_org() {
    let app = App::start().await;
    let orgs = app.handle().orgs();
    assert!(orgs.len() >= 2, "the small dataset has two orgs");
    let mut b = Browser::new();
    let done = b.connect(&app, &app.invite("acme", None, HOUR).await).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // The same Webex org again under another name: refused, and the invite stays usable.
    let page = b
        .connect(&app, &app.invite("acme-twice", None, HOUR).await)
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(page.body.contains("already connected"), "{}", page.body);
    assert!(
        !page.body.contains(&orgs[0].org_id),
        "no other org's id shown"
    );
    let invites = app.engine.vault.invites().await.unwrap();
    let twice = invites.iter().find(|i| i.org_name == "acme-twice").unwrap();
    assert_eq!(twice.status, InviteStatus::Open);
    assert!(
        app.engine
            .vault
            .org_by_name("acme-twice")
            .await
            .unwrap()
            .is_none()
    );

    // Re-connecting "acme" while signed in to the other Webex org: refused, acme untouched.
    let before = app.engine.vault.org_by_name("acme").await.unwrap().unwrap();
    let link = app.invite("acme", None, HOUR).await;
    let authorize = b.start_connect(&app, &link).await;
    let as_other = format!("{authorize}&login_hint={}", orgs[1].org_id);
    let back = b.get(&as_other).await.location();
    let page = b.get(&back).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(
        page.body.contains("different Webex organization"),
        "{}",
        page.body
    );
    let after = app.engine.vault.org_by_name("acme").await.unwrap().unwrap();
    assert_eq!(after.org_id, before.org_id);
    assert_eq!(
        after.last_refresh_at_ms, before.last_refresh_at_ms,
        "tokens untouched"
    );
    let invites = app.engine.vault.invites().await.unwrap();
    assert_eq!(invites[0].org_name, "acme");
    assert_eq!(
        invites[0].status,
        InviteStatus::Open,
        "the link still works"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_regions_are_accepted_from_the_connect_page() {
    let app = App::start().await;
    let mut b = Browser::new();
    b.get(&app.invite("regional", None, HOUR).await).await;
    let page = b.get(&app.url("/connect")).await;
    assert!(page.body.contains("<select id=\"region\""), "{}", page.body);
    let csrf = page.field("csrf");
    let page = b
        .post(
            &app.url("/connect/start"),
            &[("csrf", &csrf), ("region", "zz9")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    let page = b.post(&app.url("/connect/start"), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    app.stop().await;
}
