//! One Calling recording through the pipeline: details (the link) just before the transfer,
//! the audio, the transcript when configured, then the metadata for the sidecar.

use archive::layout::{self, ObjectKey};
use async_trait::async_trait;
use serde_json::{Value, json};
use vault::RecordingRow;
use webex::calling::RecordingDetails;
use webex::media::MediaStream;

use super::{CallingHarvest, SOURCE, SPEC};
use crate::error::OrgError;
use crate::pipeline::{ItemError, Pipeline, StoredAudio, Transfer, classify};

/// Start of the reason of a recording whose details carry no audio link (see
/// [`CallingHarvest::judge_missing_links`]).
pub(super) const NO_LINK: &str = "Webex gives no audio download link for this recording";
/// A link that expires sooner than this is renewed before the transfer starts.
const EXPIRY_MARGIN_MS: i64 = 60_000;
/// The sidecar schema, shared with WxCC sidecars.
const SCHEMA: &str = "wxvault.recording.v1";

pub(super) struct CallingTransfer<'a> {
    harvest: &'a CallingHarvest,
    id: String,
    /// The list item as stored in the ledger.
    listed: Value,
    recorded_ms: i64,
    ext: String,
    declared: Option<u64>,
    details: Option<RecordingDetails>,
    /// A fresh details call was made after a refused link.
    refreshed: bool,
    /// The transcript was attempted in this run.
    transcript_tried: bool,
    /// The link came from a details call made for this very attempt: it is used as given,
    /// never asked for again before it was tried (a short-lived link would otherwise cost a
    /// second details call each time).
    just_resolved: bool,
}

