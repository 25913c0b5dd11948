//! What one `sync` run did, per org: the basis of the summary table, `--json` and the exit code.

use serde::{Deserialize, Serialize};

/// How an org's run ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum OrgOutcome {
    #[default]
    Ok,
    /// Webex refused the grant; an admin must reconnect the org.
    NeedsReauth(String),
    /// An org-level error (API refusing the org, missing scope, database problem).
    Failed(String),
    /// Not run: another wxvault process holds the org's sync lease (the reason names it). Not a
    /// failure: that process is harvesting the org.
    Skipped(String),
}

/// Counters and named problems for one org in one run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OrgReport {
    pub org: String,
    pub org_id: String,
    pub window_from: String,
    pub window_to: String,
    pub outcome: OrgOutcome,
    pub task_pages: u64,
    /// Pages of recording lists (Webex Calling) read.
    pub recording_pages: u64,
    pub tasks_seen: u64,
    pub archived: u64,
    pub already_archived: u64,
    pub bytes: u64,
    pub pending_capture: u64,
    pub absent: u64,
    /// Of `absent`: tasks Webex never said a capture was requested for, none within the grace
    /// period (`capture_never_requested`).
    pub capture_never_requested: u64,
    pub malformed: u64,
    /// Recordings left for a later attempt after a transient error.
    pub transient_left: u64,
    /// Tasks whose requested capture never appeared within the grace period.
    pub missing: Vec<String>,
    /// Recordings that failed permanently, with why.
    pub failed: Vec<String>,
    pub api_calls: u64,
    /// Items whose task was created in this run's window and that are failed or missing now,
    /// whichever run it happened in (this one's are also in `missing` / `failed`).
    pub window_problems: u64,
    /// The newest of them, with state and reason.
    pub window_problem_items: Vec<String>,
    /// Recordings whose audio is stored while their sidecar waits for Webex (Calling metadata
    /// not ready yet); retried by later runs, not a problem.
    pub awaiting_metadata: u64,
    /// Listed items outside the requested window or filters (a next link that dropped them),
    /// dropped and counted.
    pub outside_window: u64,
    /// Per source, in registry order (additive: the fields above are the org's totals).
    pub sources: Vec<SourceReport>,
    /// The class of the org-level error behind a `Failed` or `NeedsReauth` outcome, for the
    /// queue's retry decision; not part of the report's JSON.
    #[serde(skip)]
    pub error_class: Option<webex::ErrorClass>,
}

/// One source's part of an org's run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SourceReport {
    pub source: String,
    pub outcome: OrgOutcome,
    pub window_from: String,
    pub window_to: String,
    pub archived: u64,
    pub already_archived: u64,
    pub bytes: u64,
    pub absent: u64,
    pub awaiting_metadata: u64,
    pub transient_left: u64,
    pub malformed: u64,
    pub outside_window: u64,
    /// Failed and missing items of this run.
    pub failed: u64,
    pub api_calls: u64,
}

impl SourceReport {
    /// The summary of `part`, one source's counters.
    pub fn from_part(source: &str, part: &OrgReport, outcome: OrgOutcome, api_calls: u64) -> Self {
        SourceReport {
            source: source.to_owned(),
            outcome,
            window_from: part.window_from.clone(),
            window_to: part.window_to.clone(),
            archived: part.archived,
            already_archived: part.already_archived,
            bytes: part.bytes,
            absent: part.absent,
            awaiting_metadata: part.awaiting_metadata,
            transient_left: part.transient_left,
            malformed: part.malformed,
            outside_window: part.outside_window,
            failed: (part.failed.len() + part.missing.len()) as u64,
            api_calls,
        }
    }
}

impl OrgReport {
    /// Adds a partial report (one captures batch) into this one.
    pub fn absorb(&mut self, o: &OrgReport) {
        self.task_pages += o.task_pages;
        self.recording_pages += o.recording_pages;
        self.tasks_seen += o.tasks_seen;
        self.archived += o.archived;
        self.already_archived += o.already_archived;
        self.bytes += o.bytes;
        self.pending_capture += o.pending_capture;
        self.absent += o.absent;
        self.capture_never_requested += o.capture_never_requested;
        self.malformed += o.malformed;
        self.transient_left += o.transient_left;
        self.awaiting_metadata += o.awaiting_metadata;
        self.outside_window += o.outside_window;
        self.missing.extend(o.missing.iter().cloned());
        self.failed.extend(o.failed.iter().cloned());
    }

    /// True when this org needs the operator (exit code 2).
    pub fn has_problems(&self) -> bool {
        !matches!(self.outcome, OrgOutcome::Ok | OrgOutcome::Skipped(_))
            || !self.missing.is_empty()
            || !self.failed.is_empty()
            || self.transient_left > 0
            || self.malformed > 0
            || self.window_problems > 0
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub orgs: Vec<OrgReport>,
}

impl SyncReport {
    /// Process exit code: 0 all archived / absent / within grace (orgs skipped because another
    /// process is syncing them included), 2 when anything needs attention.
    pub fn exit_code(&self) -> i32 {
        if self.orgs.iter().any(OrgReport::has_problems) {
            2
        } else {
            0
        }
    }
}
