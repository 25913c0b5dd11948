//! WxCC harvest for one org: tasks → captures (10 per query) → streamed download → verified
//! object → sidecar → ledger `done`.
//!
//! Capture links live at most 60 minutes, so they are never stored: each captures batch is
//! downloaded right after its query, and a recording whose link expired is re-queried alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use archive::layout::{self, ObjectKey};
use archive::sidecar::{RecordingSidecar, SCHEMA_V1};
use archive::{Archive, ArchiveError, PutStatus};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use vault::{
    Archived, Org, RecordingRow, RecordingState, RecordingUpsert, TaskRow, TaskState, TaskUpsert,
    Vault,
};
use webex::ErrorClass;
use webex::http::RetryPolicy;
use webex::wxcc::{Capture, User, WxccClient};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::dbretry::with_db_retry;
use crate::error::OrgError;
use crate::progress::{Progress, ProgressEvent};
use crate::report::OrgReport;

/// One day: WxCC task queries are kept to 24 h windows (webex-api.md §2.3).
pub const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
const SOURCE: &str = "wxcc";
/// Recordings larger than this get a separate `stored` ledger write before their sidecar
/// (one object-store part; re-downloading them after a crash would be costly).
const STORED_MARK_BYTES: u64 = archive::PART_SIZE as u64;
/// A task that settled without a capture is asked about again at most this often.
const RECHECK_EVERY_MS: i64 = 24 * 60 * 60 * 1000;
/// Reason code of a task Webex never said a capture was requested for, with none after the
/// grace period: legitimately absent, counted apart in `status`.
pub const CAPTURE_NEVER_REQUESTED: &str = "capture_never_requested";
/// Download attempts for one recording within one run before it waits for the next run.
const IN_RUN_ATTEMPTS: u32 = 3;

