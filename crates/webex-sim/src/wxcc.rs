//! WxCC APIs: tasks, captures and users (webex-api.md §2.3, §2.4, §2.6, §2.10).
// Handler helpers return the finished error `Response` as `Err`; it goes
// straight back to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::dataset::{Agent, Org, Recording, View};
use crate::http::{injected_5xx, latency, parse_pairs, too_many, wxcc_error, wxcc_ok};
use crate::late;
use crate::media::signed_url;
use crate::state::{Bearer, BearerError, Shared, lock};

const CHANNEL_TYPES: &[&str] = &["email", "chat", "telephony", "social"];
const READ_SCOPES: &[&str] = &["cjp:config_read", "cjp:config"];
const USER_SCOPES: &[&str] = &["cjp:config_read", "cjp:config_write"];
const CAPTURE_SCOPES: &[&str] = &["cjp:config_read"];

/// Common front door of every WxCC API call: counting, latency, bearer
/// authentication, the per-client rate limit, injected faults and the scope check.
async fn gate(
    shared: &Shared,
    endpoint: &str,
    headers: &HeaderMap,
    scopes: &[&str],
) -> Result<Bearer, Response> {
    shared.count(endpoint);
    latency(shared).await;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token else {
        return Err(wxcc_error(
            shared,
            StatusCode::BAD_REQUEST,
            "Authorization header with a Bearer token is missing or invalid.",
        ));
    };
    let now = shared.now_ms();
    let bearer = lock(&shared.auth).bearer(&token, now);
    let bearer = match bearer {
        Ok(b) => b,
        Err(BearerError::Expired) => {
            return Err(wxcc_error(
                shared,
                StatusCode::UNAUTHORIZED,
                "Token has expired.",
            ));
        }
        Err(BearerError::Unknown | BearerError::Revoked) => {
            return Err(wxcc_error(
                shared,
                StatusCode::UNAUTHORIZED,
                "Incorrect Credentials.",
            ));
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
    if !bearer.has_any(scopes) {
        return Err(wxcc_error(
            shared,
            StatusCode::FORBIDDEN,
            &format!(
                "Insufficient scope: one of {} is required.",
                scopes.join(", ")
            ),
        ));
    }
    Ok(bearer)
}

fn org_of<'a>(
    shared: &'a Shared,
    bearer: &Bearer,
    requested: Option<&str>,
) -> Result<&'a Org, Response> {
    if let Some(req) = requested
        && req != bearer.org_id
    {
        return Err(wxcc_error(
            shared,
            StatusCode::FORBIDDEN,
            "The orgId does not match the organization of the access token.",
        ));
    }
    shared
        .data
        .org(&bearer.org_id)
        .map(|(_, o)| o)
        .ok_or_else(|| wxcc_error(shared, StatusCode::NOT_FOUND, "Organization not found."))
}

fn parse_ms(shared: &Shared, name: &str, v: &str) -> Result<i64, Response> {
    v.trim().parse::<i64>().map_err(|_| {
        wxcc_error(
            shared,
            StatusCode::BAD_REQUEST,
            &format!("Invalid value for {name}: must be epoch milliseconds."),
        )
    })
}

/// `GET /v1/tasks`: ascending by `createdTime`, no paging links.
pub(crate) async fn tasks(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match tasks_inner(&shared, &headers, q.as_deref()).await {
        Ok(r) | Err(r) => r,
    }
}

