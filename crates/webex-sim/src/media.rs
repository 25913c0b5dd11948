//! Pre-signed capture media, S3 style (webex-api.md §2.5).
//!
//! The link carries `X-Amz-Date`/`X-Amz-Expires`/`X-Amz-Signature`; the
//! signature is an HMAC over the path, date and lifetime with a per-simulator
//! key, checked against the simulator clock. Bodies are generated chunk by
//! chunk from the recording's [`crate::wav`] plan, so a 1 GiB file costs a
//! few KiB of memory.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::Sha256;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::http::{latency, parse_pairs, s3_error};
use crate::late;
use crate::state::{Shared, lock};

const CHUNK: u64 = 64 * 1024;
/// URL path prefix of the simulated bucket.
pub(crate) const BUCKET: &str = "cjp-ccone-produs1-media-storage-recording";

fn amz_date(ms: i64) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1_000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "19700101T000000Z".to_owned())
}

fn parse_amz_date(s: &str) -> Option<i64> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?;
    Some(t.assume_utc().unix_timestamp() * 1_000)
}

fn signature(shared: &Shared, path: &str, date: &str, expires: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&shared.sign_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(format!("GET\n{path}\n{date}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Absolute pre-signed URL for one recording, valid for `expires_secs` from `now_ms`.
pub(crate) fn signed_url(
    shared: &Shared,
    org_id: &str,
    task_id: &str,
    rec_id: &str,
    file_name: &str,
    now_ms: i64,
    expires_secs: u64,
) -> String {
    let mut url = shared.base_url.clone();
    url.set_path(&format!("{BUCKET}/{org_id}/{task_id}/{rec_id}/{file_name}"));
    let date = amz_date(now_ms);
    let expires = expires_secs.to_string();
    let sig = signature(shared, url.path(), &date, &expires);
    url.query_pairs_mut()
        .append_pair("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
        .append_pair("X-Amz-Date", &date)
        .append_pair("X-Amz-SignedHeaders", "host")
        .append_pair("X-Amz-Expires", &expires)
        .append_pair(
            "X-Amz-Credential",
            &format!(
                "ASIAWXSIMULATOR00000/{}/us-east-1/s3/aws4_request",
                &date[..8]
            ),
        )
        .append_pair("X-Amz-Signature", &sig);
    url.to_string()
}

/// Parses `Range: bytes=N-` / `bytes=N-M`. `Ok(None)`: no (usable) range header.
fn parse_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multi-range: S3 ignores it and sends the whole object.
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix range: last N bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len - 1)
        };
        (start, end)
    };
    if range.0 >= len || range.0 > range.1 {
        return Err(());
    }
    Ok(Some(range))
}

/// `GET /{bucket}/{org}/{task}/{recording}/{file}` with the pre-signed query.
pub(crate) async fn media(
    State(shared): State<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    shared.count("media");
    latency(&shared).await;
    if headers.contains_key(header::AUTHORIZATION) {
        return s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        );
    }
    let p = parse_pairs(q.as_deref());
    let (Some(date), Some(expires), Some(sig)) = (
        p.get("X-Amz-Date"),
        p.get("X-Amz-Expires"),
        p.get("X-Amz-Signature"),
    ) else {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
    };
    let path = uri.path();
    if signature(&shared, path, date, expires) != *sig {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let (Some(signed_at), Ok(expires_secs)) = (parse_amz_date(date), expires.parse::<i64>()) else {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
    };
    if shared.now_ms() >= signed_at + expires_secs.saturating_mul(1_000) {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let found = match parts.as_slice() {
        [_, org, task, rec, file] => shared
            .data
            .recordings
            .get(*rec)
            .copied()
            .filter(|&(oi, ti, ri)| {
                let o = &shared.data.orgs[oi];
                let t = &o.tasks[ti];
                o.id == *org && t.id == *task && t.recordings[ri].file_name == *file
            })
            .map(|(oi, ti, ri)| shared.data.orgs[oi].tasks[ti].recordings[ri].plan.clone())
            .or_else(|| late::find(&shared, org, task, rec, file).map(|l| l.rec.plan.clone())),
        _ => None,
    };
    let Some(plan) = found else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    let plan = Arc::new(plan);
    let faults = shared.faults();
    if shared.roll(faults.error_5xx_rate) {
        lock(&shared.stats).injected_5xx += 1;
        return s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        );
    }
    let len = plan.len();
    let (status, start, end) = match parse_range(&headers, len) {
        Ok(None) => (StatusCode::OK, 0, len - 1),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Err(()) => {
            let mut r = s3_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body_len = end - start + 1;
    // Truncation fault: stop at half way and abort the connection, so the
    // client sees fewer bytes than Content-Length promised.
    let cut = shared
        .roll(faults.truncate_rate)
        .then_some(start + body_len / 2);
    let stream_shared = Arc::clone(&shared);
    let stream = futures::stream::unfold(start, move |pos| {
        let shared = Arc::clone(&stream_shared);
        let plan = Arc::clone(&plan);
        async move {
            if pos > end {
                return None;
            }
            if let Some(c) = cut
                && pos >= c
            {
                // Yield once so hyper flushes the head and the bytes sent so
                // far before the error aborts the connection.
                tokio::task::yield_now().await;
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "truncated by webex-sim fault",
                );
                return Some((Err(err), u64::MAX));
            }
            let stop = cut.map_or(end + 1, |c| c.min(end + 1)).min(pos + CHUNK);
            #[allow(clippy::cast_possible_truncation)]
            let mut buf = vec![0u8; (stop - pos) as usize];
            plan.fill(pos, &mut buf);
            lock(&shared.stats).media_bytes += buf.len() as u64;
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), stop))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}
