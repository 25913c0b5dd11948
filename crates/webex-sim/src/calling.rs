//! Webex Calling converged recordings on `webexapis.com` (webex-api.md §3.1–3.4, §3.8):
//! list, details and metadata. Download links and media are in [`crate::calling_media`].
// Handler helpers return the finished error `Response` as `Err`; it goes
// straight back to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::calling_data::CallingRec;
use crate::calling_media::download_link;
use crate::http::{injected_5xx, latency, parse_pairs, router_error, too_many};
use crate::state::{Bearer, BearerError, Shared, lock};

pub(crate) const ADMIN_SCOPE: &str = "spark-admin:recordings_read";
pub(crate) const COMPLIANCE_SCOPE: &str = "spark-compliance:recordings_read";
const UNAUTHORIZED: &str =
    "The request requires a valid access token set in the Authorization request header.";
const FORBIDDEN: &str = "The server understood the request, but refused to fulfill it because the access token is missing required scopes or the user is missing required roles or licenses.";
const NOT_FOUND: &str = "The requested resource could not be found.";
const BAD: &str = "The request could not be understood by the server due to malformed syntax.";
const DAY_MS: i64 = 86_400_000;
/// Lifetime of download links (webex-api.md §3.3).
const LINK_TTL_SECS: u64 = 3 * 3_600;
const LIST_PATH: &str = "v1/admin/convergedRecordings";

/// Bearer token from `Authorization: Bearer …`, if well formed.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim().to_owned())
}

/// Authenticates a `webexapis.com` request: 401 without a live token, then the
/// per-client limit and injected 429/5xx, then 403 without a recordings scope.
async fn gate(shared: &Shared, endpoint: &str, headers: &HeaderMap) -> Result<Bearer, Response> {
    shared.count(endpoint);
    latency(shared).await;
    let unauthorized =
        || router_error(shared, StatusCode::UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED);
    let token = bearer_token(headers).ok_or_else(unauthorized)?;
    let bearer = match lock(&shared.auth).bearer(&token, shared.now_ms()) {
        Ok(b) => b,
        Err(BearerError::Unknown | BearerError::Expired | BearerError::Revoked) => {
            return Err(unauthorized());
        }
    };
    if let Err(secs) = shared.rate_check(&bearer.client_id) {
        return Err(too_many(shared, &bearer.client_id, secs));
    }
    let faults = shared.faults();
    if shared.roll(faults.rate_429_rate) {
        let secs = 1 + shared.pick_index(5);
        return Err(too_many(shared, &bearer.client_id, secs));
    }
    if shared.roll(faults.error_5xx_rate) {
        return Err(injected_5xx(shared));
    }
    if !bearer.has_any(&[ADMIN_SCOPE, COMPLIANCE_SCOPE]) {
        return Err(router_error(
            shared,
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            &format!("One of {ADMIN_SCOPE} or {COMPLIANCE_SCOPE} is required."),
        ));
    }
    Ok(bearer)
}

fn bad(shared: &Shared, description: &str) -> Response {
    router_error(shared, StatusCode::BAD_REQUEST, BAD, description)
}

/// ISO 8601 (RFC 3339) text of epoch ms: whole seconds print without a fraction.
pub(crate) fn iso(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_iso(shared: &Shared, name: &str, v: &str) -> Result<i64, Response> {
    OffsetDateTime::parse(v.trim(), &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| {
            bad(
                shared,
                &format!(
                    "Invalid {name}: expected an ISO 8601 date-time such as 2024-10-04T16:24:25Z."
                ),
            )
        })
}

fn encode_cursor(r: &CallingRec) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", r.create_ms, r.id))
}

fn decode_cursor(v: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ms, id) = text.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

/// The fields list items and details share (never any download links).
fn item_json(r: &CallingRec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("topic".into(), json!(r.topic));
    m.insert("createTime".into(), json!(iso(r.create_ms)));
    m.insert("timeRecorded".into(), json!(iso(r.time_recorded_ms)));
    m.insert("ownerId".into(), json!(r.owner_id));
    m.insert("ownerType".into(), json!(r.owner_type));
    if let Some(e) = &r.owner_email {
        m.insert("ownerEmail".into(), json!(e));
    }
    m.insert("format".into(), json!("MP3"));
    m.insert("durationSeconds".into(), json!(r.duration_secs()));
    m.insert("sizeBytes".into(), json!(r.size()));
    m.insert("serviceType".into(), json!(r.service_type));
    m.insert("storageRegion".into(), json!("US"));
    m.insert("status".into(), json!(r.status));
    m.insert(
        "serviceData".into(),
        json!({ "locationId": r.location_id, "callSessionId": r.call_session_id }),
    );
    m
}