async fn tasks_inner(
    shared: &Shared,
    headers: &HeaderMap,
    q: Option<&str>,
) -> Result<Response, Response> {
    let bearer = gate(shared, "tasks", headers, READ_SCOPES).await?;
    let p = parse_pairs(q);
    let org = org_of(shared, &bearer, p.get("orgId").map(String::as_str))?;
    let bad = |msg: &str| wxcc_error(shared, StatusCode::BAD_REQUEST, msg);
    let from = parse_ms(
        shared,
        "from",
        p.get("from").ok_or_else(|| bad("from is required."))?,
    )?;
    let now = shared.now_ms();
    let to = match p.get("to") {
        Some(v) => parse_ms(shared, "to", v)?,
        None => now,
    };
    if to < from {
        return Err(bad("to must not be earlier than from."));
    }
    let page_size = match p.get("pageSize") {
        None => 100,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(bad("pageSize must be between 1 and 1000.")),
        },
    };
    let channels: Option<Vec<String>> = match p.get("channelTypes") {
        None => None,
        Some(v) => {
            let list: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(badc) = list.iter().find(|c| !CHANNEL_TYPES.contains(&c.as_str())) {
                return Err(bad(&format!("Invalid channelTypes value: {badc}")));
            }
            Some(list)
        }
    };
    let data: Vec<Value> = org
        .tasks
        .iter()
        .filter(|t| t.created_ms >= from && t.created_ms < to && t.created_ms <= now)
        .filter(|t| {
            channels
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c == t.channel_type))
        })
        .take(page_size)
        .map(|t| {
            let queue = &org.queues[t.queue];
            let mut attrs = json!({
                "queue": { "id": queue.id, "name": queue.name },
                "channelType": t.channel_type,
                "status": t.status,
                "createdTime": t.created_ms,
                "lastUpdatedTime": t.last_updated_ms,
                "captureRequested": t.capture_requested,
                "origin": t.origin,
                "destination": t.destination,
                "direction": t.direction,
            });
            if let Some(a) = t.owner {
                let agent = &org.agents[a];
                attrs["owner"] = json!({
                    "id": agent.ci_user_id,
                    "name": format!("{} {}", agent.first_name, agent.last_name),
                });
            }
            json!({ "id": t.id, "attributes": attrs })
        })
        .collect();
    Ok(wxcc_ok(
        shared,
        json!({ "meta": { "orgId": org.id }, "data": data }),
    ))
}

/// `POST /v1/captures/query`.
pub(crate) async fn captures(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match captures_inner(&shared, &headers, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn captures_inner(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Response> {
    let bearer = gate(shared, "captures", headers, CAPTURE_SCOPES).await?;
    let bad = |msg: &str| wxcc_error(shared, StatusCode::BAD_REQUEST, msg);
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad("Request body is not valid JSON."))?;
    let query = v
        .get("query")
        .filter(|q| q.is_object())
        .ok_or_else(|| bad("query is required."))?;
    let org = org_of(shared, &bearer, query.get("orgId").and_then(Value::as_str))?;
    let ids: Vec<&str> = query
        .get("taskIds")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("taskIds is required."))?
        .iter()
        .map(|x| x.as_str().ok_or_else(|| bad("taskIds must be strings.")))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(bad("taskIds must not be empty."));
    }
    if ids.len() > 10 {
        return Err(bad("taskIds must contain at most 10 ids."));
    }
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Err(bad("taskIds must be unique."));
    }
    let minutes = match query.get("urlExpiration") {
        None | Some(Value::Null) => 60,
        Some(x) => match x.as_i64() {
            Some(n) if n <= 0 => return Err(bad("Error: urlExpiration should be greater than 0.")),
            Some(n) if n > 60 => {
                return Err(bad(
                    "Error: urlExpiration should be less than or equal to 60.",
                ));
            }
            Some(n) => n,
            None => return Err(bad("urlExpiration must be an integer.")),
        },
    };
    let faults = shared.faults();
    if let Some(id) = ids
        .iter()
        .find(|id| faults.refused_task_ids.iter().any(|r| r == *id))
    {
        return Err(bad(&format!("Invalid taskId: {id}")));
    }
    let withheld = |id: &str| faults.withheld_task_ids.iter().any(|w| w == id);
    let flag = |name: &str| query.get(name).and_then(Value::as_bool).unwrap_or(false);
    let (segments, va) = (flag("includeSegments"), flag("includeVARecordings"));
    let now = shared.now_ms();
    let expires_secs = faults
        .url_expiry_secs
        .unwrap_or(u64::try_from(minutes).unwrap_or(60) * 60);
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            let task = shared.data.tasks.get(*id).and_then(|&(oi, ti)| {
                (shared.data.orgs[oi].id == org.id).then(|| (oi, ti, &org.tasks[ti]))
            });
            let recs: Vec<Value> = task
                .filter(|(_, _, t)| !withheld(&t.id))
                .map(|(oi, ti, t)| {
                    let late = late::of_task(shared, oi, ti);
                    t.recordings
                        .iter()
                        .chain(late.iter().map(|l| &l.rec))
                        .filter(|r| r.available_at_ms <= now && visible(r.view, segments, va))
                        .map(|r| recording_json(shared, &org.id, &t.id, r, now, expires_secs))
                        .collect()
                })
                .unwrap_or_default();
            json!({ "taskId": id, "recording": recs, "transcription": [] })
        })
        .collect();
    Ok(wxcc_ok(
        shared,
        json!({ "meta": { "orgId": org.id, "urlExpiration": minutes }, "data": data }),
    ))
}

