//! WxCC harvest for one org: tasks → captures (10 per query) → streamed download → verified
//! object → sidecar → ledger `done`.
//!
//! Capture links live at most 60 minutes, so they are never stored: each captures batch is
//! downloaded right after its query, and a recording whose link expired is re-queried alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use archive::layout::{self, ObjectKey};
use archive::sidecar::{RecordingSidecar, SCHEMA_V1};
use async_trait::async_trait;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use vault::{RecordingRow, RecordingState, RecordingUpsert, TaskRow, TaskState, TaskUpsert};
use webex::ErrorClass;
use webex::media::MediaStream;
use webex::wxcc::{Capture, User, WxccClient, api_base_for_region};

use crate::error::OrgError;
use crate::pipeline::{Finished, ItemError, Pipeline, StoredAudio, Transfer, classify};
use crate::progress::ProgressEvent;
use crate::report::OrgReport;
use crate::source::{OrgRun, Source, SourceSpec};

pub use crate::clock::rfc3339;

/// One day: WxCC task queries are kept to 24 h windows (webex-api.md §2.3).
pub const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// This source's name in the ledger, object keys and sidecars.
pub const SOURCE: &str = "wxcc";
/// A task that settled without a capture is asked about again at most this often.
const RECHECK_EVERY_MS: i64 = 24 * 60 * 60 * 1000;
/// Reason code of a task Webex never said a capture was requested for, with none after the
/// grace period: legitimately absent, counted apart in `status`.
pub const CAPTURE_NEVER_REQUESTED: &str = "capture_never_requested";

/// The registration of Webex Contact Center captures.
pub static SPEC: SourceSpec = SourceSpec {
    name: SOURCE,
    label: "Contact Center",
    scopes: &[webex::WXCC_READ_SCOPE],
    consent_reason: "list Contact Center tasks and download their recordings",
    missing_scope_hint: "reconnect the org with an administrator of Webex Contact Center, and make sure the integration is registered with cjp:config_read",
    start,
};

fn start(run: Arc<OrgRun>) -> Result<Box<dyn Source>, OrgError> {
    let base = api_base_for_region(&run.config.wxcc.api_base, &run.org.region).map_err(|e| {
        OrgError::Config(format!(
            "[wxcc] api_base for region {}: {e}",
            run.org.region
        ))
    })?;
    let client = Arc::new(WxccClient::new(
        run.http.clone(),
        base,
        run.org.org_id.clone(),
        run.tokens.clone(),
        run.gates.gate(&run.org.client_id),
        run.retry.clone(),
    ));
    Ok(Box::new(WxccHarvest::new(run, client)))
}

/// Everything one org's WxCC harvest needs.
pub struct WxccHarvest {
    run: Arc<OrgRun>,
    pipeline: Pipeline,
    client: Arc<WxccClient>,
    users: Mutex<HashMap<String, Option<User>>>,
    /// Set once an org-level error is seen in this source: no further listing window, captures
    /// batch or window record is started (the lease's stop flag in `run` does the same).
    halted: AtomicBool,
}

#[async_trait]
impl Source for WxccHarvest {
    async fn harvest(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        self.run(from_ms, to_ms, report).await
    }

    fn api_calls(&self) -> u64 {
        self.client.api_calls()
    }

    /// Lists the last hour's tasks: one call that needs `cjp:config_read` and the role.
    async fn probe(&self) -> Result<String, OrgError> {
        let now = self.run.clock.now_ms();
        let listing = self.client.list_tasks(now - 3_600_000, now).await?;
        Ok(format!(
            "Webex lists the org's Contact Center tasks ({} in the last hour)",
            listing.tasks.len()
        ))
    }
}

impl WxccHarvest {
    /// A harvest of `run`'s org through `client`.
    pub fn new(run: Arc<OrgRun>, client: Arc<WxccClient>) -> Self {
        Self {
            pipeline: Pipeline::new(run.clone(), SOURCE),
            run,
            client,
            users: Mutex::new(HashMap::new()),
            halted: AtomicBool::new(false),
        }
    }

    fn stopped(&self) -> bool {
        self.halted.load(Ordering::Relaxed) || self.run.stopped()
    }

