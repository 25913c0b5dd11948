//! A faithful, seeded simulator of the Webex APIs wxvault uses.
//!
//! It is written from `webex-api.md` alone and deliberately shares no types
//! with the `webex` client crate: if both sides read a field the same wrong
//! way, tests against the simulator would still pass. One loopback server
//! stands in for every host: `webexapis.com` (OAuth), `api.wxcc-*.cisco.com`
//! (tasks, captures, users) and the S3 media bucket (pre-signed WAV links).
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
//! `POST /_sim/consent {"mode":"approve|deny|blocked|interactive"}`.

mod admin;
mod config;
mod dataset;
mod http;
mod media;
mod model;
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
pub use model::{ExpectedRecording, ExpectedTask, GrantTokens, Manifest, SimOrg, Stats};
pub use server::{SimHandle, SimServer};
pub use wav::TalkSpan;