fn visible(view: View, segments: bool, va: bool) -> bool {
    match view {
        View::Default => true,
        View::StitchedMain => !segments,
        View::Segment => segments,
        View::VirtualAgent => va,
    }
}

fn recording_json(
    shared: &Shared,
    org_id: &str,
    task_id: &str,
    r: &Recording,
    now: i64,
    expires_secs: u64,
) -> Value {
    let time = |ms: i64| {
        if r.times_as_strings {
            json!(ms.to_string())
        } else {
            json!(ms)
        }
    };
    let mut attrs = json!({
        "fileName": r.file_name,
        "filePath": signed_url(shared, org_id, task_id, &r.id, &r.file_name, now, expires_secs),
        "startTime": time(r.start_ms),
        "stopTime": time(r.stop_ms),
        "participants": r.participants,
        "channel1": "Caller",
        "channel2": r.channel2,
        "callType": r.call_type,
    });
    if r.view == View::VirtualAgent {
        attrs["sensitive"] = json!(false);
    }
    json!({ "id": r.id, "segment": r.segment, "attributes": attrs })
}

fn user_json(org: &Org, a: &Agent) -> Value {
    json!({
        "id": a.cc_id,
        "ciUserId": a.ci_user_id,
        "organizationId": org.id,
        "firstName": a.first_name,
        "lastName": a.last_name,
        "email": a.email,
        "workPhone": null,
        "mobile": null,
        "externalIdentifier": a.email,
        "siteId": a.site_id,
        "siteName": "Main Site",
        "teamIds": [a.team_id],
        "contactCenterEnabled": true,
        "active": true,
        "timezone": "America/New_York",
        "version": 1,
    })
}

/// `GET /organization/{orgId}/user/by-ci-user-id/{ciUserId}`.
pub(crate) async fn user_by_ci(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((org_id, ci)): Path<(String, String)>,
) -> Response {
    let run = async {
        let bearer = gate(&shared, "users", &headers, USER_SCOPES).await?;
        let org = org_of(&shared, &bearer, Some(&org_id))?;
        org.agents
            .iter()
            .find(|a| a.ci_user_id == ci)
            .map(|a| wxcc_ok(&shared, user_json(org, a)))
            .ok_or_else(|| wxcc_error(&shared, StatusCode::NOT_FOUND, "User not found."))
    };
    match run.await {
        Ok(r) | Err(r) => r,
    }
}

/// `GET /organization/{orgId}/user/{id}`: lookup by Contact Center resource id.
pub(crate) async fn user_by_id(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((org_id, id)): Path<(String, String)>,
) -> Response {
    let run = async {
        let bearer = gate(&shared, "users", &headers, USER_SCOPES).await?;
        let org = org_of(&shared, &bearer, Some(&org_id))?;
        org.agents
            .iter()
            .find(|a| a.cc_id == id)
            .map(|a| wxcc_ok(&shared, user_json(org, a)))
            .ok_or_else(|| wxcc_error(&shared, StatusCode::NOT_FOUND, "User not found."))
    };
    match run.await {
        Ok(r) | Err(r) => r,
    }
}

