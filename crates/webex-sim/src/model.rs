//! Plain data handed to tests and tools: the ground truth and the counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wav::TalkSpan;

/// A simulated customer organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimOrg {
    /// Bare org UUID, as WxCC uses it.
    pub org_id: String,
    /// Display name; also accepted as `login_hint` on the consent page.
    pub name: String,
    /// WxCC region, e.g. `us1`.
    pub region: String,
}

/// Tokens minted directly by [`crate::SimHandle::issue_grant`] (test/demo API).
#[derive(Debug, Clone, Serialize)]
pub struct GrantTokens {
    /// Bearer token for the WxCC APIs.
    pub access_token: String,
    /// Refresh token for `grant_type=refresh_token`.
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// Refresh-token lifetime in seconds.
    pub refresh_token_expires_in: u64,
}

/// Ground truth for one org: what a perfect archiver ends up with.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Every task of the org, sorted by `created_ms`, including non-telephony ones.
    pub tasks: Vec<ExpectedTask>,
    /// Every recording a default captures query (`includeSegments:false`,
    /// `includeVARecordings:false`) returns once available.
    pub recordings: Vec<ExpectedRecording>,
    /// Captures returned only with `includeSegments:true` (segments) or
    /// `includeVARecordings:true` (virtual-agent legs).
    pub optional_recordings: Vec<ExpectedRecording>,
}

impl Manifest {
    /// Recordings a default captures query shows at sim time `now_ms`.
    #[must_use]
    pub fn available_at(&self, now_ms: i64) -> Vec<&ExpectedRecording> {
        self.recordings
            .iter()
            .filter(|r| r.available_at_ms <= now_ms)
            .collect()
    }
}

/// One task as `/v1/tasks` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTask {
    /// Task id.
    pub task_id: String,
    /// `createdTime`, epoch ms.
    pub created_ms: i64,
    /// `telephony`, `chat`, `email` or `social`.
    pub channel_type: String,
    /// `captureRequested`: `None` means the API sends `null`.
    pub capture_requested: Option<bool>,
    /// CI user id of the owning agent; `None` for IVR-only or abandoned calls.
    pub owner_ci_id: Option<String>,
    /// `status`, e.g. `completed` or `abandoned`.
    pub status: String,
}

/// One capture and the exact bytes the media URL serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedRecording {
    /// Task the capture belongs to.
    pub task_id: String,
    /// Capture id (`recording[].id`); unique.
    pub recording_id: String,
    /// `createdTime` of the task.
    pub task_created_ms: i64,
    /// `attributes.fileName`; deliberately not unique.
    pub file_name: String,
    /// Exact size of the served file.
    pub size_bytes: u64,
    /// Lowercase hex sha256 of the served bytes.
    pub sha256: String,
    /// Sim time from which the captures query lists it.
    pub available_at_ms: i64,
    /// `recording[].segment`.
    pub segment: bool,
    /// `attributes.callType`: `main`, `consult`, `va-main`.
    pub call_type: String,
    /// Audio length in milliseconds.
    pub duration_ms: u64,
    /// Who talks when (caller = left channel, agent = right channel).
    pub talk_spans: Vec<TalkSpan>,
}

/// Ground truth of one org's Webex Calling converged recordings, separate from
/// the WxCC [`Manifest`].
#[derive(Debug, Clone, Serialize)]
pub struct CallingManifest {
    /// Every recording of the org (every status, including those created after
    /// the simulator start), newest `createTime` first.
    pub recordings: Vec<ExpectedCallingRecording>,
}

/// One Calling recording and the exact bytes its audio link serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedCallingRecording {
    /// Recording id (`id`).
    pub id: String,
    /// `available`, `deleted` or `purged` (purged: compliance scope only).
    pub status: String,
    /// `calling` or `customerAssist`.
    pub service_type: String,
    /// `user`, `place`, `virtualLine` or `callQueue`.
    pub owner_type: String,
    /// `ownerId`.
    pub owner_id: String,
    /// `timeRecorded`, epoch ms.
    pub time_recorded_ms: i64,
    /// `createTime`, epoch ms; the API hides the recording before it.
    pub create_time_ms: i64,
    /// `durationSeconds`.
    pub duration_seconds: u64,
    /// `sizeBytes`: the exact length of the served MP3 (0 for the zero-size edge case).
    pub size_bytes: u64,
    /// Lowercase hex sha256 of the served MP3.
    pub sha256: String,
    /// Whether details carry a `transcriptDownloadLink`.
    pub has_transcript: bool,
    /// Lowercase hex sha256 of the WebVTT transcript, when there is one.
    pub transcript_sha256: Option<String>,
    /// Who talks when (caller = left channel, agent = right channel), relative to
    /// the input audio; a decoder adds the encoder delay (about 50 ms).
    pub talk_spans: Vec<TalkSpan>,
}

/// Request counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per endpoint: `access_token`, `authorize`, `authorize_decision`,
    /// `authorizations` (admin revocation), `tasks`, `captures`, `users`, `media`,
    /// and for Webex Calling `calling_list`, `calling_details`, `calling_metadata`,
    /// `calling_media` (both media hosts).
    pub by_endpoint: BTreeMap<String, u64>,
    /// 429 answers (real budget exhausted or injected).
    pub throttled_429: u64,
    /// 429 answers because a client id's real budget
    /// ([`crate::SimConfig::rate_limit_per_minute`]) was exhausted: requests beyond the limit.
    #[serde(default)]
    pub rate_limited_429: u64,
    /// Highest number of requests one client id had in the rolling rate-limit window (the
    /// refused ones not counted).
    #[serde(default)]
    pub peak_requests_in_window: u64,
    /// API requests that arrived from a client id while a `Retry-After` the simulator gave it
    /// was still running (past [`crate::SimConfig::retry_after_grace_ms`]).
    #[serde(default)]
    pub retry_after_violations: u64,
    /// Requests that arrived during a `Retry-After` but within the grace after the 429
    /// (already in flight when the 429 was sent).
    #[serde(default)]
    pub retry_after_in_flight: u64,
    /// Successful `grant_type=refresh_token` requests (each one minted an access token).
    #[serde(default)]
    pub refresh_grants: u64,
    /// Token requests refused with `invalid_grant` (a dead, revoked or rotated-away
    /// refresh token, or a bad authorization code).
    #[serde(default)]
    pub invalid_grant: u64,
    /// Injected 5xx answers.
    pub injected_5xx: u64,
    /// Media body bytes handed to the network.
    pub media_bytes: u64,
    /// Requests to the Calling media host that carried an `Authorization`
    /// header (answered 400): a client leaking its bearer token off Webex.
    #[serde(default)]
    pub calling_media_with_authorization: u64,
}
