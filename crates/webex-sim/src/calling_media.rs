//! Webex Calling download links and media (webex-api.md §3.3).
//!
//! Links look like Webex's `…/nbr/MultiThreadDownloadServlet?type=calling&orgId=…&
//! recordUUID=…&ticket=…&timestamp=…`. The `ticket` carries the expiry and an
//! HMAC over org, recording, file type and expiry, so a link cannot be
//! stretched or pointed at another recording. They are served by a second
//! listener (the media host, normally 127.0.0.2) that refuses any
//! `Authorization` header, or, with `Faults::calling_media_requires_bearer`,
//! by the main host, which then requires the bearer token of the org.
// Handler helpers return the finished error `Response` as `Err`; it goes
// straight back to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::Sha256;

use crate::calling::bearer_token;
use crate::http::{latency, parse_pairs};
use crate::state::{Shared, lock};

/// Path of the download servlet on both hosts.
pub(crate) const SERVLET: &str = "/nbr/MultiThreadDownloadServlet";
const CHUNK: usize = 16 * 1024;

fn mac(shared: &Shared, org: &str, rec: &str, file: &str, expires_ms: i64) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&shared.sign_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(format!("calling\n{org}\n{rec}\n{file}\n{expires_ms}").as_bytes());
    m
}

/// Absolute download link for `file` (`audio` or `transcript`) of one recording,
/// valid for `ttl_secs` from `now_ms`; on the main host when `bearer_host`.
pub(crate) fn download_link(
    shared: &Shared,
    org: &str,
    rec: &str,
    file: &str,
    now_ms: i64,
    ttl_secs: u64,
    bearer_host: bool,
) -> String {
    let mut url = if bearer_host {
        shared.base_url.clone()
    } else {
        shared.calling_media_url.clone()
    };
    url.set_path(SERVLET);
    let expires_ms = now_ms
        .saturating_add(i64::try_from(ttl_secs.saturating_mul(1_000)).unwrap_or(i64::MAX / 4));
    let mut raw = expires_ms.to_be_bytes().to_vec();
    raw.extend_from_slice(
        &mac(shared, org, rec, file, expires_ms)
            .finalize()
            .into_bytes(),
    );
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    url.query_pairs_mut()
        .append_pair("type", "calling")
        .append_pair("orgId", org)
        .append_pair("recordUUID", rec)
        .append_pair("fileType", file)
        .append_pair("ticket", &ticket)
        .append_pair("timestamp", &now_ms.to_string());
    url.to_string()
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

/// `GET /nbr/MultiThreadDownloadServlet` on the media host: ticket only; any
/// `Authorization` header is refused with 400 and counted.
pub(crate) async fn media_ticket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    shared.count("calling_media");
    latency(&shared).await;
    if headers.contains_key(header::AUTHORIZATION) {
        lock(&shared.stats).calling_media_with_authorization += 1;
        return plain(
            StatusCode::BAD_REQUEST,
            "This download host takes the ticket in the URL only; requests carrying an Authorization header are refused.",
        );
    }
    match serve(&shared, q.as_deref(), None) {
        Ok(r) | Err(r) => r,
    }
}

/// `GET /nbr/MultiThreadDownloadServlet` on the main (Webex API) host, used when
/// `calling_media_requires_bearer` is on: 401 without a live bearer token,
/// 403 when the token belongs to another org than the link.
pub(crate) async fn media_bearer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    shared.count("calling_media");
    latency(&shared).await;
    // Unknown, expired and revoked tokens all answer 401.
    let org = bearer_token(&headers).and_then(|t| {
        lock(&shared.auth)
            .bearer(&t, shared.now_ms())
            .ok()
            .map(|b| b.org_id)
    });
    let Some(org) = org else {
        let mut r = plain(
            StatusCode::UNAUTHORIZED,
            "This download needs Authorization: Bearer with a valid access token.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"webex-sim\""),
        );
        return r;
    };
    match serve(&shared, q.as_deref(), Some(&org)) {
        Ok(r) | Err(r) => r,
    }
}

/// Checks the ticket and streams the file; `bearer_org` must own it when given.
fn serve(
    shared: &Arc<Shared>,
    q: Option<&str>,
    bearer_org: Option<&str>,
) -> Result<Response, Response> {
    let p = parse_pairs(q);
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    let (org, rec_id, file, ticket) = (
        get("orgId"),
        get("recordUUID"),
        get("fileType"),
        get("ticket"),
    );
    let forbidden = |why: &str| plain(StatusCode::FORBIDDEN, why);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ticket)
        .map_err(|_| forbidden("Invalid ticket."))?;
    if raw.len() != 8 + 32 || get("type") != "calling" {
        return Err(forbidden("Invalid ticket."));
    }
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&raw[..8]);
    let expires_ms = i64::from_be_bytes(exp);
    mac(shared, org, rec_id, file, expires_ms)
        .verify_slice(&raw[8..])
        .map_err(|_| forbidden("Invalid ticket."))?;
    if shared.now_ms() >= expires_ms {
        return Err(forbidden(
            "The ticket has expired; request the recording details again for a fresh link.",
        ));
    }
    if bearer_org.is_some_and(|b| b != org) {
        return Err(forbidden(
            "The access token belongs to another organization.",
        ));
    }
    let not_found = || plain(StatusCode::NOT_FOUND, "No such recording file.");
    let &(oi, i) = shared
        .data
        .calling_index
        .get(rec_id)
        .ok_or_else(not_found)?;
    if shared.data.orgs[oi].id != org {
        return Err(not_found());
    }
    let r = &shared.data.calling[oi][i];
    let (bytes, content_type): (Vec<u8>, &str) = match file {
        "audio" => {
            #[allow(clippy::cast_possible_truncation)]
            let mut v = vec![0u8; r.size() as usize];
            if let Some(a) = &r.audio {
                a.fill(0, &mut v);
            }
            (v, "audio/mpeg")
        }
        "transcript" => {
            let t = r.transcript.as_ref().ok_or_else(not_found)?;
            (t.as_bytes().to_vec(), "text/vtt; charset=utf-8")
        }
        _ => return Err(not_found()),
    };
    let faults = shared.faults();
    if shared.roll(faults.error_5xx_rate) {
        lock(&shared.stats).injected_5xx += 1;
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable (injected by webex-sim).",
        ));
    }
    let len = bytes.len();
    // Truncation fault: half the body, then the connection aborts under a
    // Content-Length that promised all of it.
    let cut = (len > 0 && shared.roll(faults.truncate_rate)).then_some(len / 2);
    let bytes = Bytes::from(bytes);
    let stream_shared = Arc::clone(shared);
    let stream = futures::stream::unfold(0usize, move |pos| {
        let bytes = bytes.clone();
        let shared = Arc::clone(&stream_shared);
        async move {
            if pos >= len {
                return None;
            }
            if let Some(c) = cut
                && pos >= c
            {
                tokio::task::yield_now().await;
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "truncated by webex-sim fault",
                );
                return Some((Err(err), usize::MAX));
            }
            let stop = cut.map_or(len, |c| c.min(len)).min(pos + CHUNK);
            lock(&shared.stats).media_bytes += (stop - pos) as u64;
            Some((Ok::<Bytes, std::io::Error>(bytes.slice(pos..stop)), stop))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let ext = if file == "audio" { "mp3" } else { "vtt" };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{rec_id}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