/// `GET /organization/{orgId}/v2/user` with RSQL `filter`, `search`, `page`, `pageSize`.
pub(crate) async fn users_v2(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let run = async {
        let bearer = gate(&shared, "users", &headers, USER_SCOPES).await?;
        let org = org_of(&shared, &bearer, Some(&org_id))?;
        let p = parse_pairs(q.as_deref());
        let bad = |msg: &str| wxcc_error(&shared, StatusCode::BAD_REQUEST, msg);
        let page: usize = p
            .get("page")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| bad("page must be a non-negative integer."))?;
        let page_size: usize = p
            .get("pageSize")
            .map_or(Ok(100), |v| v.parse())
            .map_err(|_| bad("pageSize must be a positive integer."))?;
        if page_size == 0 {
            return Err(bad("pageSize must be a positive integer."));
        }
        let page_size = page_size.min(1000);
        let filter = match p.get("filter") {
            Some(f) => {
                Some(crate::rsql::parse(f).map_err(|e| bad(&format!("Invalid filter: {e}")))?)
            }
            None => None,
        };
        if let Some(f) = &filter
            && let Some(unknown) = f
                .fields()
                .into_iter()
                .find(|fld| !USER_FIELDS.contains(fld))
        {
            return Err(bad(&format!("Invalid filter: unknown field {unknown}")));
        }
        let search = p.get("search").map(|s| s.to_ascii_lowercase());
        let matching: Vec<&Agent> = org
            .agents
            .iter()
            .filter(|a| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&|field| agent_field(a, field)))
            })
            .filter(|a| {
                search.as_ref().is_none_or(|s| {
                    [&a.first_name, &a.last_name, &a.email]
                        .iter()
                        .any(|v| v.to_ascii_lowercase().contains(s.as_str()))
                })
            })
            .collect();
        let total = matching.len();
        let total_pages = total.div_ceil(page_size);
        let data: Vec<Value> = matching
            .iter()
            .skip(page * page_size)
            .take(page_size)
            .map(|a| user_json(org, a))
            .collect();
        let link = |pg: usize| {
            let mut u = shared.base_url.clone();
            u.set_path(&format!("organization/{}/v2/user", org.id));
            {
                let mut qp = u.query_pairs_mut();
                qp.append_pair("page", &pg.to_string());
                qp.append_pair("pageSize", &page_size.to_string());
                if let Some(f) = p.get("filter") {
                    qp.append_pair("filter", f);
                }
            }
            u.to_string()
        };
        let mut links = json!({
            "self": link(page),
            "first": link(0),
            "last": link(total_pages.saturating_sub(1)),
        });
        if page + 1 < total_pages {
            links["next"] = json!(link(page + 1));
        }
        if page > 0 {
            links["prev"] = json!(link(page - 1));
        }
        Ok(wxcc_ok(
            &shared,
            json!({
                "meta": {
                    "orgid": org.id, "page": page, "pageSize": page_size,
                    "totalPages": total_pages, "totalRecords": total, "links": links
                },
                "data": data
            }),
        ))
    };
    match run.await {
        Ok(r) | Err(r) => r,
    }
}

/// Fields the user filter understands.
const USER_FIELDS: &[&str] = &[
    "id",
    "ciUserId",
    "email",
    "firstName",
    "lastName",
    "siteId",
    "active",
    "contactCenterEnabled",
];

fn agent_field(a: &Agent, field: &str) -> Option<String> {
    Some(match field {
        "id" => a.cc_id.clone(),
        "ciUserId" => a.ci_user_id.clone(),
        "email" => a.email.clone(),
        "firstName" => a.first_name.clone(),
        "lastName" => a.last_name.clone(),
        "siteId" => a.site_id.clone(),
        "active" | "contactCenterEnabled" => "true".to_owned(),
        _ => return None,
    })
}
