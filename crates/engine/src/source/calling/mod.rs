//! Webex Calling converged recordings (webex-api.md §3): list windows of at most
//! `[calling] window_days`, then per recording, just before its transfer, the details call for a
//! fresh link (valid 3 h), the audio, and the metadata for the sidecar.
//!
//! Ledger: one `recordings` row per recording under source `calling` (its `task_id` is the
//! recording id, its time `timeRecorded`), no task rows. A recording whose metadata is not ready
//! stays `stored` until it is, or until `[calling] metadata_grace_hours` after it was created,
//! when the sidecar is written with `"metadata": null` and the reason.

pub mod config;
mod probe;
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
    /// link may mean the org withholds them all (Prevent Downloading), not this one recording.
    link_seen: AtomicBool,
    /// A recording of this run's listing that is archived already: proof of whether the grant
    /// still gets links when none of the unfinished ones does.
    known_good: std::sync::Mutex<Option<String>>,
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

    async fn probe(&self) -> Result<String, OrgError> {
        self.probe_grant().await
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
            known_good: std::sync::Mutex::new(None),
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
        let mut listing_error = None;
        while start < to_ms && !self.stopped() {
            let end = (start + window).min(to_ms);
            if let Err(e) = self.list_window(start, end, report).await {
                // What was listed before is still archived; the error then stops this source.
                listing_error = Some(e);
                break;
            }
            start = end;
        }
        let processed = self.process_unfinished(report, &left).await;
        if let Some(e) = listing_error {
            self.halted.store(true, Ordering::Relaxed);
            return Err(e);
        }
        processed?;
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
                report.recording_pages += u64::from(listing.pages);
                report.outside_window += listing.outside_window + listing.filtered_out;
                self.run
                    .record_rejected(
                        "/v1/admin/convergedRecordings",
                        "bad_recording",
                        &listing.rejected,
                        report,
                    )
                    .await;
                // Without `timeRecorded` or `createTime` there is no stable object key: such an
                // item is reported like any other unreadable one, never filed under a guess.
                let (items, timeless): (Vec<_>, Vec<_>) = listing
                    .items
                    .iter()
                    .partition(|r| r.time_recorded_ms.or(r.create_time_ms).is_some());
                let timeless: Vec<webex::wxcc::Rejected> = timeless
                    .into_iter()
                    .map(|r| webex::wxcc::Rejected {
                        id: Some(r.id.clone()),
                        reason: "neither timeRecorded nor createTime is given, so the recording has no date to be filed under".into(),
                    })
                    .collect();
                self.run
                    .record_rejected(
                        "/v1/admin/convergedRecordings",
                        "bad_recording",
                        &timeless,
                        report,
                    )
                    .await;
                let upserts: Vec<RecordingUpsert> = items
                    .into_iter()
                    .map(|r| RecordingUpsert {
                        recording_id: r.id.clone(),
                        task_id: r.id.clone(),
                        task_created_ms: r
                            .time_recorded_ms
                            .or(r.create_time_ms)
                            .unwrap_or_default(),
                        file_name: r.format.clone(),
                        attributes_json: without_links(&r.raw).to_string(),
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
                let done: Vec<&RecordingRow> = rows
                    .iter()
                    .filter(|r| r.state == RecordingState::Done)
                    .collect();
                report.already_archived += done.len() as u64;
                if let (Some(r), Ok(mut good)) = (done.first(), self.known_good.lock())
                    && good.is_none()
                {
                    *good = Some(r.recording_id.clone());
                }
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
            .await?
            .into_iter()
            .filter(|r| self.run.owns_item(r.task_created_ms))
            .collect::<Vec<_>>();
        let concurrency = (self.run.config.sync.batch_concurrency
            * self.run.config.sync.downloads_per_batch)
            .max(1);
        // Owner of each recording, to tell one owner's setting from the org's.
        let owners: std::collections::HashMap<String, String> = rows
            .iter()
            .filter_map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.attributes_json).ok()?;
                let owner = v.get("ownerId")?.as_str()?.to_owned();
                Some((r.recording_id.clone(), owner))
            })
            .collect();
        // Recordings without a link while no recording of this run got one: judged once it can
        // be told (see `judge_missing_links`), else at the end.
        let mut held: Vec<String> = Vec::new();
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
            let outcomes = self.hold_missing_links(outcomes, &mut held);
            if let Err(e) = self.pipeline.settle(outcomes, report).await {
                self.halted.store(true, Ordering::Relaxed);
                return Err(e);
            }
            // Judged early when it can be told cheaply: a recording archived before is there to
            // ask about, or a whole chunk of several owners' recordings got no link (so an org
            // that withholds every link costs one chunk of details calls per run, not one per
            // recording, while one owner's oldest recordings never hide the others').
            let distinct_owners: HashSet<&String> =
                held.iter().filter_map(|id| owners.get(id)).collect();
            let known = self.known_good.lock().is_ok_and(|g| g.is_some());
            if !held.is_empty()
                && !self.link_seen.load(Ordering::Relaxed)
                && (known || (held.len() >= CHUNK && distinct_owners.len() >= 3))
                && self.settle_held(&mut held, report, false).await?
            {
                return Ok(());
            }
        }
        if held.is_empty() || self.run.stopped() {
            return Ok(());
        }
        self.settle_held(&mut held, report, true).await?;
        Ok(())
    }

    /// Records the recordings held for a missing link once a verdict is possible: each failed
    /// alone, or one org-level error that leaves them all as they are (the source then stops:
    /// returns true). Without a verdict they stay held, or, when `last`, untouched for the next
    /// run with the org-level error (nothing seen proves the links are withheld only for some).
    async fn settle_held(
        &self,
        held: &mut Vec<String>,
        report: &mut OrgReport,
        last: bool,
    ) -> Result<bool, OrgError> {
        let verdict = match self.judge_missing_links(held).await {
            Ok(Verdict::Undecided) if !last => return Ok(false),
            Ok(Verdict::Undecided) => Verdict::OrgWide(self.withheld_for_org(held.len()).await),
            Ok(v) => v,
            Err(e) => {
                // The check itself failed (rate limit, network, …): that error stops the source,
                // classified as Webex classified it, and the held recordings stay as they are.
                self.halted.store(true, Ordering::Relaxed);
                held.clear();
                return Err(e);
            }
        };
        let held = std::mem::take(held);
        let stops = matches!(verdict, Verdict::OrgWide(_));
        let outcomes = held
            .into_iter()
            .enumerate()
            .map(|(i, id)| match &verdict {
                Verdict::Alone(reason) => (id, Err(ItemError::Permanent(reason.clone()))),
                Verdict::OrgWide(_) if i > 0 => (id, Err(ItemError::Skipped)),
                Verdict::OrgWide(message) => (
                    id,
                    Err(ItemError::Org(OrgError::NotPermitted {
                        source_label: SPEC.label,
                        message: message.clone(),
                    })),
                ),
                Verdict::Undecided => (id, Err(ItemError::Skipped)),
            })
            .collect();
        let result = self.pipeline.settle(outcomes, report).await;
        if result.is_err() {
            self.halted.store(true, Ordering::Relaxed);
        }
        result.map(|()| stops)
    }

    /// One recording through the pipeline; with `adopt`, audio and sidecar an earlier run
    /// wrote before dying are recorded as archived without any request to Webex.
    async fn transfer(&self, row: RecordingRow, adopt: bool) -> Result<Finished, ItemError> {
        let mut item = CallingTransfer::new(self, &row)?;
        if adopt
            && row.state == RecordingState::Ready
            && let Ok(key) = item.audio_key()
            && let Some(size) = self
                .pipeline
                .adopt_existing(&row.recording_id, &key)
                .await?
        {
            // Audio and sidecar were written by a run that died before its ledger write.
            return Ok(Finished::Marked(size));
        }
        let result = self.pipeline.transfer(&mut item, row).await;
        if let Err(ItemError::Org(_)) = &result {
            self.halted.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Takes out of `outcomes` the recordings whose details carried no audio link while no
    /// recording of this run has got one yet (`held`, left as they are until judged); once one
    /// has, a missing link is that recording's own failure.
    fn hold_missing_links(
        &self,
        outcomes: Vec<(String, Result<Finished, ItemError>)>,
        held: &mut Vec<String>,
    ) -> Vec<(String, Result<Finished, ItemError>)> {
        let seen = self.link_seen.load(Ordering::Relaxed);
        outcomes
            .into_iter()
            .map(|(id, r)| match r {
                Err(ItemError::Permanent(why)) if why.starts_with(NO_LINK) => {
                    if seen {
                        (id, Err(ItemError::Permanent(withheld_alone())))
                    } else {
                        held.push(id.clone());
                        (id, Err(ItemError::Skipped))
                    }
                }
                other => (id, other),
            })
            .collect()
    }

    /// Whether recordings without a link are withheld alone (their owner's setting) or by the
    /// org: decided by a link seen in this run, else by the details of a recording archived
    /// before (if it still gets a link, these are withheld alone; if not, by the org).
    ///
    /// # Errors
    /// The details call's own error when it fails for another reason than the recording being
    /// gone.
    async fn judge_missing_links(&self, held: &[String]) -> Result<Verdict, OrgError> {
        if self.link_seen.load(Ordering::Relaxed) {
            return Ok(Verdict::Alone(withheld_alone()));
        }
        let known = self.known_good.lock().ok().and_then(|g| g.clone());
        let Some(id) = known else {
            return Ok(Verdict::Undecided);
        };
        match self.client.details(&id).await {
            Ok(d) if d.audio_link.is_some() => {
                // Links work for the org: remembered for the rest of the run.
                self.link_seen.store(true, Ordering::Relaxed);
                Ok(Verdict::Alone(withheld_alone()))
            }
            Ok(_) => Ok(Verdict::OrgWide(self.withheld_for_org(held.len()).await)),
            Err(e) if e.status() == Some(404) => {
                // Deleted since: nothing to compare with.
                if let Ok(mut g) = self.known_good.lock() {
                    *g = None;
                }
                Ok(Verdict::Undecided)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The org-level message for recordings Webex gives no link for, saying only what applies.
    async fn withheld_for_org(&self, waiting: usize) -> String {
        let scopes = self.run.tokens.org().await.scopes;
        let has_scope = scopes.as_deref().is_some_and(|g| {
            g.split_whitespace()
                .any(|s| s == webex::CALLING_COMPLIANCE_SCOPE)
        });
        let scope = webex::CALLING_COMPLIANCE_SCOPE;
        if has_scope {
            format!(
                "Webex lists this org's recordings but gives no download link for them ({waiting} or more waiting), although the grant has {scope}. Prevent Downloading is on for the org or its users: an administrator must turn it off in Control Hub (Services › Calling › Call Recording); if it is off, the authorizing user is no longer a Compliance Officer and one must reconnect the org. Nothing was marked failed; the next run tries again."
            )
        } else {
            format!(
                "Webex lists this org's recordings but gives no download link for them ({waiting} or more waiting). Prevent Downloading is on for the org or its users: an administrator must turn it off in Control Hub (Services › Calling › Call Recording). Or the grant does not carry {scope} (wxvault does not know its scopes): have a Compliance Officer reconnect the org (`wxvault connect --sources calling` or an invite link). Nothing was marked failed; the next run tries again."
            )
        }
    }
}

/// A listed recording as kept in the ledger: list items carry no links (webex-api.md §3.2), but
/// should one ever come with them, the signed links are never stored.
fn without_links(raw: &serde_json::Value) -> serde_json::Value {
    let mut v = raw.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("temporaryDirectDownloadLinks");
    }
    v
}

/// The reason of a recording Webex withholds the link of while others of the org download.
fn withheld_alone() -> String {
    format!(
        "{NO_LINK} while others of the org do: Prevent Downloading is probably on for its owner; turn it off in Control Hub for that user, then `wxvault retry`"
    )
}

/// What recordings without an audio link are (see `CallingHarvest::judge_missing_links`).
enum Verdict {
    /// Withheld for these recordings only: each fails with this reason.
    Alone(String),
    /// Withheld by the org: one org-level error with this message, nothing failed.
    OrgWide(String),
    /// Nothing to tell yet.
    Undecided,
}
