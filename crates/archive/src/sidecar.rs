//! The sidecar contract `wxvault.recording.v1`.
//!
//! A sidecar is the JSON document stored next to each audio object (see
//! [`crate::layout::sidecar_for`]). It is written only after the audio has been
//! stored and its sha256 verified, so the existence of a sidecar means "this
//! recording is archived"; downstream tools can rely on `sha256`, `size_bytes`
//! and `object_key` without re-reading the audio. Task and recording
//! attributes are kept exactly as Webex returned them, so no information is
//! lost to our interpretation of the API.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Value of [`RecordingSidecar::schema`] for this version of the contract.
pub const SCHEMA_V1: &str = "wxvault.recording.v1";

/// One archived recording's metadata (schema [`SCHEMA_V1`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordingSidecar {
    /// Always [`SCHEMA_V1`].
    pub schema: String,
    /// Webex organization id.
    pub org_id: String,
    /// Recording source; `"wxcc"` for Contact Center captures.
    pub source: String,
    /// Contact Center task (interaction) id.
    pub task_id: String,
    /// Recording id within the task.
    pub recording_id: String,
    /// Task attributes as received.
    pub task: serde_json::Value,
    /// Recording attributes as received (fileName, startTime, stopTime,
    /// participants, channel1, channel2, callType, segment).
    pub recording: serde_json::Value,
    /// Agent enrichment: `{ci_user_id, name, email}` objects.
    pub agents: Vec<serde_json::Value>,
    /// Lowercase hex sha256 of the stored audio.
    pub sha256: String,
    /// Size of the stored audio in bytes.
    pub size_bytes: u64,
    /// Key of the audio object, relative to the archive root.
    pub object_key: String,
    /// When the audio was archived, RFC 3339 UTC.
    pub archived_at: String,
}

impl RecordingSidecar {
    /// Pretty-printed JSON bytes, ready for
    /// [`Archive::put_if_absent`](crate::Archive::put_if_absent).
    ///
    /// # Errors
    /// Only if serialization fails, which `serde_json` does not do for these
    /// field types; the error is passed through rather than hidden.
    pub fn to_json_bytes(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec_pretty(self).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_the_contract() {
        let s = RecordingSidecar {
            schema: SCHEMA_V1.into(),
            org_id: "o".into(),
            source: "wxcc".into(),
            task_id: "t".into(),
            recording_id: "r".into(),
            task: serde_json::json!({"createdTime": 1}),
            recording: serde_json::json!({"fileName": "a.wav"}),
            agents: vec![serde_json::json!({"ci_user_id": "u", "name": "N", "email": "e"})],
            sha256: "ab".into(),
            size_bytes: 3,
            object_key: "o/wxcc/1970/01/01/t/r.wav".into(),
            archived_at: "2024-01-01T00:00:00Z".into(),
        };
        let bytes = s.to_json_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "agents",
                "archived_at",
                "object_key",
                "org_id",
                "recording",
                "recording_id",
                "schema",
                "sha256",
                "size_bytes",
                "source",
                "task",
                "task_id"
            ]
        );
        assert_eq!(v["schema"], "wxvault.recording.v1");
        assert_eq!(v["task"]["createdTime"], 1);
        // Pretty, i.e. human-readable on disk.
        assert!(bytes.contains(&b'\n'));
        let back: RecordingSidecar = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.size_bytes, 3);
    }
}
