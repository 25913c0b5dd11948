//! CallingClient against scripted local servers: paging, filters, rate limits, details,
//! metadata, and the bearer rules of recording downloads.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::*;
use webex::calling::{CallingClient, ListQuery};
use webex::http::{RateGate, RateGates};
use webex::media::LinkPolicy;
use webex::{Error, ErrorClass, TokenProvider};

/// 2024-10-04T00:00:00Z and the next midnight.
const FROM: i64 = 1_728_000_000_000;
const TO: i64 = FROM + 86_400_000;
const LIST_PATH: &str = "/v1/admin/convergedRecordings";

fn client_with(
    server: &Server,
    tokens: Arc<dyn TokenProvider>,
    gate: Arc<RateGate>,
    bearer_hosts: &[&str],
) -> CallingClient {
    CallingClient::new(
        webex::http::build_client(),
        server.base.clone(),
        tokens,
        gate,
        fast_retry(),
        bearer_hosts.iter().map(|h| (*h).to_owned()).collect(),
        LinkPolicy::for_api_base(&server.base),
    )
}

fn client(server: &Server) -> CallingClient {
    client_with(
        server,
        TestTokens::new("tok", "tok2"),
        Arc::new(RateGate::new()),
        &["localhost"],
    )
}

fn rec(id: &str, create: &str) -> Value {
    json!({"id": id, "createTime": create, "timeRecorded": create, "format": "MP3",
           "durationSeconds": 23, "sizeBytes": 74222, "serviceType": "calling",
           "status": "available", "topic": "Call"})
}

fn page(items: Vec<Value>, links: &[String]) -> axum::response::Response {
    let mut b = axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/json");
    for l in links {
        b = b.header("link", l.as_str());
    }
    b.body(axum::body::Body::from(
        json!({ "items": items }).to_string(),
    ))
    .unwrap()
}

/// `http://<host>/…` as the client addressed the server.
fn abs(req: &Recorded, path_and_query: &str) -> String {
    format!("http://{}{path_and_query}", req.header("host").unwrap())
}

#[tokio::test]
async fn list_pages_through_link_headers_and_readds_dropped_filters() {
    let server = serve(|req, _| {
        let cursor = req.query.get("cursor").map(String::as_str);
        match cursor {
            // Several links in one header; the next link keeps every filter.
            None => page(
                vec![
                    rec("r1", "2024-10-04T10:00:00Z"),
                    rec("r2", "2024-10-04T09:00:00.250Z"),
                ],
                &[format!(
                    r#"<{}>; rel="first", <{}>; rel="next""#,
                    abs(req, &format!("{LIST_PATH}?max=100&cursor=c1")),
                    abs(
                        req,
                        &format!(
                            "{LIST_PATH}?cursor=c2&max=100&from={}&to={}&status=available&serviceType=calling",
                            req.query["from"], req.query["to"]
                        )
                    )
                )],
            ),
            // A next link that drops every filter, in a second Link header, as a rel list
            // with an unquoted relative reference.
            Some("c2") => page(
                vec![rec("r3", "2024-10-04T08:00:00Z")],
                &[
                    format!("<{}>; rel=prev", abs(req, LIST_PATH)),
                    format!("<{LIST_PATH}?cursor=c3>; title=\"a, b\"; rel=\"next last\""),
                ],
            ),
            Some("c3") => page(vec![rec("r4", "2024-10-04T07:00:00+02:00")], &[]),
            Some(other) => panic!("unexpected cursor {other}"),
        }
    })
    .await;
    let c = client(&server);
    let listing = c.list(&ListQuery::new(FROM, TO)).await.unwrap();
    let ids: Vec<&str> = listing.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    assert_eq!(listing.pages, 3);
    assert_eq!(c.api_calls(), 3);
    assert_eq!(
        (
            listing.outside_window,
            listing.duplicates,
            listing.filtered_out
        ),
        (0, 0, 0)
    );
    assert!(listing.rejected.is_empty());
    assert_eq!(
        listing.items[1].create_time_ms,
        Some(FROM + 9 * 3_600_000 + 250)
    );
    assert_eq!(listing.items[3].create_time_ms, Some(FROM + 5 * 3_600_000));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, LIST_PATH);
        assert_eq!(r.header("authorization"), Some("Bearer tok"));
        assert_eq!(r.query["max"], "100");
        assert_eq!(r.query["from"], "2024-10-04T00:00:00.000Z");
        assert_eq!(r.query["to"], "2024-10-05T00:00:00.000Z");
        assert_eq!(r.query["status"], "available");
        assert_eq!(r.query["serviceType"], "calling");
    }
    assert_eq!(reqs[1].query["cursor"], "c2");
    // The third link kept only its cursor: the filters checked above were added back.
    assert_eq!(reqs[2].query["cursor"], "c3");
}

