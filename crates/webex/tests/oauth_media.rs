//! OAuthClient and media downloads against scripted local servers.

mod support;

use base64::Engine as _;
use futures::StreamExt;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webex::oauth::{ClientAuth, ClientCredentials, OAuthClient};
use webex::{Error, ErrorClass, ExposeSecret, ReauthKind, SecretString, media};

const CLIENT_SECRET: &str = "client-secret-value-7f3a";
const REFRESH: &str = "refresh-token-value-9c1b";

fn creds(auth: ClientAuth) -> ClientCredentials {
    ClientCredentials {
        client_id: "Cabc123".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        auth,
    }
}

/// Media client for links on the local test servers (the loopback-API-base policy).
fn local_media() -> media::MediaClient {
    media::MediaClient::new(
        media::LinkPolicy::Local,
        fast_retry(),
        std::sync::Arc::default(),
    )
}

fn ok_token() -> axum::response::Response {
    json(
        200,
        json!({"access_token": "new-access_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f",
               "expires_in": 1209599, "refresh_token": "new-refresh",
               "refresh_token_expires_in": 7775999, "token_type": "Bearer"}),
    )
}

#[tokio::test]
async fn exchange_code_sends_form_credentials_and_pkce() {
    let server = serve(|_, _| ok_token()).await;
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        fast_retry(),
    );
    let verifier = SecretString::from("v".repeat(64));
    let t = oauth
        .exchange_code(
            &creds(ClientAuth::Form),
            "the-code",
            "https://v.example/cb",
            &verifier,
        )
        .await
        .unwrap();
    assert_eq!(
        t.access_token.expose_secret(),
        "new-access_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f"
    );
    assert_eq!(t.expires_in, Some(1_209_599));
    assert_eq!(t.refresh_token_expires_in, Some(7_775_999));
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/access_token");
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(req.header("authorization"), None);
    let form = req.form();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["redirect_uri"], "https://v.example/cb");
    assert_eq!(form["code_verifier"], "v".repeat(64));
    assert_eq!(form["client_id"], "Cabc123");
    assert_eq!(form["client_secret"], CLIENT_SECRET);
}

#[tokio::test]
async fn refresh_with_basic_auth() {
    let server = serve(|_, _| ok_token()).await;
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        fast_retry(),
    );
    oauth
        .refresh(&creds(ClientAuth::Basic), &SecretString::from(REFRESH))
        .await
        .unwrap();
    let req = &server.requests()[0];
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("Cabc123:{CLIENT_SECRET}"))
    );
    assert_eq!(req.header("authorization"), Some(expected.as_str()));
    let form = req.form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], REFRESH);
    assert!(!form.contains_key("client_secret"));
}

#[tokio::test]
async fn refresh_retries_only_what_webex_did_not_process() {
    // 429 and 423 are refused before processing: sent again.
    let limited = serve(|_, n| match n {
        0 => status_with(429, &[("Retry-After", "0")], ""),
        1 => status_with(423, &[("Retry-After", "0")], ""),
        _ => ok_token(),
    })
    .await;
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        limited.base.clone(),
        fast_retry(),
    );
    oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap();
    assert_eq!(limited.count(), 3);

    // A 502/503/504 may come after Webex rotated (and revoked) the refresh token: resending
    // it could spend the grant, so the error goes back to the caller after one request.
    for status in [502, 503, 504] {
        let flaky = serve(move |_, n| match n {
            0 => status_with(status, &[], "upstream trouble"),
            _ => ok_token(),
        })
        .await;
        let oauth = OAuthClient::new(
            webex::http::build_client(),
            flaky.base.clone(),
            fast_retry(),
        );
        let err = oauth
            .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
            .await
            .unwrap_err();
        assert_eq!(flaky.count(), 1, "{status} must not be resent");
        assert_eq!(err.class(), ErrorClass::Transient, "{status}");
    }

    let dead = serve(|_, _| {
        json(
            400,
            json!({"error": "invalid_grant",
                   "error_description": format!("refresh token {REFRESH} has expired")}),
        )
    })
    .await;
    let oauth = OAuthClient::new(webex::http::build_client(), dead.base.clone(), fast_retry());
    let err = oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert_eq!(dead.count(), 1, "grant errors are never retried");
    assert_eq!(err.class(), ErrorClass::Reauth);
    assert_eq!(err.reauth_kind(), Some(ReauthKind::GrantRevoked));
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains(REFRESH), "{msg}");
    assert!(!msg.contains(CLIENT_SECRET), "{msg}");
    assert!(msg.contains("invalid_grant"));
}

