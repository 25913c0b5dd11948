//! Response builders for the error shapes Webex uses (webex-api.md §1.6, §2.10).

use std::collections::HashMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::state::Shared;

/// Parses a query string or form body; the first occurrence of a key wins.
pub(crate) fn parse_pairs(raw: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(raw) = raw {
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

fn with_tracking(mut resp: Response, tracking: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(tracking) {
        resp.headers_mut().insert("TrackingId", v);
    }
    resp
}

/// WxCC `ApiErrorResponse`: `{"trackingId","error":{"key":"<status>","message":[{"description"}]}}`.
pub(crate) fn wxcc_error(shared: &Shared, status: StatusCode, description: &str) -> Response {
    let tracking = shared.tracking_id();
    let body = json!({
        "trackingId": tracking,
        "error": {
            "key": status.as_u16().to_string(),
            "message": [ { "description": description } ]
        }
    });
    with_tracking((status, axum::Json(body)).into_response(), &tracking)
}

/// Successful WxCC JSON with a `TrackingId` header.
pub(crate) fn wxcc_ok(shared: &Shared, body: serde_json::Value) -> Response {
    let tracking = shared.tracking_id();
    with_tracking(axum::Json(body).into_response(), &tracking)
}

/// 429 as the WxCC gateway sends it: `Retry-After` seconds, CORS header, and
/// usually no body (sometimes the gateway JSON; sometimes a malformed header).
/// The wait is recorded against `client_id`, so requests that come back too early are counted.
pub(crate) fn too_many(shared: &Shared, client_id: &str, retry_after_secs: u64) -> Response {
    lock_stats_429(shared);
    let retry_after_secs = retry_after_secs.max(1);
    shared.note_retry_after(client_id, retry_after_secs);
    let faults = shared.faults();
    let retry = if shared.roll(faults.malformed_retry_after_rate) {
        "rand(30),add(30)".to_owned()
    } else {
        retry_after_secs.to_string()
    };
    let tracking = shared.tracking_id();
    let body = if shared.roll(faults.gateway_429_body_rate) {
        Body::from(
            json!({
                "code": 429,
                "message": "Too many requests. Rate limit exceeded.",
                "trackingId": format!("GTWY_{tracking}")
            })
            .to_string(),
        )
    } else {
        Body::empty()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&retry) {
        h.insert(header::RETRY_AFTER, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    with_tracking(resp, &tracking)
}

fn lock_stats_429(shared: &Shared) {
    crate::state::lock(&shared.stats).throttled_429 += 1;
}

/// Injected server error (500/502/503 at random) with a plain-text body.
pub(crate) fn injected_5xx(shared: &Shared) -> Response {
    crate::state::lock(&shared.stats).injected_5xx += 1;
    let status = match shared.pick_index(3) {
        0 => StatusCode::INTERNAL_SERVER_ERROR,
        1 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, "upstream error (injected by webex-sim)").into_response()
}

/// RFC 6749 §5.2 error body from the token endpoint.
pub(crate) fn oauth_error(
    shared: &Shared,
    status: StatusCode,
    code: &str,
    description: &str,
    basic_challenge: bool,
) -> Response {
    let tracking = shared.tracking_id();
    let body = json!({
        "error": code,
        "error_description": description,
        "trackingId": tracking,
    });
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if basic_challenge {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"webex-sim\""),
        );
    }
    with_tracking(resp, &tracking)
}

/// S3-style XML error, as the media bucket answers.
pub(crate) fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>WXSIMMEDIA</RequestId></Error>"
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        )],
        body,
    )
        .into_response()
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Minimal HTML page for browser-facing errors on the consent flow.
pub(crate) fn html(status: StatusCode, title: &str, text: &str) -> Response {
    (
        status,
        axum::response::Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>{}</h1><p>{}</p></body></html>",
            escape_html(title),
            escape_html(title),
            escape_html(text)
        )),
    )
        .into_response()
}

/// Webex router error body (webex-api.md §1.6 shape B), as `webexapis.com` REST APIs answer:
/// `{"message","errors":[{"description"}],"trackingId"}` plus a `TrackingId` header.
pub(crate) fn router_error(
    shared: &Shared,
    status: StatusCode,
    message: &str,
    description: &str,
) -> Response {
    let tracking = format!("ROUTER_{}", shared.tracking_uuid());
    let body = json!({
        "message": message,
        "errors": [ { "description": description } ],
        "trackingId": tracking,
    });
    with_tracking((status, axum::Json(body)).into_response(), &tracking)
}

/// Applies the latency knob.
pub(crate) async fn latency(shared: &Shared) {
    let ms = shared.faults().latency_ms;
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