#[tokio::test]
async fn list_drops_out_of_window_duplicates_and_mismatches_and_reports_rejects() {
    let server = serve(|req, _| match req.query.get("cursor").map(String::as_str) {
        None => page(
            vec![
                rec("in-1", "2024-10-04T23:59:59.999Z"),
                rec("late", "2024-10-05T00:00:00Z"),
                rec("early", "2024-10-03T23:59:59Z"),
                json!({"id": "no-create", "timeRecorded": "2024-10-03T12:00:00Z"}),
                json!({"id": "wrong-type", "serviceType": "customerAssist",
                       "createTime": "2024-10-04T01:00:00Z"}),
                json!({"id": "deleted", "status": "deleted", "createTime": "2024-10-04T01:00:00Z"}),
                json!({"topic": "no id"}),
                json!({"id": "bad-size", "sizeBytes": "lots"}),
            ],
            &[format!("<{LIST_PATH}?cursor=2>; rel=\"next\"")],
        ),
        _ => page(
            vec![
                rec("in-1", "2024-10-04T23:59:59.999Z"),
                rec("in-2", "2024-10-04T00:00:00Z"),
                json!({"id": "bad-size", "sizeBytes": "lots"}),
                json!({"id": "minimal"}),
            ],
            &[],
        ),
    })
    .await;
    let listing = client(&server)
        .list(&ListQuery::new(FROM, TO))
        .await
        .unwrap();
    let ids: Vec<&str> = listing.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["in-1", "in-2", "minimal"]);
    assert_eq!(
        listing.outside_window, 3,
        "late, early, and by timeRecorded"
    );
    assert_eq!(listing.filtered_out, 2);
    assert_eq!(listing.duplicates, 1);
    assert_eq!(listing.pages, 2);
    let rejected: Vec<(Option<&str>, &str)> = listing
        .rejected
        .iter()
        .map(|r| (r.id.as_deref(), r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, None);
    assert!(rejected[0].1.contains("no id"));
    assert_eq!(rejected[1].0, Some("bad-size"));
    assert!(rejected[1].1.contains("sizeBytes"));
    // Empty filters are neither sent nor checked.
    let server2 = serve(|_, _| {
        page(
            vec![json!({"id": "d", "status": "deleted", "serviceType": "x"})],
            &[],
        )
    })
    .await;
    let q = ListQuery {
        status: String::new(),
        service_type: String::new(),
        ..ListQuery::new(FROM, TO)
    };
    let l = client(&server2).list(&q).await.unwrap();
    assert_eq!(l.items.len(), 1);
    let r = &server2.requests()[0];
    assert!(!r.query.contains_key("status") && !r.query.contains_key("serviceType"));
    // An empty window sends nothing.
    let l = client(&server2)
        .list(&ListQuery::new(TO, TO))
        .await
        .unwrap();
    assert_eq!((l.pages, server2.count()), (0, 1));
}

