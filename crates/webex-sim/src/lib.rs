//! A faithful, seeded simulator of the Webex APIs wxvault uses.
//!
//! It is written from `webex-api.md` alone and deliberately shares no types
//! with the `webex` client crate: if both sides read a field the same wrong
//! way, tests against the simulator would still pass. One loopback server
//! stands in for every host: `webexapis.com` (OAuth, Webex Calling converged
//! recordings), `api.wxcc-*.cisco.com` (tasks, captures, users) and the S3
//! media bucket (pre-signed WAV links). A second listener plays the Webex
//! Calling download host (`*.dmz.webex.com`): 127.0.0.2 on the same port when
//! it can be bound, else 127.0.0.2 on its own port, else a second port on the
//! main address ([`SimServer::calling_media_url`]).
//!
//! * **Deterministic**: ids, names, times (relative to [`SimConfig::start_ms`])
//!   and audio bytes derive from [`SimConfig::seed`]; [`SimHandle::manifest`]
//!   is the ground truth an archiver must reproduce.
//! * **Controllable time**: [`SimHandle::advance_clock`] makes delayed captures
//!   appear and links, codes and tokens expire, so no test waits for real time.
//! * **Faithful quirks**: WxCC error bodies with `TrackingId`, 429 with
//!   `Retry-After` and no body, `startTime` as number *or* string, non-unique
//!   file names, tasks without owner, `captureRequested: null`, no paging
//!   links on `/v1/tasks`, S3-style XML errors on media.
//! * **Streaming media**: WAV bytes are synthesised per chunk (see
//!   [`SimConfig::dataset`] / [`DatasetSpec::with_large_recording`]), so a 1 GiB
//!   recording never sits in memory.
//!
//! Semantics chosen where webex-api.md is UNCERTAIN: `/v1/tasks` `from` is
//! inclusive and `to` exclusive (clients overlap by 1 ms anyway); tasks created
//! after the sim clock are hidden; `urlExpiration` outside 1..=60 is a 400;
//! refresh keeps the refresh token and its countdown unless
//! [`SimConfig::rotate_refresh_tokens`]; a missing/garbled `Authorization`
//! header on WxCC is 400, an unknown, expired or revoked token 401, a missing
//! scope or foreign `orgId` 403; media with an `Authorization` header is 400.
//! `DELETE /v1/authorizations` needs only a valid token of the org (real Webex also
//! wants `identity:tokens_write` and an admin role), defaults `orgId` to the
//! token's org, answers 204 for a client id with no grants, and errors in the
//! router shape (`message`, `errors[].description`, `trackingId`).
//!
//! Limits and counters for distributed clients: [`SimConfig::rate_limit_per_minute`] counts
//! per client id over a rolling [`SimConfig::rate_limit_window_secs`] (60 s like Webex; tests
//! shorten it); every 429's `Retry-After` is remembered per client id, and a request of that
//! client id arriving before it ends is counted in [`Stats::retry_after_violations`] (or, within
//! [`SimConfig::retry_after_grace_ms`] of the 429, in [`Stats::retry_after_in_flight`]).
//! [`Stats::rate_limited_429`] counts requests beyond the limit, [`Stats::peak_requests_in_window`]
//! the busiest window, [`SimHandle::accepted_request_times`] the arrival time of every API
//! request the limit let through (8 bytes each, kept for the server's life, so a test can
//! compute the rate sustained over any span), [`Stats::refresh_grants`] successful refreshes and
//! [`Stats::invalid_grant`] refused token requests; all are in `GET /_sim/stats`. With
//! [`SimConfig::rotate_refresh_tokens`] every refresh revokes the refresh token it was given.
//! Token requests are outside the limit unless [`SimConfig::rate_limit_token_endpoint`] (opt-in:
//! whether Webex counts them against the client id is UNCERTAIN in webex-api.md); then they
//! count, can be answered 429 with `Retry-After`, and are checked against earlier ones.
//! [`Faults::token_latency_ms`] delays the token endpoint alone (received at once, processed
//! after the delay), for slow-refresh tests.
//!
//! HTTP surface (paths relative to [`SimServer::base_url`]):
//! `GET /v1/authorize`, `POST /v1/authorize/decision` (the buttons of the
//! [`ConsentMode::Interactive`] page), `POST /v1/access_token`,
//! `DELETE /v1/authorizations?clientId=&orgId=` (admin revocation), `GET /v1/tasks`,
//! `POST /v1/captures/query`, `GET /organization/{orgId}/user/by-ci-user-id/{ciUserId}`,
//! `GET /organization/{orgId}/user/{id}`, `GET /organization/{orgId}/v2/user`
//! (RSQL `filter`), `GET /v1/.well-known/openid-configuration`, media under
//! `/cjp-ccone-produs1-media-storage-recording/...`, and the control API:
//! `GET /_sim/orgs`, `GET /_sim/manifest?orgId=`, `GET /_sim/stats`,
//! `GET /_sim/clock`, `POST /_sim/clock/advance {"seconds":N}`,
//! `GET|POST /_sim/faults {Faults as snake_case JSON}`,
//! `POST /_sim/grant {"clientId","orgId","scopes":[..]}`,
//! `POST /_sim/revoke {"orgId"}`,
//! `POST /_sim/consent {"mode":"approve|deny|blocked|interactive"}`,
//! `POST /_sim/late_recording {"taskId","bytes"}` (a capture added to an existing task,
//! listed from now on; answers its manifest entry).
//!
//! Time goes on: [`DatasetSpec::future_tasks_per_org`] telephony tasks per org are
//! created over the [`DatasetSpec::future_hours`] after the start and appear (tasks at
//! their `createdTime`, captures a few minutes after the call) as the clock moves; the
//! manifest holds them from the start, so compare with the tasks created by now.
//!
//! # Webex Calling converged recordings (webex-api.md §3)
//!
//! [`DatasetSpec::calling_per_org`] (or [`DatasetSpec::with_calling`]; 0 in
//! `small()`/`bench()`, 12 in `demo()`) recordings per org, on their own random
//! stream, so the WxCC dataset is identical with or without them. They spread
//! over the dataset's days; fixed patterns make some `purged`, a few `deleted`,
//! a quarter `customerAssist`, and owners of every type (`user` owners are the
//! org's agents); the newest is created a few minutes after the start and is
//! hidden until then. With `edge_cases`, the first is zero bytes long and the
//! second has no transcript. Audio is real CBR 32 kbit/s, 32 kHz stereo MPEG-1
//! Layer III from LAME (caller left, agent right, the WAV speech model): a few
//! template clips are encoded once per process and each recording serves an
//! ID3v2 tag naming it followed by one template, so bytes and sha256 differ per
//! recording. Transcripts are small WebVTT files. [`SimHandle::calling_manifest`]
//! / `GET /_sim/calling/manifest?orgId=` is the ground truth.
//!
//! * `GET /v1/admin/convergedRecordings` needs `spark-admin:recordings_read` or
//!   `spark-compliance:recordings_read`. `max` 1–100 (default 10), `from`/`to`
//!   ISO 8601 applied to `createTime` (from inclusive, to exclusive; defaults
//!   per §3.2; a span over 30 days is 400), `status` (`available` default,
//!   `deleted`, `purged` = 403 without the compliance scope), `serviceType`,
//!   `format=MP3`. Newest `createTime` first; more pages through
//!   `Link: <…&cursor=…>; rel="next"`, absent on the last page. Items never carry
//!   links.
//! * `GET /v1/convergedRecordings/{id}`: the list fields plus, for compliance
//!   scope in orgs without Prevent Downloading, `temporaryDirectDownloadLinks`
//!   (`audioDownloadLink`, `transcriptDownloadLink` when there is one,
//!   `expiration` 3 h after the request). Purged recordings are 404 for admins.
//! * `GET /v1/convergedRecordings/{id}/metadata`: the §3.4 body (`version` "1.2");
//!   `showAllTypes=true` adds `callActivity`; 204 while not ready.
//! * Media: `GET /nbr/MultiThreadDownloadServlet?type=calling&orgId&recordUUID&
//!   fileType&ticket&timestamp` on the media host. The ticket is signed and
//!   carries the expiry (403 when forged or expired); any `Authorization` header
//!   is a 400 counted in [`Stats::calling_media_with_authorization`]. The same
//!   path on the main host needs `Authorization: Bearer` of the org (401
//!   without); links point there when [`Faults::calling_media_requires_bearer`].
//! * Knobs: [`Faults::drop_filters_in_next_link`],
//!   [`Faults::calling_metadata_not_ready_secs`],
//!   [`Faults::calling_url_expiry_secs`], and `error_5xx_rate`, `rate_429_rate`,
//!   `latency_ms` (API and media) and `truncate_rate` (media). Prevent
//!   Downloading: [`SimHandle::set_prevent_downloading`] or
//!   `POST /_sim/calling/prevent_downloading {"orgId","on":true}`; for single
//!   recordings (their owner's setting): [`Faults::calling_withheld_ids`].
//! * Counters in `/_sim/stats` `by_endpoint`: `calling_list`, `calling_details`,
//!   `calling_metadata`, `calling_media`.

mod admin;
mod calling;
mod calling_data;
mod calling_media;
mod config;
mod dataset;
mod http;
mod late;
mod media;
mod model;
mod mp3;
mod oauth;
mod rng;
mod rsql;
mod server;
mod state;
mod wav;
mod wxcc;

pub use config::{
    BLOCKED_PAGE_TEXT, ConsentMode, DEFAULT_REGISTERED_SCOPES, DatasetSpec, Faults,
    ParseConsentModeError, SimClient, SimConfig,
};
pub use model::{
    CallingManifest, ExpectedCallingRecording, ExpectedRecording, ExpectedTask, GrantTokens,
    Manifest, SimOrg, Stats,
};
pub use server::{SimHandle, SimServer};
pub use wav::TalkSpan;
