//! The converged-recording types and their tolerant parsing (webex-api.md §3.2–§3.3).

use serde_json::Value;

use crate::media::redacted_location;
use crate::wxcc::Rejected;
use crate::{Error, json};

use super::LIST;

/// What [`CallingClient::list`](super::CallingClient::list) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Window start, epoch ms, inclusive (`createTime`, else `timeRecorded`).
    pub from_ms: i64,
    /// Window end, epoch ms, exclusive.
    pub to_ms: i64,
    /// `serviceType` (`calling`, `customerAssist`); empty: not sent, not checked.
    pub service_type: String,
    /// `status` (`available`, `deleted`, `purged`); empty: not sent, not checked.
    pub status: String,
}

impl ListQuery {
    /// Available Webex Calling recordings created in `[from_ms, to_ms)`.
    pub fn new(from_ms: i64, to_ms: i64) -> Self {
        ListQuery {
            from_ms,
            to_ms,
            service_type: "calling".to_owned(),
            status: "available".to_owned(),
        }
    }
}

/// One converged recording, as listed (or as the details repeat it). Every field but `id` may
/// be missing; `raw` keeps the element exactly as received (without download links).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConvergedRecording {
    /// The recording id: the key (never `topic`).
    pub id: String,
    /// `status`: `available`, `deleted` or `purged`.
    pub status: Option<String>,
    /// `serviceType`: `calling` or `customerAssist`.
    pub service_type: Option<String>,
    /// `format`, e.g. `MP3`.
    pub format: Option<String>,
    /// `sizeBytes`: the declared size, to verify the download against.
    pub size_bytes: Option<u64>,
    /// `durationSeconds`.
    pub duration_seconds: Option<f64>,
    /// `timeRecorded` (when recording started), epoch ms.
    pub time_recorded_ms: Option<i64>,
    /// `createTime` (when the file was generated), epoch ms.
    pub create_time_ms: Option<i64>,
    /// The element as received.
    pub raw: Value,
}

/// Result of [`CallingClient::list`](super::CallingClient::list).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Listing {
    /// Distinct recordings in the window that match the filters, in discovery order.
    pub items: Vec<ConvergedRecording>,
    /// Elements not understood (no id, wrong types): to be recorded, never silently dropped.
    pub rejected: Vec<Rejected>,
    /// Pages fetched.
    pub pages: u32,
    /// Items outside `[from, to)`, dropped.
    pub outside_window: u64,
    /// Items whose `status` or `serviceType` differ from the query, dropped.
    pub filtered_out: u64,
    /// Items seen again on a later page, dropped.
    pub duplicates: u64,
}

/// Result of [`CallingClient::details`](super::CallingClient::details).
///
/// `Debug` is hand-written: the links carry a `ticket` that is a bearer capability, so only
/// their host and path are shown.
#[derive(Clone, PartialEq)]
pub struct RecordingDetails {
    /// The recording (its `raw` is [`RecordingDetails::raw_without_links`]).
    pub recording: ConvergedRecording,
    /// `audioDownloadLink`; absent without download permission (admin scope, Prevent
    /// Downloading).
    pub audio_link: Option<String>,
    /// `transcriptDownloadLink`.
    pub transcript_link: Option<String>,
    /// `expiration` of the links, epoch ms.
    pub expiration_ms: Option<i64>,
    /// The body without `temporaryDirectDownloadLinks`: safe to store in a sidecar.
    pub raw_without_links: Value,
}

impl std::fmt::Debug for RecordingDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = |l: &Option<String>| {
            l.as_deref()
                .map(|l| format!("{} [query redacted]", redacted_location(l)))
        };
        f.debug_struct("RecordingDetails")
            .field("recording", &self.recording)
            .field("audio_link", &link(&self.audio_link))
            .field("transcript_link", &link(&self.transcript_link))
            .field("expiration_ms", &self.expiration_ms)
            .finish_non_exhaustive()
    }
}