#[tokio::test]
async fn bad_client_via_router_body_is_credentials_reauth() {
    let server = serve(|_, _| {
        json(
            400,
            json!({"message": "The request could not be understood by the server due to malformed syntax.",
                   "errors": [{"description": "Client Id is invalid"}],
                   "trackingId": "ROUTER_62E068B0-AAAA"}),
        )
    })
    .await;
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        fast_retry(),
    );
    let err = oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert_eq!(err.reauth_kind(), Some(ReauthKind::ClientCredentials));
    assert_eq!(err.tracking_id(), Some("ROUTER_62E068B0-AAAA"));
    assert!(
        err.to_string().contains("client id and client secret"),
        "{err}"
    );
}

#[tokio::test]
async fn exchange_does_not_retry_server_errors_that_may_have_consumed_the_code() {
    let server = serve(|_, _| status_with(500, &[], "")).await;
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        fast_retry(),
    );
    let err = oauth
        .exchange_code(
            &creds(ClientAuth::Form),
            "code",
            "https://v/cb",
            &SecretString::from("v"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn media_download_streams_without_authorization() {
    let audio: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let body = audio.clone();
    let server = serve(move |_, _| {
        axum::response::Response::builder()
            .status(200)
            .header("content-type", "audio/wav")
            .header("content-length", body.len().to_string())
            .body(axum::body::Body::from(body.clone()))
            .unwrap()
    })
    .await;
    let url = format!("{}rec/a.wav?X-Amz-Signature=sig", server.base);
    let m = local_media().download(&url).await.unwrap();
    assert_eq!(m.content_length, Some(100_000));
    assert_eq!(m.content_type.as_deref(), Some("audio/wav"));
    let mut got = Vec::new();
    let mut s = m.stream;
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, audio);
    let req = &server.requests()[0];
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.query["X-Amz-Signature"], "sig");
}

