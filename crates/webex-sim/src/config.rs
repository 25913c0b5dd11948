//! Simulator configuration: who may log in, what data exists, what goes wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Scopes every simulated integration has registered unless
/// [`SimConfig::registered_scopes`] says otherwise.
pub const DEFAULT_REGISTERED_SCOPES: &[&str] = &[
    "spark:kms",
    "spark:people_read",
    "cjp:config",
    "cjp:config_read",
    "cjp:config_write",
    "cjp:user",
    "spark-admin:recordings_read",
    "spark-compliance:recordings_read",
    "identity:tokens_write",
];

/// Top-level simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the dataset and of every injected fault.
    pub seed: u64,
    /// Shape of the generated orgs, tasks and recordings.
    pub dataset: DatasetSpec,
    /// Registered OAuth integrations.
    pub clients: Vec<SimClient>,
    /// Scopes registered on every client; granted scopes are requested ∩ registered.
    pub registered_scopes: Vec<String>,
    /// Access-token lifetime (`expires_in`); WxCC-like 12 h by default.
    pub access_ttl_secs: u64,
    /// Refresh-token lifetime (`refresh_token_expires_in`) from the consent.
    pub refresh_ttl_secs: u64,
    /// When `true`, every refresh returns a new refresh token (with a fresh
    /// lifetime) and invalidates the old one. Default `false`: Webex has been
    /// observed returning the same refresh token with its countdown running.
    pub rotate_refresh_tokens: bool,
    /// API requests per rolling window (a minute unless [`Self::rate_limit_window_secs`]
    /// says otherwise) per client id; `None` disables the limit.
    pub rate_limit_per_minute: Option<u32>,
    /// Length of the rolling window [`Self::rate_limit_per_minute`] counts over; 60 like
    /// Webex. Tests shorten it so a limit is reached in seconds instead of minutes.
    pub rate_limit_window_secs: u64,
    /// A request of a client id arriving while a `Retry-After` the simulator gave that client
    /// id is still running counts in [`crate::Stats::retry_after_violations`] — unless it
    /// arrives within this many milliseconds of the 429, when it counts in
    /// [`crate::Stats::retry_after_in_flight`] instead: it was sent before the 429 could
    /// have reached any client. 0 (default) counts every such request as a violation.
    pub retry_after_grace_ms: u64,
    /// When `true`, token requests (`POST /v1/access_token`) count against their client id's
    /// [`Self::rate_limit_per_minute`] like API requests, and get the 429s of
    /// [`Faults::rate_429_rate`] too. Default `false`: webex-api.md documents the limit for the
    /// APIs and is silent on the token endpoint (UNCERTAIN), so tests opt in.
    pub rate_limit_token_endpoint: bool,
    /// Fault injection knobs; changeable at run time.
    pub faults: Faults,
    /// What the consent page does; changeable at run time.
    pub consent: ConsentMode,
    /// Simulator time at start (epoch ms). `None` = the wall clock at start,
    /// truncated to the second. Fix it to make manifests byte-comparable.
    pub start_ms: Option<i64>,
    /// When `true` (default) the simulator clock also moves with real time;
    /// when `false` it only moves through `advance_clock` (fully deterministic tests).
    pub realtime_clock: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            dataset: DatasetSpec::small(),
            clients: vec![SimClient::demo()],
            registered_scopes: DEFAULT_REGISTERED_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            access_ttl_secs: 43_199,
            refresh_ttl_secs: 7_775_999,
            rotate_refresh_tokens: false,
            rate_limit_per_minute: Some(300),
            rate_limit_window_secs: 60,
            retry_after_grace_ms: 0,
            rate_limit_token_endpoint: false,
            faults: Faults::default(),
            consent: ConsentMode::Approve,
            start_ms: None,
            realtime_clock: true,
        }
    }
}

/// A registered OAuth integration.
#[derive(Clone, Serialize, Deserialize)]
pub struct SimClient {
    /// Client id; Webex ids begin with `C`.
    pub client_id: String,
    /// Client secret (test credential; redacted from `Debug`).
    pub client_secret: String,
    /// Registered redirect URIs; empty accepts any absolute URI.
    pub redirect_uris: Vec<String>,
}

impl fmt::Debug for SimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

impl SimClient {
    /// Client id of [`SimClient::demo`].
    pub const DEMO_CLIENT_ID: &'static str =
        "C0de5e11a7edb0b5e2a1f0c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";
    /// Client secret of [`SimClient::demo`]; public on purpose, it only opens the simulator.
    pub const DEMO_CLIENT_SECRET: &'static str =
        "simsecret0f6c2b9e4d7a1358c0e2f4a6b8d0c2e4f6a8b0d2c4e6f8a0b2c4d6e8";

