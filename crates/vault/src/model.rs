//! The public record types of the vault. States are stored as the snake_case strings returned
//! by `as_str`, so the database stays readable with plain SQL.

use secrecy::SecretString;
use serde::Serialize;

use crate::VaultError;

/// A new org to register with [`crate::Vault::add_org`].
#[derive(Debug)]
pub struct NewOrg {
    /// Operator-chosen short name, unique.
    pub name: String,
    /// Webex org id (bare UUID), unique; also binds the org's sealed secrets.
    pub org_id: String,
    /// WxCC region, e.g. `us1` (opaque; templated into the API host).
    pub region: String,
    /// OAuth client id of the integration / service app.
    pub client_id: String,
    /// OAuth client secret; stored sealed.
    pub client_secret: SecretString,
    /// How the client authenticates at the token endpoint: `"form"` or `"basic"`.
    pub client_auth: String,
    /// Sources to harvest, e.g. `["wxcc"]`.
    pub sources: Vec<String>,
    /// Initial tokens, if the caller already holds them (all `None` is fine).
    pub tokens: TokenUpdate,
}

/// A token refresh result. Every `None` field keeps the stored value, because Webex may omit a
/// refresh token (or its lifetime) from a refresh response while the old one stays valid.
#[derive(Debug, Default)]
pub struct TokenUpdate {
    /// New access token.
    pub access_token: Option<SecretString>,
    /// When the access token expires (epoch ms). With a new access token, `None` stores the
    /// expiry as unknown rather than keeping the old token's; without one, `None` keeps it.
    pub access_expires_at_ms: Option<i64>,
    /// New refresh token.
    pub refresh_token: Option<SecretString>,
    /// When the refresh token expires (epoch ms).
    pub refresh_expires_at_ms: Option<i64>,
    /// Granted scopes, space separated.
    pub scopes: Option<String>,
    /// When the refresh happened (epoch ms).
    pub refreshed_at_ms: Option<i64>,
}

/// The decrypted secrets of one org.
#[derive(Debug)]
pub struct OrgSecrets {
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// Current access token, if any.
    pub access_token: Option<SecretString>,
    /// Current refresh token, if any.
    pub refresh_token: Option<SecretString>,
}

/// A registered org, without its secrets (safe to print and serialize).
#[derive(Debug, Clone, Serialize)]
pub struct Org {
    /// Database id.
    pub id: i64,
    /// Operator-chosen name.
    pub name: String,
    /// Webex org id (UUID).
    pub org_id: String,
    /// WxCC region.
    pub region: String,
    /// OAuth client id (not secret).
    pub client_id: String,
    /// `"form"` or `"basic"`.
    pub client_auth: String,
    /// Sources to harvest.
    pub sources: Vec<String>,
    /// Whether the org's grant works.
    pub status: OrgStatus,
    /// Access token expiry (epoch ms).
    pub access_expires_at_ms: Option<i64>,
    /// Refresh token expiry (epoch ms).
    pub refresh_expires_at_ms: Option<i64>,
    /// Last successful refresh (epoch ms).
    pub last_refresh_at_ms: Option<i64>,
    /// Granted scopes.
    pub scopes: Option<String>,
    /// When the org was added (epoch ms).
    pub created_at_ms: i64,
}

/// Whether an org can be harvested.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OrgStatus {
    /// The grant works.
    Active,
    /// The grant was revoked or expired; an admin must reconnect the org.
    NeedsReauth {
        /// Why (shown to the operator; no secrets).
        reason: String,
    },
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub(crate) fn parse(s: &str, what: &str) -> Result<Self, VaultError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(VaultError::Corrupt {
                        what: what.to_string(),
                        detail: format!("unknown state {other:?}"),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where a task stands. `Captured`, `Absent` and `Failed` are final; `Missing` can still
    /// become `Captured` (or `Absent`) if Webex reports late.
    TaskState {
        /// Seen in the task list; captures not looked at yet.
        Discovered = "discovered",
        /// Capture expected but not listed yet.
        PendingCapture = "pending_capture",
        /// Its recordings are in the recordings ledger.
        Captured = "captured",
        /// Nothing to archive (capture never requested, purged, prevented), with why.
        Absent = "absent",
        /// Capture requested but none appeared within the grace period.
        Missing = "missing",
        /// Permanent error, with why.
        Failed = "failed",
    }
}

string_enum! {
    /// Where a recording stands: `ready → stored → done`, side exits `absent` and `failed`.
    /// `Done` and `Absent` are final.
    RecordingState {
        /// Known and waiting for download.
        Ready = "ready",
        /// Audio written and verified; sidecar not yet.
        Stored = "stored",
        /// Audio and sidecar archived. Final.
        Done = "done",
        /// Legitimately nothing to archive (deleted or purged since it was listed, zero bytes,
        /// no audio), with why. Final: `retry` leaves it alone.
        Absent = "absent",
        /// Permanent error, with why.
        Failed = "failed",
    }
}

impl TaskState {
    /// States from which a task may move to `self` (including `self`, so repeats are no-ops).
    pub(crate) fn allowed_from(self) -> &'static [TaskState] {
        use TaskState::*;
        match self {
            Discovered => &[Discovered],
            PendingCapture => &[Discovered, PendingCapture],
            Captured => &[Discovered, PendingCapture, Missing, Captured],
            Absent => &[Discovered, PendingCapture, Missing, Absent],
            Missing => &[Discovered, PendingCapture, Missing],
            Failed => &[Discovered, PendingCapture, Missing, Failed],
        }
    }
}

