//! Webex Contact Center APIs: tasks, captures and users (webex-api.md §2).
//!
//! Parsing is deliberately tolerant: every element is parsed on its own, so one malformed task
//! or recording becomes a [`Rejected`] entry instead of failing the page; epoch fields accept
//! numbers or numeric strings; `attributes` are kept exactly as received for the sidecar.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use url::Url;

use crate::api::ApiCaller;
use crate::http::{RateGate, RetryPolicy};
use crate::media::{LinkPolicy, MediaClient};
use crate::oauth::endpoint_url;
use crate::{Access, Error, TokenProvider, json};

const TASKS: &str = "GET /v1/tasks";
const CAPTURES: &str = "POST /v1/captures/query";
const USER_BY_CI: &str = "GET /organization/{org}/user/by-ci-user-id/{id}";
const USERS_V2: &str = "GET /organization/{org}/v2/user";

/// Largest `pageSize` `/v1/tasks` accepts.
pub const TASKS_PAGE_SIZE: u32 = 1000;
/// Most task ids one captures query accepts.
pub const CAPTURES_MAX_TASKS: usize = 10;
/// Ids per batched users request (keeps the RSQL filter URL well under common limits).
const USERS_BATCH: usize = 50;
/// Page size for the v2 users list.
const USERS_PAGE_SIZE: u32 = 100;
/// Safety stop for a users listing whose metadata never says "last page".
const USERS_MAX_PAGES: u32 = 1000;

/// The WxCC API root for `region`: substitutes `{region}` in `template`
/// (e.g. `https://api.wxcc-{region}.cisco.com/`); a template without it is used as-is.
///
/// # Errors
///
/// [`Error::Config`] when the region is not a plain lowercase token (`us1`, `eu2`, ...) or the
/// result is not an absolute http(s) URL.
pub fn api_base_for_region(template: &str, region: &str) -> Result<Url, Error> {
    let url = if template.contains("{region}") {
        let region = region.trim();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::Config(format!(
                "WxCC region {region:?} is not a region code like us1, eu2 or anz1"
            )));
        }
        template.replace("{region}", region)
    } else {
        template.to_owned()
    };
    let parsed = Url::parse(url.trim())
        .map_err(|e| Error::Config(format!("WxCC API base {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::Config(format!(
            "WxCC API base {url:?} must be an http(s) URL with a host"
        )));
    }
    Ok(parsed)
}

/// An element that could not be understood; reported, never fatal to the page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Its id, when it had one.
    pub id: Option<String>,
    /// What was wrong with it.
    pub reason: String,
}

/// An agent or queue reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Party {
    /// Id (for an owner, possibly a CI user id — UNCERTAIN).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

/// One `/v1/tasks` element.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// `createdTime`, epoch ms.
    pub created_time_ms: i64,
    /// `lastUpdatedTime` (changes after close: never a watermark).
    pub last_updated_time_ms: Option<i64>,
    /// `true` = a capture will appear, `false` = none will, `None` = not known yet.
    pub capture_requested: Option<bool>,
    /// `channelType`.
    pub channel_type: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// Last agent assigned (absent on IVR-only/abandoned calls).
    pub owner: Option<Party>,
    /// Queue.
    pub queue: Option<Party>,
    /// The task's `attributes` object exactly as received.
    pub attributes: Value,
}

/// One parsed `/v1/tasks` response.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TasksPage {
    /// `meta.orgId`.
    pub org_id: Option<String>,
    /// Tasks understood.
    pub tasks: Vec<Task>,
    /// Elements not understood.
    pub rejected: Vec<Rejected>,
    /// Number of elements in `data` (understood or not): compared with the page size.
    pub raw_len: usize,
}

/// Result of [`WxccClient::list_tasks`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TaskListing {
    /// Distinct tasks with `from_ms <= createdTime < to_ms`, in discovery order.
    pub tasks: Vec<Task>,
    /// Elements not understood.
    pub rejected: Vec<Rejected>,
    /// Requests made that returned a page.
    pub pages: u32,
    /// Tasks returned outside the requested window, dropped.
    pub dropped_out_of_window: u32,
}

/// Captures for one task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskCaptures {
    /// Task id.
    pub task_id: String,
    /// Every recording (main, consult, VA legs); empty when none (yet).
    pub recordings: Vec<Capture>,
}