/// `GET /v1/admin/convergedRecordings`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match list_inner(&shared, &headers, q.as_deref()).await {
        Ok(r) | Err(r) => r,
    }
}

async fn list_inner(
    shared: &Shared,
    headers: &HeaderMap,
    q: Option<&str>,
) -> Result<Response, Response> {
    let bearer = gate(shared, "calling_list", headers).await?;
    let compliance = bearer.has_any(&[COMPLIANCE_SCOPE]);
    let p = parse_pairs(q);
    let max = match p.get("max") {
        None => 10,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(bad(shared, "max must be an integer from 1 to 100.")),
        },
    };
    let status = p.get("status").map_or("available", String::as_str);
    if !["available", "deleted", "purged"].contains(&status) {
        return Err(bad(shared, "status must be available, deleted or purged."));
    }
    if status == "purged" && !compliance {
        return Err(router_error(
            shared,
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            &format!("Listing purged recordings requires {COMPLIANCE_SCOPE}."),
        ));
    }
    let service = p.get("serviceType").map(String::as_str);
    if service.is_some_and(|s| s != "calling" && s != "customerAssist") {
        return Err(bad(
            shared,
            "serviceType must be calling or customerAssist.",
        ));
    }
    if p.get("format")
        .is_some_and(|f| !f.eq_ignore_ascii_case("MP3"))
    {
        return Err(bad(shared, "format must be MP3."));
    }
    let now = shared.now_ms();
    let (from, to) = match (p.get("from"), p.get("to")) {
        (Some(f), Some(t)) => (parse_iso(shared, "from", f)?, parse_iso(shared, "to", t)?),
        (Some(f), None) => {
            let f = parse_iso(shared, "from", f)?;
            (f, f + 7 * DAY_MS)
        }
        (None, Some(t)) => {
            let t = parse_iso(shared, "to", t)?;
            (t - 7 * DAY_MS, t)
        }
        (None, None) => (now - 7 * DAY_MS, now),
    };
    if to < from {
        return Err(bad(shared, "to must not be earlier than from."));
    }
    if to - from > 30 * DAY_MS {
        return Err(bad(
            shared,
            "The time range between from and to must not exceed 30 days.",
        ));
    }
    let cursor = match p.get("cursor") {
        None => None,
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| bad(shared, "cursor is not a cursor this API handed out."))?,
        ),
    };
    let Some((oi, _)) = shared.data.org(&bearer.org_id) else {
        return Err(router_error(
            shared,
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "Organization not found.",
        ));
    };
    let mut page: Vec<&CallingRec> = shared.data.calling[oi]
        .iter()
        .filter(|r| r.create_ms <= now && r.create_ms >= from && r.create_ms < to)
        .filter(|r| r.status == status)
        .filter(|r| service.is_none_or(|s| s == r.service_type))
        .filter(|r| {
            cursor.as_ref().is_none_or(|(ms, id)| {
                r.create_ms < *ms || (r.create_ms == *ms && r.id.as_str() > id.as_str())
            })
        })
        .take(max + 1)
        .collect();
    let more = page.len() > max;
    page.truncate(max);
    let items: Vec<Value> = page.iter().map(|r| Value::Object(item_json(r))).collect();
    let mut resp = axum::Json(json!({ "items": items })).into_response();
    if more && let Some(last) = page.last() {
        let mut next = shared.base_url.clone();
        next.set_path(LIST_PATH);
        {
            let mut qp = next.query_pairs_mut();
            qp.append_pair("max", &max.to_string());
            if !shared.faults().drop_filters_in_next_link {
                qp.append_pair("from", &iso(from));
                qp.append_pair("to", &iso(to));
                qp.append_pair("status", status);
                if let Some(s) = service {
                    qp.append_pair("serviceType", s);
                }
                if let Some(f) = p.get("format") {
                    qp.append_pair("format", f);
                }
            }
            qp.append_pair("cursor", &encode_cursor(last));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// The recording `id` of the caller's org, if the caller may see it now:
/// created by the simulator clock, and purged ones only for compliance officers.
fn visible<'a>(shared: &'a Shared, bearer: &Bearer, id: &str) -> Result<&'a CallingRec, Response> {
    let not_found = || router_error(shared, StatusCode::NOT_FOUND, NOT_FOUND, NOT_FOUND);
    let &(oi, i) = shared.data.calling_index.get(id).ok_or_else(not_found)?;
    let r = &shared.data.calling[oi][i];
    let same_org = shared.data.orgs[oi].id == bearer.org_id;
    let allowed = r.status != "purged" || bearer.has_any(&[COMPLIANCE_SCOPE]);
    if !same_org || !allowed || r.create_ms > shared.now_ms() {
        return Err(not_found());
    }
    Ok(r)
}