/// The `items` of a list page; missing or `null` means none.
pub(super) fn parse_list_page(body: &[u8]) -> Result<Vec<Value>, Error> {
    let decode = |detail: String| Error::Decode {
        what: "converged recordings page".to_owned(),
        location: LIST.to_owned(),
        detail,
    };
    let v: Value =
        serde_json::from_slice(body).map_err(|e| decode(format!("body is not JSON: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(decode(format!("body is {}, not an object", json::kind(&v))));
    };
    match o.remove("items") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(decode(format!(
            "`items` is {}, not an array",
            json::kind(&other)
        ))),
    }
}

/// Reads one recording element. Missing fields are `None`; a field of the wrong type makes the
/// whole element [`Rejected`] (it could not be checked against the window or verified).
pub(super) fn parse_recording(item: &Value) -> Result<ConvergedRecording, Rejected> {
    let Value::Object(o) = item else {
        return Err(Rejected {
            id: None,
            reason: format!("recording element is {}, not an object", json::kind(item)),
        });
    };
    let id = json::string(o.get("id"));
    let reject = |reason: String| Rejected {
        id: id.clone(),
        reason,
    };
    let Some(rec_id) = id.clone() else {
        return Err(reject(match o.get("id") {
            None | Some(Value::Null) => "recording has no id".to_owned(),
            Some(v) => format!("recording id is {}, not a string", json::kind(v)),
        }));
    };
    let field = |name: &str| o.get(name).filter(|v| !v.is_null());
    let text = |name: &str| -> Result<Option<String>, Rejected> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(v) => Err(reject(format!("{name} is {}, not a string", json::kind(v)))),
        }
    };
    let time = |name: &str| -> Result<Option<i64>, Rejected> {
        match field(name) {
            None => Ok(None),
            Some(v) => json::iso_ms(v).map(Some).ok_or_else(|| {
                reject(format!("{name} is {}, not an ISO 8601 time", json::kind(v)))
            }),
        }
    };
    let size_bytes = match field("sizeBytes") {
        None => None,
        Some(v) => Some(
            json::epoch_ms(Some(v))
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    reject(format!(
                        "sizeBytes is {}, not a non-negative integer",
                        json::kind(v)
                    ))
                })?,
        ),
    };
    let duration_seconds = match field("durationSeconds") {
        None => None,
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            Some(n.filter(|d| d.is_finite() && *d >= 0.0).ok_or_else(|| {
                reject(format!(
                    "durationSeconds is {}, not a non-negative number",
                    json::kind(v)
                ))
            })?)
        }
    };
    Ok(ConvergedRecording {
        id: rec_id,
        status: text("status")?,
        service_type: text("serviceType")?,
        format: text("format")?,
        size_bytes,
        duration_seconds,
        time_recorded_ms: time("timeRecorded")?,
        create_time_ms: time("createTime")?,
        raw: item.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_example_parses() {
        let r = parse_recording(&json!({
            "id": "ea0efc7c-f83a-4972-b0eb-c0f30cff5e61",
            "createTime": "2024-10-04T16:24:25Z", "timeRecorded": "2024-10-04T16:20:20Z",
            "format": "MP3", "durationSeconds": 23, "sizeBytes": 74222,
            "serviceType": "calling", "status": "available", "extra": {"kept": true}
        }))
        .unwrap();
        assert_eq!(r.id, "ea0efc7c-f83a-4972-b0eb-c0f30cff5e61");
        assert_eq!(r.size_bytes, Some(74_222));
        assert_eq!(r.duration_seconds, Some(23.0));
        assert_eq!(r.create_time_ms, Some(1_728_059_065_000));
        assert_eq!(r.time_recorded_ms, Some(1_728_058_820_000));
        assert_eq!(r.format.as_deref(), Some("MP3"));
        assert_eq!(r.raw["extra"]["kept"], json!(true));
        let bare = parse_recording(&json!({"id": "x", "status": null})).unwrap();
        assert_eq!(
            (bare.status, bare.size_bytes, bare.create_time_ms),
            (None, None, None)
        );
    }

    #[test]
    fn unreadable_elements_are_rejected_with_a_reason() {
        for (v, id, needle) in [
            (json!("x"), None, "not an object"),
            (json!({"topic": "t"}), None, "no id"),
            (json!({"id": {"a": 1}}), None, "id is an object"),
            (
                json!({"id": "r1", "sizeBytes": "big"}),
                Some("r1"),
                "sizeBytes",
            ),
            (
                json!({"id": "r2", "createTime": "yesterday"}),
                Some("r2"),
                "createTime",
            ),
            (json!({"id": "r3", "status": 3}), Some("r3"), "status"),
            (
                json!({"id": "r4", "durationSeconds": -1}),
                Some("r4"),
                "durationSeconds",
            ),
        ] {
            let r = parse_recording(&v).unwrap_err();
            assert_eq!(r.id.as_deref(), id, "{v}");
            assert!(r.reason.contains(needle), "{v}: {}", r.reason);
        }
    }
}