#[tokio::test]
async fn looping_or_foreign_next_links_are_refused() {
    let looping = serve(|req, _| match req.query.get("cursor").map(String::as_str) {
        None => page(
            vec![rec("a", "2024-10-04T01:00:00Z")],
            &[format!("<{LIST_PATH}?cursor=x>; rel=next")],
        ),
        _ => page(vec![], &[format!("<{LIST_PATH}?cursor=x>; rel=next")]),
    })
    .await;
    let err = client(&looping)
        .list(&ListQuery::new(FROM, TO))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.to_string();
    assert!(msg.contains(LIST_PATH) && msg.contains("repeats"), "{msg}");
    assert_eq!(looping.count(), 2);

    let elsewhere = serve(|_, _| page(vec![], &[])).await;
    let foreign = format!(
        "{}v1/admin/convergedRecordings?cursor=2&sig=SECRET",
        elsewhere.base
    )
    .replace("127.0.0.1", "localhost");
    let server = serve(move |_, _| page(vec![], &[format!("<{foreign}>; rel=next")])).await;
    let err = client(&server)
        .list(&ListQuery::new(FROM, TO))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.to_string();
    assert!(
        msg.contains(LIST_PATH) && msg.contains("not followed"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");
    assert_eq!(
        elsewhere.count(),
        0,
        "the token never went to the other host"
    );
}

#[tokio::test]
async fn rate_limit_goes_through_the_shared_gate_and_5xx_is_retried() {
    let server = serve(|_, n| match n {
        0 => status_with(429, &[("Retry-After", "1")], ""),
        1 | 2 => status_with(503, &[("TrackingId", "trk-503")], "down"),
        _ => page(vec![rec("a", "2024-10-04T01:00:00Z")], &[]),
    })
    .await;
    let gates = RateGates::default();
    let c = client_with(
        &server,
        TestTokens::new("tok", "tok2"),
        gates.gate("C1"),
        &[],
    );
    let gate = gates.gate("C1");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        while gate.blocked_for().is_zero() {
            tokio::task::yield_now().await;
        }
        let _ = tx.send(());
    });
    let listing = c.list(&ListQuery::new(FROM, TO)).await.unwrap();
    rx.await.expect("the 429 closed the client id's gate");
    assert_eq!(listing.items.len(), 1);
    assert_eq!(server.count(), 4);
    assert_eq!(c.api_calls(), 4);
    let reqs = server.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn forbidden_names_the_calling_scope_and_role() {
    let server = serve(|_, _| {
        json(
            403,
            json!({"message": "The server understood the request, but refused to fulfill it",
                   "trackingId": "ROUTER_1"}),
        )
    })
    .await;
    let c = client(&server);
    let errors = [
        c.list(&ListQuery::new(FROM, TO)).await.unwrap_err(),
        c.details("r1").await.unwrap_err(),
        c.metadata("r1").await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        let msg = err.to_string();
        assert!(msg.contains(webex::CALLING_COMPLIANCE_SCOPE), "{msg}");
        assert!(msg.contains("compliance officer"), "{msg}");
        assert!(
            !msg.contains("cjp:config_read") && !msg.contains("Contact Center"),
            "{msg}"
        );
        assert_eq!(err.tracking_id(), Some("ROUTER_1"));
    }
    assert_eq!(server.count(), 3, "a 403 is never retried");
}

#[tokio::test]
async fn details_with_and_without_links() {
    let server = serve(|req, n| {
        if n == 0 {
            return status_with(502, &[], "bad gateway");
        }
        let mut body = rec("id", "2024-10-04T01:00:00Z");
        body["ownerEmail"] = json!("a@example.com");
        if req.path.ends_with("with%2Flinks") {
            body["temporaryDirectDownloadLinks"] = json!({
                "audioDownloadLink": "https://nsq1wss.dmz.webex.com/nbr/MultiThreadDownloadServlet?type=calling&ticket=TICKETSECRET",
                "transcriptDownloadLink": "https://nsq1wss.dmz.webex.com/nbr/t?ticket=TICKETSECRET",
                "expiration": "2024-10-04T04:00:00Z"
            });
        }
        json(200, body)
    })
    .await;
    let c = client(&server);
    let d = c.details("with/links").await.unwrap();
    assert_eq!(server.count(), 2, "the 502 was retried");
    assert_eq!(
        server.requests()[1].path,
        "/v1/convergedRecordings/with%2Flinks"
    );
    assert!(
        d.audio_link
            .as_deref()
            .unwrap()
            .contains("ticket=TICKETSECRET")
    );
    assert!(d.transcript_link.is_some());
    assert_eq!(d.expiration_ms, Some(FROM + 4 * 3_600_000));
    assert!(
        d.raw_without_links
            .get("temporaryDirectDownloadLinks")
            .is_none()
    );
    assert_eq!(d.raw_without_links["ownerEmail"], "a@example.com");
    assert_eq!(d.recording.raw, d.raw_without_links);
    assert_eq!(d.recording.size_bytes, Some(74_222));
    assert!(!format!("{d:?}").contains("TICKETSECRET"));

    let d = c.details("plain").await.unwrap();
    assert_eq!(
        (d.audio_link, d.transcript_link, d.expiration_ms),
        (None, None, None)
    );
    assert_eq!(d.recording.id, "id");
    assert_eq!(c.api_calls(), 3);
}

#[tokio::test]
async fn metadata_204_empty_and_present() {
    let server = serve(|req, _| match req.path.as_str() {
        "/v1/convergedRecordings/a/metadata" => status_with(204, &[], ""),
        "/v1/convergedRecordings/b/metadata" => status_with(200, &[], "  "),
        "/v1/convergedRecordings/c/metadata" => json(
            200,
            json!({"id": "c", "version": "1.2", "serviceData": {"callId": "x"}}),
        ),
        _ => status_with(200, &[("content-type", "text/html")], "<html>oops</html>"),
    })
    .await;
    let c = client(&server);
    assert_eq!(c.metadata("a").await.unwrap(), None);
    assert_eq!(c.metadata("b").await.unwrap(), None);
    let m = c.metadata("c").await.unwrap().unwrap();
    assert_eq!(m["serviceData"]["callId"], "x");
    let err = c.metadata("d").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert_eq!(c.api_calls(), 4);
}

fn audio() -> axum::response::Response {
    status_with(
        200,
        &[("content-type", "audio/mpeg"), ("content-length", "4")],
        "ID3x",
    )
}

async fn body_of(m: webex::media::MediaStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = m.stream;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// A media server that wants the bearer: 403 without it, `with` with it.
async fn wants_bearer(with: fn() -> axum::response::Response) -> Server {
    serve(move |req, _| {
        if req.header("authorization").is_some() {
            with()
        } else {
            status_with(403, &[("content-type", "text/html")], "<html>denied</html>")
        }
    })
    .await
}

#[tokio::test]
async fn download_goes_without_authorization_first() {
    let server = serve(|_, _| audio()).await;
    let c = client(&server);
    let link = format!(
        "http://localhost:{}/nbr/MultiThreadDownloadServlet?ticket=T",
        server.base.port().unwrap()
    );
    let m = c.download(&link).await.unwrap();
    assert_eq!(m.content_length, Some(4));
    assert_eq!(body_of(m).await, b"ID3x");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].query["ticket"], "T");
    assert_eq!(c.api_calls(), 0, "downloads are not API calls");
}

