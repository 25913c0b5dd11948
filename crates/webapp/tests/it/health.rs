//! `/healthz` and `/readyz`, in the web app and on the standalone health server: ready when the
//! state database and the archive answer, 503 naming the part that does not (without a secret),
//! and an answer in bounded time when the database hangs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service as _;

use crate::harness::{App, MASTER_KEY};

/// Generous guard against a hang; never what makes a test pass.
const GUARD: Duration = Duration::from_secs(30);

async fn get(url: &str) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(GUARD)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{url}"
    );
    (status, resp.text().await.expect("body"))
}

async fn readyz(base: &str) -> (StatusCode, Value) {
    let (status, body) = get(&format!("{base}/readyz")).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn part<'a>(body: &'a Value, name: &str) -> (&'a str, &'a str) {
    (
        body[name]["status"].as_str().unwrap_or_default(),
        body[name]["error"].as_str().unwrap_or_default(),
    )
}

/// The archive folder of a `file://` archive.
fn archive_dir(app: &App) -> std::path::PathBuf {
    let shown = app.engine.archive.describe();
    std::path::PathBuf::from(shown.strip_prefix("file://").expect("a file:// archive"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_and_readyz_is_ready_with_sqlite_and_a_folder() {
    let app = App::start().await;
    let (status, body) = get(&app.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, body) = readyz(&app.base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(part(&body, "database"), ("ok", ""));
    assert_eq!(part(&body, "storage"), ("ok", ""));
    // The check leaves nothing behind in the archive.
    assert!(app.engine.archive.list("").await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_removed_archive_folder_and_recovers() {
    let app = App::start().await;
    let dir = archive_dir(&app);
    std::fs::remove_dir_all(&dir).unwrap();
    let (status, body) = readyz(&app.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(part(&body, "database"), ("ok", ""));
    let (state, error) = part(&body, "storage");
    assert_eq!(state, "down");
    assert!(
        error.contains(&dir.display().to_string())
            && error.contains("the archive folder is missing")
            && error.contains("No such file"),
        "{error}"
    );
    assert_eq!(
        body["storage"]["location"].as_str(),
        Some(app.engine.archive.describe().as_str())
    );
    // The check never re-creates the folder (an unmounted volume must stay visible).
    assert!(!dir.exists());

    // A file where the folder should be is not a usable archive either.
    std::fs::write(&dir, b"not a folder").unwrap();
    let (status, body) = readyz(&app.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        part(&body, "storage").1.contains("not a directory"),
        "{body}"
    );

    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let (status, body) = readyz(&app.base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // `/healthz` never looked at storage.
    assert_eq!(get(&app.url("/healthz")).await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_closed_database() {
    let app = App::start().await;
    app.engine.vault.close().await;
    let (status, body) = readyz(&app.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (state, error) = part(&body, "database");
    assert_eq!(state, "down", "{body}");
    assert!(error.contains("state database"), "{error}");
    assert_eq!(part(&body, "storage"), ("ok", ""));
    assert_eq!(get(&app.url("/healthz")).await.0, StatusCode::OK);
    app.stop().await;
}

fn login_request(password: &str) -> axum::http::Request<Body> {
    axum::http::Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("password={password}")))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_pass_the_sign_in_throttle_and_need_no_session() {
    let app = App::start().await;
    let mut router = webapp::router(app.engine.clone(), app.settings.clone());
    // Fill the failure window until sign-in is paused.
    let mut paused = false;
    for i in 0..20 {
        let resp = router
            .call(login_request(&format!("guess-{i}")))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            paused = true;
            break;
        }
    }
    assert!(paused, "the sign-in throttle never paused");
    for path in ["/healthz", "/readyz"] {
        // No cookie, no CSRF token, and a cross-site fetch: probes answer all the same.
        let req = axum::http::Request::get(path)
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        let resp = router.call(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_health_server_serves_only_the_probes_and_stops() {
    let app = App::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webapp::serve_health(
        app.engine.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(get(&format!("{base}/healthz")).await.0, StatusCode::OK);
    let (status, body) = readyz(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Nothing of the web app is there.
    for path in ["/", "/login", "/connect"] {
        assert_eq!(
            get(&format!("{base}{path}")).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    std::fs::remove_dir_all(archive_dir(&app)).unwrap();
    let (status, body) = readyz(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(part(&body, "storage").0, "down");
    stop.send(()).unwrap();
    tokio::time::timeout(GUARD, server)
        .await
        .expect("the health server stops on shutdown")
        .unwrap();
    app.stop().await;
}

/// A TCP relay to PostgreSQL that can be made to hang: once cut, it keeps every connection
/// open and forwards nothing (a database that stopped answering, or a black-holed network).
struct Relay {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let cut = *cut_rx.borrow();
                    if cut {
                        // Accepted, never answered.
                        std::future::pending::<()>().await;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        changed = cut_rx.wait_for(|cut| *cut) => changed.is_ok(),
                    };
                    if cut {
                        // Both sockets stay open; nothing moves any more.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Relay { addr, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgresql_makes_readyz_answer_503_in_bounded_time_without_secrets() {
    let Some(pg) = vault::testing::TempPostgres::create().await else {
        return;
    };
    let mut url = url::Url::parse(pg.url()).unwrap();
    let target: SocketAddr = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
    .parse()
    .expect("WXVAULT_TEST_PG names an IP address");
    let relay = Relay::start(target).await;
    // Credentials and a query string that must never be shown (trust auth ignores the password).
    const PASSWORD: &str = "pw-never-shown-4c1d";
    const QUERY_SECRET: &str = "query-never-shown-9e2b";
    url.set_port(Some(relay.addr.port())).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    url.query_pairs_mut()
        .append_pair("application_name", QUERY_SECRET);

    let dir = tempfile::tempdir().unwrap();
    let mut config = engine::Config::default();
    config.database.url = url.to_string();
    config.storage.url = format!("file://{}/archive", dir.path().display());
    let engine = Arc::new(
        engine::Engine::open(config, Some(MASTER_KEY), Arc::new(engine::SystemClock))
            .await
            .expect("engine opens through the relay"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let timeout = Duration::from_millis(500);
    let probes = webapp::health_routes::<()>(engine.clone(), timeout);
    tokio::spawn(async move { axum::serve(listener, probes).await });

    let (status, body) = readyz(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    relay.cut.send(true).unwrap();
    let started = std::time::Instant::now();
    let (status, body) = readyz(&base).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < GUARD, "the probe waited {took:?}");
    let (state, error) = part(&body, "database");
    assert_eq!(state, "down", "{body}");
    assert!(error.contains("no answer within 500 ms"), "{error}");
    assert_eq!(part(&body, "storage"), ("ok", ""));
    let text = body.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains(QUERY_SECRET),
        "{text}"
    );
    // Liveness is not readiness: the process is alive.
    assert_eq!(get(&format!("{base}/healthz")).await.0, StatusCode::OK);
}
