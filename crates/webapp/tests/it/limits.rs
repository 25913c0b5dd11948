//! What one client can make the app hold: sign-in guesses, connect records, connections.

use std::time::Duration;

use axum::body::Body;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower_service::Service as _;
use vault::{CONNECT_SESSIONS_PER_INVITE, PENDING_AUTHS_PER_INVITE};

use crate::harness::{App, Browser, HOUR, Options, PASSWORD};

/// Failed sign-ins tolerated in five minutes (docs/serve.md).
const SIGN_IN_ATTEMPTS: usize = 10;
/// Connect records one address may create per hour (docs/serve.md).
const PER_ADDRESS: usize = 30;
/// Generous guard against a hang; never what makes a test pass.
const GUARD: Duration = Duration::from_secs(30);

fn login_request(password: &str) -> axum::http::Request<Body> {
    axum::http::Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "password={}",
            password.replace(' ', "+")
        )))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_sign_ins_get_at_most_ten_verdicts() {
    let app = App::start().await;
    let router = webapp::router(app.engine.clone(), app.settings.clone());
    // Forty guesses all get past their first poll before any argon2id check can finish: the
    // moment a check-then-record throttle lets every one of them through.
    let guesses: Vec<_> = (0..40)
        .map(|i| Box::pin(router.clone().call(login_request(&format!("guess-{i}")))))
        .collect();
    let mut statuses = Vec::new();
    let mut running = Vec::new();
    for mut g in guesses {
        tokio::select! {
            biased;
            resp = &mut g => statuses.push(resp.unwrap().status()),
            () = std::future::ready(()) => running.push(g),
        }
    }
    for g in running {
        statuses.push(g.await.unwrap().status());
    }
    let (mut verdicts, mut paused) = (0, 0);
    for status in statuses {
        match status {
            StatusCode::UNAUTHORIZED => verdicts += 1,
            StatusCode::TOO_MANY_REQUESTS => paused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        verdicts <= SIGN_IN_ATTEMPTS,
        "{verdicts} guesses were checked"
    );
    assert_eq!(verdicts + paused, 40);
    // The window is full: even the right password waits.
    let resp = router.clone().call(login_request(PASSWORD)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_dropped_mid_check_still_counts() {
    let app = App::start().await;
    let router = webapp::router(app.engine.clone(), app.settings.clone());
    // One poll runs the request up to the argon2id check (the form body is already in
    // memory), which then runs on a blocking thread; dropping the future is a client going
    // away mid-check.
    let mut dropped = Box::pin(router.clone().call(login_request("guess-dropped")));
    let first_poll = tokio::select! {
        biased;
        resp = &mut dropped => Some(resp.unwrap().status()),
        () = std::future::ready(()) => None,
    };
    assert_eq!(first_poll, None, "the check was still running");
    drop(dropped);
    for i in 1..SIGN_IN_ATTEMPTS {
        let resp = router
            .clone()
            .call(login_request(&format!("guess-{i}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let resp = router
        .clone()
        .call(login_request("guess-one-too-many"))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the abandoned attempt counted as the tenth"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_and_one_invite_link_create_bounded_rows() {
    let app = App::start().await;
    let link = app.invite("acme", Some("us1"), HOUR).await;
    let invite = app.engine.vault.invites().await.unwrap()[0].id;
    let sessions = format!("kind = 'connect' AND subject = '{invite}'");
    let pending = format!("invite_id = {invite}");
    // Cookieless opens of the link: each would start a session.
    let opens = PER_ADDRESS - PENDING_AUTHS_PER_INVITE - 1;
    for _ in 0..opens {
        let page = Browser::new().get(&link).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }
    // One browser that opens it and clicks "Connect with Webex" over and over.
    let mut b = Browser::new();
    let mut authorize = b.start_connect(&app, &link).await;
    for _ in 1..PENDING_AUTHS_PER_INVITE {
        let csrf = b.get(&app.url("/connect")).await.field("csrf");
        authorize = b
            .post(&app.url("/connect/start"), &[("csrf", &csrf)])
            .await
            .to_webex();
    }
    assert_eq!(
        app.count("sessions", &sessions).await,
        CONNECT_SESSIONS_PER_INVITE as i64
    );
    assert_eq!(
        app.count("pending_auths", &pending).await,
        PENDING_AUTHS_PER_INVITE as i64
    );
    // The address has spent its budget: neither another open nor another start is stored,
    // and the page says to use the page already open.
    let page = Browser::new().get(&link).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(
        page.body.contains("Use the connect page already open"),
        "{}",
        page.body
    );
    let csrf = b.get(&app.url("/connect")).await.field("csrf");
    let page = b.post(&app.url("/connect/start"), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.set_cookies().is_empty());
    assert_eq!(
        app.count("sessions", &sessions).await,
        CONNECT_SESSIONS_PER_INVITE as i64
    );
    assert_eq!(
        app.count("pending_auths", &pending).await,
        PENDING_AUTHS_PER_INVITE as i64
    );
    // The browser already in the flow finishes it: its newest authorization was kept.
    let back = b.get(&authorize).await.location();
    let done = b.get(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_connect_records_are_purged_while_serving() {
    let app = App::start_with(Options {
        purge_every: Duration::from_millis(20),
        ..Options::default()
    })
    .await;
    let link = app.invite("acme", Some("us1"), 4 * HOUR).await;
    Browser::new().start_connect(&app, &link).await;
    let rows = async || {
        app.count("sessions", "kind = 'connect'").await + app.count("pending_auths", "1 = 1").await
    };
    assert_eq!(rows().await, 2);
    // Past both lifetimes (connect session 1 h, pending authorization 15 min).
    app.handle()
        .advance_clock(Duration::from_secs(2 * HOUR as u64 / 1000));
    // A pass under way now may have read the old time; the one that starts after it reads the
    // new one.
    let mut passes = app.purge_passes.clone();
    let before = *passes.borrow_and_update();
    tokio::time::timeout(GUARD, passes.wait_for(|n| *n >= before + 2))
        .await
        .expect("the purge loop keeps running")
        .expect("the app is running");
    assert_eq!(
        rows().await,
        0,
        "the scheduled purge removed the expired rows"
    );
    app.stop().await;
}

/// Reads until the server closes the connection; `None` if it did not within [`GUARD`].
async fn read_until_closed(conn: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    match tokio::time::timeout(GUARD, conn.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&got).into_owned()),
        // A reset is the server closing too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&got).into_owned())
        }
        Ok(Err(e)) => panic!("reading: {e}"),
        Err(_) => None,
    }
}

fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let app = App::start_with(Options {
        limits: webapp::ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..webapp::ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HT").await.unwrap();
    let answer = read_until_closed(&mut slow)
        .await
        .expect("the server closed a connection stuck in its request line");
    assert!(!answer.contains(" 200 "), "{answer}");
    // One that sends nothing at all is closed the same way.
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    read_until_closed(&mut idle)
        .await
        .expect("the server closed an idle connection");
    // A prompt client is served as before.
    let page = Browser::new().get(&app.url("/healthz")).await;
    assert_eq!(page.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_turned_away() {
    let app = App::start_with(Options {
        limits: webapp::ConnectionLimits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
        },
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr(&app)).await.unwrap();
        c.write_all(b"GET /healthz HT").await.unwrap();
        held.push(c);
    }
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    let answer = read_until_closed(&mut third)
        .await
        .expect("a connection over the cap is closed at once");
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{answer}"
    );
    // A slot frees when a held connection goes; the server notices the close, then serves.
    drop(held.remove(0));
    let served = tokio::time::timeout(GUARD, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            let mut c = TcpStream::connect(addr(&app)).await.unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let answer = read_until_closed(&mut c).await.unwrap_or_default();
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            // The server frees the slot when it sees the dropped connection close, which it
            // does not announce: ask again on the next tick (the guard bounds the wait).
            tick.tick().await;
        }
    })
    .await
    .expect("served once a slot was free");
    assert!(served.ends_with("ok"), "{served}");
    drop(held);
    app.stop().await;
}