/// `GET /v1/convergedRecordings/{id}`: links only for compliance officers of orgs
/// without Prevent Downloading, valid for 3 h (or `calling_url_expiry_secs`).
pub(crate) async fn details(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let bearer = match gate(&shared, "calling_details", &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r = match visible(&shared, &bearer, &id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut m = item_json(r);
    let prevented = lock(&shared.prevent_downloading).contains(&bearer.org_id)
        || shared.faults().calling_withheld_ids.contains(&r.id);
    if bearer.has_any(&[COMPLIANCE_SCOPE]) && !prevented {
        let faults = shared.faults();
        let ttl = faults.calling_url_expiry_secs.unwrap_or(LINK_TTL_SECS);
        let now = shared.now_ms();
        let bearer_host = faults.calling_media_requires_bearer;
        let link =
            |file| download_link(&shared, &bearer.org_id, &r.id, file, now, ttl, bearer_host);
        let mut links = Map::new();
        links.insert("audioDownloadLink".into(), json!(link("audio")));
        if r.transcript.is_some() {
            links.insert("transcriptDownloadLink".into(), json!(link("transcript")));
        }
        let ttl_ms = i64::try_from(ttl.saturating_mul(1_000)).unwrap_or(i64::MAX / 4);
        links.insert("expiration".into(), json!(iso(now + ttl_ms)));
        m.insert("temporaryDirectDownloadLinks".into(), Value::Object(links));
    }
    axum::Json(Value::Object(m)).into_response()
}

fn actor_type(owner_type: &str) -> &'static str {
    match owner_type {
        "user" => "PERSON",
        "place" => "PLACE",
        "virtualLine" => "VIRTUAL_LINE",
        _ => "CALL_QUEUE",
    }
}

/// `GET /v1/convergedRecordings/{id}/metadata[?showAllTypes=true]`: 204 with no body
/// until `createTime + calling_metadata_not_ready_secs`.
pub(crate) async fn metadata(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let bearer = match gate(&shared, "calling_metadata", &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r = match visible(&shared, &bearer, &id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let wait_ms = i64::try_from(
        shared
            .faults()
            .calling_metadata_not_ready_secs
            .saturating_mul(1_000),
    )
    .unwrap_or(i64::MAX / 4);
    if shared.now_ms() < r.create_ms.saturating_add(wait_ms) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let dur_ms = i64::try_from(r.duration_secs() * 1_000).unwrap_or(0);
    let own = json!({ "actor": { "type": actor_type(r.owner_type), "id": r.owner_id } });
    let (mut calling, mut called) = if r.personality == "originator" {
        (own, json!({}))
    } else {
        (json!({}), own)
    };
    calling["number"] = json!(r.calling_number);
    called["number"] = json!(r.called_number);
    let mut service_data = json!({
        "callRecordingId": r.call_recording_id,
        "locationId": r.location_id,
        "callSessionId": r.call_session_id,
        "callId": r.call_id,
        "personality": r.personality,
        "callingParty": calling,
        "calledParty": called,
        "session": {
            "startTime": iso(r.time_recorded_ms),
            "stopTime": iso(r.time_recorded_ms + dur_ms),
        },
        "recordingType": r.recording_type,
        "recordingActions": [],
    });
    if parse_pairs(q.as_deref())
        .get("showAllTypes")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        service_data["callActivity"] = json!([
            { "type": "CALL_START", "time": iso(r.time_recorded_ms) },
            { "type": "CALL_END", "time": iso(r.time_recorded_ms + dur_ms) },
        ]);
    }
    let mut body = json!({
        "id": r.id,
        "orgId": bearer.org_id,
        "ownerId": r.owner_id,
        "ownerType": r.owner_type,
        "ownerName": r.owner_name,
        "storageRegion": "US",
        "serviceType": r.service_type,
        "version": "1.2",
        "serviceData": service_data,
    });
    if let Some(e) = &r.owner_email {
        body["ownerEmail"] = json!(e);
    }
    axum::Json(body).into_response()
}
