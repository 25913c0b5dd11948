//! Captures that appear on a task after its first ones were listed (webex-api.md §2.4: a
//! capture may be produced late, after re-processing): [`crate::SimHandle::add_late_recording`]
//! and `POST /_sim/late_recording {"taskId","bytes"}`. A late recording is listed by the
//! captures query from the moment it is added, served like any other, and part of the
//! manifest from then on.

use std::sync::Arc;

use crate::dataset::{Recording, View, expected_recording, new_rec};
use crate::model::ExpectedRecording;
use crate::rng::{SplitMix64, mix2};
use crate::state::{Shared, lock};
use crate::wav::WavPlan;

/// Stream tag of late recordings' random numbers (ids, audio).
const LATE_STREAM: u64 = 0x4C41_5445;

/// One recording added to an existing task.
#[derive(Debug)]
pub(crate) struct LateRecording {
    /// Index of the org in the dataset.
    pub org: usize,
    /// Index of the task in its org.
    pub task: usize,
    pub rec: Recording,
}

/// Adds a recording of about `bytes` (exact when `bytes - 44` is a multiple of 4) to task
/// `task_id`, available now. `None` for an unknown task.
pub(crate) fn add(shared: &Shared, task_id: &str, bytes: u64) -> Option<ExpectedRecording> {
    let &(oi, ti) = shared.data.tasks.get(task_id)?;
    let org = &shared.data.orgs[oi];
    let task = &org.tasks[ti];
    let now = shared.now_ms();
    let mut late = lock(&shared.late);
    let n = u64::try_from(late.len()).unwrap_or(u64::MAX);
    let mut rng = SplitMix64::new(mix2(shared.cfg.seed ^ LATE_STREAM, n + 1));
    let plan = WavPlan::new(rng.next_u64(), bytes.max(48));
    let dur = i64::try_from(plan.duration_ms()).unwrap_or(0);
    let start = task
        .recordings
        .first()
        .map_or(task.created_ms + 10_000, |r| r.start_ms);
    let mut participants: Vec<String> = task
        .owner
        .map(|a| org.agents[a].ci_user_id.clone())
        .into_iter()
        .collect();
    participants.push(task.origin.clone());
    let rec = new_rec(
        &mut rng,
        "combinedRecordings.wav",
        plan,
        start,
        dur,
        now,
        false,
        "consult",
        "Agent",
        participants,
        false,
        View::Default,
    );
    let expected = expected_recording(task, &rec);
    late.push(Arc::new(LateRecording {
        org: oi,
        task: ti,
        rec,
    }));
    Some(expected)
}

/// Late recordings of task `ti` of org `oi`.
pub(crate) fn of_task(shared: &Shared, oi: usize, ti: usize) -> Vec<Arc<LateRecording>> {
    lock(&shared.late)
        .iter()
        .filter(|l| l.org == oi && l.task == ti)
        .cloned()
        .collect()
}

/// The late recording a media path names, if any.
pub(crate) fn find(
    shared: &Shared,
    org_id: &str,
    task_id: &str,
    rec_id: &str,
    file: &str,
) -> Option<Arc<LateRecording>> {
    lock(&shared.late)
        .iter()
        .find(|l| {
            let org = &shared.data.orgs[l.org];
            l.rec.id == rec_id
                && l.rec.file_name == file
                && org.id == org_id
                && org.tasks[l.task].id == task_id
        })
        .cloned()
}

/// The org's late recordings as manifest entries.
pub(crate) fn expected_of_org(shared: &Shared, org_id: &str) -> Vec<ExpectedRecording> {
    lock(&shared.late)
        .iter()
        .filter(|l| shared.data.orgs[l.org].id == org_id)
        .map(|l| expected_recording(&shared.data.orgs[l.org].tasks[l.task], &l.rec))
        .collect()
}
