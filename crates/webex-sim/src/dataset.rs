//! Deterministic dataset generation.
//!
//! Everything (ids, names, times relative to the simulator start, audio) comes
//! from the seed through [`SplitMix64`], so two simulators with the same seed
//! and spec serve identical data. Absolute times are `start_ms` plus a seeded
//! offset; fix [`crate::SimConfig::start_ms`] for byte-identical manifests.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::calling_data::{CallingRec, gen_calling};
use crate::config::DatasetSpec;
use crate::model::{ExpectedRecording, ExpectedTask, Manifest, SimOrg};
use crate::rng::{SplitMix64, mix2};
use crate::wav::WavPlan;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

const ORG_NAMES: &[&str] = &[
    "Acme Health",
    "Globex Insurance",
    "Initech Support",
    "Umbrella Travel",
    "Stark Utilities",
    "Wayne Logistics",
];
const FIRST: &[&str] = &[
    "Joseph", "Maria", "Aiko", "Liam", "Fatima", "Noah", "Elena", "Ravi", "Chloe", "Mateo",
    "Sofia", "Kwame", "Ingrid", "Omar", "Priya", "Lucas",
];
const LAST: &[&str] = &[
    "Lambert", "Garcia", "Tanaka", "Murphy", "Haddad", "Schmidt", "Rossi", "Patel", "Dubois",
    "Silva", "Novak", "Mensah", "Larsen", "Aziz", "Iyer", "Moreau",
];
const QUEUES: &[&str] = &["Technical Support Queue", "Billing Queue", "Sales Queue"];

/// Which captures-query flags make a recording visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Returned by a default query (stitched main, consult).
    Default,
    /// Stitched main of a segmented call: replaced by its segments when `includeSegments`.
    StitchedMain,
    /// Individual segment: only with `includeSegments:true`.
    Segment,
    /// Virtual-agent leg: only with `includeVARecordings:true`.
    VirtualAgent,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub ci_user_id: String,
    pub cc_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub team_id: String,
    pub site_id: String,
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub id: String,
    pub name: &'static str,
}

#[derive(Debug)]
pub(crate) struct Recording {
    pub id: String,
    pub file_name: String,
    pub plan: WavPlan,
    pub start_ms: i64,
    pub stop_ms: i64,
    pub available_at_ms: i64,
    pub segment: bool,
    pub call_type: &'static str,
    pub channel2: &'static str,
    pub participants: Vec<String>,
    /// Production serialises `startTime`/`stopTime` as strings, the spec as numbers.
    pub times_as_strings: bool,
    pub view: View,
    sha: OnceLock<String>,
}

impl Recording {
    pub(crate) fn sha256(&self) -> &str {
        self.sha.get_or_init(|| self.plan.sha256_hex())
    }
}

#[derive(Debug)]
pub(crate) struct Task {
    pub id: String,
    pub created_ms: i64,
    pub last_updated_ms: i64,
    pub channel_type: &'static str,
    pub status: &'static str,
    pub capture_requested: Option<bool>,
    pub owner: Option<usize>,
    pub queue: usize,
    pub origin: String,
    pub destination: String,
    pub direction: &'static str,
    pub recordings: Vec<Recording>,
}

#[derive(Debug)]
pub(crate) struct Org {
    pub id: String,
    pub name: String,
    pub region: String,
    pub agents: Vec<Agent>,
    pub queues: Vec<Queue>,
    /// Sorted by `(created_ms, id)`.
    pub tasks: Vec<Task>,
}

#[derive(Debug)]
pub(crate) struct Dataset {
    pub orgs: Vec<Org>,
    /// Recording id → (org, task, recording) indexes.
    pub recordings: HashMap<String, (usize, usize, usize)>,
    /// Task id → (org, task) indexes.
    pub tasks: HashMap<String, (usize, usize)>,
    /// Per org (same order as `orgs`): Webex Calling recordings, newest first.
    pub calling: Vec<Vec<CallingRec>>,
    /// Calling recording id → (org, index in `calling[org]`).
    pub calling_index: HashMap<String, (usize, usize)>,
}

/// Recording layout of one task before times are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecKind {
    Main,
    Consult,
    SegmentedMain,
    VirtualAgent,
}

#[derive(Debug, Clone)]
struct Draft {
    channel: &'static str,
    status: &'static str,
    capture: Option<bool>,
    owned: bool,
    direction: &'static str,
    recs: Vec<RecKind>,
    pending: bool,
    same_time_as_previous: bool,
    fixed_bytes: Option<u64>,
}