/// A task to record or refresh with [`crate::Vault::upsert_task`].
#[derive(Debug, Clone)]
pub struct TaskUpsert {
    /// Webex task id.
    pub task_id: String,
    /// Task creation time (epoch ms).
    pub created_ms: i64,
    /// `Some(true)`: a capture will appear; `Some(false)`: none will; `None`: unknown yet.
    pub capture_requested: Option<bool>,
    /// The task as received, JSON.
    pub attributes_json: String,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// Webex task id.
    pub task_id: String,
    /// Task creation time (epoch ms).
    pub created_ms: i64,
    /// Last known capture request flag.
    pub capture_requested: Option<bool>,
    /// Ledger state.
    pub state: TaskState,
    /// Why it is absent / missing / failed.
    pub reason: Option<String>,
    /// The task as last received, JSON.
    pub attributes_json: String,
    /// How many captures queries have looked for it.
    pub checks: i64,
}

/// A recording to record or refresh with [`crate::Vault::upsert_recording`].
#[derive(Debug, Clone)]
pub struct RecordingUpsert {
    /// Webex recording (capture file) id.
    pub recording_id: String,
    /// Task it belongs to.
    pub task_id: String,
    /// Creation time of that task (epoch ms), for the archive key layout.
    pub task_created_ms: i64,
    /// File name reported by Webex.
    pub file_name: Option<String>,
    /// The recording metadata as received (without signed links), JSON.
    pub attributes_json: String,
}

/// A recording as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingRow {
    /// Webex recording id.
    pub recording_id: String,
    /// Task it belongs to.
    pub task_id: String,
    /// Creation time of that task (epoch ms).
    pub task_created_ms: i64,
    /// File name reported by Webex.
    pub file_name: Option<String>,
    /// Metadata as last received, JSON.
    pub attributes_json: String,
    /// Ledger state.
    pub state: RecordingState,
    /// Archive key of the audio, once stored.
    pub object_key: Option<String>,
    /// Hex sha256 of the stored audio.
    pub sha256: Option<String>,
    /// Size of the stored audio.
    pub size_bytes: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// Ledger totals for `status`: of an org ([`crate::Vault::counts`], every source) or of one
/// source ([`crate::Vault::counts_by_source`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Tasks known.
    pub tasks: i64,
    /// Recordings known.
    pub recordings: i64,
    /// Recordings done (audio + sidecar).
    pub archived: i64,
    /// Recordings ready or stored.
    pub in_progress: i64,
    /// Tasks discovered / pending capture whose capture was not ruled out.
    pub pending_capture: i64,
    /// Tasks missing their capture.
    pub missing: i64,
    /// Tasks with nothing to archive.
    pub absent: i64,
    /// Of `absent`: tasks Webex never said a capture was requested for and none appeared within
    /// the grace period (`capture_never_requested`); still re-checked for `[sync] rescan_days`.
    pub capture_never_requested: i64,
    /// Failed recordings plus failed tasks.
    pub failed: i64,
    /// Recordings with nothing to archive (`absent`, with why).
    pub recordings_absent: i64,
}

impl Counts {
    /// Adds `other`'s totals to these (org totals are the sum over sources).
    pub(crate) fn add(&mut self, other: &Counts) {
        let Counts {
            tasks,
            recordings,
            archived,
            in_progress,
            pending_capture,
            missing,
            absent,
            capture_never_requested,
            failed,
            recordings_absent,
        } = other;
        self.tasks += tasks;
        self.recordings += recordings;
        self.archived += archived;
        self.in_progress += in_progress;
        self.pending_capture += pending_capture;
        self.missing += missing;
        self.absent += absent;
        self.capture_never_requested += capture_never_requested;
        self.failed += failed;
        self.recordings_absent += recordings_absent;
    }
}

/// One failed or missing item, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `"task <id>"` or `"recording <id>"`.
    pub item: String,
    /// The source the item is from, e.g. `wxcc`.
    pub source: String,
    /// Its state string.
    pub state: String,
    /// Why.
    pub reason: String,
    /// When it entered that state (epoch ms).
    pub at_ms: i64,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Database id (increasing).
    pub id: i64,
    /// Org the event concerns, if any (database id).
    pub org: Option<i64>,
    /// When (epoch ms).
    pub at_ms: i64,
    /// Short machine-readable kind, e.g. `needs_reauth`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// A recording whose audio and sidecar are both written, for [`crate::Vault::mark_recordings_archived`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub recording_id: String,
    pub object_key: String,
    pub sha256: String,
    pub size: i64,
    pub sidecar_key: String,
}

/// What [`crate::Vault::rotate_keys`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// Sealed values re-sealed with the current key (they named an older version).
    pub re_encrypted: usize,
    /// Sealed values that were already on the current key and were left alone.
    pub already_current: usize,
    /// The current key version, which now seals every stored secret.
    pub to_version: u32,
}
