//! Webex Calling converged recordings (webex-api.md §3): list windows of at most
//! `[calling] window_days`, then per recording, just before its transfer, the details call for a
//! fresh link (valid 3 h), the audio, and the metadata for the sidecar.
//!
//! Ledger: one `recordings` row per recording under source `calling` (its `task_id` is the
//! recording id, its time `timeRecorded`), no task rows. A recording whose metadata is not ready
//! stays `stored` until it is, or until `[calling] metadata_grace_hours` after it was created,
//! when the sidecar is written with `"metadata": null` and the reason.

pub mod config;
mod transfer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::{StreamExt, stream};
use vault::{RecordingRow, RecordingState, RecordingUpsert};
use webex::calling::{CallingClient, ListQuery};
use webex::media::LinkPolicy;

use crate::error::OrgError;
use crate::pipeline::{Finished, ItemError, Pipeline, Transfer};
use crate::progress::ProgressEvent;
use crate::report::OrgReport;
use crate::source::{OrgRun, Source, SourceSpec};

pub use config::CallingConfig;
use transfer::{CallingTransfer, NO_LINK};

/// This source's name in the ledger, object keys and sidecars.
pub const SOURCE: &str = "calling";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Recordings settled per ledger round (one list page's worth).
const CHUNK: usize = 100;

/// The registration of Webex Calling recordings.
pub static SPEC: SourceSpec = SourceSpec {
    name: SOURCE,
    label: "Webex Calling",
    scopes: &[webex::CALLING_COMPLIANCE_SCOPE],
    consent_reason: "list Webex Calling recordings and download them (Compliance Officer)",
    missing_scope_hint: "reconnect the org authorized by a user with the Compliance Officer role in Control Hub, and make sure the integration is registered with spark-compliance:recordings_read",
    start,
};

fn start(run: Arc<OrgRun>) -> Result<Box<dyn Source>, OrgError> {
    let base = url::Url::parse(&run.config.webex.api_base)
        .map_err(|e| OrgError::Config(format!("[webex] api_base: {e}")))?;
    let client = CallingClient::new(
        run.http.clone(),
        base.clone(),
        run.tokens.clone(),
        run.gates.gate(&run.org.client_id),
        run.retry.clone(),
        run.config.calling.bearer_hosts.clone(),
        LinkPolicy::for_api_base(&base),
    );
    Ok(Box::new(CallingHarvest::new(run, Arc::new(client))))
}

/// One org's Calling harvest.
pub struct CallingHarvest {
    run: Arc<OrgRun>,
    pipeline: Pipeline,
    client: Arc<CallingClient>,
    /// Set once an org-level error is seen in this source.
    halted: AtomicBool,
    /// Whether any details answer of this run carried an audio link: without one, a missing
    /// link means the org withholds them all (Prevent Downloading), not this one recording.
    link_seen: AtomicBool,
}

#[async_trait]
impl Source for CallingHarvest {
    async fn harvest(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let result = self.run_window(from_ms, to_ms, report).await;
        if result.is_err() {
            self.halted.store(true, Ordering::Relaxed);
        }
        result
    }

    fn api_calls(&self) -> u64 {
        self.client.api_calls()
    }
}

impl CallingHarvest {
    /// A harvest of `run`'s org through `client`.
    pub fn new(run: Arc<OrgRun>, client: Arc<CallingClient>) -> Self {
        CallingHarvest {
            pipeline: Pipeline::new(run.clone(), SOURCE),
            run,
            client,
            halted: AtomicBool::new(false),
            link_seen: AtomicBool::new(false),
        }
    }

    fn stopped(&self) -> bool {
        self.halted.load(Ordering::Relaxed) || self.run.stopped()
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.run.config.calling.window_days.clamp(1, 30)).unwrap_or(1) * DAY_MS
    }

    async fn run_window(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        // Recordings an earlier run left `ready` (a crash before its ledger write): those whose
        // audio and sidecar are in storage already are adopted without asking Webex again.
        let left: HashSet<String> = self
            .run
            .db("reading unfinished recordings", || {
                self.run
                    .vault
                    .recordings_in_states(&self.run.org, SOURCE, &[RecordingState::Ready])
            })
            .await?
            .into_iter()
            .map(|r| r.recording_id)
            .collect();
        let window = self.window_ms();
        let mut start = from_ms;
        while start < to_ms && !self.stopped() {
            let end = (start + window).min(to_ms);
            self.list_window(start, end, report).await?;
            start = end;
        }
        self.process_unfinished(report, &left).await?;
        if !self.stopped() {
            self.run
                .record_windows(SOURCE, from_ms, to_ms, window, report)
                .await?;
        }
        Ok(())
    }

    /// The statuses listed: `available`, and `purged` when configured.
    fn statuses(&self) -> Vec<&'static str> {
        if self.run.config.calling.include_purged {
            vec!["available", "purged"]
        } else {
            vec!["available"]
        }
    }

    /// Lists one window for every configured service type and status and records what it
    /// finds as `ready` (known ones keep their state).
    async fn list_window(
        &self,
        from: i64,
        to: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        for service_type in &self.run.config.calling.service_types {
            for status in self.statuses() {
                let query = ListQuery {
                    from_ms: from,
                    to_ms: to,
                    service_type: service_type.clone(),
                    status: status.to_owned(),
                };
                let listing = self.client.list(&query).await?;
                report.task_pages += u64::from(listing.pages);
                report.outside_window += listing.outside_window + listing.filtered_out;
                self.run
                    .record_rejected(
                        "/v1/admin/convergedRecordings",
                        "bad_recording",
                        &listing.rejected,
                        report,
                    )
                    .await;
                let upserts: Vec<RecordingUpsert> = listing
                    .items
                    .iter()
                    .map(|r| RecordingUpsert {
                        recording_id: r.id.clone(),
                        task_id: r.id.clone(),
                        task_created_ms: r.time_recorded_ms.or(r.create_time_ms).unwrap_or(from),
                        file_name: r.format.clone(),
                        attributes_json: r.raw.to_string(),
                    })
                    .collect();
                let rows = self
                    .run
                    .db("saving listed recordings", || {
                        self.run
                            .vault
                            .upsert_recordings(&self.run.org, SOURCE, &upserts)
                    })
                    .await?;
                report.already_archived += rows
                    .iter()
                    .filter(|r| r.state == RecordingState::Done)
                    .count() as u64;
                self.run.progress.event(
                    &self.run.org.name,
                    ProgressEvent::TasksListed(listing.items.len() as u64),
                );
            }
        }
        Ok(())
    }

    /// Every `ready` or `stored` Calling recording of the org, new or left by an earlier run,
    /// a page's worth at a time: details → audio → metadata → sidecar.
    async fn process_unfinished(
        &self,
        report: &mut OrgReport,
        left: &HashSet<String>,
    ) -> Result<(), OrgError> {
        let rows = self
            .run
            .db("reading unfinished recordings", || {
                self.run.vault.recordings_in_states(
                    &self.run.org,
                    SOURCE,
                    &[RecordingState::Ready, RecordingState::Stored],
                )
            })
            .await?;
        let concurrency = (self.run.config.sync.batch_concurrency
            * self.run.config.sync.downloads_per_batch)
            .max(1);
        for chunk in rows.chunks(CHUNK) {
            if self.stopped() {
                break;
            }
            let outcomes: Vec<(String, Result<Finished, ItemError>)> =
                stream::iter(chunk.iter().cloned())
                    .map(|row| async move {
                        let id = row.recording_id.clone();
                        if self.stopped() {
                            // Leave it as it is for the next run.
                            return (id, Err(ItemError::Skipped));
                        }
                        let adopt = left.contains(&id);
                        (id, self.transfer(row, adopt).await)
                    })
                    .buffer_unordered(concurrency)
                    .collect()
                    .await;
            let outcomes = self.judge_missing_links(outcomes).await;
            let result = self.pipeline.settle(outcomes, report).await;
            if let Err(e) = result {
                self.halted.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One recording through the pipeline; with `adopt`, audio and sidecar an earlier run
    /// wrote before dying are recorded as archived without any request to Webex.
    async fn transfer(&self, row: RecordingRow, adopt: bool) -> Result<Finished, ItemError> {
        let mut item = CallingTransfer::new(self, &row)?;
        if adopt
            && row.state == RecordingState::Ready
            && let Ok(key) = item.audio_key()
            && self
                .pipeline
                .adopt_existing(&row.recording_id, &key)
                .await?
        {
            return Ok(Finished::Marked(item.declared_size().unwrap_or(0)));
        }
        let result = self.pipeline.transfer(&mut item, row).await;
        if let Err(ItemError::Org(_)) = &result {
            self.halted.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Recordings whose details carried no audio link although the grant may download: when no
    /// recording of this run got a link, Webex withholds them all (Prevent Downloading), which
    /// is one org-level error and leaves the items as they are; otherwise each fails alone with
    /// the reason.
    async fn judge_missing_links(
        &self,
        outcomes: Vec<(String, Result<Finished, ItemError>)>,
    ) -> Vec<(String, Result<Finished, ItemError>)> {
        if self.link_seen.load(Ordering::Relaxed) {
            return outcomes;
        }
        let any = outcomes
            .iter()
            .any(|(_, r)| matches!(r, Err(ItemError::Permanent(why)) if why.starts_with(NO_LINK)));
        if !any {
            return outcomes;
        }
        self.halted.store(true, Ordering::Relaxed);
        let scopes_known = self
            .run
            .tokens
            .org()
            .await
            .scopes
            .is_some_and(|s| !s.trim().is_empty());
        let message = if scopes_known {
            format!(
                "Webex lists this org's recordings but gives no download link for any of them, although the grant has {}. Prevent Downloading is on for the org or its users: an administrator must turn it off in Control Hub (Services › Calling › Call Recording) for wxvault to archive them. Nothing was marked failed; the next run tries again.",
                webex::CALLING_COMPLIANCE_SCOPE
            )
        } else {
            format!(
                "Webex lists this org's recordings but gives no download link for any of them, and wxvault does not know which scopes the org's grant carries. Either the grant does not carry {scope} (have a user with the Compliance Officer role in Control Hub reconnect the org: `wxvault connect --sources calling` or an invite link), or Prevent Downloading is on for the org or its users (an administrator must turn it off in Control Hub, Services › Calling › Call Recording). Nothing was marked failed; the next run tries again.",
                scope = webex::CALLING_COMPLIANCE_SCOPE
            )
        };
        let org_error = OrgError::NotPermitted {
            source_label: SPEC.label,
            message,
        };
        let mut first = Some(org_error);
        outcomes
            .into_iter()
            .map(|(id, r)| match r {
                Err(ItemError::Permanent(why)) if why.starts_with(NO_LINK) => match first.take() {
                    Some(e) => (id, Err(ItemError::Org(e))),
                    // Left untouched: settle reports the org's error once.
                    None => (id, Err(ItemError::Skipped)),
                },
                other => (id, other),
            })
            .collect()
    }
}