    /// Moves one task to `state` with `why` (a database call, retried when transient).
    async fn set_task_state(
        &self,
        task_id: &str,
        state: TaskState,
        why: &str,
    ) -> Result<(), OrgError> {
        self.run
            .db("updating a task state", || {
                self.run
                    .vault
                    .set_task_state(&self.run.org, SOURCE, task_id, state, Some(why))
            })
            .await
    }

    /// Harvests `[from_ms, to_ms)` and re-checks every task still waiting for its capture.
    ///
    /// # Errors
    /// Only org-level problems (token refused, database down, API refusing the org); problems with
    /// single items are recorded against them and counted in the report.
    pub async fn run(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let mut start = from_ms;
        while start < to_ms && !self.stopped() {
            let end = (start + WINDOW_MS).min(to_ms);
            self.list_window(start, end, report).await?;
            start = end;
        }
        self.process_captures(from_ms, to_ms, report).await?;
        // A window is complete once its tasks are listed and every capture that exists now has
        // been processed; tasks still waiting are tracked by their own state, not by the window.
        if !self.stopped() {
            self.run
                .record_windows(SOURCE, from_ms, to_ms, WINDOW_MS, report)
                .await?;
        }
        Ok(())
    }

    async fn list_window(
        &self,
        from: i64,
        to: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let listing = self.client.list_tasks(from, to).await?;
        report.task_pages += u64::from(listing.pages);
        self.run
            .record_rejected("/v1/tasks", "bad_task", &listing.rejected, report)
            .await;
        self.run.progress.event(
            &self.run.org.name,
            ProgressEvent::TasksListed(listing.tasks.len() as u64),
        );
        report.tasks_seen += listing.tasks.len() as u64;
        let upserts: Vec<TaskUpsert> = listing
            .tasks
            .iter()
            .map(|task| TaskUpsert {
                task_id: task.id.clone(),
                created_ms: task.created_time_ms,
                capture_requested: task.capture_requested,
                attributes_json: task.attributes.to_string(),
            })
            .collect();
        let rows = self
            .run
            .db("saving listed tasks", || {
                self.run.vault.upsert_tasks(&self.run.org, SOURCE, &upserts)
            })
            .await?;
        let absent: Vec<String> = rows
            .into_iter()
            .filter(|row| {
                row.capture_requested == Some(false)
                    && matches!(row.state, TaskState::Discovered | TaskState::PendingCapture)
            })
            .map(|row| row.task_id)
            .collect();
        report.absent += absent.len() as u64;
        self.run
            .db("updating task states", || {
                self.run.vault.set_tasks_state(
                    &self.run.org,
                    SOURCE,
                    &absent,
                    TaskState::Absent,
                    Some("no capture was requested for this task"),
                )
            })
            .await?;
        Ok(())
    }

    /// Tasks that need a captures query: waiting ones, and captured ones with unfinished recordings
    /// (after a crash or a transient failure the link must be fetched again). A rescan adds
    /// every captured, missing and never-requested task created in `[from_ms, to_ms)`: Webex may
    /// add a capture to a task late, and only asking again finds it.
    async fn tasks_to_query(&self, from_ms: i64, to_ms: i64) -> Result<Vec<TaskRow>, OrgError> {
        let unfinished: BTreeSet<String> = self
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
            .map(|r| r.task_id)
            .collect();
        let rows = self
            .run
            .db("reading tasks to query", || {
                self.run.vault.tasks_in_states(
                    &self.run.org,
                    SOURCE,
                    &[
                        TaskState::Discovered,
                        TaskState::PendingCapture,
                        TaskState::Captured,
                    ],
                )
            })
            .await?;
        let mut tasks: Vec<TaskRow> = rows
            .into_iter()
            .filter(|t| match t.state {
                TaskState::Captured => unfinished.contains(&t.task_id),
                _ => t.capture_requested != Some(false),
            })
            .collect();
        // Settled without a capture (missing, or never requested): Webex may still produce one
        // late, so recent ones are asked about again once a day, 10 per query like the rest.
        if self.run.config.sync.rescan_days > 0 {
            let now = self.run.clock.now_ms();
            let days = i64::try_from(self.run.config.sync.rescan_days).unwrap_or(7);
            let since = now - days * 86_400_000;
            let due = self
                .run
                .db("reading tasks to re-check", || {
                    self.run.vault.tasks_due_for_recheck(
                        &self.run.org,
                        SOURCE,
                        since,
                        now - RECHECK_EVERY_MS,
                    )
                })
                .await?;
            tasks.extend(due);
        }
        if self.run.rescan {
            let again = self
                .run
                .db("reading tasks to rescan", || {
                    self.run
                        .vault
                        .tasks_for_rescan(&self.run.org, SOURCE, from_ms, to_ms)
                })
                .await?;
            let mut seen: BTreeSet<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            tasks.extend(again.into_iter().filter(|t| seen.insert(t.task_id.clone())));
        }
        tasks.retain(|t| self.run.owns_item(t.created_ms));
        Ok(tasks)
    }