/// One recording from a captures query.
///
/// `Debug` is hand-written: `file_path` is a pre-signed link whose query string is a bearer
/// capability, so only its host and path are shown.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct Capture {
    /// Capture id: the recording's unique key.
    pub id: String,
    /// Whether this is a segment of the main recording.
    pub segment: bool,
    /// `fileName` (not unique; never a key).
    pub file_name: Option<String>,
    /// Pre-signed media URL.
    pub file_path: Option<String>,
    /// `startTime`, epoch ms.
    pub start_time_ms: Option<i64>,
    /// `stopTime`, epoch ms.
    pub stop_time_ms: Option<i64>,
    /// Agent CI ids, masked customer numbers, VA ids.
    pub participants: Vec<String>,
    /// `channel1` (`Caller`/`Agent`/`VA`).
    pub channel1: Option<String>,
    /// `channel2`.
    pub channel2: Option<String>,
    /// `callType` (`main`, `consult`, `va-main`, `va-consult`).
    pub call_type: Option<String>,
    /// The recording's `attributes` exactly as received.
    pub attributes: Value,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("id", &self.id)
            .field("segment", &self.segment)
            .field("file_name", &self.file_name)
            .field(
                "file_path",
                &self
                    .file_path
                    .as_deref()
                    .map(|p| format!("{} [query redacted]", crate::media::redacted_location(p))),
            )
            .field("start_time_ms", &self.start_time_ms)
            .field("stop_time_ms", &self.stop_time_ms)
            .field("participants", &self.participants)
            .field("channel1", &self.channel1)
            .field("channel2", &self.channel2)
            .field("call_type", &self.call_type)
            .field("attributes", &redacted_attributes(&self.attributes))
            .finish()
    }
}

/// `attributes` for `Debug`: a copy without `filePath` (it repeats the signed link).
fn redacted_attributes(attributes: &Value) -> Value {
    let mut v = attributes.clone();
    if let Value::Object(m) = &mut v
        && m.contains_key("filePath")
    {
        m.insert(
            "filePath".to_owned(),
            Value::String("[redacted]".to_owned()),
        );
    }
    v
}

impl std::fmt::Display for Capture {
    /// Never prints `file_path`: its query string is a bearer capability.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "capture {}", self.id)
    }
}

/// Result of [`WxccClient::query_captures`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CapturesResult {
    /// One entry per task in the response.
    pub tasks: Vec<TaskCaptures>,
    /// Tasks or recordings not understood.
    pub rejected: Vec<Rejected>,
}

/// A WxCC user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// CC resource id.
    pub id: Option<String>,
    /// Common Identity user id.
    pub ci_user_id: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<String>,
}

/// Client for one org's WxCC APIs.
pub struct WxccClient {
    api: ApiCaller,
    api_base: Url,
    org_id: String,
    media: MediaClient,
}

impl std::fmt::Debug for WxccClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxccClient")
            .field("api_base", &self.api_base.as_str())
            .field("org_id", &self.org_id)
            .field("api_calls", &self.api_calls())
            .finish_non_exhaustive()
    }
}

impl WxccClient {
    /// A client for org `org_id` (UUID) at `api_base` (see [`api_base_for_region`]).
    /// `gate` must be the shared gate of the integration's client id.
    pub fn new(
        http: reqwest::Client,
        api_base: Url,
        org_id: String,
        tokens: Arc<dyn TokenProvider>,
        gate: Arc<RateGate>,
        retry: RetryPolicy,
    ) -> Self {
        let media = MediaClient::new(
            LinkPolicy::for_api_base(&api_base),
            retry.clone(),
            gate.health().clone(),
        );
        WxccClient {
            api: ApiCaller::new(http, tokens, gate, retry),
            api_base,
            org_id,
            media,
        }
    }

    /// The downloader for this API's media links: links must be `https` to public addresses
    /// unless the API base itself is loopback (see [`LinkPolicy::for_api_base`]).
    pub fn media(&self) -> &MediaClient {
        &self.media
    }