    /// The fixed demo integration: [`Self::DEMO_CLIENT_ID`] /
    /// [`Self::DEMO_CLIENT_SECRET`], accepting any redirect URI.
    #[must_use]
    pub fn demo() -> Self {
        Self {
            client_id: Self::DEMO_CLIENT_ID.to_owned(),
            client_secret: Self::DEMO_CLIENT_SECRET.to_owned(),
            redirect_uris: Vec::new(),
        }
    }
}

/// Shape of the generated dataset. Everything is derived from
/// [`SimConfig::seed`]; the knobs only choose sizes and mixes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Number of orgs.
    pub orgs: u32,
    /// Tasks are spread over this many days before the simulator start.
    pub days: u32,
    /// Tasks per org (excluding the large-recording task).
    pub tasks_per_org: u32,
    /// Agents per org.
    pub agents_per_org: u32,
    /// Share of tasks that are telephony (the rest are chat/email/social).
    pub telephony_share: f64,
    /// Smallest generated recording, in bytes.
    pub min_recording_bytes: u64,
    /// Largest generated recording, in bytes.
    pub max_recording_bytes: u64,
    /// Per org, the newest tasks whose captures become available only after
    /// the simulator start (a few minutes of sim time later).
    pub pending_tasks_per_org: u32,
    /// Whether the first tasks of each org deterministically cover every edge
    /// case (no owner, `captureRequested` null/false, several recordings,
    /// segments, a VA leg, shared `createdTime`, non-unique file names).
    pub edge_cases: bool,
    /// Bench mode: exactly this many recordings in total, all tasks telephony
    /// with `captureRequested: true`, all captures available at start.
    pub exact_recordings: Option<u32>,
    /// One extra task with a single recording of this many bytes.
    pub large_recording_bytes: Option<u64>,
    /// Webex Calling converged recordings per org, generated on their own
    /// random stream so the WxCC data is the same whatever this is. With
    /// [`Self::edge_cases`], the first is zero bytes long and the second has
    /// no transcript.
    #[serde(default)]
    pub calling_per_org: u32,
    /// Per org, telephony tasks (`captureRequested: true`, one recording each) created after
    /// the simulator start, in `(start, start + future_hours]`: hidden from `/v1/tasks` until
    /// the simulator clock passes their `createdTime`, their captures a few minutes after the
    /// call ends. Generated on their own random stream, so the rest of the dataset is the same
    /// whatever this is. For tests of a service that keeps harvesting as time goes on.
    #[serde(default)]
    pub future_tasks_per_org: u32,
    /// The span after the start over which [`Self::future_tasks_per_org`] are spread, in hours
    /// (at least 1 when there are future tasks).
    #[serde(default)]
    pub future_hours: u32,
}

impl DatasetSpec {
    /// Test dataset: 2 orgs × 20 tasks over 2 days, every edge case, tiny WAVs.
    #[must_use]
    pub fn small() -> Self {
        Self {
            orgs: 2,
            days: 2,
            tasks_per_org: 20,
            agents_per_org: 4,
            telephony_share: 0.75,
            min_recording_bytes: 4_044,
            max_recording_bytes: 24_044,
            pending_tasks_per_org: 2,
            edge_cases: true,
            exact_recordings: None,
            large_recording_bytes: None,
            calling_per_org: 0,
            future_tasks_per_org: 0,
            future_hours: 0,
        }
    }

    /// Demo dataset: 1 org, 1 day, ~150 telephony tasks (plus a few chats and
    /// emails), small WAVs, every edge case, and 12 Webex Calling recordings.
    #[must_use]
    pub fn demo() -> Self {
        Self {
            orgs: 1,
            days: 1,
            tasks_per_org: 165,
            agents_per_org: 8,
            telephony_share: 0.92,
            min_recording_bytes: 8_044,
            max_recording_bytes: 64_044,
            pending_tasks_per_org: 3,
            edge_cases: true,
            exact_recordings: None,
            large_recording_bytes: None,
            calling_per_org: 12,
            future_tasks_per_org: 0,
            future_hours: 0,
        }
    }

    /// Benchmark dataset: one org with exactly `tasks` telephony tasks
    /// (`captureRequested: true`) created within the last 24 h, carrying
    /// exactly `recordings` recordings of about `recording_bytes` (±5 %),
    /// all available at start.
    #[must_use]
    pub fn bench(tasks: u32, recordings: u32, recording_bytes: u64) -> Self {
        let spread = recording_bytes / 20;
        Self {
            orgs: 1,
            days: 1,
            tasks_per_org: tasks,
            agents_per_org: 50,
            telephony_share: 1.0,
            min_recording_bytes: recording_bytes.saturating_sub(spread).max(48),
            max_recording_bytes: (recording_bytes + spread).max(48),
            pending_tasks_per_org: 0,
            edge_cases: false,
            exact_recordings: Some(recordings),
            large_recording_bytes: None,
            calling_per_org: 0,
            future_tasks_per_org: 0,
            future_hours: 0,
        }
    }

