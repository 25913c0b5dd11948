//! `OAuthClient::revoke_authorizations` against scripted local servers.

mod support;

use serde_json::json;
use support::*;
use webex::oauth::{OAuthClient, TOKENS_WRITE_SCOPE};
use webex::{Error, ErrorClass, ReauthKind, SecretString};

const TOKEN: &str = "admin-access-token-5d2e_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f";
const ORG: &str = "1eb65fdf-9643-417f-9974-ad72cae0e10f";

fn client(server: &Server) -> OAuthClient {
    OAuthClient::new(
        webex::http::build_client(),
        server.base.clone(),
        fast_retry(),
    )
}

async fn revoke(server: &Server) -> Result<(), Error> {
    client(server)
        .revoke_authorizations(&SecretString::from(TOKEN), "Cabc 123&x", ORG)
        .await
}

fn router(status: u16, description: &str) -> axum::response::Response {
    json(
        status,
        json!({"message": "refused", "errors": [{"description": description}],
               "trackingId": "ROUTER_62E068B0-1111"}),
    )
}

#[tokio::test]
async fn sends_delete_with_bearer_and_query() {
    let server = serve(|_, _| status_with(204, &[], "")).await;
    revoke(&server).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "DELETE");
    assert_eq!(req.path, "/v1/authorizations");
    assert_eq!(req.query["clientId"], "Cabc 123&x");
    assert_eq!(req.query["orgId"], ORG);
    assert_eq!(req.query.len(), 2);
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(req.body.is_empty());

    // 200 with a body is success too; a base URL without trailing slash is a directory.
    let ok = serve(|_, _| json(200, json!({}))).await;
    let mut base = ok.base.clone();
    base.set_path("/sim");
    let c = OAuthClient::new(webex::http::build_client(), base, fast_retry());
    c.revoke_authorizations(&SecretString::from(TOKEN), "C1", "b64-org-id")
        .await
        .unwrap();
    assert_eq!(ok.requests()[0].path, "/sim/v1/authorizations");
    assert_eq!(ok.requests()[0].query["orgId"], "b64-org-id");
}

#[tokio::test]
async fn empty_arguments_send_nothing() {
    let server = serve(|_, _| status_with(204, &[], "")).await;
    let c = client(&server);
    let token = SecretString::from(TOKEN);
    for (client_id, org) in [("", ORG), ("C1", "  ")] {
        let err = c
            .revoke_authorizations(&token, client_id, org)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Permanent);
    }
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn unauthorized_is_reauth_and_never_retried() {
    let server = serve(|_, _| {
        router(
            401,
            &format!("The request requires a valid access token; got {TOKEN}"),
        )
    })
    .await;
    let err = revoke(&server).await.unwrap_err();
    assert_eq!(server.count(), 1);
    assert!(matches!(err, Error::TokenRejected { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Reauth);
    assert_eq!(err.reauth_kind(), Some(ReauthKind::GrantRevoked));
    assert_eq!(err.tracking_id(), Some("ROUTER_62E068B0-1111"));
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("admin-access-token"), "{msg}");
}

#[tokio::test]
async fn forbidden_names_the_scope_and_admin_role() {
    let server = serve(|_, _| router(403, "missing required scopes or roles")).await;
    let err = revoke(&server).await.unwrap_err();
    assert_eq!(server.count(), 1);
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.status(), Some(403));
    let msg = err.to_string();
    assert!(msg.contains(TOKENS_WRITE_SCOPE), "{msg}");
    assert!(msg.contains("Full, User or Device administrator"), "{msg}");
    assert!(msg.contains("missing required scopes or roles"), "{msg}");

    let bad = serve(|_, _| router(400, "clientId is required.")).await;
    let err = revoke(&bad).await.unwrap_err();
    assert_eq!(bad.count(), 1);
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("clientId is required."));
}

#[tokio::test]
async fn transient_failures_are_retried_per_policy() {
    let flaky = serve(|_, n| match n {
        0 => status_with(503, &[], "maintenance"),
        1 => status_with(429, &[("Retry-After", "0")], ""),
        2 => status_with(502, &[("Retry-After", "0")], "<html>bad gateway</html>"),
        _ => status_with(204, &[], ""),
    })
    .await;
    revoke(&flaky).await.unwrap();
    assert_eq!(flaky.count(), 4);

    let down = serve(|_, _| status_with(500, &[("TrackingId", "T-500")], "boom")).await;
    let err = revoke(&down).await.unwrap_err();
    assert_eq!(down.count(), 4, "fast_retry allows 4 attempts");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.tracking_id(), Some("T-500"));

    let limited = serve(|_, _| status_with(429, &[("Retry-After", "0")], "")).await;
    let err = revoke(&limited).await.unwrap_err();
    assert_eq!(limited.count(), 4);
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);

    // Nobody listening: network errors are retried, then reported as transient.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = OAuthClient::new(
        webex::http::build_client(),
        url::Url::parse(&format!("http://{addr}/")).unwrap(),
        fast_retry(),
    );
    let err = c
        .revoke_authorizations(&SecretString::from(TOKEN), "C1", ORG)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(!format!("{err} {err:?}").contains("admin-access-token"));
}