    /// HTTP requests this client has sent (including retries), for the benchmark.
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    /// The org this client queries.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        endpoint_url(&self.api_base, path)
    }

    /// One GET /v1/tasks page (channelTypes=telephony, orgId always sent).
    ///
    /// # Errors
    ///
    /// Classified API errors (see [`Error::class`]); [`Error::Decode`] when the body is not a
    /// JSON object or `data` is not an array.
    pub async fn tasks_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        page_size: u32,
    ) -> Result<TasksPage, Error> {
        let url = self.url("v1/tasks")?;
        let query = [
            ("from", from_ms.to_string()),
            ("to", to_ms.to_string()),
            ("channelTypes", "telephony".to_owned()),
            ("pageSize", page_size.to_string()),
            ("orgId", self.org_id.clone()),
        ];
        let resp = self
            .api
            .send(TASKS, &Access::WXCC, &[], |c| {
                c.get(url.clone()).query(&query)
            })
            .await?;
        parse_tasks_page(&resp.body)
    }

    /// All telephony tasks with `from_ms <= createdTime < to_ms` (webex-api.md §2.3).
    ///
    /// Pages by re-querying from the last `createdTime - 1` with pageSize 1000, de-duplicates
    /// on id, stops on a short page or a page with no new ids, drops (and counts) out-of-window
    /// items, and halves the window on a 400/413 that mentions the range or size.
    /// `from_ms >= to_ms` returns an empty listing without a request. Callers should keep
    /// windows at 24 h or less and clamp `to_ms` to now (webex-api.md §2.3).
    ///
    /// # Errors
    ///
    /// [`Error::PageOverflow`] when a full page shares one `createdTime` (paging by re-query
    /// cannot get past it); otherwise the first page error that halving could not fix.
    pub async fn list_tasks(&self, from_ms: i64, to_ms: i64) -> Result<TaskListing, Error> {
        let mut listing = TaskListing::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut seen_rejected: HashSet<String> = HashSet::new();
        let mut span = to_ms.saturating_sub(from_ms);
        let mut win_start = from_ms;
        'windows: while win_start < to_ms {
            let win_end = win_start.saturating_add(span).min(to_ms);
            // `from` may be exclusive: start 1 ms early and filter locally.
            let mut cursor = win_start.saturating_sub(1);
            loop {
                let page = match self.tasks_page(cursor, win_end, TASKS_PAGE_SIZE).await {
                    Ok(p) => p,
                    Err(e) if window_too_large(&e) && win_end - cursor > 2 => {
                        let resume = cursor.saturating_add(1).max(win_start);
                        span = ((win_end - resume) / 2).max(1);
                        tracing::info!(error = %e, new_span_ms = span, "tasks window rejected as too large; halving");
                        win_start = resume;
                        continue 'windows;
                    }
                    Err(e) => return Err(e),
                };
                listing.pages += 1;
                let mut new_ids = 0usize;
                let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
                for task in page.tasks {
                    min_t = min_t.min(task.created_time_ms);
                    max_t = max_t.max(task.created_time_ms);
                    if !seen.insert(task.id.clone()) {
                        continue;
                    }
                    new_ids += 1;
                    if task.created_time_ms < from_ms || task.created_time_ms >= to_ms {
                        listing.dropped_out_of_window += 1;
                        continue;
                    }
                    listing.tasks.push(task);
                }
                for r in page.rejected {
                    match &r.id {
                        Some(id) if !seen_rejected.insert(id.clone()) => {}
                        _ => listing.rejected.push(r),
                    }
                }
                let full = page.raw_len >= TASKS_PAGE_SIZE as usize;
                if !full || new_ids == 0 || max_t == i64::MIN {
                    break;
                }
                let next = max_t - 1;
                if min_t == max_t || next <= cursor {
                    return Err(Error::PageOverflow {
                        endpoint: TASKS.to_owned(),
                        created_time_ms: max_t,
                        page_size: TASKS_PAGE_SIZE,
                    });
                }
                cursor = next;
            }
            win_start = win_end;
        }
        Ok(listing)
    }

    /// POST /v1/captures/query for at most 10 task ids (`includeSegments: false`,
    /// `includeVARecordings: true`). Duplicate ids are sent once; `url_expiration_min` is
    /// clamped to 1–60. An empty list returns an empty result without a request.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] (Permanent, no request sent) for more than 10 distinct ids;
    /// classified API errors; [`Error::Decode`] when the body is not an object with a `data`
    /// array.
    pub async fn query_captures(
        &self,
        task_ids: &[String],
        url_expiration_min: u32,
    ) -> Result<CapturesResult, Error> {
        let mut unique: Vec<&str> = Vec::with_capacity(task_ids.len());
        for id in task_ids {
            if !unique.contains(&id.as_str()) {
                unique.push(id);
            }
        }
        if unique.len() > CAPTURES_MAX_TASKS {
            return Err(Error::InvalidRequest {
                endpoint: CAPTURES.to_owned(),
                reason: format!(
                    "{} task ids given; the API accepts at most {CAPTURES_MAX_TASKS} per query",
                    unique.len()
                ),
            });
        }
        if unique.is_empty() {
            return Ok(CapturesResult::default());
        }
        let body = serde_json::json!({
            "query": {
                "orgId": self.org_id,
                "taskIds": unique,
                "urlExpiration": url_expiration_min.clamp(1, 60),
                "includeSegments": false,
                "includeVARecordings": true,
            }
        });
        let url = self.url("v1/captures/query")?;
        let resp = self
            .api
            .send(CAPTURES, &Access::WXCC, &[], |c| {
                c.post(url.clone()).json(&body)
            })
            .await?;
        parse_captures(&resp.body)
    }

    /// GET /organization/{org}/user/by-ci-user-id/{id}; 404 → `Ok(None)`.
    ///
    /// # Errors
    ///
    /// Classified API errors; [`Error::Decode`] when the body is not a user object.
    pub async fn user_by_ci_id(&self, ci_user_id: &str) -> Result<Option<User>, Error> {
        let mut url = self.url("organization/")?;
        url.path_segments_mut()
            .map_err(|()| Error::Config(format!("API base {} cannot have paths", self.api_base)))?
            .pop_if_empty()
            .extend([self.org_id.as_str(), "user", "by-ci-user-id", ci_user_id]);
        let resp = self
            .api
            .send(USER_BY_CI, &Access::WXCC, &[404], |c| c.get(url.clone()))
            .await?;
        if resp.status == 404 {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&resp.body).map_err(|e| Error::Decode {
            what: "user".to_owned(),
            location: format!("{USER_BY_CI} for {ci_user_id}"),
            detail: format!("body is not JSON: {e}"),
        })?;
        let obj = match &v {
            Value::Object(o) => match o.get("data") {
                Some(Value::Object(d)) => d,
                Some(Value::Array(items)) => match items.first() {
                    Some(Value::Object(d)) => d,
                    _ => return Ok(None),
                },
                _ => o,
            },
            other => {
                return Err(Error::Decode {
                    what: "user".to_owned(),
                    location: format!("{USER_BY_CI} for {ci_user_id}"),
                    detail: format!("body is {}, not an object", json::kind(other)),
                });
            }
        };
        Ok(Some(parse_user(obj)))
    }

    /// Batched v2 list with filter `ciUserId=in=("…")`, paged; duplicates in the input are
    /// queried once. A 400 → `Err` (the caller falls back to single lookups).
    ///
    /// # Errors
    ///
    /// Classified API errors (a filter the server does not support is an [`Error::Http`] 400);
    /// [`Error::Decode`] when a page is not understood.
    pub async fn users_by_ci_ids(&self, ci_user_ids: &[String]) -> Result<Vec<User>, Error> {
        let mut unique: Vec<&str> = Vec::new();
        for id in ci_user_ids {
            if !id.is_empty() && !unique.contains(&id.as_str()) {
                unique.push(id);
            }
        }
        let mut url = self.url("organization/")?;
        url.path_segments_mut()
            .map_err(|()| Error::Config(format!("API base {} cannot have paths", self.api_base)))?
            .pop_if_empty()
            .extend([self.org_id.as_str(), "v2", "user"]);
        let mut users = Vec::new();
        for chunk in unique.chunks(USERS_BATCH) {
            let filter = format!(
                "ciUserId=in=({})",
                chunk
                    .iter()
                    .map(|id| format!("\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut page: u32 = 0;
            loop {
                let query = [
                    ("filter", filter.clone()),
                    ("page", page.to_string()),
                    ("pageSize", USERS_PAGE_SIZE.to_string()),
                ];
                let resp = self
                    .api
                    .send(USERS_V2, &Access::WXCC, &[], |c| {
                        c.get(url.clone()).query(&query)
                    })
                    .await?;
                let parsed = parse_users_page(&resp.body, page)?;
                let got = parsed.users.len();
                users.extend(parsed.users);
                page += 1;
                let more = match parsed.more {
                    Some(m) => m,
                    None => got >= USERS_PAGE_SIZE as usize,
                };
                if !more || got == 0 || page >= USERS_MAX_PAGES {
                    break;
                }
            }
        }
        Ok(users)
    }
}

/// Whether an error is the server refusing the time window (webex-api.md §2.3 Tolerate).
fn window_too_large(e: &Error) -> bool {
    match e {
        Error::Http { status: 413, .. } => true,
        Error::Http {
            status: 400, body, ..
        } => {
            let b = body.to_ascii_lowercase().replace("pagesize", "");
            [
                "range",
                "window",
                "interval",
                "duration",
                "too large",
                "too many",
                "exceed",
                "timestamp",
                "size",
                "24 hours",
            ]
            .iter()
            .any(|k| b.contains(k))
        }
        _ => false,
    }
}

fn decode_err(what: &str, location: &str, detail: String) -> Error {
    Error::Decode {
        what: what.to_owned(),
        location: location.to_owned(),
        detail,
    }
}

/// Finds the `data` array of a response object; missing or `null` means "no items".
fn data_array<'a>(v: &'a Value, what: &str, location: &str) -> Result<&'a [Value], Error> {
    let Value::Object(o) = v else {
        return Err(decode_err(
            what,
            location,
            format!("body is {}, not an object", json::kind(v)),
        ));
    };
    match o.get("data") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(decode_err(
            what,
            location,
            format!("`data` is {}, not an array", json::kind(other)),
        )),
    }
}