impl Draft {
    fn telephony(capture: Option<bool>, recs: Vec<RecKind>) -> Self {
        Self {
            channel: "telephony",
            status: "completed",
            capture,
            owned: true,
            direction: "inbound",
            recs,
            pending: false,
            same_time_as_previous: false,
            fixed_bytes: None,
        }
    }

    fn other(channel: &'static str, capture: Option<bool>) -> Self {
        Self {
            channel,
            ..Self::telephony(capture, Vec::new())
        }
    }
}

fn edge_case_drafts() -> Vec<Draft> {
    use RecKind::{Consult, Main, SegmentedMain, VirtualAgent};
    let mut abandoned = Draft::telephony(Some(false), vec![]);
    abandoned.status = "abandoned";
    abandoned.owned = false;
    let mut ivr = Draft::telephony(Some(true), vec![Main]);
    ivr.owned = false;
    let mut twin = Draft::telephony(Some(true), vec![Main]);
    twin.same_time_as_previous = true;
    let mut outdial = Draft::telephony(Some(true), vec![Main]);
    outdial.direction = "outdial";
    vec![
        Draft::telephony(Some(true), vec![Main]),
        abandoned,
        ivr,
        Draft::telephony(None, vec![Main]),
        Draft::telephony(None, vec![]),
        Draft::telephony(Some(true), vec![]),
        Draft::telephony(Some(true), vec![Main, Consult]),
        Draft::telephony(Some(true), vec![SegmentedMain]),
        Draft::telephony(Some(true), vec![Main, VirtualAgent]),
        Draft::other("chat", Some(false)),
        Draft::other("email", None),
        Draft::telephony(Some(true), vec![Main]),
        twin,
        Draft::other("social", Some(false)),
        outdial,
    ]
}

fn random_draft(rng: &mut SplitMix64, spec: &DatasetSpec) -> Draft {
    if !rng.chance(spec.telephony_share) {
        let channel = *rng.pick(&["chat", "email", "social"]);
        let capture = if rng.chance(0.5) { Some(false) } else { None };
        return Draft::other(channel, capture);
    }
    if rng.chance(0.06) {
        let mut d = Draft::telephony(Some(false), vec![]);
        d.status = "abandoned";
        d.owned = false;
        return d;
    }
    let roll = rng.next_f64();
    let mut d = if roll < 0.08 {
        Draft::telephony(Some(false), vec![])
    } else if roll < 0.16 {
        let recs = if rng.chance(0.5) {
            vec![RecKind::Main]
        } else {
            vec![]
        };
        Draft::telephony(None, recs)
    } else {
        let extra = rng.next_f64();
        let recs = if extra < 0.85 {
            vec![RecKind::Main]
        } else if extra < 0.95 {
            vec![RecKind::Main, RecKind::Consult]
        } else {
            vec![RecKind::Main, RecKind::Consult, RecKind::Consult]
        };
        Draft::telephony(Some(true), recs)
    };
    let dir = rng.next_f64();
    d.direction = if dir < 0.85 {
        "inbound"
    } else if dir < 0.95 {
        "outdial"
    } else {
        "outbound"
    };
    d
}

fn bench_drafts(tasks: u32, recordings: u32) -> Vec<Draft> {
    let base = recordings.checked_div(tasks).unwrap_or(0);
    let extra = recordings.checked_rem(tasks).unwrap_or(0);
    (0..tasks)
        .map(|i| {
            let n = base + u32::from(i < extra);
            let recs = (0..n)
                .map(|k| {
                    if k == 0 {
                        RecKind::Main
                    } else {
                        RecKind::Consult
                    }
                })
                .collect();
            Draft::telephony(Some(true), recs)
        })
        .collect()
}

fn phone(rng: &mut SplitMix64) -> String {
    format!("+1{}{:07}", rng.range(201, 989), rng.range(0, 9_999_999))
}

fn masked(number: &str) -> String {
    let n = number.len();
    if n < 8 {
        return "****".to_owned();
    }
    format!("{}****{}", &number[..5], &number[n - 4..])
}