    async fn process_captures(
        &self,
        from_ms: i64,
        to_ms: i64,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let tasks = self.tasks_to_query(from_ms, to_ms).await?;
        let batches: Vec<Vec<TaskRow>> = tasks.chunks(10).map(<[TaskRow]>::to_vec).collect();
        let results: Vec<Result<OrgReport, OrgError>> = stream::iter(batches)
            .map(|batch| async move {
                let mut part = OrgReport::default();
                self.process_batch(batch, &mut part).await.map(|()| part)
            })
            .buffer_unordered(self.run.config.sync.batch_concurrency)
            .collect()
            .await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(part) => report.absorb(&part),
                Err(e) if first_err.is_none() => first_err = Some(e),
                Err(_) => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn process_batch(
        &self,
        batch: Vec<TaskRow>,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        if self.stopped() {
            return Ok(());
        }
        let result = self.process_batch_inner(batch, report).await;
        if result.is_err() {
            self.halted.store(true, Ordering::Relaxed);
        }
        result
    }

    /// One captures batch. Tasks the query refuses one by one fail alone; when it refuses every
    /// task of the batch alone, the query itself is refused (a wrong endpoint, a bad parameter)
    /// and that stops the org instead of failing every task.
    async fn process_batch_inner(
        &self,
        batch: Vec<TaskRow>,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let n = batch.len();
        let mut refused: Vec<(TaskRow, webex::Error)> = Vec::new();
        self.query_batch(batch, report, &mut refused).await?;
        if n > 1 && refused.len() == n {
            let (_, e) = refused.pop().expect("n > 1");
            return Err(e.into());
        }
        for (task, e) in refused {
            self.fail_refused(task, &e, report).await?;
        }
        Ok(())
    }

    async fn query_batch(
        &self,
        batch: Vec<TaskRow>,
        report: &mut OrgReport,
        refused: &mut Vec<(TaskRow, webex::Error)>,
    ) -> Result<(), OrgError> {
        let ids: Vec<String> = batch.iter().map(|t| t.task_id.clone()).collect();
        let result = match self
            .client
            .query_captures(&ids, self.run.config.wxcc.url_expiration_minutes)
            .await
        {
            Ok(r) => r,
            Err(e) if e.class() == ErrorClass::Transient && !e.is_host_unreachable() => {
                // Leave these tasks for the next run; the org carries on.
                tracing::warn!(org = %self.run.org.name, "captures query for {} tasks failed: {e}", ids.len());
                report.transient_left += ids.len() as u64;
                return Ok(());
            }
            // Refused for something in the request (a poison task id, one bad item), not for the
            // grant or the scope: find the task(s) it refuses and let the others go on.
            Err(e) if matches!(e.status(), Some(400 | 422)) => {
                return self.isolate_refused(batch, e, report, refused).await;
            }
            Err(e) => return Err(e.into()),
        };
        self.run
            .record_rejected(
                "/v1/captures/query",
                "bad_capture",
                &result.rejected,
                report,
            )
            .await;
        let mut by_task: HashMap<String, Vec<Capture>> = HashMap::new();
        for tc in result.tasks {
            by_task.entry(tc.task_id).or_default().extend(tc.recordings);
        }
        let now = self.run.clock.now_ms();
        let grace_ms =
            i64::try_from(self.run.config.wxcc.capture_grace_hours).unwrap_or(48) * 3_600_000;
        let mut work: Vec<(TaskRow, Capture, RecordingRow)> = Vec::new();
        self.run
            .db("noting capture checks", || {
                self.run
                    .vault
                    .note_capture_checks_at(&self.run.org, SOURCE, &ids, now)
            })
            .await?;
        let mut to_pending: Vec<String> = Vec::new();
        let mut to_captured: Vec<String> = Vec::new();
        let mut to_reopen: Vec<String> = Vec::new();
        let mut found: Vec<(TaskRow, Capture)> = Vec::new();
        for task in batch {
            let captures = by_task.remove(&task.task_id).unwrap_or_default();
            if captures.is_empty() {
                if task.state == TaskState::Captured {
                    // Had recordings before; none is listed now (retention purge?).
                    self.settle_vanished(&task, &[], report).await?;
                    continue;
                }
                if task.state == TaskState::Missing && task.capture_requested != Some(true) {
                    // Settled as missing by an older wxvault although Webex never said a capture
                    // was requested: that is legitimately absent.
                    let why = never_requested_reason(self.run.config.wxcc.capture_grace_hours);
                    self.set_task_state(&task.task_id, TaskState::Absent, &why)
                        .await?;
                    continue;
                }
                if matches!(task.state, TaskState::Missing | TaskState::Absent) {
                    // A re-check that still finds nothing: it was reported when it settled.
                    continue;
                }
                if now - task.created_ms > grace_ms {
                    // `captureRequested: false` never gets here (absent at listing). Requested and
                    // never captured is missing: an operator must look. Never said whether one
                    // was requested, and none came: nothing to archive, counted apart.
                    let hours = self.run.config.wxcc.capture_grace_hours;
                    if task.capture_requested == Some(true) {
                        let why =
                            format!("capture was requested but none appeared within {hours} h");
                        self.set_task_state(&task.task_id, TaskState::Missing, &why)
                            .await?;
                        report.missing.push(format!("task {}: {why}", task.task_id));
                    } else {
                        let why = never_requested_reason(hours);
                        self.set_task_state(&task.task_id, TaskState::Absent, &why)
                            .await?;
                        report.absent += 1;
                        report.capture_never_requested += 1;
                    }
                } else {
                    if task.state != TaskState::PendingCapture {
                        to_pending.push(task.task_id.clone());
                    }
                    report.pending_capture += 1;
                }
                continue;
            }
            if task.state == TaskState::Captured {
                let listed: Vec<String> = captures.iter().map(|c| c.id.clone()).collect();
                self.settle_vanished(&task, &listed, report).await?;
            }
            for cap in captures {
                found.push((task.clone(), cap));
            }
            if matches!(task.state, TaskState::Missing | TaskState::Absent) {
                tracing::info!(org = %self.run.org.name, task = %task.task_id, "a capture appeared after the task had settled as {}; archiving it", task.state);
            }
            if task.state == TaskState::Absent {
                to_reopen.push(task.task_id.clone());
            }
            if task.state != TaskState::Captured {
                to_captured.push(task.task_id.clone());
            }
        }
        let upserts: Vec<RecordingUpsert> = found
            .iter()
            .map(|(task, cap)| RecordingUpsert {
                recording_id: cap.id.clone(),
                task_id: task.task_id.clone(),
                task_created_ms: task.created_ms,
                file_name: cap.file_name.clone(),
                attributes_json: recording_json(cap).to_string(),
            })
            .collect();
        let mut rows: HashMap<String, RecordingRow> = self
            .run
            .db("saving listed recordings", || {
                self.run
                    .vault
                    .upsert_recordings(&self.run.org, SOURCE, &upserts)
            })
            .await?
            .into_iter()
            .map(|r| (r.recording_id.clone(), r))
            .collect();
        for (task, cap) in found {
            let Some(row) = rows.remove(&cap.id) else {
                continue;
            };
            match row.state {
                RecordingState::Done => report.already_archived += 1,
                RecordingState::Failed | RecordingState::Absent => {}
                RecordingState::Ready | RecordingState::Stored => work.push((task, cap, row)),
            }
        }
        self.run
            .db("updating task states", || {
                self.run.vault.set_tasks_state(
                    &self.run.org,
                    SOURCE,
                    &to_pending,
                    TaskState::PendingCapture,
                    None,
                )
            })
            .await?;
        self.run
            .db("re-opening late-captured tasks", || {
                self.run
                    .vault
                    .reopen_never_requested(&self.run.org, SOURCE, &to_reopen, now)
            })
            .await?;
        self.run
            .db("updating task states", || {
                self.run.vault.set_tasks_state(
                    &self.run.org,
                    SOURCE,
                    &to_captured,
                    TaskState::Captured,
                    None,
                )
            })
            .await?;
        if work.is_empty() {
            return Ok(());
        }
        self.enrich(&work).await;
        let outcomes: Vec<(String, Result<Finished, ItemError>)> = stream::iter(work)
            .map(|(task, cap, row)| async move {
                let id = cap.id.clone();
                let mut item = WxccTransfer {
                    harvest: self,
                    task: &task,
                    recording_id: cap.id.clone(),
                    file_name: cap.file_name.clone(),
                    attributes_json: row.attributes_json.clone(),
                    cap: Some(cap),
                };
                (id, self.pipeline.transfer(&mut item, row).await)
            })
            .buffer_unordered(self.run.config.sync.downloads_per_batch)
            .collect()
            .await;
        self.pipeline.settle(outcomes, report).await
    }

    /// A captures query refused for something in the request: split the batch in halves until
    /// the refused task is alone, record it as failed with Webex's answer, and go on with the
    /// others. Costs about 2·log2(10) extra queries once; a failed task is not queried again
    /// until `wxvault retry` puts it back.
    async fn isolate_refused(
        &self,
        batch: Vec<TaskRow>,
        e: webex::Error,
        report: &mut OrgReport,
        refused: &mut Vec<(TaskRow, webex::Error)>,
    ) -> Result<(), OrgError> {
        if batch.len() > 1 {
            tracing::info!(org = %self.run.org.name, "captures query for {} tasks refused ({e}); splitting the batch to find the task it refuses", batch.len());
            let mut first = batch;
            let second = first.split_off(first.len() / 2);
            Box::pin(self.query_batch(first, report, refused)).await?;
            return Box::pin(self.query_batch(second, report, refused)).await;
        }
        if let Some(task) = batch.into_iter().next() {
            refused.push((task, e));
        }
        Ok(())
    }

    /// Records a task the captures query refuses alone as failed, with Webex's answer.
    async fn fail_refused(
        &self,
        task: TaskRow,
        e: &webex::Error,
        report: &mut OrgReport,
    ) -> Result<(), OrgError> {
        let why = format!("the captures query refuses this task: {e}");
        tracing::error!(org = %self.run.org.name, task = %task.task_id, "failed: {why}");
        let now = self.run.clock.now_ms();
        let ids = [task.task_id.clone()];
        self.run
            .db("noting capture checks", || {
                self.run
                    .vault
                    .note_capture_checks_at(&self.run.org, SOURCE, &ids, now)
            })
            .await?;
        match task.state {
            TaskState::Captured => {
                // Its recordings are known: the unfinished ones fail with the reason.
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
                for r in rows.into_iter().filter(|r| r.task_id == task.task_id) {
                    self.run
                        .db("recording a failure", || {
                            self.run.vault.mark_recording_failed(
                                &self.run.org,
                                SOURCE,
                                &r.recording_id,
                                &why,
                            )
                        })
                        .await?;
                    report
                        .failed
                        .push(format!("recording {}: {why}", r.recording_id));
                }
            }
            // Settled already (a re-check): it stays as it was (and was reported then); checked
            // again in a day.
            TaskState::Absent | TaskState::Missing => return Ok(()),
            _ => {
                self.set_task_state(&task.task_id, TaskState::Failed, &why)
                    .await?;
                report.failed.push(format!("task {}: {why}", task.task_id));
            }
        }
        self.run
            .progress
            .event(&self.run.org.name, ProgressEvent::Failed);
        Ok(())
    }

    /// Unfinished recordings of a captured task that the latest captures answer no longer lists
    /// (`listed` holds the ids it does list): a stored one only needs its sidecar; audio and
    /// sidecar already in storage (a crash before the ledger write) are adopted; otherwise the
    /// recording counts an attempt and fails with the reason once attempts run out.
    async fn settle_vanished(
        &self,
        task: &TaskRow,
        listed: &[String],
        report: &mut OrgReport,
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
        for r in rows
            .into_iter()
            .filter(|r| r.task_id == task.task_id && !listed.contains(&r.recording_id))
        {
            if r.state == RecordingState::Stored {
                let mut item = WxccTransfer {
                    harvest: self,
                    task,
                    cap: None,
                    recording_id: r.recording_id.clone(),
                    file_name: r.file_name.clone(),
                    attributes_json: r.attributes_json.clone(),
                };
                match self.pipeline.transfer(&mut item, r.clone()).await {
                    Ok(_) => {
                        report.archived += 1;
                        continue;
                    }
                    Err(e) => tracing::warn!(recording = %r.recording_id, "sidecar: {e:?}"),
                }
            }
            if let Ok(audio) = audio_key(
                &self.run.org.org_id,
                task,
                &r.recording_id,
                r.file_name.as_deref(),
            ) && self
                .pipeline
                .adopt_existing(&r.recording_id, &audio)
                .await?
                .is_some()
            {
                report.archived += 1;
                continue;
            }
            let why = "the capture is no longer listed by Webex (purged by retention?)";
            self.pipeline
                .note_attempt_or(&r.recording_id, why, report, |attempts| {
                    format!("{why}; gave up after {attempts} checks")
                })
                .await?;
        }
        Ok(())
    }

    /// Looks up agent names for every CI user id in the batch, once per run; failures only cost
    /// the enrichment, never the recording.
    async fn enrich(&self, work: &[(TaskRow, Capture, RecordingRow)]) {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for (task, cap, _) in work {
            for p in &cap.participants {
                if looks_like_uuid(p) {
                    wanted.insert(p.to_ascii_lowercase());
                }
            }
            if let Some(owner) = owner_id(&task.attributes_json) {
                wanted.insert(owner);
            }
        }
        let mut cache = self.users.lock().await;
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|id| !cache.contains_key(id))
            .collect();
        if missing.is_empty() {
            return;
        }
        match self.client.users_by_ci_ids(&missing).await {
            Ok(users) => {
                for u in users {
                    if let Some(ci) = &u.ci_user_id {
                        cache.insert(ci.to_ascii_lowercase(), Some(u.clone()));
                    }
                }
                for id in missing {
                    cache.entry(id).or_insert(None);
                }
            }
            Err(e) => {
                tracing::debug!(org = %self.run.org.name, "batched user lookup failed ({e}); looking up one by one");
                for id in missing {
                    let user = match self.client.user_by_ci_id(&id).await {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::warn!(org = %self.run.org.name, user = %id, "agent lookup failed: {e}");
                            None
                        }
                    };
                    cache.insert(id, user);
                }
            }
        }
    }

    async fn agents_for(&self, task: &TaskRow, recording: &Value) -> Vec<Value> {
        let cache = self.users.lock().await;
        let mut ids: Vec<String> = recording
            .get("participants")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|s| looks_like_uuid(s))
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(o) = owner_id(&task.attributes_json)
            && !ids.contains(&o)
        {
            ids.push(o);
        }
        ids.into_iter()
            .filter_map(|id| {
                let user = cache.get(&id)?.as_ref()?;
                let name = match (&user.first_name, &user.last_name) {
                    (Some(f), Some(l)) => Some(format!("{f} {l}")),
                    (Some(f), None) => Some(f.clone()),
                    (None, Some(l)) => Some(l.clone()),
                    (None, None) => None,
                };
                Some(json!({ "ci_user_id": id, "id": user.id, "name": name, "email": user.email }))
            })
            .collect()
    }

    /// Asks the captures query again for one recording whose link expired.
    async fn fresh_capture(&self, task_id: &str, recording_id: &str) -> Result<Capture, ItemError> {
        let ids = [task_id.to_string()];
        let result = self
            .client
            .query_captures(&ids, self.run.config.wxcc.url_expiration_minutes)
            .await
            .map_err(classify)?;
        result
            .tasks
            .into_iter()
            .flat_map(|t| t.recordings)
            .find(|c| c.id == recording_id)
            .ok_or_else(|| {
                ItemError::Transient(
                    "the recording is no longer listed by the captures query".into(),
                )
            })
    }

    /// The sidecar of one capture (schema `wxvault.recording.v1`, WxCC fields).
    async fn sidecar_json(
        &self,
        task: &TaskRow,
        recording_id: &str,
        attributes_json: &str,
        audio: &StoredAudio,
        archived_at: &str,
    ) -> Result<Value, ItemError> {
        let recording: Value = serde_json::from_str(attributes_json).unwrap_or(Value::Null);
        let task_attrs: Value = serde_json::from_str(&task.attributes_json).unwrap_or(Value::Null);
        let sidecar = RecordingSidecar {
            schema: SCHEMA_V1.to_string(),
            org_id: self.run.org.org_id.clone(),
            source: SOURCE.to_string(),
            task_id: task.task_id.clone(),
            recording_id: recording_id.to_owned(),
            agents: self.agents_for(task, &recording).await,
            task: task_attrs,
            recording,
            sha256: audio.sha256.clone(),
            size_bytes: audio.size,
            object_key: audio.key.to_string(),
            archived_at: archived_at.to_owned(),
        };
        serde_json::to_value(&sidecar).map_err(|e| ItemError::Permanent(format!("sidecar: {e}")))
    }
}