fn parse_json(body: &[u8], what: &str, location: &str) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .map_err(|e| decode_err(what, location, format!("body is not JSON: {e}")))
}

/// Parses a `/v1/tasks` response body.
pub(crate) fn parse_tasks_page(body: &[u8]) -> Result<TasksPage, Error> {
    let v = parse_json(body, "tasks page", TASKS)?;
    let items = data_array(&v, "tasks page", TASKS)?;
    let org_id = json::string(v.get("meta").and_then(|m| m.get("orgId")));
    let mut tasks = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for item in items {
        match parse_task(item) {
            Ok(t) => tasks.push(t),
            Err(r) => rejected.push(r),
        }
    }
    Ok(TasksPage {
        org_id,
        tasks,
        rejected,
        raw_len: items.len(),
    })
}

fn parse_party(v: Option<&Value>) -> Option<Party> {
    match v? {
        Value::Object(o) => {
            let p = Party {
                id: json::string(o.get("id")),
                name: json::string(o.get("name")),
            };
            (p.id.is_some() || p.name.is_some()).then_some(p)
        }
        _ => None,
    }
}

fn parse_task(item: &Value) -> Result<Task, Rejected> {
    let Value::Object(o) = item else {
        return Err(Rejected {
            id: None,
            reason: format!("task element is {}, not an object", json::kind(item)),
        });
    };
    let id = json::string(o.get("id"));
    let reject = |reason: String| Rejected {
        id: id.clone(),
        reason,
    };
    let Some(task_id) = id.clone() else {
        return Err(reject("task has no id".to_owned()));
    };
    let empty = Map::new();
    let attrs = match o.get("attributes") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => &empty,
        Some(other) => {
            return Err(reject(format!(
                "task attributes is {}, not an object",
                json::kind(other)
            )));
        }
    };
    // `createdTime` belongs in attributes; accept it at the top level too.
    let field = |name: &str| attrs.get(name).or_else(|| o.get(name));
    let Some(created) = json::epoch_ms(field("createdTime")) else {
        return Err(reject(match field("createdTime") {
            None | Some(Value::Null) => "task has no createdTime".to_owned(),
            Some(v) => format!(
                "task createdTime is {}, not epoch milliseconds",
                json::kind(v)
            ),
        }));
    };
    Ok(Task {
        id: task_id,
        created_time_ms: created,
        last_updated_time_ms: json::epoch_ms(field("lastUpdatedTime")),
        capture_requested: json::boolean(field("captureRequested")),
        channel_type: json::string(field("channelType")),
        status: json::string(field("status")),
        owner: parse_party(field("owner")),
        queue: parse_party(field("queue")),
        attributes: o.get("attributes").cloned().unwrap_or(Value::Null),
    })
}