/// Everything one org's harvest needs.
pub struct WxccHarvest {
    pub vault: Vault,
    pub archive: Archive,
    pub client: Arc<WxccClient>,
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub progress: Arc<dyn Progress>,
    pub org: Org,
    users: Mutex<HashMap<String, Option<User>>>,
    /// Set once an org-level error is seen, or from outside (see [`Self::stop_handle`]): no
    /// further listing window, captures batch or window record is started.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a recording did not reach `done` in this attempt.
#[derive(Debug)]
enum ItemError {
    /// Try again later (this run or the next).
    Transient(String),
    /// Recorded as failed with this reason.
    Permanent(String),
    /// The capture link expired: get a fresh one.
    LinkExpired(String),
    /// Not this item's fault (grant refused, scope missing, our storage or database failing):
    /// the org stops with this error and the item stays as it is for the next run, its
    /// attempts untouched.
    Org(OrgError),
}

impl WxccHarvest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vault: Vault,
        archive: Archive,
        client: Arc<WxccClient>,
        http: reqwest::Client,
        retry: RetryPolicy,
        config: Arc<Config>,
        clock: SharedClock,
        progress: Arc<dyn Progress>,
        org: Org,
    ) -> Self {
        Self {
            vault,
            archive,
            client,
            http,
            retry,
            config,
            clock,
            progress,
            org,
            users: Mutex::new(HashMap::new()),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// A state-database call, with transient failures retried (see [`with_db_retry`]).
    async fn db<T, F, Fut>(&self, op: &str, f: F) -> Result<T, OrgError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, vault::VaultError>>,
    {
        with_db_retry(&self.retry, op, f).await
    }

    /// The flag that stops this harvest at its next step; the sync lease raises it when lost.
    pub fn stop_handle(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stop.clone()
    }

    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves one task to `state` with `why` (a database call, retried when transient).
    async fn set_task_state(
        &self,
        task_id: &str,
        state: TaskState,
        why: &str,
    ) -> Result<(), OrgError> {
        self.db("updating a task state", || {
            self.vault
                .set_task_state(&self.org, task_id, state, Some(why))
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
        self.process_captures(report).await?;
        // A window is complete once its tasks are listed and every capture that exists now has
        // been processed; tasks still waiting are tracked by their own state, not by the window.
        //
        // The cursor (`last_window_end`, the latest recorded end) only moves contiguously: a
        // window that starts after it (an ad-hoc `--from` ahead of the cursor) is not recorded, so
        // the gap before it is still harvested by the next default run.
        if report.transient_left == 0 && report.malformed == 0 && !self.stopped() {
            let mut cursor = self
                .db("reading the harvest cursor", || {
                    self.vault.last_window_end(&self.org, SOURCE)
                })
                .await?;
            let mut start = from_ms;
            while start < to_ms {
                let end = (start + WINDOW_MS).min(to_ms);
                if cursor.is_none_or(|c| start <= c) {
                    self.db("recording a finished window", || {
                        self.vault.window_done(&self.org, SOURCE, start, end)
                    })
                    .await?;
                    cursor = Some(cursor.map_or(end, |c| c.max(end)));
                }
                start = end;
            }
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
        self.record_rejected("/v1/tasks", "bad_task", &listing.rejected, report)
            .await;
        self.progress.event(
            &self.org.name,
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
            .db("saving listed tasks", || {
                self.vault.upsert_tasks(&self.org, &upserts)
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
        self.db("updating task states", || {
            self.vault.set_tasks_state(
                &self.org,
                &absent,
                TaskState::Absent,
                Some("no capture was requested for this task"),
            )
        })
        .await?;
        Ok(())
    }

    /// Tasks that need a captures query: waiting ones, and captured ones with unfinished recordings
    /// (after a crash or a transient failure the link must be fetched again).
    async fn tasks_to_query(&self) -> Result<Vec<TaskRow>, OrgError> {
        let unfinished: BTreeSet<String> = self
            .db("reading unfinished recordings", || {
                self.vault.recordings_in_states(
                    &self.org,
                    &[RecordingState::Ready, RecordingState::Stored],
                )
            })
            .await?
            .into_iter()
            .map(|r| r.task_id)
            .collect();
        let rows = self
            .db("reading tasks to query", || {
                self.vault.tasks_in_states(
                    &self.org,
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
        if self.config.sync.rescan_days > 0 {
            let now = self.clock.now_ms();
            let days = i64::try_from(self.config.sync.rescan_days).unwrap_or(7);
            let since = now - days * 86_400_000;
            let due = self
                .db("reading tasks to re-check", || {
                    self.vault
                        .tasks_due_for_recheck(&self.org, since, now - RECHECK_EVERY_MS)
                })
                .await?;
            tasks.extend(due);
        }
        Ok(tasks)
    }

    async fn process_captures(&self, report: &mut OrgReport) -> Result<(), OrgError> {
        let tasks = self.tasks_to_query().await?;
        let batches: Vec<Vec<TaskRow>> = tasks.chunks(10).map(<[TaskRow]>::to_vec).collect();
        let results: Vec<Result<OrgReport, OrgError>> = stream::iter(batches)
            .map(|batch| async move {
                let mut part = OrgReport::default();
                self.process_batch(batch, &mut part).await.map(|()| part)
            })
            .buffer_unordered(self.config.sync.batch_concurrency)
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
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let result = self.process_batch_inner(batch, report).await;
        if result.is_err() {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
            .query_captures(&ids, self.config.wxcc.url_expiration_minutes)
            .await
        {
            Ok(r) => r,
            Err(e) if e.class() == ErrorClass::Transient && !e.is_host_unreachable() => {
                // Leave these tasks for the next run; the org carries on.
                tracing::warn!(org = %self.org.name, "captures query for {} tasks failed: {e}", ids.len());
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
        self.record_rejected(
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
        let now = self.clock.now_ms();
        let grace_ms =
            i64::try_from(self.config.wxcc.capture_grace_hours).unwrap_or(48) * 3_600_000;
        let mut work: Vec<(TaskRow, Capture, RecordingRow)> = Vec::new();
        self.db("noting capture checks", || {
            self.vault.note_capture_checks_at(&self.org, &ids, now)
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
                    let why = never_requested_reason(self.config.wxcc.capture_grace_hours);
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
                    let hours = self.config.wxcc.capture_grace_hours;
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
                tracing::info!(org = %self.org.name, task = %task.task_id, "a capture appeared after the task had settled as {}; archiving it", task.state);
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
            .db("saving listed recordings", || {
                self.vault.upsert_recordings(&self.org, &upserts)
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
                RecordingState::Failed => {}
                RecordingState::Ready | RecordingState::Stored => work.push((task, cap, row)),
            }
        }
        self.db("updating task states", || {
            self.vault
                .set_tasks_state(&self.org, &to_pending, TaskState::PendingCapture, None)
        })
        .await?;
        self.db("re-opening late-captured tasks", || {
            self.vault
                .reopen_never_requested(&self.org, &to_reopen, now)
        })
        .await?;
        self.db("updating task states", || {
            self.vault
                .set_tasks_state(&self.org, &to_captured, TaskState::Captured, None)
        })
        .await?;
        if work.is_empty() {
            return Ok(());
        }
        self.enrich(&work).await;
        let outcomes: Vec<(String, Result<Finished, ItemError>)> = stream::iter(work)
            .map(|(task, cap, row)| async move {
                let id = cap.id.clone();
                (id, self.archive_recording(&task, cap, row).await)
            })
            .buffer_unordered(self.config.sync.downloads_per_batch)
            .collect()
            .await;
        let mut unmarked: Vec<(Archived, u64)> = Vec::new();
        let mut org_error: Option<OrgError> = None;
        for (id, outcome) in outcomes {
            match outcome {
                Err(ItemError::Org(e)) => {
                    tracing::error!(org = %self.org.name, recording = %id, "stopping this org: {e}");
                    org_error.get_or_insert(e);
                }
                Ok(Finished::Marked(bytes)) => {
                    report.archived += 1;
                    report.bytes += bytes;
                    self.progress
                        .event(&self.org.name, ProgressEvent::Archived(bytes));
                }
                Ok(Finished::Unmarked(item, bytes)) => unmarked.push((item, bytes)),
                Err(ItemError::Permanent(reason)) => {
                    self.db("recording a failure", || {
                        self.vault.mark_recording_failed(&self.org, &id, &reason)
                    })
                    .await?;
                    report.failed.push(format!("recording {id}: {reason}"));
                    self.progress.event(&self.org.name, ProgressEvent::Failed);
                }
                Err(ItemError::Transient(reason) | ItemError::LinkExpired(reason)) => {
                    let attempts = self
                        .db("counting a failed attempt", || {
                            self.vault.note_recording_attempt(&self.org, &id, &reason)
                        })
                        .await?;
                    if attempts >= self.config.sync.max_attempts {
                        let why =
                            format!("gave up after {attempts} attempts; last error: {reason}");
                        self.db("recording a failure", || {
                            self.vault.mark_recording_failed(&self.org, &id, &why)
                        })
                        .await?;
                        report.failed.push(format!("recording {id}: {why}"));
                        self.progress.event(&self.org.name, ProgressEvent::Failed);
                    } else {
                        tracing::warn!(org = %self.org.name, recording = %id, "will retry: {reason}");
                        report.transient_left += 1;
                    }
                }
            }
        }
        if !unmarked.is_empty() {
            let items: Vec<Archived> = unmarked.iter().map(|(a, _)| a.clone()).collect();
            match self.vault.mark_recordings_archived(&self.org, &items).await {
                Ok(()) => {
                    for (_, bytes) in unmarked {
                        report.archived += 1;
                        report.bytes += bytes;
                        self.progress
                            .event(&self.org.name, ProgressEvent::Archived(bytes));
                    }
                }
                Err(e) => {
                    // Objects and sidecars are in place; the next run adopts them.
                    tracing::warn!(org = %self.org.name, "ledger write for {} archived recordings failed: {e}", items.len());
                    report.transient_left += items.len() as u64;
                }
            }
        }
        match org_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
            tracing::info!(org = %self.org.name, "captures query for {} tasks refused ({e}); splitting the batch to find the task it refuses", batch.len());
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
        tracing::error!(org = %self.org.name, task = %task.task_id, "failed: {why}");
        let now = self.clock.now_ms();
        let ids = [task.task_id.clone()];
        self.db("noting capture checks", || {
            self.vault.note_capture_checks_at(&self.org, &ids, now)
        })
        .await?;
        match task.state {
            TaskState::Captured => {
                // Its recordings are known: the unfinished ones fail with the reason.
                let rows = self
                    .db("reading unfinished recordings", || {
                        self.vault.recordings_in_states(
                            &self.org,
                            &[RecordingState::Ready, RecordingState::Stored],
                        )
                    })
                    .await?;
                for r in rows.into_iter().filter(|r| r.task_id == task.task_id) {
                    self.db("recording a failure", || {
                        self.vault
                            .mark_recording_failed(&self.org, &r.recording_id, &why)
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
        self.progress.event(&self.org.name, ProgressEvent::Failed);
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
            .db("reading unfinished recordings", || {
                self.vault.recordings_in_states(
                    &self.org,
                    &[RecordingState::Ready, RecordingState::Stored],
                )
            })
            .await?;
        for r in rows
            .into_iter()
            .filter(|r| r.task_id == task.task_id && !listed.contains(&r.recording_id))
        {
            if r.state == RecordingState::Stored {
                match self.write_sidecar(task, &r).await {
                    Ok(_) => {
                        report.archived += 1;
                        continue;
                    }
                    Err(e) => tracing::warn!(recording = %r.recording_id, "sidecar: {e:?}"),
                }
            }
            if self.adopt_existing(task, &r).await? {
                report.archived += 1;
                continue;
            }
            let why = "the capture is no longer listed by Webex (purged by retention?)";
            let attempts = self
                .db("counting a failed attempt", || {
                    self.vault
                        .note_recording_attempt(&self.org, &r.recording_id, why)
                })
                .await?;
            if attempts >= self.config.sync.max_attempts {
                let why = format!("{why}; gave up after {attempts} checks");
                self.db("recording a failure", || {
                    self.vault
                        .mark_recording_failed(&self.org, &r.recording_id, &why)
                })
                .await?;
                report
                    .failed
                    .push(format!("recording {}: {why}", r.recording_id));
            } else {
                report.transient_left += 1;
            }
        }
        Ok(())
    }

    /// Audio and sidecar both in storage while the ledger still says `ready`: the run that wrote
    /// them died before its ledger write. Hash the audio and record it as archived.
    async fn adopt_existing(&self, task: &TaskRow, r: &RecordingRow) -> Result<bool, OrgError> {
        let ext = layout::ext_from_file_name(r.file_name.as_deref());
        let Ok(audio) = layout::wxcc_audio(
            &self.org.org_id,
            task.created_ms,
            &task.task_id,
            &r.recording_id,
            &ext,
        ) else {
            return Ok(false);
        };
        let sidecar = layout::sidecar_for(&audio);
        let storage = |e: ArchiveError| OrgError::Storage {
            what: format!("reading {sidecar}"),
            source: e,
        };
        if self
            .archive
            .head(&sidecar)
            .await
            .map_err(storage)?
            .is_none()
        {
            return Ok(false);
        }
        let Some((sha, size)) = self.archive.sha256_of(&audio).await.map_err(storage)? else {
            return Ok(false);
        };
        let item = Archived {
            recording_id: r.recording_id.clone(),
            object_key: audio.to_string(),
            sha256: sha,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sidecar_key: sidecar.to_string(),
        };
        let items = [item];
        self.db("recording archived recordings", || {
            self.vault.mark_recordings_archived(&self.org, &items)
        })
        .await?;
        Ok(true)
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
                tracing::debug!(org = %self.org.name, "batched user lookup failed ({e}); looking up one by one");
                for id in missing {
                    let user = match self.client.user_by_ci_id(&id).await {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::warn!(org = %self.org.name, user = %id, "agent lookup failed: {e}");
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

    /// Download → verified object → sidecar → `done`. Returns the bytes stored.
    async fn archive_recording(
        &self,
        task: &TaskRow,
        cap: Capture,
        row: RecordingRow,
    ) -> Result<Finished, ItemError> {
        let ext = layout::ext_from_file_name(cap.file_name.as_deref());
        let key = layout::wxcc_audio(
            &self.org.org_id,
            task.created_ms,
            &task.task_id,
            &cap.id,
            &ext,
        )
        .map_err(|e| self.permanent(&cap.id, format!("cannot build an object key: {e}")))?;
        let mut row = row;
        if row.state == RecordingState::Ready {
            let mut cap = cap;
            let mut refreshed = false;
            let mut attempt = 0;
            let stored = loop {
                match self.download_to(&key, &cap).await {
                    Err(ItemError::LinkExpired(why)) if !refreshed => {
                        refreshed = true;
                        tracing::info!(org = %self.org.name, recording = %cap.id, "capture link refused ({why}); asking for a fresh one");
                        cap = self.fresh_capture(&task.task_id, &cap.id).await?;
                    }
                    // Truncated bodies and dropped connections: try again within this run, with
                    // backoff; what still fails is left for the next run (never marked failed here).
                    Err(ItemError::Transient(why)) if attempt + 1 < IN_RUN_ATTEMPTS => {
                        attempt += 1;
                        tracing::info!(org = %self.org.name, recording = %cap.id, attempt, "transient: {why}; retrying");
                        tokio::time::sleep(self.retry.backoff(attempt)).await;
                    }
                    other => break other?,
                }
            };
            let (sha, size) = stored;
            if size > STORED_MARK_BYTES {
                // Worth a ledger write: a crash before the sidecar then costs no re-download.
                self.db("recording stored audio", || {
                    self.vault.mark_recording_stored(
                        &self.org,
                        &cap.id,
                        key.as_str(),
                        &sha,
                        i64::try_from(size).unwrap_or(i64::MAX),
                    )
                })
                .await
                .map_err(ItemError::Org)?;
                row.state = RecordingState::Stored;
            }
            row.object_key = Some(key.to_string());
            row.sha256 = Some(sha);
            row.size_bytes = Some(i64::try_from(size).unwrap_or(i64::MAX));
        }
        self.write_sidecar(task, &row).await
    }

    async fn fresh_capture(&self, task_id: &str, recording_id: &str) -> Result<Capture, ItemError> {
        let ids = [task_id.to_string()];
        let result = self
            .client
            .query_captures(&ids, self.config.wxcc.url_expiration_minutes)
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

    async fn download_to(
        &self,
        key: &ObjectKey,
        cap: &Capture,
    ) -> Result<(String, u64), ItemError> {
        let Some(url) = cap.file_path.as_deref().filter(|u| !u.is_empty()) else {
            return Err(ItemError::Transient(
                "the capture has no filePath yet".into(),
            ));
        };
        let media = self.client.media().download(url).await.map_err(classify)?;
        let body = media.stream.map_err(StreamError);
        match self.archive.put_stream(key, body, media.content_length).await {
            Ok(outcome) => Ok((outcome.sha256, outcome.size)),
            Err(ArchiveError::Conflict { existing_sha256, new_sha256, .. }) => Err(self.permanent(
                &cap.id,
                format!(
                    "{key} already holds different bytes (sha256 {existing_sha256}, new {new_sha256}); left untouched — compare both and remove the wrong one by hand"
                ),
            )),
            Err(ArchiveError::Source(src)) => {
                // The media stream failed: classify the underlying Webex error when we can.
                match src.downcast::<StreamError>() {
                    Ok(b) => Err(classify(b.0)),
                    Err(src) => Err(ItemError::Transient(format!("download of {} interrupted: {src}", cap.id))),
                }
            }
            // The download ended short or long: the transfer's fault, not the store's.
            Err(e @ ArchiveError::SizeMismatch { .. }) => Err(ItemError::Transient(e.to_string())),
            Err(e @ ArchiveError::InvalidKey { .. }) => Err(self.permanent(&cap.id, e.to_string())),
            // Everything else is our own storage failing (full, read-only, no credentials,
            // unreachable): the org stops and no item's attempts are used up.
            Err(e) => Err(storage_failed(format!("writing {key}"), e)),
        }
    }

    async fn write_sidecar(
        &self,
        task: &TaskRow,
        row: &RecordingRow,
    ) -> Result<Finished, ItemError> {
        let (Some(key), Some(sha), Some(size)) = (&row.object_key, &row.sha256, row.size_bytes)
        else {
            return Err(self.permanent(
                &row.recording_id,
                "ledger says stored but has no key/sha256".into(),
            ));
        };
        let recording: Value = serde_json::from_str(&row.attributes_json).unwrap_or(Value::Null);
        let task_attrs: Value = serde_json::from_str(&task.attributes_json).unwrap_or(Value::Null);
        let sidecar = RecordingSidecar {
            schema: SCHEMA_V1.to_string(),
            org_id: self.org.org_id.clone(),
            source: SOURCE.to_string(),
            task_id: task.task_id.clone(),
            recording_id: row.recording_id.clone(),
            agents: self.agents_for(task, &recording).await,
            task: task_attrs,
            recording,
            sha256: sha.clone(),
            size_bytes: u64::try_from(size).unwrap_or(0),
            object_key: key.clone(),
            archived_at: rfc3339(self.clock.now_ms()),
        };
        let ext = layout::ext_from_file_name(row.file_name.as_deref());
        let audio_key = layout::wxcc_audio(
            &self.org.org_id,
            task.created_ms,
            &task.task_id,
            &row.recording_id,
            &ext,
        )
        .map_err(|e| {
            self.permanent(
                &row.recording_id,
                format!("cannot build an object key: {e}"),
            )
        })?;
        let sidecar_key = layout::sidecar_for(&audio_key);
        let body = serde_json::to_vec_pretty(&sidecar)
            .map_err(|e| ItemError::Permanent(format!("sidecar: {e}")))?;
        match self
            .archive
            .put_if_absent(&sidecar_key, Bytes::from(body))
            .await
        {
            // An existing sidecar differs only by archived_at when a crash hit between writing it
            // and recording `done`: keep the first one.
            Ok(PutStatus::Created | PutStatus::AlreadyPresent | PutStatus::ExistsDifferent) => {}
            Err(e) => return Err(storage_failed(format!("writing {sidecar_key}"), e)),
        }
        let bytes = u64::try_from(size).unwrap_or(0);
        if row.state == RecordingState::Stored {
            self.db("recording an archived recording", || {
                self.vault
                    .mark_recording_done(&self.org, &row.recording_id, sidecar_key.as_str())
            })
            .await
            .map_err(ItemError::Org)?;
            return Ok(Finished::Marked(bytes));
        }
        // Small recording: audio and sidecar go into the ledger in one write per captures batch.
        // A crash before it leaves the row `ready`; the rerun finds the identical object and
        // adopts it.
        Ok(Finished::Unmarked(
            Archived {
                recording_id: row.recording_id.clone(),
                object_key: key.clone(),
                sha256: sha.clone(),
                size,
                sidecar_key: sidecar_key.to_string(),
            },
            bytes,
        ))
    }

    /// Response items that could not be read: one clear line each, recorded, never fatal.
    async fn record_rejected(
        &self,
        endpoint: &str,
        kind: &str,
        rejected: &[webex::wxcc::Rejected],
        report: &mut OrgReport,
    ) {
        for rej in rejected {
            let msg = format!(
                "org {}: {endpoint} returned an item that could not be read (id {}): {}",
                self.org.name,
                rej.id.as_deref().unwrap_or("unknown"),
                rej.reason
            );
            tracing::warn!("{msg}");
            let _ = self.vault.record_event(Some(&self.org), kind, &msg).await;
            report.malformed += 1;
        }
    }

    fn permanent(&self, recording_id: &str, reason: String) -> ItemError {
        tracing::error!(org = %self.org.name, recording = %recording_id, "failed: {reason}");
        ItemError::Permanent(reason)
    }
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

fn classify(e: webex::Error) -> ItemError {
    // The host is down: one line for the org, not one failure per item.
    if e.is_host_unreachable() {
        return ItemError::Org(e.into());
    }
    if e.is_link_expired() {
        return ItemError::LinkExpired(e.to_string());
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
fn storage_failed(what: String, source: ArchiveError) -> ItemError {
    ItemError::Org(OrgError::Storage { what, source })
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

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A recording whose audio and sidecar are written.
#[derive(Debug)]
enum Finished {
    /// Already `done` in the ledger (large recordings, marked `stored` first).
    Marked(u64),
    /// To be marked `done` with the rest of its captures batch (one statement).
    Unmarked(Archived, u64),
}