/// One capture going through the pipeline: its link comes from the captures query.
struct WxccTransfer<'a> {
    harvest: &'a WxccHarvest,
    task: &'a TaskRow,
    /// The capture as last queried; `None` for a stored recording that only needs its sidecar.
    cap: Option<Capture>,
    recording_id: String,
    file_name: Option<String>,
    attributes_json: String,
}

#[async_trait]
impl Transfer for WxccTransfer<'_> {
    fn recording_id(&self) -> &str {
        &self.recording_id
    }

    fn audio_key(&self) -> Result<ObjectKey, String> {
        audio_key(
            &self.harvest.run.org.org_id,
            self.task,
            &self.recording_id,
            self.file_name.as_deref(),
        )
        .map_err(|e| e.to_string())
    }

    async fn download(&mut self) -> Result<MediaStream, ItemError> {
        let Some(url) = self
            .cap
            .as_ref()
            .and_then(|c| c.file_path.as_deref())
            .filter(|u| !u.is_empty())
        else {
            return Err(ItemError::Transient(
                "the capture has no filePath yet".into(),
            ));
        };
        self.harvest
            .client
            .media()
            .download(url)
            .await
            .map_err(classify)
    }

    async fn refresh_link(&mut self) -> Result<(), ItemError> {
        let cap = self
            .harvest
            .fresh_capture(&self.task.task_id, &self.recording_id)
            .await?;
        self.cap = Some(cap);
        Ok(())
    }

    async fn sidecar(
        &mut self,
        audio: &StoredAudio,
        archived_at: &str,
    ) -> Result<Option<Value>, ItemError> {
        self.harvest
            .sidecar_json(
                self.task,
                &self.recording_id,
                &self.attributes_json,
                audio,
                archived_at,
            )
            .await
            .map(Some)
    }
}