impl<'a> CallingTransfer<'a> {
    pub(super) fn new(harvest: &'a CallingHarvest, row: &RecordingRow) -> Result<Self, ItemError> {
        let listed: Value = serde_json::from_str(&row.attributes_json).unwrap_or(Value::Null);
        let ext = row
            .file_name
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|f| {
                !f.is_empty()
                    && f.len() <= 10
                    && f.chars().all(|c| c.is_ascii_alphanumeric())
                    && f != "json"
            })
            .unwrap_or_else(|| "mp3".to_owned());
        let declared = listed.get("sizeBytes").and_then(Value::as_u64);
        Ok(CallingTransfer {
            harvest,
            id: row.recording_id.clone(),
            listed,
            recorded_ms: row.task_created_ms,
            ext,
            declared,
            details: None,
            refreshed: false,
            transcript_tried: false,
            just_resolved: false,
        })
    }

    fn cfg(&self) -> &super::CallingConfig {
        &self.harvest.run.config.calling
    }

    /// Asks for the details (and with them a link valid for 3 h) and judges them: a recording
    /// that is no longer there, empty, or withheld from this grant never reaches the download.
    async fn resolve(&mut self) -> Result<(), ItemError> {
        let details = match self.harvest.client.details(&self.id).await {
            Ok(d) => d,
            Err(e) if e.status() == Some(404) => {
                return Err(ItemError::Absent(format!(
                    "Webex no longer knows this recording (details answered 404: deleted since it was listed); nothing to archive ({e})"
                )));
            }
            Err(e) => return Err(classify(e)),
        };
        let status = details.recording.status.as_deref().unwrap_or("available");
        let wanted = status.eq_ignore_ascii_case("available")
            || (status.eq_ignore_ascii_case("purged") && self.cfg().include_purged);
        if !wanted {
            return Err(ItemError::Absent(format!(
                "Webex now reports status {status:?} for this recording (listed as available); nothing to archive"
            )));
        }
        if let Some(size) = details.recording.size_bytes {
            if size == 0 {
                return Err(ItemError::Absent(
                    "Webex reports a size of 0 bytes; nothing to archive".into(),
                ));
            }
            self.declared = Some(size);
        }
        if details.audio_link.is_none() {
            let org = self.harvest.run.tokens.org().await;
            // Unknown scopes (an org stored before they were kept) prove nothing: the missing
            // link is then judged with the rest of the batch (see `judge_missing_links`).
            let scopes = org.scopes.unwrap_or_default();
            if !scopes.trim().is_empty()
                && !scopes
                    .split_whitespace()
                    .any(|s| s == webex::CALLING_COMPLIANCE_SCOPE)
            {
                // The grant can list but never download: one error for the org.
                return Err(ItemError::Org(OrgError::NotPermitted {
                    source_label: SPEC.label,
                    message: format!(
                        "the grant lists recordings but Webex gives download links only to compliance officers, and it lacks {scope} (granted: {granted}). Fix: have a user with the Compliance Officer role in Control Hub reconnect the org (`wxvault connect --sources calling` or an invite link) so the grant carries {scope}. Nothing was marked failed.",
                        scope = webex::CALLING_COMPLIANCE_SCOPE,
                        granted = scopes,
                    ),
                }));
            }
            // Withheld for this recording or for the whole org: the harvest decides which
            // (`CallingHarvest::judge_missing_links`).
            return Err(ItemError::Permanent(format!(
                "{NO_LINK} (the details carry no temporaryDirectDownloadLinks.audioDownloadLink)"
            )));
        }
        self.harvest
            .link_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.details = Some(details);
        self.just_resolved = true;
        Ok(())
    }

    /// What to add to the reason of a link refused with 401/403 by a host the access token is
    /// never offered to: that host and the setting that would allow it.
    fn bearer_hint(&self, link: &str, status: Option<u16>) -> String {
        if !matches!(status, Some(401 | 403)) {
            return String::new();
        }
        let Some(host) = url::Url::parse(link).ok().and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        }) else {
            return String::new();
        };
        let hosts = self.harvest.client.bearer_hosts();
        let allowed = hosts.iter().any(|suffix| {
            host == *suffix
                || host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        if allowed {
            return String::new();
        }
        format!(
            ". The host {host} is not in [calling] bearer_hosts ({}), so the access token was never offered to it; if it is a Webex host that wants the token, add it there",
            if hosts.is_empty() {
                "empty".to_owned()
            } else {
                hosts.join(", ")
            }
        )
    }

    fn link_is_fresh(&self, now: i64) -> bool {
        self.details.as_ref().is_some_and(|d| {
            d.audio_link.is_some() && d.expiration_ms.is_none_or(|e| e - EXPIRY_MARGIN_MS > now)
        })
    }

    /// The details object as received, without its links.
    async fn details_json(&mut self) -> Result<Value, ItemError> {
        if self.details.is_none() {
            // Stored by an earlier run (metadata was late): the details are asked for again.
            match self
                .harvest
                .client
                .details(&self.id)
                .await
                .map_err(classify)
            {
                Ok(details) => self.details = Some(details),
                // Deleted or refused since its audio was archived: the sidecar keeps what the
                // listing said (the audio is verified and stays).
                Err(ItemError::Permanent(why)) => {
                    tracing::info!(org = %self.harvest.run.org.name, recording = %self.id, "details refused ({why}); the sidecar keeps the listed record");
                    return Ok(self.listed.clone());
                }
                // Refused for this recording after its metadata was answered: the grant is
                // fine, the sidecar keeps what the listing said.
                Err(ItemError::Org(e)) if refused_for_this_recording(&e) => {
                    tracing::info!(org = %self.harvest.run.org.name, recording = %self.id, "details refused ({e}); the sidecar keeps the listed record");
                    return Ok(self.listed.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .details
            .as_ref()
            .map_or(Value::Null, |d| d.raw_without_links.clone()))
    }

    /// [`Self::store_transcript`], whose problems never cost the recording: they are logged and
    /// recorded (`transcript_failed`); only our storage or database failing, or Webex refusing
    /// the grant, stops the source.
    async fn transcript(
        &mut self,
        pipeline: &Pipeline,
        audio: &StoredAudio,
    ) -> Result<(), ItemError> {
        if self.transcript_tried {
            return Ok(());
        }
        self.transcript_tried = true;
        match self.store_transcript(pipeline, audio).await {
            Ok(()) => Ok(()),
            Err(ItemError::Org(e)) if !refused_for_this_recording(&e) => Err(ItemError::Org(e)),
            Err(e) => {
                let msg = format!(
                    "org {}: the transcript of Calling recording {} was not archived: {e:?}",
                    self.harvest.run.org.name, self.id
                );
                tracing::warn!("{msg}");
                let run = &self.harvest.run;
                let _ = run
                    .vault
                    .record_event(Some(&run.org), "transcript_failed", &msg)
                    .await;
                Ok(())
            }
        }
    }

    /// Downloads the transcript next to the audio unless one is there already; one fresh
    /// details call when its link was refused as stale.
    async fn store_transcript(
        &mut self,
        pipeline: &Pipeline,
        audio: &StoredAudio,
    ) -> Result<(), ItemError> {
        let archive = &self.harvest.run.archive;
        for ext in ["vtt", "txt"] {
            let key = layout::companion_of(&audio.key, "transcript", ext)
                .map_err(|e| ItemError::Permanent(e.to_string()))?;
            let found = archive
                .head(&key)
                .await
                .map_err(|e| crate::pipeline::storage_failed(format!("reading {key}"), e))?;
            if found.is_some() {
                return Ok(());
            }
        }
        if self.details.is_none() {
            // Stored by an earlier run (its metadata was late): its details, not judged again
            // (the audio is archived whatever they say now).
            let details = self
                .harvest
                .client
                .details(&self.id)
                .await
                .map_err(classify)?;
            self.details = Some(details);
        }
        let mut refreshed = false;
        loop {
            let now = self.harvest.run.clock.now_ms();
            let transcript_fresh = self.details.as_ref().is_some_and(|d| {
                d.transcript_link.is_some()
                    && d.expiration_ms.is_none_or(|e| e - EXPIRY_MARGIN_MS > now)
            });
            if !transcript_fresh
                && self
                    .details
                    .as_ref()
                    .is_some_and(|d| d.transcript_link.is_some())
            {
                self.resolve().await?;
            }
            let Some(link) = self
                .details
                .as_ref()
                .and_then(|d| d.transcript_link.clone())
            else {
                return Ok(());
            };
            let media = match self.harvest.client.download(&link).await {
                Ok(m) => m,
                Err(e) if e.is_link_expired() && !refreshed => {
                    refreshed = true;
                    self.resolve().await?;
                    continue;
                }
                Err(e) => return Err(classify(e)),
            };
            let vtt = media
                .content_type
                .as_deref()
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/vtt"));
            let key =
                layout::companion_of(&audio.key, "transcript", if vtt { "vtt" } else { "txt" })
                    .map_err(|e| ItemError::Permanent(e.to_string()))?;
            pipeline.store_stream(&key, media, None).await?;
            return Ok(());
        }
    }

    /// Since when (engine clock) the sidecar waits for metadata: the first run that asked and
    /// did not get it. The grace period runs from there, so a backfill of old recordings still
    /// gives Webex `[calling] metadata_grace_hours` to produce their metadata.
    async fn waiting_since(&self, now: i64) -> Result<i64, ItemError> {
        let run = &self.harvest.run;
        Ok(run
            .db("noting a recording that waits for metadata", || {
                run.vault.note_waiting(&run.org, SOURCE, &self.id, now)
            })
            .await?)
    }
}

#[async_trait]
impl Transfer for CallingTransfer<'_> {
    fn recording_id(&self) -> &str {
        &self.id
    }

    fn audio_key(&self) -> Result<ObjectKey, String> {
        layout::dated_key(
            &self.harvest.run.org.org_id,
            SOURCE,
            self.recorded_ms,
            &self.id,
            &self.id,
            &self.ext,
        )
        .map_err(|e| e.to_string())
    }

    fn declared_size(&self) -> Option<u64> {
        self.declared
    }

    async fn download(&mut self) -> Result<MediaStream, ItemError> {
        let now = self.harvest.run.clock.now_ms();
        if !self.just_resolved && !self.link_is_fresh(now) {
            self.resolve().await?;
        }
        self.just_resolved = false;
        let link = self
            .details
            .as_ref()
            .and_then(|d| d.audio_link.clone())
            .ok_or_else(|| ItemError::Permanent(NO_LINK.to_owned()))?;
        match self.harvest.client.download(&link).await {
            Ok(m) => {
                // A link that expires again later (a retry after a cut-off transfer) earns
                // another fresh details call, not a failure.
                self.refreshed = false;
                Ok(m)
            }
            // Refused again with a fresh link: the reason is recorded and the item fails.
            Err(e) if e.is_link_expired() && self.refreshed => Err(ItemError::Permanent(format!(
                "the download link was refused again after fresh details were asked for: {e}{}",
                self.bearer_hint(&link, e.status())
            ))),
            Err(e) => Err(classify(e)),
        }
    }

    async fn refresh_link(&mut self) -> Result<(), ItemError> {
        self.refreshed = true;
        self.resolve().await
    }

    /// The transcript, when configured and Webex offers one (also for a recording stored by an
    /// earlier run, until its sidecar is written). Its problems never cost the recording: they
    /// are logged and recorded, and only our storage failing stops the org.
    async fn after_audio(
        &mut self,
        pipeline: &Pipeline,
        audio: &StoredAudio,
    ) -> Result<(), ItemError> {
        // With the details of this run's download; a recording stored by an earlier run gets
        // its transcript when its sidecar is written (no details call while metadata waits).
        if !self.cfg().transcripts || self.details.is_none() {
            return Ok(());
        }
        self.transcript(pipeline, audio).await
    }

    async fn sidecar(
        &mut self,
        audio: &StoredAudio,
        archived_at: &str,
    ) -> Result<Option<Value>, ItemError> {
        let now = self.harvest.run.clock.now_ms();
        let grace_ms = i64::try_from(self.cfg().metadata_grace_hours).unwrap_or(24) * 3_600_000;
        let (metadata, reason) = match self.harvest.client.metadata(&self.id).await {
            Ok(Some(m)) => (m, None),
            Ok(None) => {
                if now - self.waiting_since(now).await? < grace_ms {
                    return Ok(None);
                }
                (
                    Value::Null,
                    Some(format!(
                        "Webex still had no metadata for this recording {} h after wxvault first asked (GET /v1/convergedRecordings/{{id}}/metadata answered 204)",
                        self.cfg().metadata_grace_hours
                    )),
                )
            }
            Err(e) => match classify(e) {
                // Refused or unreadable for this recording alone: asked again on later runs
                // while within the grace; after it, the sidecar says why (the audio is kept).
                ItemError::Permanent(why) => {
                    if now - self.waiting_since(now).await? < grace_ms {
                        return Ok(None);
                    }
                    (Value::Null, Some(format!("metadata not available: {why}")))
                }
                other => return Err(other),
            },
        };
        // The sidecar is written now: a recording stored by an earlier run gets its transcript
        // here (with the one details call its sidecar needs anyway).
        if self.cfg().transcripts {
            let harvest = self.harvest;
            self.transcript(&harvest.pipeline, audio).await?;
        }
        let recording = self.details_json().await?;
        let mut sidecar = json!({
            "schema": SCHEMA,
            "source": SOURCE,
            "org_id": self.harvest.run.org.org_id,
            "recording_id": self.id,
            "recording": recording,
            "metadata": metadata,
            "sha256": audio.sha256,
            "size_bytes": audio.size,
            "object_key": audio.key.as_str(),
            "archived_at": archived_at,
        });
        if let (Some(reason), Value::Object(m)) = (reason, &mut sidecar) {
            m.insert("metadata_reason".into(), json!(reason));
        }
        Ok(Some(sidecar))
    }
}

/// A 403 from Webex about one recording (its details or transcript), as opposed to the grant
/// or a host failing: the org goes on.
fn refused_for_this_recording(e: &OrgError) -> bool {
    matches!(e, OrgError::Webex(w) if w.status() == Some(403))
}