/// Parses a `/v1/captures/query` response body.
pub(crate) fn parse_captures(body: &[u8]) -> Result<CapturesResult, Error> {
    let v = parse_json(body, "captures", CAPTURES)?;
    let items = data_array(&v, "captures", CAPTURES)?;
    let mut out = CapturesResult::default();
    for item in items {
        let Value::Object(o) = item else {
            out.rejected.push(Rejected {
                id: None,
                reason: format!("captures element is {}, not an object", json::kind(item)),
            });
            continue;
        };
        let Some(task_id) = json::string(o.get("taskId")) else {
            out.rejected.push(Rejected {
                id: None,
                reason: "captures element has no taskId".to_owned(),
            });
            continue;
        };
        let recs: &[Value] = match o.get("recording") {
            Some(Value::Array(r)) => r,
            None | Some(Value::Null) => &[],
            Some(other) => {
                out.rejected.push(Rejected {
                    id: Some(task_id.clone()),
                    reason: format!("task recording is {}, not an array", json::kind(other)),
                });
                &[]
            }
        };
        let mut recordings = Vec::with_capacity(recs.len());
        for rec in recs {
            match parse_capture(rec) {
                Ok(c) => recordings.push(c),
                Err(reason) => out.rejected.push(Rejected {
                    id: json::string(rec.get("id")).or_else(|| Some(task_id.clone())),
                    reason: format!("task {task_id}: {reason}"),
                }),
            }
        }
        out.tasks.push(TaskCaptures {
            task_id,
            recordings,
        });
    }
    Ok(out)
}

