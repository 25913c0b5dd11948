//! The operator's side: sign-in, cookies, CSRF, headers, health at a glance, re-connect.

use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use vault::OrgStatus;

use crate::harness::{App, Browser, HOUR, Options, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_a_sign_in_with_safe_cookies() {
    let app = App::start().await;
    let mut b = Browser::new();
    let page = b.get(&app.url("/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/login");
    let page = b.post(&app.url("/login"), &[("password", "guess")]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.set_cookies().is_empty());
    let page = b.post(&app.url("/login"), &[("password", "")]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    let page = b.sign_in(&app).await;
    let cookies = page.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for c in &cookies {
        assert!(c.contains("HttpOnly"), "{c}");
        assert!(c.contains("SameSite=Lax"), "{c}");
        assert!(c.contains("Path=/"), "{c}");
        assert!(!c.contains("Secure"), "plain http here: {c}");
        assert!(!c.contains(PASSWORD));
    }
    let page = b.get(&app.url("/")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"no-orgs\""), "{}", page.body);
    assert!(
        page.body.contains(&app.url("/oauth/callback")),
        "the redirect URI to register"
    );

    // Sign out ends the session for good, even for a copied cookie.
    let csrf = page.field("csrf");
    let copied = b.http.clone();
    let out = b.post(&app.url("/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let page = copied.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_deployments_get_secure_host_prefixed_cookies() {
    let app = App::start_with(Options {
        public_url: Some("https://vault.example.com".into()),
        ..Options::default()
    })
    .await;
    let mut b = Browser::new();
    let page = b.post(&app.url("/login"), &[("password", PASSWORD)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let cookies = page.set_cookies();
    assert!(!cookies.is_empty());
    for c in &cookies {
        assert!(c.starts_with("__Host-"), "{c}");
        assert!(c.contains("Secure") && c.contains("HttpOnly"), "{c}");
    }
    assert!(
        page.headers.get("strict-transport-security").is_some(),
        "HSTS over https"
    );
    // Signing out removes them with the same attributes (browsers ignore a `__Host-` removal
    // without `Secure`). The test client is plain http, so it sends the cookies by hand.
    let jar: Vec<String> = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect();
    let session_csrf = jar
        .iter()
        .find(|c| c.contains("_csrf="))
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let out = b
        .post_with(
            &app.url("/logout"),
            &[("csrf", &session_csrf)],
            &[("cookie", &jar.join("; "))],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let removed = out.set_cookies();
    assert_eq!(removed.len(), 2, "{removed:?}");
    for c in &removed {
        assert!(c.starts_with("__Host-") && c.contains("Secure"), "{c}");
        assert!(c.contains("Max-Age=0"), "{c}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_forms_need_csrf_and_our_origin() {
    let app = App::start().await;
    let mut b = Browser::new();
    b.sign_in(&app).await;
    let page = b.get(&app.url("/")).await;
    let csrf = page.field("csrf");
    let form = [("csrf", csrf.as_str()), ("org", "acme"), ("region", "")];

    let page = b.post(&app.url("/invites"), &[("org", "acme")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "no token");
    let page = b
        .post(&app.url("/invites"), &[("csrf", "nope"), ("org", "acme")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "wrong token");
    let page = b
        .post_with(
            &app.url("/invites"),
            &form,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "foreign origin");
    let page = b
        .post_with(
            &app.url("/invites"),
            &form,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "cross-site fetch");
    // Even the login form refuses a cross-site post.
    let page = b
        .post_with(
            &app.url("/login"),
            &[("password", PASSWORD)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        app.engine.vault.invites().await.unwrap().is_empty(),
        "nothing created"
    );

    let page = b
        .post_with(&app.url("/invites"), &form, &[("origin", &app.base)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page.attr("invite-link", "value");
    assert!(link.starts_with(&app.url("/connect?invite=")), "{link}");
    let invites = app.engine.vault.invites().await.unwrap();
    assert_eq!(invites.len(), 1);
    assert_eq!(invites[0].org_name, "acme");

    // The link works: it opens the connect page.
    let mut admin = Browser::new();
    let opened = admin.get(&link).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_carries_a_strict_policy_and_no_secret() {
    let app = App::start().await;
    let mut admin = Browser::new();
    let link = app.invite("acme", None, HOUR).await;
    let done = admin.connect(&app, &link).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let mut op = Browser::new();
    op.sign_in(&app).await;
    let dash = op.get(&app.url("/")).await;
    assert_eq!(dash.status, StatusCode::OK);

    for path in ["/", "/login", "/connect", "/nowhere", "/static/app.css"] {
        let page = op.get(&app.url(path)).await;
        let csp = page
            .headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("script-src"),
            "{path}: no script allowed: {csp}"
        );
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("form-action 'self';"),
            "forms post only here: {csp}"
        );
        for (h, v) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                page.headers.get(h).and_then(|v| v.to_str().ok()),
                Some(v),
                "{path}: {h}"
            );
        }
    }

    // No secret in any page either browser saw.
    let org = app.engine.vault.org_by_name("acme").await.unwrap().unwrap();
    let secrets = app.engine.vault.org_secrets(&org).await.unwrap();
    let mut needles = vec![
        secrets.client_secret.expose_secret().to_string(),
        app.client.client_secret.clone(),
        PASSWORD.to_string(),
    ];
    needles.extend(secrets.access_token.map(|t| t.expose_secret().to_string()));
    needles.extend(secrets.refresh_token.map(|t| t.expose_secret().to_string()));
    let token = link.split("invite=").nth(1).unwrap().to_string();
    needles.push(token);
    for body in admin.seen.iter().chain(op.seen.iter()) {
        for n in &needles {
            assert!(!body.contains(n.as_str()), "a secret in a page: {body}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_health_and_reconnects_a_revoked_org_in_one_click() {
    let app = App::start().await;
    let sim_org = app.handle().orgs()[0].clone();
    let mut admin = Browser::new();
    admin
        .connect(&app, &app.invite("acme", None, HOUR).await)
        .await;
    let mut op = Browser::new();
    op.sign_in(&app).await;
    let page = op.get(&app.url("/")).await;
    assert!(page.body.contains("data-org=\"acme\""), "{}", page.body);
    assert!(page.body.contains("health ok\">healthy<"), "{}", page.body);
    assert!(!page.body.contains("id=\"attention\""));

    // An admin revokes the integration in Control Hub; the next keep-alive finds out.
    app.handle().revoke_grants(&sim_org.org_id);
    app.handle()
        .advance_clock(std::time::Duration::from_secs(4 * 24 * 3600));
    let passes = app.engine.keep_alive().await.unwrap();
    let notice = &passes[0].notices[0];
    assert_eq!(notice.event, "needs_reauth");
    assert_eq!(
        notice.reconnect_url.as_deref(),
        Some(app.url("/").as_str()),
        "notices point at the dashboard"
    );
    // Four days on, the 12-hour operator session has lapsed too.
    assert_eq!(op.get(&app.url("/")).await.status, StatusCode::SEE_OTHER);
    op.sign_in(&app).await;
    let page = op.get(&app.url("/")).await;
    assert!(page.body.contains("id=\"attention\""), "{}", page.body);
    assert!(page.body.contains("need re-authorization"), "{}", page.body);
    assert!(
        page.body.contains("health bad\">needs re-authorization<"),
        "{}",
        page.body
    );

    // One click: this browser goes straight into the connect flow for that org.
    let csrf = page.field("csrf");
    let go = op
        .post(
            &app.url("/orgs/reconnect"),
            &[("csrf", &csrf), ("org", "acme"), ("how", "now")],
        )
        .await;
    assert_eq!(go.status, StatusCode::SEE_OTHER, "{}", go.body);
    assert_eq!(go.location(), "/connect");
    let page = op.get(&app.url("/connect")).await;
    assert!(
        page.body.contains("Re-connect your Webex organization"),
        "{}",
        page.body
    );
    let csrf = page.field("csrf");
    let authorize = op
        .post(&app.url("/connect/start"), &[("csrf", &csrf)])
        .await
        .to_webex();
    let back = op.get(&authorize).await.location();
    let done = op.get(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Re-connected"), "{}", done.body);
    let org = app.engine.vault.org_by_name("acme").await.unwrap().unwrap();
    assert_eq!(org.status, OrgStatus::Active);
    let page = op.get(&app.url("/")).await;
    assert!(!page.body.contains("id=\"attention\""), "{}", page.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_loop_refreshes_an_idle_org_once() {
    let app = App::start().await;
    let mut admin = Browser::new();
    admin
        .connect(&app, &app.invite("idle", None, HOUR).await)
        .await;
    let before = app.engine.vault.org_by_name("idle").await.unwrap().unwrap();
    let exchanges = app.token_calls();
    // Idle for four days (on the simulator's clock): nothing else would refresh this org
    // before its next sync.
    app.handle()
        .advance_clock(std::time::Duration::from_secs(4 * 24 * 3600));
    // The loop `serve` runs, with passes back to back; the test waits on the pass count.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (passes_tx, mut passes) = tokio::sync::watch::channel(0u64);
    let looping = tokio::spawn(webapp::keep_alive_loop(
        app.engine.clone(),
        std::time::Duration::from_millis(1),
        stop_rx,
        Some(passes_tx),
    ));
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        passes.wait_for(|n| *n >= 3),
    )
    .await
    .expect("three keep-alive passes")
    .unwrap();
    stop_tx.send(true).unwrap();
    looping.await.unwrap();
    let after = app.engine.vault.org_by_name("idle").await.unwrap().unwrap();
    assert!(after.last_refresh_at_ms > before.last_refresh_at_ms);
    assert!(after.access_expires_at_ms > before.access_expires_at_ms);
    // The first pass refreshed; the later ones (the clock has not moved) did not.
    assert_eq!(
        app.token_calls(),
        exchanges + 1,
        "exactly one refresh over three passes"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_paused_after_ten_failures() {
    let app = App::start().await;
    let mut b = Browser::new();
    for _ in 0..10 {
        let page = b.post(&app.url("/login"), &[("password", "guess")]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password waits now.
    let page = b.post(&app.url("/login"), &[("password", PASSWORD)]).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.body.contains("Too many failed sign-ins"));
    assert!(page.set_cookies().is_empty());
    // Five minutes on (the app's clock), sign-in works again.
    app.handle()
        .advance_clock(std::time::Duration::from_secs(5 * 60));
    b.sign_in(&app).await;
    app.stop().await;
}
