//! WxccClient against scripted local servers: paging, auth, rate limits, errors.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;
use webex::http::{RateGate, RateGates};
use webex::wxcc::WxccClient;
use webex::{Error, ErrorClass, TokenProvider};

const ORG: &str = "3dae8fdd-06e2-411a-9035-51f3719f5b65";

fn client(server: &Server, tokens: Arc<dyn TokenProvider>, gate: Arc<RateGate>) -> WxccClient {
    WxccClient::new(
        webex::http::build_client(),
        server.base.clone(),
        ORG.to_owned(),
        tokens,
        gate,
        fast_retry(),
    )
}

fn simple_client(server: &Server) -> WxccClient {
    client(
        server,
        TestTokens::new("tok", "tok2"),
        Arc::new(RateGate::new()),
    )
}

/// A `/v1/tasks` implementation over a fixed dataset, sorted by createdTime.
struct TaskDb {
    tasks: Vec<(String, i64)>,
    from_exclusive: bool,
    max_span: Option<i64>,
}

impl TaskDb {
    fn answer(&self, req: &Recorded) -> axum::response::Response {
        let from: i64 = req.query["from"].parse().unwrap();
        let to: i64 = req.query["to"].parse().unwrap();
        let size: usize = req.query["pageSize"].parse().unwrap();
        if let Some(max) = self.max_span
            && to - from > max
        {
            return json(
                400,
                json!({"trackingId":"t-1","error":{"key":"400","message":[{"description":"Time range between from and to exceeds the limit"}]}}),
            );
        }
        let mut sorted = self.tasks.clone();
        sorted.sort_by_key(|t| t.1);
        let data: Vec<_> = sorted
            .into_iter()
            .filter(|(_, t)| {
                (if self.from_exclusive {
                    *t > from
                } else {
                    *t >= from
                }) && *t < to
            })
            .take(size)
            .map(|(id, t)| {
                json!({"id": id, "attributes": {"createdTime": t, "channelType": "telephony",
                       "captureRequested": true, "owner": {"id": "a1", "name": "Ann"}}})
            })
            .collect();
        json(200, json!({"meta": {"orgId": ORG}, "data": data}))
    }
}

/// 2500 tasks, several sharing createdTimes across page boundaries.
fn dataset() -> Vec<(String, i64)> {
    (0..2500)
        .map(|i| (format!("task-{i:04}"), 1_000_000 + (i as i64 / 3) * 10))
        .collect()
}

#[tokio::test]
async fn list_tasks_pages_by_requery_and_dedupes() {
    for from_exclusive in [false, true] {
        let db = Arc::new(TaskDb {
            tasks: dataset(),
            from_exclusive,
            max_span: None,
        });
        let d = db.clone();
        let server = serve(move |req, _| d.answer(req)).await;
        let c = simple_client(&server);
        let from = 1_000_000;
        let to = 1_000_000 + 10 * 900; // first 2700 slots → all 2500 tasks
        let listing = c.list_tasks(from, to).await.unwrap();
        assert_eq!(listing.tasks.len(), 2500, "from_exclusive={from_exclusive}");
        let mut ids: Vec<_> = listing.tasks.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2500);
        assert_eq!(listing.dropped_out_of_window, 0);
        assert!(listing.rejected.is_empty());
        // 1000 + ~999 + ~504: three pages, the last one short.
        assert_eq!(listing.pages, 3);
        assert_eq!(c.api_calls(), 3);
        let reqs = server.requests();
        for r in &reqs {
            assert_eq!(r.path, "/v1/tasks");
            assert_eq!(r.query["channelTypes"], "telephony");
            assert_eq!(r.query["pageSize"], "1000");
            assert_eq!(r.query["orgId"], ORG);
            assert_eq!(r.query["to"], to.to_string());
            assert_eq!(r.header("authorization"), Some("Bearer tok"));
        }
        // First query starts 1 ms early; later ones re-query from last createdTime - 1.
        assert_eq!(reqs[0].query["from"], (from - 1).to_string());
        let last_of_first_page = 1_000_000 + (999 / 3) * 10;
        assert_eq!(reqs[1].query["from"], (last_of_first_page - 1).to_string());
    }
}