#[tokio::test]
async fn bearer_retry_only_for_bearer_hosts() {
    let server = wants_bearer(audio).await;
    let port = server.base.port().unwrap();
    let c = client(&server);
    // localhost is a bearer host: one retry with the token.
    let m = c
        .download(&format!("http://localhost:{port}/nbr/a?ticket=T"))
        .await
        .unwrap();
    assert_eq!(body_of(m).await, b"ID3x");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[1].header("authorization"), Some("Bearer tok"));

    // Same server by another name: the token never goes there.
    let err = c
        .download(&format!("http://127.0.0.1:{port}/nbr/a?ticket=T"))
        .await
        .unwrap_err();
    assert!(err.is_link_expired(), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    // Whole labels only: "host" is not a suffix of "localhost".
    let by_label = client_with(
        &server,
        TestTokens::new("tok", "tok2"),
        Arc::new(RateGate::new()),
        &["host", "calhost"],
    );
    let err = by_label
        .download(&format!("http://localhost:{port}/nbr/a?ticket=T"))
        .await
        .unwrap_err();
    assert!(err.is_link_expired(), "{err:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs[2..]
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
}

#[tokio::test]
async fn expired_links_and_no_redirect_with_the_bearer() {
    // Refused with and without the bearer: expired, and the engine asks for fresh details.
    let server = serve(|_, _| status_with(401, &[], "")).await;
    let port = server.base.port().unwrap();
    let c = client(&server);
    let err = c
        .download(&format!(
            "http://localhost:{port}/nbr/a?ticket=TICKETSECRET"
        ))
        .await
        .unwrap_err();
    assert!(err.is_link_expired(), "{err:?}");
    assert!(!err.to_string().contains("TICKETSECRET"));
    assert_eq!(server.count(), 2);
    let gone = serve(|_, _| status_with(410, &[], "")).await;
    let err = c
        .download(&format!("http://localhost:{}/a", gone.base.port().unwrap()))
        .await
        .unwrap_err();
    assert!(err.is_link_expired(), "{err:?}");
    assert_eq!(gone.count(), 1, "410 earns no bearer retry");

    // A redirect answered to the bearer request is refused, not followed.
    let target = serve(|_, _| audio()).await;
    let location = format!("{}stolen", target.base);
    let redirecting = serve(move |req, _| {
        if req.header("authorization").is_some() {
            status_with(302, &[("location", &location)], "")
        } else {
            status_with(403, &[], "")
        }
    })
    .await;
    let err = client(&redirecting)
        .download(&format!(
            "http://localhost:{}/nbr/a?ticket=T",
            redirecting.base.port().unwrap()
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MediaLinkRefused { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(redirecting.count(), 2);
    assert_eq!(target.count(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn download_links_pass_the_link_policy_and_truncation_is_transient() {
    let server = serve(|_, _| audio()).await;
    let public = CallingClient::new(
        webex::http::build_client(),
        url::Url::parse("https://webexapis.com/").unwrap(),
        TestTokens::new("tok", "tok2"),
        Arc::new(RateGate::new()),
        fast_retry(),
        webex::calling::default_bearer_hosts(),
        LinkPolicy::public(),
    );
    let err = public
        .download(&format!("{}nbr/a?ticket=T", server.base))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MediaLinkRefused { .. }), "{err:?}");
    assert_eq!(server.count(), 0);

    // A raw server that promises 10 bytes, sends 3 and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await.unwrap();
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ncontent-length: 10\r\n\r\nID3",
        )
        .await
        .unwrap();
        sock.shutdown().await.unwrap();
    });
    let m = client(&server)
        .download(&format!("http://{addr}/nbr/a?ticket=T"))
        .await
        .unwrap();
    assert_eq!(m.content_length, Some(10));
    let items: Vec<_> = m.stream.collect().await;
    let err = items
        .into_iter()
        .find_map(Result::err)
        .expect("truncation reported");
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 10,
                received: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
}
