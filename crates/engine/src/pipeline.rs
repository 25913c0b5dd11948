//! The one path every source's recordings take once the source can say where the audio is:
//! download → verify (sha256, size) → create-only put → sidecar → ledger.
//!
//! A source describes one recording through [`Transfer`] (how to fetch its audio, how to get a
//! fresh link, what its sidecar says); the pipeline owns the order of effects that makes a crash
//! at any instant safe, the in-run retries, and the ledger bookkeeping of the outcomes
//! ([`Pipeline::settle`]). No source re-implements any of it.

use std::sync::Arc;

use archive::layout::{self, ObjectKey};
use archive::{ArchiveError, PutStatus};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::Value;
use vault::{Archived, RecordingRow, RecordingState};
use webex::ErrorClass;
use webex::media::MediaStream;

use crate::error::OrgError;
use crate::progress::ProgressEvent;
use crate::report::OrgReport;
use crate::source::OrgRun;

/// Recordings larger than this get a separate `stored` ledger write before their sidecar
/// (one object-store part; re-downloading them after a crash would be costly).
const STORED_MARK_BYTES: u64 = archive::PART_SIZE as u64;
/// Download attempts for one recording within one run before it waits for the next run.
const IN_RUN_ATTEMPTS: u32 = 3;

/// Why a recording did not reach `done` in this attempt.
#[derive(Debug)]
pub enum ItemError {
    /// Try again later (this run or the next).
    Transient(String),
    /// Recorded as failed with this reason.
    Permanent(String),
    /// Legitimately nothing to archive (deleted since it was listed, empty): recorded as
    /// `absent` with this reason, never retried.
    Absent(String),
    /// The link expired or was refused as stale: get a fresh one.
    LinkExpired(String),
    /// Not attempted: the source stopped before this item's turn. Left as it is.
    Skipped,
    /// Not this item's fault (grant refused, scope missing, our storage or database failing):
    /// the org stops with this error and the item stays as it is for the next run, its
    /// attempts untouched.
    Org(OrgError),
}

impl From<OrgError> for ItemError {
    fn from(e: OrgError) -> Self {
        ItemError::Org(e)
    }
}

/// Classifies a Webex error met while working on one item, without relabelling it: what
/// concerns the org (grant, scope, host down) becomes [`ItemError::Org`] carrying the error.
pub fn classify(e: webex::Error) -> ItemError {
    // The host is down: one line for the org, not one failure per item.
    if e.is_host_unreachable() {
        return ItemError::Org(e.into());
    }
    if e.is_link_expired() {
        return ItemError::LinkExpired(e.to_string());
    }
    // The org's token could not be had (refused grant, unreadable state database, contended
    // lease): that concerns the org, never this one recording.
    if matches!(e, webex::Error::TokenSource { .. }) && e.class() != ErrorClass::Transient {
        return ItemError::Org(e.into());
    }
    match e.class() {
        ErrorClass::Transient => ItemError::Transient(e.to_string()),
        // A refused grant or a missing scope/role concerns the whole org, not this recording.
        ErrorClass::Reauth => ItemError::Org(e.into()),
        ErrorClass::Permanent if e.status() == Some(403) => ItemError::Org(e.into()),
        ErrorClass::Permanent => ItemError::Permanent(e.to_string()),
    }
}

/// A storage error that is not about this item's bytes: the org stops, the item is untouched.
pub fn storage_failed(what: String, source: ArchiveError) -> ItemError {
    ItemError::Org(OrgError::Storage { what, source })
}

/// Audio in storage with its verified digest, as the ledger (or this run) knows it.
#[derive(Debug, Clone)]
pub struct StoredAudio {
    pub key: ObjectKey,
    pub sha256: String,
    pub size: u64,
}