#[tokio::test]
async fn media_expired_link_and_error_pages() {
    for status in [400u16, 401, 403] {
        let server = serve(move |_, _| {
            status_with(
                status,
                &[("content-type", "application/xml")],
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            )
        })
        .await;
        let url = format!("{}a.wav?X-Amz-Signature=topsecret", server.base);
        let err = local_media().download(&url).await.unwrap_err();
        assert!(err.is_link_expired(), "{status}: {err}");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(!err.to_string().contains("topsecret"));
        assert_eq!(server.count(), 1);
    }

    let json_200 = serve(|_, _| json(200, json!({"error": "nope"}))).await;
    let err = local_media()
        .download(&json_200.url("a.wav"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedContentType { .. }), "{err}");

    let gone = serve(|_, _| status_with(404, &[], "NoSuchKey")).await;
    let err = local_media()
        .download(&gone.url("a.wav"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.is_link_expired());
}

#[tokio::test]
async fn media_server_errors_are_retried() {
    let server = serve(|_, n| {
        if n < 2 {
            status_with(503, &[("Retry-After", "0")], "SlowDown")
        } else {
            status_with(200, &[("content-type", "audio/wav")], "RIFF")
        }
    })
    .await;
    let m = local_media().download(&server.url("a.wav")).await.unwrap();
    let chunks: Vec<_> = m.stream.collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].as_ref().unwrap()[..], b"RIFF");
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn media_truncated_body_is_a_transient_stream_error() {
    // A raw server that promises 100 bytes, sends 40 and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await.unwrap();
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: 100\r\n\r\n",
        )
        .await
        .unwrap();
        sock.write_all(&[7u8; 40]).await.unwrap();
        sock.shutdown().await.unwrap();
    });
    let url = format!("http://{addr}/a.wav?X-Amz-Signature=s");
    let m = local_media().download(&url).await.unwrap();
    assert_eq!(m.content_length, Some(100));
    let items: Vec<_> = m.stream.collect().await;
    let received: usize = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|b| b.len())
        .sum();
    assert_eq!(received, 40);
    let err = items
        .into_iter()
        .find_map(Result::err)
        .expect("truncation reported");
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 100,
                received: 40,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn invalid_media_url_is_permanent() {
    let err = local_media()
        .download("file:///etc/passwd")
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn public_futures_are_send_and_secrets_stay_out_of_debug() {
    fn assert_send<T: Send>(_: &T) {}
    let http = webex::http::build_client();
    let base = url::Url::parse("http://127.0.0.1:9/").unwrap();
    let oauth = OAuthClient::new(http.clone(), base.clone(), fast_retry());
    let c = creds(ClientAuth::Form);
    let rt = SecretString::from(REFRESH);
    assert_send(&oauth.refresh(&c, &rt));
    assert_send(&local_media().download("http://127.0.0.1:9/a"));
    let wx = webex::wxcc::WxccClient::new(
        http,
        base,
        "org".into(),
        std::sync::Arc::new(webex::StaticToken::new(SecretString::from(
            "static-tok-123",
        ))),
        std::sync::Arc::new(webex::http::RateGate::new()),
        fast_retry(),
    );
    assert_send(&wx.list_tasks(0, 1));
    assert_send(&wx.query_captures(&[], 1));
    assert_send(&wx.users_by_ci_ids(&[]));
    let dbg = format!(
        "{c:?} {:?} {wx:?}",
        webex::StaticToken::new(SecretString::from("static-tok-123"))
    );
    assert!(
        !dbg.contains(CLIENT_SECRET) && !dbg.contains("static-tok-123"),
        "{dbg}"
    );
}

#[tokio::test]
async fn static_token_cannot_be_refreshed() {
    use webex::TokenProvider;
    let t = webex::StaticToken::new(SecretString::from("abc"));
    assert_eq!(t.access_token().await.unwrap().expose_secret(), "abc");
    let err = t
        .refresh_after_unauthorized(&SecretString::from("abc"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Reauth);
    assert!(!err.to_string().contains("abc"));
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn media_links_must_be_https_to_public_hosts_unless_the_api_base_is_loopback() {
    let server = serve(|_, _| status_with(200, &[("content-type", "audio/wav")], "RIFF")).await;
    let port = server.base.port().unwrap();
    let api_base = url::Url::parse("https://api.wxcc-us1.cisco.com/").unwrap();
    // The media host "resolves" to loopback, as a hostile or broken answer would.
    let policy = media::LinkPolicy::for_api_base(&api_base)
        .with_pinned_host("media.example.test", vec!["127.0.0.1".parse().unwrap()]);
    let client = media::MediaClient::new(policy, fast_retry(), std::sync::Arc::default());
    for (link, host) in [
        (
            format!("https://media.example.test:{port}/a.wav?X-Amz-Signature=SIGSECRET"),
            "media.example.test",
        ),
        (
            format!("http://127.0.0.1:{port}/a.wav?X-Amz-Signature=SIGSECRET"),
            "127.0.0.1",
        ),
        (
            format!("https://127.0.0.1:{port}/a.wav?X-Amz-Signature=SIGSECRET"),
            "127.0.0.1",
        ),
        (
            format!("https://localhost:{port}/a.wav?X-Amz-Signature=SIGSECRET"),
            "localhost",
        ),
        (
            "https://169.254.169.254/latest/meta-data?X-Amz-Signature=SIGSECRET".to_owned(),
            "169.254.169.254",
        ),
    ] {
        let err = client.download(&link).await.unwrap_err();
        assert!(
            matches!(&err, Error::MediaLinkRefused { host: h, .. } if h == host),
            "{link}: {err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Permanent, "{link}");
        let msg = format!("{err} {err:?}");
        assert!(msg.contains(host), "{msg}");
        assert!(!msg.contains("SIGSECRET"), "{msg}");
    }
    assert_eq!(server.count(), 0, "nothing was fetched");
    // Refusals are not connection failures: the host's breaker stays closed.
    for _ in 0..10 {
        let err = client
            .download(&format!("https://media.example.test:{port}/b.wav"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::MediaLinkRefused { .. }), "{err:?}");
    }

    // With the simulator's loopback API base the same local link is fine.
    let local = media::MediaClient::new(
        media::LinkPolicy::for_api_base(&server.base),
        fast_retry(),
        std::sync::Arc::default(),
    );
    local.download(&server.url("a.wav?sig=1")).await.unwrap();
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn media_redirects_are_refused_not_followed() {
    let target = serve(|_, _| status_with(200, &[("content-type", "audio/wav")], "RIFF")).await;
    let location = format!(
        "http://localhost:{}/latest?token=REDIRSECRET",
        target.base.port().unwrap()
    );
    let server = serve(move |_, _| status_with(302, &[("location", &location)], "")).await;
    let err = local_media()
        .download(&server.url("a.wav?X-Amz-Signature=SIGSECRET"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MediaLinkRefused { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.to_string();
    assert!(
        msg.contains("redirect") && msg.contains("localhost"),
        "{msg}"
    );
    assert!(
        !msg.contains("REDIRSECRET") && !msg.contains("SIGSECRET"),
        "{msg}"
    );
    assert_eq!(server.count(), 1);
    assert_eq!(target.count(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn a_dead_api_host_opens_the_breaker_for_every_caller_of_the_run() {
    let base = url::Url::parse(&format!("http://127.0.0.1:{}/", closed_port())).unwrap();
    let gates = webex::http::RateGates::default();
    let threshold = gates.health().threshold();
    let wx = std::sync::Arc::new(webex::wxcc::WxccClient::new(
        webex::http::build_client(),
        base.clone(),
        "org".into(),
        std::sync::Arc::new(webex::StaticToken::new(SecretString::from("tok-123"))),
        gates.gate("Cabc123"),
        webex::http::RetryPolicy {
            max_attempts: 100,
            ..fast_retry()
        },
    ));
    let err = wx.list_tasks(0, 1).await.unwrap_err();
    let host = format!("127.0.0.1:{}", base.port().unwrap());
    match &err {
        Error::HostUnreachable {
            host: h, attempts, ..
        } => {
            assert_eq!(h, &host);
            assert_eq!(
                *attempts, threshold,
                "stopped at the threshold, not at 100 attempts"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wx.api_calls(), u64::from(threshold));
    let msg = err.to_string();
    for part in [host.as_str(), "api_base", "region", "network"] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    // Everyone else sharing the registry is refused at once, without another attempt.
    let calls = wx.api_calls();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let wx = wx.clone();
        tasks.push(tokio::spawn(async move { wx.list_tasks(0, 1).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap_err().is_host_unreachable());
    }
    assert_eq!(
        wx.api_calls(),
        calls,
        "each call was refused before sending"
    );
    let oauth =
        OAuthClient::new(webex::http::build_client(), base, fast_retry()).with_gates(gates.clone());
    let err = oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert!(err.is_host_unreachable(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(REFRESH));
}

#[tokio::test]
async fn token_calls_share_the_client_ids_rate_gate() {
    let server = serve(|_, _| status_with(429, &[("Retry-After", "30")], "")).await;
    let gates = webex::http::RateGates::default();
    let oauth = OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        webex::http::RetryPolicy {
            max_attempts: 1,
            ..fast_retry()
        },
    )
    .with_gates(gates.clone());
    let err = oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    // The 429 closed the gate every API call of this client id waits at (clamped to 2 s).
    let blocked = gates.gate("Cabc123").blocked_for();
    assert!(blocked > std::time::Duration::from_secs(1), "{blocked:?}");
    assert_eq!(
        gates.gate("Cother").blocked_for(),
        std::time::Duration::ZERO
    );

    // A closed gate holds token and revocation calls back until it opens.
    let ok = serve(|r, _| {
        if r.method == "DELETE" {
            status_with(204, &[], "")
        } else {
            ok_token()
        }
    })
    .await;
    let gates = webex::http::RateGates::default();
    let oauth = OAuthClient::new(webex::http::build_client(), ok.base.clone(), fast_retry())
        .with_gates(gates.clone());
    let hold = std::time::Duration::from_millis(400);
    gates.gate("Cabc123").block_for(hold);
    let t0 = tokio::time::Instant::now();
    oauth
        .refresh(&creds(ClientAuth::Form), &SecretString::from(REFRESH))
        .await
        .unwrap();
    oauth
        .revoke_authorizations(
            &SecretString::from("admin-tok"),
            "Cabc123",
            "1eb65fdf-9643-417f-9974-ad72cae0e10f",
        )
        .await
        .unwrap();
    for r in ok.requests() {
        assert!(
            r.at - t0 >= hold,
            "{} sent before the gate opened",
            r.method
        );
    }
    assert_eq!(ok.count(), 2);
}