#[tokio::test]
async fn list_tasks_drops_out_of_window_and_reports_rejects() {
    let server = serve(|_, _| {
        json(
            200,
            json!({"data": [
                {"id": "early", "attributes": {"createdTime": 99}},
                {"id": "in", "attributes": {"createdTime": "100"}},
                {"id": "in", "attributes": {"createdTime": 100}},
                {"id": "noTime", "attributes": {"owner": null}},
                {"id": "late", "attributes": {"createdTime": 200}},
            ]}),
        )
    })
    .await;
    let c = simple_client(&server);
    let listing = c.list_tasks(100, 200).await.unwrap();
    assert_eq!(
        listing
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["in"]
    );
    assert_eq!(listing.dropped_out_of_window, 2);
    assert_eq!(listing.rejected.len(), 1);
    assert_eq!(listing.rejected[0].id.as_deref(), Some("noTime"));
    // Short page: exactly one request.
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn list_tasks_reports_full_page_with_one_created_time() {
    let db = Arc::new(TaskDb {
        tasks: (0..1200).map(|i| (format!("t{i}"), 5000)).collect(),
        from_exclusive: false,
        max_span: None,
    });
    let d = db.clone();
    let server = serve(move |req, _| d.answer(req)).await;
    let c = simple_client(&server);
    let err = c.list_tasks(0, 10_000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PageOverflow {
                created_time_ms: 5000,
                page_size: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.count(), 1, "must report, not loop");
}

#[tokio::test]
async fn list_tasks_stops_on_page_without_new_ids() {
    // A server that ignores `from` and always returns the same full page.
    let server = serve(|_, _| {
        let data: Vec<_> = (0..1000)
            .map(|i| json!({"id": format!("t{i}"), "attributes": {"createdTime": 10 + i}}))
            .collect();
        json(200, json!({"data": data}))
    })
    .await;
    let c = simple_client(&server);
    let listing = c.list_tasks(0, 100_000).await.unwrap();
    assert_eq!(listing.tasks.len(), 1000);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn list_tasks_halves_window_when_range_rejected() {
    let db = Arc::new(TaskDb {
        tasks: dataset(),
        from_exclusive: false,
        max_span: Some(3000),
    });
    let d = db.clone();
    let server = serve(move |req, _| d.answer(req)).await;
    let c = simple_client(&server);
    let listing = c.list_tasks(1_000_000, 1_009_000).await.unwrap();
    assert_eq!(listing.tasks.len(), 2500);
    let reqs = server.requests();
    assert!(reqs.iter().skip(1).any(|r| {
        let from: i64 = r.query["from"].parse().unwrap();
        let to: i64 = r.query["to"].parse().unwrap();
        to - from <= 3000
    }));
}

#[tokio::test]
async fn unrelated_400_is_not_halved() {
    let server = serve(|_, _| {
        json(
            400,
            json!({"trackingId":"trk-9","error":{"key":400,"message":[{"description":"orgId is invalid"}]}}),
        )
    })
    .await;
    let c = simple_client(&server);
    let err = c.list_tasks(0, 86_400_000).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 400, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.tracking_id(), Some("trk-9"));
    assert!(err.to_string().contains("orgId is invalid"));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn unauthorized_refreshes_once_then_retries() {
    let server = serve(|req, _| {
        if req.header("authorization") == Some("Bearer fresh") {
            json(200, json!({"data": []}))
        } else {
            json(401, json!({"trackingId":"t401","error":{"key":"401","message":[{"description":"token is invalid"}]}}))
        }
    })
    .await;
    let tokens = TestTokens::new("stale", "fresh");
    let c = client(&server, tokens.clone(), Arc::new(RateGate::new()));
    let page = c.tasks_page(0, 10, 1000).await.unwrap();
    assert!(page.tasks.is_empty());
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(*tokens.rejected.lock().unwrap(), vec!["stale".to_owned()]);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn second_unauthorized_is_reauth_without_looping() {
    let server = serve(|_, _| {
        status_with(
            401,
            &[("TrackingId", "trk-401")],
            "bad token ZDA4YjM0MzktZjQ5Yy00ZWM1LWJhMzktYWQ5ZjQ0ZTQ0NjNh_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f",
        )
    })
    .await;
    let tokens = TestTokens::new("stale", "fresh-but-useless");
    let c = client(&server, tokens.clone(), Arc::new(RateGate::new()));
    let err = c.tasks_page(0, 10, 1000).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Reauth);
    assert_eq!(err.tracking_id(), Some("trk-401"));
    assert!(!err.to_string().contains("ZDA4YjM0"), "{err}");
    assert!(!format!("{err:?}").contains("ZDA4YjM0"));
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn failed_refresh_propagates_its_class() {
    let server = serve(|_, _| status_with(401, &[], "")).await;
    let c = client(&server, Arc::new(DeadGrant), Arc::new(RateGate::new()));
    let err = c.tasks_page(0, 10, 1000).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Reauth);
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn forbidden_names_the_scope_and_is_not_retried() {
    let server = serve(|_, _| {
        json(
            403,
            json!({"trackingId":"t403","error":{"key":"403","message":[{"description":"Forbidden"}]}}),
        )
    })
    .await;
    let c = simple_client(&server);
    let err = c.query_captures(&["t1".into()], 30).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("cjp:config_read"), "{err}");
    assert_eq!(err.tracking_id(), Some("t403"));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let server = serve(|_, n| {
        if n < 2 {
            status_with(503, &[("TrackingId", "trk-5xx")], "upstream down")
        } else {
            json(200, json!({"data": []}))
        }
    })
    .await;
    let c = simple_client(&server);
    c.tasks_page(0, 10, 1000).await.unwrap();
    assert_eq!(server.count(), 3);
    assert_eq!(c.api_calls(), 3);

    let always = serve(|_, _| {
        status_with(
            502,
            &[("TrackingId", "trk-502")],
            "<html>bad gateway</html>",
        )
    })
    .await;
    let c = simple_client(&always);
    let err = c.tasks_page(0, 10, 1000).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 502, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.tracking_id(), Some("trk-502"));
    assert_eq!(always.count(), fast_retry().max_attempts as usize);
}

#[tokio::test]
async fn network_errors_are_transient() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = WxccClient::new(
        webex::http::build_client(),
        url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        ORG.into(),
        TestTokens::new("tok", "tok2"),
        Arc::new(RateGate::new()),
        fast_retry(),
    );
    let err = c.tasks_page(0, 10, 1000).await.unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(c.api_calls(), u64::from(fast_retry().max_attempts));
}

#[tokio::test]
async fn rate_limit_blocks_every_client_sharing_the_gate() {
    // First request is told to wait 1 s; everything afterwards succeeds.
    let server = serve(|_, n| {
        if n == 0 {
            status_with(429, &[("Retry-After", "1")], "")
        } else {
            json(200, json!({"data": []}))
        }
    })
    .await;
    let gates = RateGates::default();
    let a = client(&server, TestTokens::new("a", "a2"), gates.gate("C1"));
    let b = client(&server, TestTokens::new("b", "b2"), gates.gate("C1"));
    let other = client(&server, TestTokens::new("o", "o2"), gates.gate("C2"));

    let (tx, rx) = tokio::sync::oneshot::channel();
    let gate = gates.gate("C1");
    let a_task = tokio::spawn(async move {
        let r = a.tasks_page(0, 10, 1000).await;
        (r.map(|_| ()), a.api_calls())
    });
    // Wait until A's 429 has closed the shared gate.
    tokio::spawn(async move {
        while gate.blocked_for().is_zero() {
            tokio::task::yield_now().await;
        }
        let _ = tx.send(());
    });
    rx.await.unwrap();
    // A client on another client id is not held back.
    other.tasks_page(0, 10, 1000).await.unwrap();
    b.tasks_page(0, 10, 1000).await.unwrap();
    let (ra, a_calls) = a_task.await.unwrap();
    ra.unwrap();
    assert_eq!(a_calls, 2);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    let blocked_at = reqs[0].at;
    let by_token = |t: &str| {
        reqs.iter()
            .find(|r| r.header("authorization") == Some(&format!("Bearer {t}")[..]))
            .unwrap()
            .at
    };
    assert!(by_token("o") - blocked_at < Duration::from_secs(1));
    assert!(by_token("b") - blocked_at >= Duration::from_secs(1));
    assert!(
        reqs.iter()
            .filter(|r| r.header("authorization") == Some("Bearer a"))
            .count()
            == 2
    );
}

#[tokio::test]
async fn garbage_retry_after_uses_default_and_exhaustion_reports_rate_limited() {
    let server = serve(|_, _| {
        status_with(
            429,
            &[("Retry-After", "rand(30),add(30)"), ("TrackingId", "GTWY_1")],
            r#"{"code":429,"message":"Too many requests. Rate limit exceeded.","trackingId":"GTWY_1"}"#,
        )
    })
    .await;
    let c = simple_client(&server);
    let err = c.tasks_page(0, 10, 1000).await.unwrap_err();
    match &err {
        Error::RateLimited { retry_after, .. } => {
            assert_eq!(*retry_after, fast_retry().default_retry_after)
        }
        other => panic!("{other}"),
    }
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.retry_after(), Some(fast_retry().default_retry_after));
    assert_eq!(err.tracking_id(), Some("GTWY_1"));
    assert_eq!(server.count(), fast_retry().max_attempts as usize);
}