/// One recording, as its source sees it. The pipeline calls these in order: `audio_key`,
/// then `download` (and `refresh_link` once when the link expired) unless the audio is already
/// stored, then `after_audio` and `sidecar`.
#[async_trait]
pub trait Transfer: Send {
    /// The recording's id (the ledger key within the source).
    fn recording_id(&self) -> &str;
    /// Where the audio goes.
    ///
    /// # Errors
    /// A reason when no valid key can be built (recorded as the item's failure).
    fn audio_key(&self) -> Result<ObjectKey, String>;
    /// The size the source declared, checked against the bytes received when given.
    fn declared_size(&self) -> Option<u64> {
        None
    }
    /// Starts the audio download (resolving a link first if the source has none yet).
    async fn download(&mut self) -> Result<MediaStream, ItemError>;
    /// Gets a fresh link after the current one expired or was refused as stale.
    async fn refresh_link(&mut self) -> Result<(), ItemError>;
    /// Work after the audio is stored and before the sidecar (extra files such as transcripts).
    async fn after_audio(
        &mut self,
        _pipeline: &Pipeline,
        _audio: &StoredAudio,
    ) -> Result<(), ItemError> {
        Ok(())
    }
    /// The sidecar's JSON, or `None` when it cannot be written yet (the audio then stays
    /// `stored` and the next run asks again).
    async fn sidecar(
        &mut self,
        audio: &StoredAudio,
        archived_at: &str,
    ) -> Result<Option<Value>, ItemError>;
}

/// A recording the pipeline finished with in this run.
#[derive(Debug)]
pub enum Finished {
    /// Already `done` in the ledger (large recordings, marked `stored` first).
    Marked(u64),
    /// Audio and sidecar written; to be marked `done` with the rest of its batch (one statement).
    Unmarked(Archived, u64),
    /// Audio stored and recorded as such; the sidecar waits for the source (metadata not ready).
    Waiting,
}

/// The shared download → archive → ledger path for one org and one source.
pub struct Pipeline {
    pub run: Arc<OrgRun>,
    /// The source's name in the ledger.
    pub source: &'static str,
}

/// Wraps a Webex stream error so the archive crate can carry it and we can classify it after.
#[derive(Debug)]
struct StreamError(webex::Error);
impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for StreamError {}

impl Pipeline {
    pub fn new(run: Arc<OrgRun>, source: &'static str) -> Self {
        Pipeline { run, source }
    }

    /// Logs and builds a permanent item error.
    pub fn permanent(&self, recording_id: &str, reason: String) -> ItemError {
        tracing::error!(org = %self.run.org.name, source = self.source, recording = %recording_id, "failed: {reason}");
        ItemError::Permanent(reason)
    }