fn parse_capture(rec: &Value) -> Result<Capture, String> {
    let Value::Object(o) = rec else {
        return Err(format!("recording is {}, not an object", json::kind(rec)));
    };
    let id = json::string(o.get("id")).ok_or_else(|| "recording has no id".to_owned())?;
    let empty = Map::new();
    let attrs = match o.get("attributes") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => &empty,
        Some(other) => {
            return Err(format!(
                "recording {id} attributes is {}, not an object",
                json::kind(other)
            ));
        }
    };
    let participants = match attrs.get("participants") {
        Some(Value::Array(ps)) => ps.iter().filter_map(|p| json::string(Some(p))).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    };
    Ok(Capture {
        segment: json::boolean(o.get("segment")).unwrap_or(false),
        file_name: json::string(attrs.get("fileName")),
        file_path: json::string(attrs.get("filePath")),
        start_time_ms: json::epoch_ms(attrs.get("startTime")),
        stop_time_ms: json::epoch_ms(attrs.get("stopTime")),
        participants,
        channel1: json::string(attrs.get("channel1")),
        channel2: json::string(attrs.get("channel2")),
        call_type: json::string(attrs.get("callType")),
        attributes: o.get("attributes").cloned().unwrap_or(Value::Null),
        id,
    })
}

fn parse_user(o: &Map<String, Value>) -> User {
    User {
        id: json::string(o.get("id")),
        ci_user_id: json::string(o.get("ciUserId")),
        first_name: json::string(o.get("firstName")),
        last_name: json::string(o.get("lastName")),
        email: json::string(o.get("email")),
    }
}

struct UsersPage {
    users: Vec<User>,
    /// `Some(true/false)` when the metadata says whether another page exists.
    more: Option<bool>,
}