    /// Adds one telephony task (in the first org) with one recording of
    /// `bytes` (exact when `bytes - 44` is a multiple of 4; at most 4 GiB).
    /// The audio is generated while streaming, never held in memory.
    #[must_use]
    pub fn with_large_recording(mut self, bytes: u64) -> Self {
        self.large_recording_bytes = Some(bytes);
        self
    }

    /// Sets [`Self::future_tasks_per_org`] and [`Self::future_hours`]: `n` telephony tasks per
    /// org that appear over the `hours` after the start, as the simulator clock moves.
    #[must_use]
    pub fn with_future_tasks(mut self, n: u32, hours: u32) -> Self {
        self.future_tasks_per_org = n;
        self.future_hours = hours;
        self
    }

    /// Sets [`Self::calling_per_org`]: `n` Webex Calling recordings per org.
    #[must_use]
    pub fn with_calling(mut self, n: u32) -> Self {
        self.calling_per_org = n;
        self
    }
}

/// Fault-injection knobs. Rates are probabilities in `[0, 1]` applied per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// API, token and media requests answered with 500/502/503.
    pub error_5xx_rate: f64,
    /// API requests answered with 429 regardless of the real budget.
    pub rate_429_rate: f64,
    /// Media bodies cut short (the `Content-Length` still announces the full size).
    pub truncate_rate: f64,
    /// Added latency before every response, in milliseconds.
    pub latency_ms: u64,
    /// Further latency of the token endpoint only, in milliseconds: the request is received
    /// (and counted) at once and processed (a refresh token checked and rotated) after it.
    pub token_latency_ms: u64,
    /// Overrides the capture-link lifetime in seconds (`0` = already expired).
    pub url_expiry_secs: Option<u64>,
    /// Share of 429 responses whose `Retry-After` is malformed (`rand(30),add(30)`).
    pub malformed_retry_after_rate: f64,
    /// Share of 429 responses carrying the gateway JSON body instead of none.
    pub gateway_429_body_rate: f64,
    /// When `true`, token responses omit `token_type` (older Webex examples).
    pub omit_token_type: bool,
    /// Task ids that make a captures query fail with 400 when any of them is in it (a task
    /// Webex cannot answer for, poisoning its whole batch).
    pub refused_task_ids: Vec<String>,
    /// Task ids whose captures are not listed yet, whatever their availability time (a capture
    /// Webex produces late, after re-processing); removing an id makes them appear.
    pub withheld_task_ids: Vec<String>,
    /// Webex Calling list: `Link: rel="next"` URLs keep only `max` and the cursor,
    /// dropping `from`/`to`/`status`/`serviceType`/`format` (webex-api.md §3.8). A
    /// client that does not add them back gets the defaults (available, both
    /// service types, the 7 days before now) from the cursor on.
    pub drop_filters_in_next_link: bool,
    /// Webex Calling metadata answers 204 with no body until `createTime` plus
    /// this many seconds on the simulator clock.
    pub calling_metadata_not_ready_secs: u64,
    /// Overrides the 3 h lifetime of Calling download links (`0` = already expired).
    pub calling_url_expiry_secs: Option<u64>,
    /// Calling download links point at the main (Webex API) host and need
    /// `Authorization: Bearer <valid token of the org>` there (401 without),
    /// instead of the ticket-only media host that refuses any `Authorization`.
    pub calling_media_requires_bearer: bool,
    /// Calling recording ids whose details carry no download links, as when Prevent
    /// Downloading is on for their owner only.
    pub calling_withheld_ids: Vec<String>,
}

/// What the consent page answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentMode {
    /// The admin approves: redirect with `code` and `state`.
    #[default]
    Approve,
    /// The admin declines: redirect with `error=access_denied`.
    Deny,
    /// An admin blocked the integration: `error=access_denied` plus the Control Hub page text.
    Blocked,
    /// For browser tests: `GET /v1/authorize` answers 200 with an HTML consent page whose
    /// "Accept" (`#accept`) and "Decline" (`#decline`) buttons post to
    /// `/v1/authorize/decision`, which then redirects like [`Self::Approve`] or [`Self::Deny`].
    Interactive,
}

/// The consent-page text Webex shows when an admin blocked the integration (webex-api.md §1.9).
pub const BLOCKED_PAGE_TEXT: &str = "Access denied - Your administrator denied access to the integration you selected. We captured your request and will let them know";

/// Error parsing a [`ConsentMode`] name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown consent mode {0:?}; expected approve, deny, blocked or interactive")]
pub struct ParseConsentModeError(String);

impl FromStr for ConsentMode {
    type Err = ParseConsentModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "approve" => Ok(Self::Approve),
            "deny" => Ok(Self::Deny),
            "blocked" | "block" => Ok(Self::Blocked),
            "interactive" => Ok(Self::Interactive),
            _ => Err(ParseConsentModeError(s.to_owned())),
        }
    }
}