impl Dataset {
    pub(crate) fn generate(spec: &DatasetSpec, seed: u64, start_ms: i64) -> Self {
        let mut orgs = Vec::new();
        for o in 0..spec.orgs {
            let large = if o == 0 {
                spec.large_recording_bytes
            } else {
                None
            };
            orgs.push(gen_org(spec, seed, o, start_ms, large));
        }
        let mut recordings = HashMap::new();
        let mut tasks = HashMap::new();
        for (oi, org) in orgs.iter().enumerate() {
            for (ti, task) in org.tasks.iter().enumerate() {
                tasks.insert(task.id.clone(), (oi, ti));
                for (ri, rec) in task.recordings.iter().enumerate() {
                    recordings.insert(rec.id.clone(), (oi, ti, ri));
                }
            }
        }
        let calling: Vec<Vec<CallingRec>> = orgs
            .iter()
            .zip(0u32..)
            .map(|(org, o)| gen_calling(spec, seed, o, start_ms, &org.agents))
            .collect();
        let mut calling_index = HashMap::new();
        for (oi, recs) in calling.iter().enumerate() {
            for (i, r) in recs.iter().enumerate() {
                calling_index.insert(r.id.clone(), (oi, i));
            }
        }
        Self {
            orgs,
            recordings,
            tasks,
            calling,
            calling_index,
        }
    }

    pub(crate) fn org(&self, org_id: &str) -> Option<(usize, &Org)> {
        self.orgs.iter().enumerate().find(|(_, o)| o.id == org_id)
    }

    pub(crate) fn sim_orgs(&self) -> Vec<SimOrg> {
        self.orgs
            .iter()
            .map(|o| SimOrg {
                org_id: o.id.clone(),
                name: o.name.clone(),
                region: o.region.clone(),
            })
            .collect()
    }

    /// The manifest of one org; unknown orgs give an empty manifest. Hashes
    /// are computed once (in parallel) and cached.
    pub(crate) fn manifest(&self, org_id: &str) -> Manifest {
        let Some((_, org)) = self.org(org_id) else {
            return Manifest {
                tasks: Vec::new(),
                recordings: Vec::new(),
                optional_recordings: Vec::new(),
            };
        };
        let all: Vec<(&Task, &Recording)> = org
            .tasks
            .iter()
            .flat_map(|t| t.recordings.iter().map(move |r| (t, r)))
            .collect();
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let chunk = all.len().div_ceil(workers).max(1);
        std::thread::scope(|s| {
            for part in all.chunks(chunk) {
                s.spawn(move || {
                    for (_, r) in part {
                        r.sha256();
                    }
                });
            }
        });
        let mut recordings = Vec::new();
        let mut optional_recordings = Vec::new();
        for (t, r) in all {
            let e = expected_recording(t, r);
            match r.view {
                View::Default | View::StitchedMain => recordings.push(e),
                View::Segment | View::VirtualAgent => optional_recordings.push(e),
            }
        }
        Manifest {
            tasks: org
                .tasks
                .iter()
                .map(|t| ExpectedTask {
                    task_id: t.id.clone(),
                    created_ms: t.created_ms,
                    channel_type: t.channel_type.to_owned(),
                    capture_requested: t.capture_requested,
                    owner_ci_id: t.owner.map(|a| org.agents[a].ci_user_id.clone()),
                    status: t.status.to_owned(),
                })
                .collect(),
            recordings,
            optional_recordings,
        }
    }
}

/// The manifest entry of recording `r` of task `t`.
pub(crate) fn expected_recording(t: &Task, r: &Recording) -> ExpectedRecording {
    ExpectedRecording {
        task_id: t.id.clone(),
        recording_id: r.id.clone(),
        task_created_ms: t.created_ms,
        file_name: r.file_name.clone(),
        size_bytes: r.plan.len(),
        sha256: r.sha256().to_owned(),
        available_at_ms: r.available_at_ms,
        segment: r.segment,
        call_type: r.call_type.to_owned(),
        duration_ms: r.plan.duration_ms(),
        talk_spans: r.plan.talk_spans(),
    }
}