    /// Download (unless stored already) → sidecar → `done`, for one recording whose ledger row
    /// is `row`.
    ///
    /// # Errors
    /// The item's error, classified; see [`ItemError`].
    pub async fn transfer(
        &self,
        item: &mut dyn Transfer,
        row: RecordingRow,
    ) -> Result<Finished, ItemError> {
        let key = item.audio_key().map_err(|e| {
            self.permanent(
                item.recording_id(),
                format!("cannot build an object key: {e}"),
            )
        })?;
        let mut row = row;
        let audio = match (row.state, &row.sha256, row.size_bytes) {
            (RecordingState::Stored, Some(sha), Some(size)) => StoredAudio {
                key: row
                    .object_key
                    .as_deref()
                    .map_or(Ok(key.clone()), ObjectKey::new)
                    .map_err(|e| {
                        self.permanent(
                            item.recording_id(),
                            format!("the ledger's object key is invalid: {e}"),
                        )
                    })?,
                sha256: sha.clone(),
                size: u64::try_from(size).unwrap_or(0),
            },
            (RecordingState::Stored, _, _) => {
                return Err(self.permanent(
                    item.recording_id(),
                    "ledger says stored but has no key/sha256".into(),
                ));
            }
            _ => {
                let audio = self.fetch_audio(item, &key).await?;
                if audio.size > STORED_MARK_BYTES {
                    // Worth a ledger write: a crash before the sidecar then costs no re-download.
                    self.mark_stored(item.recording_id(), &audio).await?;
                    row.state = RecordingState::Stored;
                }
                audio
            }
        };
        let archived_at = crate::clock::rfc3339(self.run.clock.now_ms());
        let sidecar = match item.after_audio(self, &audio).await {
            Ok(()) => item.sidecar(&audio, &archived_at).await,
            Err(e) => Err(e),
        };
        let sidecar = match sidecar {
            Ok(Some(sidecar)) => sidecar,
            // No sidecar yet, or not in this attempt: the verified audio is recorded as `stored`
            // first, so a later run only needs the sidecar (never the download again).
            other => {
                if row.state != RecordingState::Stored {
                    self.mark_stored(item.recording_id(), &audio).await?;
                }
                return match other {
                    Ok(_) => Ok(Finished::Waiting),
                    Err(e) => Err(e),
                };
            }
        };
        // Next to the audio as stored (its key is in the ledger), whatever the item says now.
        let sidecar_key = layout::sidecar_for(&audio.key);
        self.put_sidecar(&sidecar_key, &sidecar).await?;
        if row.state == RecordingState::Stored {
            let id = item.recording_id().to_owned();
            self.run
                .db("recording an archived recording", || {
                    self.run.vault.mark_recording_done(
                        &self.run.org,
                        self.source,
                        &id,
                        sidecar_key.as_str(),
                    )
                })
                .await?;
            return Ok(Finished::Marked(audio.size));
        }
        // Small recording: audio and sidecar go into the ledger in one write per batch. A crash
        // before it leaves the row `ready`; the rerun finds the identical object and adopts it.
        Ok(Finished::Unmarked(
            Archived {
                recording_id: item.recording_id().to_owned(),
                object_key: audio.key.to_string(),
                sha256: audio.sha256,
                size: i64::try_from(audio.size).unwrap_or(i64::MAX),
                sidecar_key: sidecar_key.to_string(),
            },
            audio.size,
        ))
    }

    async fn mark_stored(&self, id: &str, audio: &StoredAudio) -> Result<(), ItemError> {
        self.run
            .db("recording stored audio", || {
                self.run.vault.mark_recording_stored(
                    &self.run.org,
                    self.source,
                    id,
                    audio.key.as_str(),
                    &audio.sha256,
                    i64::try_from(audio.size).unwrap_or(i64::MAX),
                )
            })
            .await?;
        Ok(())
    }