fn parse_users_page(body: &[u8], page: u32) -> Result<UsersPage, Error> {
    let v = parse_json(body, "users page", USERS_V2)?;
    let items: &[Value] = match &v {
        Value::Array(items) => items,
        _ => data_array(&v, "users page", USERS_V2)?,
    };
    let users = items
        .iter()
        .filter_map(|u| match u {
            Value::Object(o) => Some(parse_user(o)),
            _ => None,
        })
        .collect();
    let meta = v.get("meta");
    let more = meta.and_then(|m| {
        let links = m.get("links");
        if let Some(l) = links.filter(|l| l.is_object()) {
            return Some(json::string(l.get("next")).is_some());
        }
        let total = json::epoch_ms(m.get("totalPages"))?;
        let current = json::epoch_ms(m.get("page")).unwrap_or(i64::from(page));
        Some(current + 1 < total)
    });
    Ok(UsersPage { users, more })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn region_templating() {
        let u = api_base_for_region("https://api.wxcc-{region}.cisco.com/", "eu2").unwrap();
        assert_eq!(u.as_str(), "https://api.wxcc-eu2.cisco.com/");
        let fixed = api_base_for_region("http://127.0.0.1:8080/wxcc/", "us1").unwrap();
        assert_eq!(fixed.as_str(), "http://127.0.0.1:8080/wxcc/");
        for bad in ["", "US1", "us1/../x", "us 1"] {
            assert!(matches!(
                api_base_for_region("https://api.wxcc-{region}.cisco.com/", bad),
                Err(Error::Config(_))
            ));
        }
        assert!(api_base_for_region("not a url", "us1").is_err());
        assert!(api_base_for_region("ftp://x/", "us1").is_err());
    }

    #[test]
    fn parses_spec_task_example() {
        let body = json!({ "meta": { "orgId": "3dae8fdd-06e2-411a-9035-51f3719f5b65" },
          "data": [ { "id": "93912f11-6017-404b-bf14-5331890b1797", "attributes": {
              "owner": { "id": "e0c7611b", "name": "Joseph Lambert" },
              "queue": { "id": "89cf3b93", "name": "Technical Support Queue" },
              "channelType": "telephony", "status": "completed", "createdTime": 1591702170000_i64,
              "lastUpdatedTime": 1591712170099_i64, "captureRequested": true,
              "origin": "+15555550100", "direction": "inbound" } } ] });
        let page = parse_tasks_page(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            page.org_id.as_deref(),
            Some("3dae8fdd-06e2-411a-9035-51f3719f5b65")
        );
        assert_eq!(page.raw_len, 1);
        let t = &page.tasks[0];
        assert_eq!(t.id, "93912f11-6017-404b-bf14-5331890b1797");
        assert_eq!(t.created_time_ms, 1591702170000);
        assert_eq!(t.last_updated_time_ms, Some(1591712170099));
        assert_eq!(t.capture_requested, Some(true));
        assert_eq!(t.channel_type.as_deref(), Some("telephony"));
        assert_eq!(t.status.as_deref(), Some("completed"));
        assert_eq!(
            t.owner.as_ref().unwrap().name.as_deref(),
            Some("Joseph Lambert")
        );
        assert_eq!(t.queue.as_ref().unwrap().id.as_deref(), Some("89cf3b93"));
        // Attributes kept verbatim, including unknown fields.
        assert_eq!(t.attributes["origin"], "+15555550100");
        assert_eq!(t.attributes, body["data"][0]["attributes"]);
    }

    #[test]
    fn tasks_tolerate_strings_missing_owner_and_bad_elements() {
        let body = json!({ "data": [
            { "id": "a", "attributes": { "createdTime": "1000", "lastUpdatedTime": "2000",
                                          "captureRequested": null } },
            { "id": "b", "attributes": { "createdTime": 5, "owner": null, "queue": {} } },
            { "attributes": { "createdTime": 7 } },
            { "id": "d", "attributes": { "createdTime": "later" } },
            { "id": "e", "attributes": {} },
            { "id": "f", "attributes": [1] },
            42
        ]});
        let page = parse_tasks_page(body.to_string().as_bytes()).unwrap();
        assert_eq!(page.raw_len, 7);
        assert_eq!(page.org_id, None);
        assert_eq!(page.tasks.len(), 2);
        assert_eq!(page.tasks[0].created_time_ms, 1000);
        assert_eq!(page.tasks[0].last_updated_time_ms, Some(2000));
        assert_eq!(page.tasks[0].capture_requested, None);
        assert_eq!(page.tasks[0].owner, None);
        assert_eq!(page.tasks[1].owner, None);
        assert_eq!(page.tasks[1].queue, None);
        let ids: Vec<_> = page.rejected.iter().map(|r| r.id.as_deref()).collect();
        assert_eq!(ids, vec![None, Some("d"), Some("e"), Some("f"), None]);
        assert!(page.rejected[1].reason.contains("createdTime"));
        assert!(page.rejected[2].reason.contains("no createdTime"));
    }

    #[test]
    fn tasks_page_body_errors() {
        assert!(parse_tasks_page(b"{}").unwrap().tasks.is_empty());
        assert!(
            parse_tasks_page(br#"{"data":null}"#)
                .unwrap()
                .tasks
                .is_empty()
        );
        for bad in [&b"[]"[..], b"nope", br#"{"data":{}}"#] {
            let e = parse_tasks_page(bad).unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{e}");
            assert_eq!(e.class(), crate::ErrorClass::Permanent);
        }
    }

    #[test]
    fn parses_captures_spec_and_production_shapes() {
        let body = json!({ "meta": { "orgId": "f1b1", "urlExpiration": 30 },
        "data": [
          { "taskId": "t1",
            "recording": [
              { "id": "r1", "segment": false, "attributes": {
                  "fileName": "recording-1.wav", "filePath": "https://bucket.s3/x.wav?X-Amz-Signature=abc",
                  "startTime": 1617373126000_i64, "stopTime": 1627373126000_i64,
                  "participants": ["agent-ci", "+121****1219"],
                  "channel1": "Caller", "channel2": "Agent", "callType": "main", "extra": 1 } },
              { "id": "r2", "segment": "true", "attributes": {
                  "fileName": "combinedRecordings.wav", "filePath": "https://b/y.wav",
                  "startTime": "1661785612510", "stopTime": "1661785616249" } },
              { "segment": false, "attributes": {} },
              { "id": "r4" }
            ],
            "transcription": [] },
          { "taskId": "t2", "recording": [], "transcription": [] },
          { "taskId": "t3" },
          { "recording": [] }
        ]});
        let r = parse_captures(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.tasks.len(), 3);
        let t1 = &r.tasks[0];
        assert_eq!(t1.task_id, "t1");
        assert_eq!(t1.recordings.len(), 3);
        let c = &t1.recordings[0];
        assert_eq!(c.id, "r1");
        assert!(!c.segment);
        assert_eq!(c.file_name.as_deref(), Some("recording-1.wav"));
        assert_eq!(c.start_time_ms, Some(1617373126000));
        assert_eq!(c.participants, vec!["agent-ci", "+121****1219"]);
        assert_eq!(c.channel2.as_deref(), Some("Agent"));
        assert_eq!(c.call_type.as_deref(), Some("main"));
        assert_eq!(c.attributes["extra"], 1);
        assert!(!c.to_string().contains("Signature"));
        let c2 = &t1.recordings[1];
        assert!(c2.segment);
        assert_eq!(c2.start_time_ms, Some(1661785612510));
        assert_eq!(c2.stop_time_ms, Some(1661785616249));
        assert!(c2.participants.is_empty());
        let c4 = &t1.recordings[2];
        assert_eq!(c4.id, "r4");
        assert_eq!(c4.file_path, None);
        assert!(r.tasks[1].recordings.is_empty());
        assert!(r.tasks[2].recordings.is_empty());
        assert_eq!(r.rejected.len(), 2);
        assert!(r.rejected[0].reason.contains("t1"));
        assert!(r.rejected[1].reason.contains("taskId"));
    }

    #[test]
    fn users_page_parsing_and_paging_metadata() {
        let body = json!({ "meta": { "page": 0, "pageSize": 100, "totalPages": 2,
                                     "links": { "self": "/x", "next": "/x?page=1" } },
          "data": [ { "id": "cc1", "ciUserId": "ci1", "firstName": "Ann", "lastName": "Lee",
                      "email": "ann@example.com", "active": true } ] });
        let p = parse_users_page(body.to_string().as_bytes(), 0).unwrap();
        assert_eq!(p.more, Some(true));
        assert_eq!(
            p.users[0],
            User {
                id: Some("cc1".into()),
                ci_user_id: Some("ci1".into()),
                first_name: Some("Ann".into()),
                last_name: Some("Lee".into()),
                email: Some("ann@example.com".into()),
            }
        );
        let last = json!({ "meta": { "page": 1, "totalPages": 2 }, "data": [] });
        assert_eq!(
            parse_users_page(last.to_string().as_bytes(), 1)
                .unwrap()
                .more,
            Some(false)
        );
        let bare = json!([{ "ciUserId": "ci9" }]);
        let p = parse_users_page(bare.to_string().as_bytes(), 0).unwrap();
        assert_eq!(p.more, None);
        assert_eq!(p.users[0].ci_user_id.as_deref(), Some("ci9"));
    }

    #[test]
    fn window_too_large_detection() {
        let http = |status, body: &str| Error::Http {
            endpoint: TASKS.into(),
            status,
            tracking_id: None,
            body: body.into(),
            retry_after: None,
        };
        assert!(window_too_large(&http(413, "")));
        assert!(window_too_large(&http(400, "Time range exceeds 24 hours")));
        assert!(window_too_large(&http(400, "result size too large")));
        assert!(!window_too_large(&http(400, "pageSize must be <= 1000")));
        assert!(!window_too_large(&http(400, "orgId is invalid")));
        assert!(!window_too_large(&http(500, "range")));
    }

    #[test]
    fn capture_debug_redacts_the_signed_link() {
        let link = "https://bucket.s3.amazonaws.com/o/a.wav?X-Amz-Signature=SIGSECRET123&X-Amz-Credential=CREDSECRET";
        let cap = parse_capture(&json!({
            "id": "c1",
            "attributes": { "filePath": link, "fileName": "a.wav", "participants": ["p1"] }
        }))
        .unwrap();
        assert_eq!(cap.file_path.as_deref(), Some(link));
        let dbg = format!("{cap:?}");
        let pretty = format!("{cap:#?}");
        for out in [&dbg, &pretty] {
            assert!(!out.contains("SIGSECRET123"), "{out}");
            assert!(!out.contains("CREDSECRET"), "{out}");
            assert!(out.contains("bucket.s3.amazonaws.com/o/a.wav"), "{out}");
            assert!(out.contains("a.wav") && out.contains("c1"), "{out}");
        }
        let result = CapturesResult {
            tasks: vec![TaskCaptures {
                task_id: "t1".into(),
                recordings: vec![cap],
            }],
            rejected: Vec::new(),
        };
        assert!(!format!("{result:?}").contains("SIGSECRET123"));
    }
}