fn gen_org(spec: &DatasetSpec, seed: u64, o: u32, start_ms: i64, large: Option<u64>) -> Org {
    let mut rng = SplitMix64::new(mix2(seed, u64::from(o) + 1));
    let id = rng.uuid().to_string();
    let base_name = ORG_NAMES[o as usize % ORG_NAMES.len()];
    let name = if (o as usize) < ORG_NAMES.len() {
        base_name.to_owned()
    } else {
        format!("{base_name} {}", o + 1)
    };
    let domain: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let team_ids = [rng.uuid().to_string(), rng.uuid().to_string()];
    let site_id = rng.uuid().to_string();
    let agents: Vec<Agent> = (0..spec.agents_per_org.max(1))
        .map(|i| {
            let first = (*rng.pick(FIRST)).to_owned();
            let last = (*rng.pick(LAST)).to_owned();
            Agent {
                ci_user_id: rng.uuid().to_string(),
                cc_id: rng.uuid().to_string(),
                email: format!(
                    "{}.{}{}@{domain}.example.com",
                    first.to_ascii_lowercase(),
                    last.to_ascii_lowercase(),
                    i + 1
                ),
                first_name: first,
                last_name: last,
                team_id: team_ids[i as usize % 2].clone(),
                site_id: site_id.clone(),
            }
        })
        .collect();
    let queues: Vec<Queue> = QUEUES
        .iter()
        .map(|name| Queue {
            id: rng.uuid().to_string(),
            name,
        })
        .collect();

    let mut drafts = if let Some(exact) = spec.exact_recordings {
        bench_drafts(spec.tasks_per_org, exact)
    } else {
        let mut d = Vec::new();
        if spec.edge_cases {
            d.extend(edge_case_drafts());
            d.truncate(spec.tasks_per_org as usize);
        }
        while d.len() < spec.tasks_per_org as usize {
            d.push(random_draft(&mut rng, spec));
        }
        let pending = (spec.pending_tasks_per_org as usize).min(d.len());
        let n = d.len();
        for draft in &mut d[n - pending..] {
            *draft = Draft::telephony(Some(true), vec![RecKind::Main]);
            draft.pending = true;
        }
        d
    };
    if let Some(bytes) = large {
        let mut d = Draft::telephony(Some(true), vec![RecKind::Main]);
        d.fixed_bytes = Some(bytes);
        drafts.push(d);
    }

    let window = i64::from(spec.days.max(1)) * DAY;
    let dest = phone(&mut rng);
    let mut tasks = Vec::with_capacity(drafts.len());
    let mut prev_created: Option<i64> = None;
    for draft in drafts {
        let task = gen_task(
            &mut rng,
            spec,
            &draft,
            &agents,
            start_ms,
            window,
            &dest,
            if draft.same_time_as_previous {
                prev_created
            } else {
                None
            },
        );
        prev_created = Some(task.created_ms);
        tasks.push(task);
    }
    tasks.extend(future_tasks(spec, seed, o, start_ms, &agents, &dest));
    tasks.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Org {
        id,
        name,
        region: "us1".to_owned(),
        agents,
        queues,
        tasks,
    }
}