/// Key of a capture's audio: `<org_id>/wxcc/<YYYY>/<MM>/<DD>/<task_id>/<recording_id>.<ext>`.
fn audio_key(
    org_id: &str,
    task: &TaskRow,
    recording_id: &str,
    file_name: Option<&str>,
) -> Result<ObjectKey, archive::ArchiveError> {
    let ext = layout::ext_from_file_name(file_name);
    layout::wxcc_audio(org_id, task.created_ms, &task.task_id, recording_id, &ext)
}

/// The reason of a task absent because Webex never said a capture was requested.
fn never_requested_reason(grace_hours: u64) -> String {
    format!(
        "{CAPTURE_NEVER_REQUESTED}: Webex never said a capture was requested, and none appeared within {grace_hours} h"
    )
}

/// The capture fields the sidecar contract lists, as received (plus id and segment).
fn recording_json(cap: &Capture) -> Value {
    let mut v = match &cap.attributes {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if let Value::Object(m) = &mut v {
        // The link is short-lived and signed: never keep it.
        m.remove("filePath");
        m.insert("id".into(), json!(cap.id));
        m.insert("segment".into(), json!(cap.segment));
    }
    v
}

fn owner_id(task_attrs: &str) -> Option<String> {
    let v: Value = serde_json::from_str(task_attrs).ok()?;
    let id = v.get("owner")?.get("id")?.as_str()?;
    looks_like_uuid(id).then(|| id.to_ascii_lowercase())
}

fn looks_like_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