    /// Downloads with one fresh link after an expiry and a few in-run retries for transient
    /// failures; what still fails is left for the next run (never marked failed here).
    async fn fetch_audio(
        &self,
        item: &mut dyn Transfer,
        key: &ObjectKey,
    ) -> Result<StoredAudio, ItemError> {
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let declared = item.declared_size();
            let result = match item.download().await {
                Ok(media) => {
                    // The link worked: should it expire during a later retry of this transfer,
                    // that earns another fresh link (retries stay bounded by the attempts).
                    refreshed = false;
                    self.store_stream(key, media, declared).await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(ItemError::LinkExpired(why)) if !refreshed => {
                    refreshed = true;
                    tracing::info!(org = %self.run.org.name, source = self.source, recording = %item.recording_id(), "link refused ({why}); asking for a fresh one");
                    item.refresh_link().await?;
                }
                Err(ItemError::Transient(why)) if attempt + 1 < IN_RUN_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(org = %self.run.org.name, source = self.source, recording = %item.recording_id(), attempt, "transient: {why}; retrying");
                    tokio::time::sleep(self.run.retry.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Streams `media` to `key` create-only, verifying the size (`declared`, else the
    /// `Content-Length`) and hashing on the way.
    ///
    /// # Errors
    /// The transfer's errors as the item's; storage failures as the org's.
    pub async fn store_stream(
        &self,
        key: &ObjectKey,
        media: MediaStream,
        declared: Option<u64>,
    ) -> Result<StoredAudio, ItemError> {
        let expected = declared.or(media.content_length);
        let body = media.stream.map_err(StreamError);
        match self.run.archive.put_stream(key, body, expected).await {
            Ok(outcome) => Ok(StoredAudio {
                key: key.clone(),
                sha256: outcome.sha256,
                size: outcome.size,
            }),
            Err(ArchiveError::Conflict {
                existing_sha256,
                new_sha256,
                ..
            }) => Err(ItemError::Permanent(format!(
                "{key} already holds different bytes (sha256 {existing_sha256}, new {new_sha256}); left untouched — compare both and remove the wrong one by hand"
            ))),
            Err(ArchiveError::Source(src)) => match src.downcast::<StreamError>() {
                // The media stream failed: classify the underlying Webex error.
                Ok(b) => Err(classify(b.0)),
                Err(src) => Err(ItemError::Transient(format!(
                    "download to {key} interrupted: {src}"
                ))),
            },
            // The download ended short or long: the transfer's fault, not the store's.
            Err(e @ ArchiveError::SizeMismatch { .. }) => Err(ItemError::Transient(e.to_string())),
            Err(e @ ArchiveError::InvalidKey { .. }) => Err(ItemError::Permanent(e.to_string())),
            // Everything else is our own storage failing (full, read-only, no credentials,
            // unreachable): the org stops and no item's attempts are used up.
            Err(e) => Err(storage_failed(format!("writing {key}"), e)),
        }
    }

    /// Writes a sidecar create-only. One that exists already is kept: it differs at most by
    /// `archived_at` (a crash between writing it and the ledger), and a sidecar is never
    /// rewritten.
    ///
    /// # Errors
    /// Storage failures, as the org's.
    pub async fn put_sidecar(&self, key: &ObjectKey, sidecar: &Value) -> Result<(), ItemError> {
        let body = serde_json::to_vec_pretty(sidecar)
            .map_err(|e| ItemError::Permanent(format!("sidecar: {e}")))?;
        match self.run.archive.put_if_absent(key, Bytes::from(body)).await {
            Ok(PutStatus::Created | PutStatus::AlreadyPresent | PutStatus::ExistsDifferent) => {
                Ok(())
            }
            Err(e) => Err(storage_failed(format!("writing {key}"), e)),
        }
    }

    /// Audio and sidecar both in storage while the ledger still says `ready`: the run that wrote
    /// them died before its ledger write. Hashes the audio and records it as archived; returns
    /// its size.
    ///
    /// # Errors
    /// Storage and database failures, as the org's.
    pub async fn adopt_existing(
        &self,
        recording_id: &str,
        audio: &ObjectKey,
    ) -> Result<Option<u64>, OrgError> {
        let sidecar = layout::sidecar_for(audio);
        let storage = |e: ArchiveError| OrgError::Storage {
            what: format!("reading {sidecar}"),
            source: e,
        };
        if self
            .run
            .archive
            .head(&sidecar)
            .await
            .map_err(storage)?
            .is_none()
        {
            return Ok(None);
        }
        let Some((sha, size)) = self.run.archive.sha256_of(audio).await.map_err(storage)? else {
            return Ok(None);
        };
        let items = [Archived {
            recording_id: recording_id.to_owned(),
            object_key: audio.to_string(),
            sha256: sha,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sidecar_key: sidecar.to_string(),
        }];
        self.run
            .db("recording archived recordings", || {
                self.run
                    .vault
                    .mark_recordings_archived(&self.run.org, self.source, &items)
            })
            .await?;
        Ok(Some(size))
    }

    /// One unfinished recording whose source no longer lists it: counts an attempt, and fails it
    /// with `why` once attempts run out.
    ///
    /// # Errors
    /// Database failures, as the org's.
    pub async fn note_attempt(
        &self,
        id: &str,
        why: &str,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        self.note_attempt_or(id, why, report, |attempts| {
            format!("gave up after {attempts} attempts; last error: {why}")
        })
        .await
    }

    /// [`Self::note_attempt`] with the failure reason built by `final_reason(attempts)`.
    ///
    /// # Errors
    /// Database failures, as the org's.
    pub async fn note_attempt_or(
        &self,
        id: &str,
        why: &str,
        report: &mut OrgReport,
        final_reason: impl FnOnce(i64) -> String,
    ) -> Result<(), OrgError> {
        let attempts = self
            .run
            .db("counting a failed attempt", || {
                self.run
                    .vault
                    .note_recording_attempt(&self.run.org, self.source, id, why)
            })
            .await?;
        if attempts >= self.run.config.sync.max_attempts {
            self.fail(id, &final_reason(attempts), report).await?;
        } else {
            tracing::warn!(org = %self.run.org.name, source = self.source, recording = %id, "will retry: {why}");
            report.transient_left += 1;
        }
        Ok(())
    }

    async fn fail(&self, id: &str, why: &str, report: &mut OrgReport) -> Result<(), OrgError> {
        self.run
            .db("recording a failure", || {
                self.run
                    .vault
                    .mark_recording_failed(&self.run.org, self.source, id, why)
            })
            .await?;
        report.failed.push(format!("recording {id}: {why}"));
        self.run
            .progress
            .event(&self.run.org.name, ProgressEvent::Failed);
        Ok(())
    }

    /// Records the outcomes of one batch in the ledger and the report: archived ones (the small
    /// ones in one statement), failures with their reasons, attempts of transient ones. The first
    /// org-level error is returned after everything else is recorded.
    ///
    /// # Errors
    /// The batch's first org-level error, or a database failure while recording.
    pub async fn settle(
        &self,
        outcomes: Vec<(String, Result<Finished, ItemError>)>,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let mut unmarked: Vec<(Archived, u64)> = Vec::new();
        let mut org_error: Option<OrgError> = None;
        for (id, outcome) in outcomes {
            match outcome {
                Err(ItemError::Org(e)) => {
                    tracing::error!(org = %self.run.org.name, source = self.source, recording = %id, "stopping this org: {e}");
                    org_error.get_or_insert(e);
                }
                Err(ItemError::Skipped) => {}
                Ok(Finished::Marked(bytes)) => self.count_archived(bytes, report),
                Ok(Finished::Unmarked(item, bytes)) => unmarked.push((item, bytes)),
                Ok(Finished::Waiting) => report.awaiting_metadata += 1,
                Err(ItemError::Permanent(reason)) => self.fail(&id, &reason, report).await?,
                Err(ItemError::Absent(reason)) => {
                    tracing::info!(org = %self.run.org.name, source = self.source, recording = %id, "nothing to archive: {reason}");
                    self.run
                        .db("recording an absent recording", || {
                            self.run.vault.mark_recording_absent(
                                &self.run.org,
                                self.source,
                                &id,
                                &reason,
                            )
                        })
                        .await?;
                    report.absent += 1;
                }
                Err(ItemError::Transient(reason) | ItemError::LinkExpired(reason)) => {
                    self.note_attempt(&id, &reason, report).await?;
                }
            }
        }
        if !unmarked.is_empty() {
            let items: Vec<Archived> = unmarked.iter().map(|(a, _)| a.clone()).collect();
            match self
                .run
                .vault
                .mark_recordings_archived(&self.run.org, self.source, &items)
                .await
            {
                Ok(()) => {
                    for (_, bytes) in unmarked {
                        self.count_archived(bytes, report);
                    }
                }
                Err(e) => {
                    // Objects and sidecars are in place; the next run adopts them.
                    tracing::warn!(org = %self.run.org.name, source = self.source, "ledger write for {} archived recordings failed: {e}", items.len());
                    report.transient_left += items.len() as u64;
                }
            }
        }
        match org_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn count_archived(&self, bytes: u64, report: &mut OrgReport) {
        report.archived += 1;
        report.bytes += bytes;
        self.run
            .progress
            .event(&self.run.org.name, ProgressEvent::Archived(bytes));
    }
}