/// Tasks created after the start (see [`DatasetSpec::future_tasks_per_org`]), on their own
/// random stream so the tasks before the start do not depend on how many come later.
fn future_tasks(
    spec: &DatasetSpec,
    seed: u64,
    o: u32,
    start_ms: i64,
    agents: &[Agent],
    dest: &str,
) -> Vec<Task> {
    if spec.future_tasks_per_org == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(mix2(seed ^ 0x4655_5455_5245, u64::from(o) + 1));
    let span = i64::from(spec.future_hours.max(1)) * 3_600_000;
    let draft = Draft::telephony(Some(true), vec![RecKind::Main]);
    (0..spec.future_tasks_per_org)
        .map(|_| {
            let created = start_ms + rng.range_i64(1, span);
            gen_task(
                &mut rng,
                spec,
                &draft,
                agents,
                start_ms,
                span,
                dest,
                Some(created),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn gen_task(
    rng: &mut SplitMix64,
    spec: &DatasetSpec,
    draft: &Draft,
    agents: &[Agent],
    start_ms: i64,
    window: i64,
    dest: &str,
    created_override: Option<i64>,
) -> Task {
    let id = rng.uuid().to_string();
    #[allow(clippy::cast_possible_truncation)]
    let owner = draft
        .owned
        .then(|| (rng.next_u64() % agents.len() as u64) as usize);
    let queue = rng.range(0, (QUEUES.len() - 1) as u64) as usize;
    let caller = phone(rng);
    let (origin, destination) = match (draft.channel, draft.direction) {
        ("telephony", "inbound") => (caller.clone(), dest.to_owned()),
        ("telephony", _) => (dest.to_owned(), caller.clone()),
        ("email", _) => (
            format!("customer{}@example.org", rng.range(1, 9_999)),
            "support@example.com".to_owned(),
        ),
        _ => (format!("visitor-{}", rng.alnum(8)), "web".to_owned()),
    };

    // Plan recordings first: their lengths fix the call length.
    let sizes: Vec<u64> = draft
        .recs
        .iter()
        .map(|_| {
            draft
                .fixed_bytes
                .unwrap_or_else(|| rng.range(spec.min_recording_bytes, spec.max_recording_bytes))
        })
        .collect();
    let plans: Vec<WavPlan> = sizes
        .iter()
        .map(|&b| WavPlan::new(rng.next_u64(), b))
        .collect();
    let main_ms = plans.first().map_or_else(
        || rng.range_i64(30_000, 600_000),
        |p| i64::try_from(p.duration_ms()).unwrap_or(i64::MAX / 4),
    );
    let setup_ms = rng.range_i64(5_000, 60_000);
    let call_ms = setup_ms + main_ms + 2_000;
    let delay_ms = rng.range_i64(2 * MINUTE, 8 * MINUTE);

    let created_ms = if let Some(c) = created_override {
        c
    } else if draft.pending {
        let end = start_ms - rng.range_i64(30_000, 3 * MINUTE);
        end - call_ms
    } else {
        let latest = call_ms + delay_ms + MINUTE;
        if latest >= window - 1_000 {
            start_ms - latest
        } else {
            start_ms - rng.range_i64(latest, window - 1_000)
        }
    };
    let delay_ms = if draft.pending {
        // Available a few minutes after start.
        let end = created_ms + call_ms;
        (start_ms - end) + rng.range_i64(MINUTE, 8 * MINUTE)
    } else {
        delay_ms
    };
    let answered = created_ms + setup_ms;
    let end_ms = created_ms + call_ms;
    let available_at_ms = end_ms + delay_ms;
    let caller_masked = masked(&caller);

    let mut recordings = Vec::new();
    for (kind, plan) in draft.recs.iter().zip(plans) {
        let dur = i64::try_from(plan.duration_ms()).unwrap_or(i64::MAX / 4);
        let times_as_strings = rng.chance(0.4);
        let mut participants = Vec::new();
        if let Some(a) = owner {
            participants.push(agents[a].ci_user_id.clone());
        }
        participants.push(caller_masked.clone());
        match kind {
            RecKind::Main => recordings.push(new_rec(
                rng,
                "combinedRecordings.wav",
                plan,
                answered,
                dur,
                available_at_ms,
                false,
                "main",
                "Agent",
                participants,
                times_as_strings,
                View::Default,
            )),
            RecKind::Consult => {
                let other = &agents[(owner.unwrap_or(0) + 1) % agents.len()];
                participants.push(other.ci_user_id.clone());
                let start = answered + rng.range_i64(5_000, 20_000);
                recordings.push(new_rec(
                    rng,
                    "combinedRecordings.wav",
                    plan,
                    start,
                    dur,
                    available_at_ms,
                    false,
                    "consult",
                    "Agent",
                    participants,
                    times_as_strings,
                    View::Default,
                ));
            }
            RecKind::SegmentedMain => {
                let seg_size = (plan.len() / 3).max(48);
                recordings.push(new_rec(
                    rng,
                    "combinedRecordings.wav",
                    plan,
                    answered,
                    dur,
                    available_at_ms,
                    false,
                    "main",
                    "Agent",
                    participants.clone(),
                    times_as_strings,
                    View::StitchedMain,
                ));
                let mut seg_start = answered;
                for k in 1..=3 {
                    let p = WavPlan::new(rng.next_u64(), seg_size);
                    let d = i64::try_from(p.duration_ms()).unwrap_or(0);
                    recordings.push(new_rec(
                        rng,
                        &format!("recording-{k}.wav"),
                        p,
                        seg_start,
                        d,
                        available_at_ms,
                        true,
                        "main",
                        "Agent",
                        participants.clone(),
                        times_as_strings,
                        View::Segment,
                    ));
                    seg_start += d;
                }
            }
            RecKind::VirtualAgent => {
                let va = format!("va-{}", rng.uuid());
                let start = created_ms + 1_000;
                recordings.push(new_rec(
                    rng,
                    "va-recording.wav",
                    plan,
                    start,
                    dur,
                    available_at_ms,
                    false,
                    "va-main",
                    "VA",
                    vec![va, caller_masked.clone()],
                    times_as_strings,
                    View::VirtualAgent,
                ));
            }
        }
    }
    Task {
        id,
        created_ms,
        last_updated_ms: end_ms + rng.range_i64(0, 60_000),
        channel_type: draft.channel,
        status: draft.status,
        capture_requested: draft.capture,
        owner,
        queue,
        origin,
        destination,
        direction: draft.direction,
        recordings,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn new_rec(
    rng: &mut SplitMix64,
    file_name: &str,
    plan: WavPlan,
    start_ms: i64,
    dur_ms: i64,
    available_at_ms: i64,
    segment: bool,
    call_type: &'static str,
    channel2: &'static str,
    participants: Vec<String>,
    times_as_strings: bool,
    view: View,
) -> Recording {
    Recording {
        id: rng.uuid().to_string(),
        file_name: file_name.to_owned(),
        plan,
        start_ms,
        stop_ms: start_ms + dur_ms,
        available_at_ms,
        segment,
        call_type,
        channel2,
        participants,
        times_as_strings,
        view,
        sha: OnceLock::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_750_000_000_000;

    #[test]
    fn bench_counts_are_exact() {
        let ds = Dataset::generate(&DatasetSpec::bench(20, 33, 2_000), 5, START);
        let org = &ds.orgs[0];
        assert_eq!(org.tasks.len(), 20);
        let recs: usize = org.tasks.iter().map(|t| t.recordings.len()).sum();
        assert_eq!(recs, 33);
        for t in &org.tasks {
            assert_eq!(t.channel_type, "telephony");
            assert_eq!(t.capture_requested, Some(true));
            assert!(t.created_ms > START - DAY && t.created_ms < START);
            for r in &t.recordings {
                assert!(r.available_at_ms <= START);
                assert!(r.plan.len().abs_diff(2_000) <= 100);
            }
        }
    }

    #[test]
    fn small_has_every_edge_case() {
        let ds = Dataset::generate(&DatasetSpec::small(), 1, START);
        assert_eq!(ds.orgs.len(), 2);
        let org = &ds.orgs[0];
        let t = &org.tasks;
        assert!(
            t.iter()
                .any(|t| t.owner.is_none() && !t.recordings.is_empty())
        );
        assert!(t.iter().any(|t| t.capture_requested.is_none()));
        assert!(t.iter().any(|t| t.capture_requested == Some(false)));
        assert!(t.iter().any(|t| t.channel_type != "telephony"));
        assert!(t.iter().any(|t| t.recordings.len() >= 2));
        assert!(t.windows(2).any(|w| w[0].created_ms == w[1].created_ms));
        assert!(
            t.iter()
                .flat_map(|t| &t.recordings)
                .any(|r| r.available_at_ms > START)
        );
        assert!(
            t.iter()
                .flat_map(|t| &t.recordings)
                .any(|r| r.view == View::Segment)
        );
        assert!(t.windows(2).all(|w| w[0].created_ms <= w[1].created_ms));
    }

    #[test]
    fn demo_is_one_org_of_about_150_telephony_tasks_within_a_day() {
        let ds = Dataset::generate(&DatasetSpec::demo(), 1, START);
        assert_eq!(ds.orgs.len(), 1);
        let tel = ds.orgs[0]
            .tasks
            .iter()
            .filter(|t| t.channel_type == "telephony")
            .count();
        assert!((135..=165).contains(&tel), "{tel}");
        assert!(ds.orgs[0].tasks.iter().all(|t| t.created_ms > START - DAY));
    }

    #[test]
    fn future_tasks_come_after_the_start_and_leave_the_rest_alone() {
        let base = Dataset::generate(&DatasetSpec::small(), 3, START);
        let spec = DatasetSpec::small().with_future_tasks(5, 6);
        let ds = Dataset::generate(&spec, 3, START);
        for (a, b) in base.orgs.iter().zip(&ds.orgs) {
            let before: Vec<&Task> = b.tasks.iter().filter(|t| t.created_ms <= START).collect();
            assert_eq!(before.len(), a.tasks.len());
            for (x, y) in a.tasks.iter().zip(before) {
                assert_eq!((&x.id, x.created_ms), (&y.id, y.created_ms));
            }
            let later: Vec<&Task> = b.tasks.iter().filter(|t| t.created_ms > START).collect();
            assert_eq!(later.len(), 5);
            for t in later {
                assert!(t.created_ms <= START + 6 * 3_600_000);
                assert_eq!(t.capture_requested, Some(true));
                assert_eq!(t.recordings.len(), 1);
                assert!(t.recordings[0].available_at_ms > t.created_ms);
            }
        }
    }

    #[test]
    fn large_recording_is_planned_not_stored() {
        let ds = Dataset::generate(
            &DatasetSpec::bench(1, 1, 1_000).with_large_recording(1 << 30),
            1,
            START,
        );
        let big = ds.orgs[0]
            .tasks
            .iter()
            .flat_map(|t| &t.recordings)
            .map(|r| r.plan.len())
            .max();
        assert_eq!(big, Some(1 << 30));
    }
}