#[tokio::test]
async fn captures_query_body_and_limits() {
    let server = serve(|_, _| {
        json(
            200,
            json!({"meta": {"orgId": ORG, "urlExpiration": 60}, "data": [
                {"taskId": "t1", "recording": [{"id": "r1", "segment": false,
                  "attributes": {"filePath": "http://127.0.0.1/x.wav", "startTime": "1661785612510"}}],
                 "transcription": []},
                {"taskId": "t2", "recording": [], "transcription": []}]}),
        )
    })
    .await;
    let c = simple_client(&server);
    let ids: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let err = c.query_captures(&ids, 30).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.count(), 0, "no request for an oversized batch");
    assert!(c.query_captures(&[], 30).await.unwrap().tasks.is_empty());
    assert_eq!(server.count(), 0);

    let r = c
        .query_captures(&["t1".into(), "t2".into(), "t1".into()], 500)
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 2);
    assert_eq!(r.tasks[0].recordings[0].start_time_ms, Some(1661785612510));
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/captures/query");
    assert_eq!(
        req.json(),
        json!({"query": {"orgId": ORG, "taskIds": ["t1", "t2"], "urlExpiration": 60,
                         "includeSegments": false, "includeVARecordings": true}})
    );
}

#[tokio::test]
async fn user_lookup_single_and_batched() {
    let server = serve(|req, _| {
        if req.path.contains("/by-ci-user-id/") {
            if req.path.ends_with("/missing") {
                return json(
                    404,
                    json!({"error": {"key": 404, "message": [{"description": "not found"}]}}),
                );
            }
            return json(
                200,
                json!({"id": "cc1", "ciUserId": "ci1", "firstName": "Ann", "email": "a@x"}),
            );
        }
        if req.query["filter"].contains("bad") {
            return json(
                400,
                json!({"error": {"key": 400, "message": [{"description": "Invalid filter"}]}}),
            );
        }
        let page: u32 = req.query["page"].parse().unwrap();
        let users: Vec<_> = if page == 0 {
            vec![
                json!({"id": "cc1", "ciUserId": "ci1"}),
                json!({"id": "cc2", "ciUserId": "ci2"}),
            ]
        } else {
            vec![json!({"id": "cc3", "ciUserId": "ci3", "lastName": "Lee"})]
        };
        json(
            200,
            json!({"meta": {"page": page, "pageSize": 100, "totalPages": 2}, "data": users}),
        )
    })
    .await;
    let c = simple_client(&server);
    let u = c.user_by_ci_id("ci1").await.unwrap().unwrap();
    assert_eq!(u.first_name.as_deref(), Some("Ann"));
    assert_eq!(c.user_by_ci_id("missing").await.unwrap(), None);
    let reqs = server.requests();
    assert_eq!(
        reqs[0].path,
        format!("/organization/{ORG}/user/by-ci-user-id/ci1")
    );

    let users = c
        .users_by_ci_ids(&["ci1".into(), "ci2".into(), "ci3".into(), "ci1".into()])
        .await
        .unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users[2].last_name.as_deref(), Some("Lee"));
    let reqs = server.requests();
    let list: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.ends_with("/v2/user"))
        .collect();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].path, format!("/organization/{ORG}/v2/user"));
    assert_eq!(
        list[0].query["filter"],
        r#"ciUserId=in=("ci1","ci2","ci3")"#
    );
    assert_eq!(list[1].query["page"], "1");

    let err = c.users_by_ci_ids(&["bad".into()]).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 400, .. }), "{err}");
    assert!(c.users_by_ci_ids(&[]).await.unwrap().is_empty());
}
