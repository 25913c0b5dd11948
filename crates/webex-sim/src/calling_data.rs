//! Webex Calling converged recordings: deterministic generation and ground truth.
//!
//! Each org's recordings come from their own random stream (seeded from the
//! simulator seed and the org number, never from the WxCC stream), so adding
//! or resizing Calling data leaves every WxCC id, time and byte unchanged.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::config::DatasetSpec;
use crate::dataset::Agent;
use crate::model::{CallingManifest, ExpectedCallingRecording};
use crate::mp3::{Template, id3_tag, template_count, templates, transcript};
use crate::rng::{SplitMix64, mix2};

const SECOND: i64 = 1_000;
const DAY: i64 = 86_400_000;
/// Salt of the Calling random stream ("CALLING").
const CALLING_SALT: u64 = 0x0043_414C_4C49_4E47;
const OWNER_TYPES: &[&str] = &["user", "place", "virtualLine", "callQueue"];
const PLACE_NAMES: &[&str] = &["Lobby Phone", "Warehouse Desk", "Front Desk"];
const QUEUE_NAMES: &[&str] = &["Billing Line", "Support Line"];

/// The audio of one recording: an ID3 tag naming it, then a shared template's frames.
#[derive(Debug)]
pub(crate) struct Mp3Audio {
    pub prefix: Vec<u8>,
    pub template: &'static Template,
}

impl Mp3Audio {
    pub(crate) fn len(&self) -> u64 {
        (self.prefix.len() + self.template.bytes.len()) as u64
    }

    /// Copies bytes `[start, start + buf.len())` of the file into `buf`.
    pub(crate) fn fill(&self, start: u64, buf: &mut [u8]) {
        let p = self.prefix.len();
        for (i, b) in buf.iter_mut().enumerate() {
            #[allow(clippy::cast_possible_truncation)] // files are a few hundred KiB
            let pos = start as usize + i;
            *b = if pos < p {
                self.prefix[pos]
            } else {
                self.template.bytes[pos - p]
            };
        }
    }
}

#[derive(Debug)]
pub(crate) struct CallingRec {
    pub id: String,
    pub topic: String,
    pub time_recorded_ms: i64,
    pub create_ms: i64,
    pub owner_id: String,
    pub owner_type: &'static str,
    pub owner_name: String,
    pub owner_email: Option<String>,
    pub service_type: &'static str,
    pub status: &'static str,
    pub location_id: String,
    pub call_session_id: String,
    pub call_recording_id: String,
    pub call_id: String,
    pub personality: &'static str,
    pub calling_number: String,
    pub called_number: String,
    pub recording_type: &'static str,
    /// `None`: a zero-byte recording.
    pub audio: Option<Mp3Audio>,
    pub transcript: Option<String>,
    sha: OnceLock<String>,
}

impl CallingRec {
    pub(crate) fn size(&self) -> u64 {
        self.audio.as_ref().map_or(0, Mp3Audio::len)
    }

    pub(crate) fn duration_secs(&self) -> u64 {
        self.audio
            .as_ref()
            .map_or(0, |a| a.template.duration_ms.div_ceil(1_000))
    }

    /// Lowercase hex sha256 of the served audio, computed once.
    pub(crate) fn sha256(&self) -> &str {
        self.sha.get_or_init(|| {
            let mut h = Sha256::new();
            if let Some(a) = &self.audio {
                h.update(&a.prefix);
                h.update(&a.template.bytes);
            }
            hex::encode(h.finalize())
        })
    }
}

fn phone(rng: &mut SplitMix64) -> String {
    format!("+1408555{:04}", rng.range(0, 9_999))
}

/// Generates org `o`'s Calling recordings, sorted newest `createTime` first (then by id).
pub(crate) fn gen_calling(
    spec: &DatasetSpec,
    seed: u64,
    o: u32,
    start_ms: i64,
    agents: &[Agent],
) -> Vec<CallingRec> {
    let n = spec.calling_per_org;
    if n == 0 {
        return Vec::new();
    }
    let tpl = templates();
    let mut rng = SplitMix64::new(mix2(seed ^ CALLING_SALT, u64::from(o) + 1));
    let base = start_ms - start_ms.rem_euclid(SECOND);
    let window = i64::from(spec.days.max(1)) * DAY;
    let locations = [rng.uuid().to_string(), rng.uuid().to_string()];
    let places: Vec<(String, &str)> = PLACE_NAMES
        .iter()
        .map(|p| (rng.uuid().to_string(), *p))
        .collect();
    let lines: Vec<(String, String)> = (0..2)
        .map(|i| (rng.uuid().to_string(), format!("Virtual Line {}", i + 1)))
        .collect();
    let queues: Vec<(String, &str)> = QUEUE_NAMES
        .iter()
        .map(|q| (rng.uuid().to_string(), *q))
        .collect();
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = rng.uuid().to_string();
        let zero = spec.edge_cases && i == 0;
        let no_transcript = spec.edge_cases && i == 1;
        // Fixed patterns guarantee every status, service and owner type shows
        // up in small datasets; the rest is random.
        let status = if i % 9 == 4 {
            "purged"
        } else if i % 11 == 6 {
            "deleted"
        } else {
            "available"
        };
        let service_type = if i % 4 == 2 {
            "customerAssist"
        } else {
            "calling"
        };
        let owner_type = if i < 4 {
            OWNER_TYPES[i as usize]
        } else if rng.chance(0.6) {
            "user"
        } else {
            *rng.pick(OWNER_TYPES)
        };
        // An org without agents has no users to own recordings.
        let owner_type = if owner_type == "user" && agents.is_empty() {
            "callQueue"
        } else {
            owner_type
        };
        let (owner_id, owner_name, owner_email) = match owner_type {
            "user" => {
                let a = rng.pick(agents);
                (
                    a.ci_user_id.clone(),
                    format!("{} {}", a.first_name, a.last_name),
                    Some(a.email.clone()),
                )
            }
            "place" => {
                let (id, name) = rng.pick(&places);
                (id.clone(), (*name).to_owned(), None)
            }
            "virtualLine" => {
                let (id, name) = rng.pick(&lines);
                (id.clone(), name.clone(), None)
            }
            _ => {
                let (id, name) = rng.pick(&queues);
                (id.clone(), (*name).to_owned(), None)
            }
        };
        #[allow(clippy::cast_possible_truncation)]
        let k = rng.range(0, template_count() as u64 - 1) as usize;
        let template = &tpl[k];
        let dur_ms = if zero {
            0
        } else {
            i64::try_from(template.duration_ms).unwrap_or(0)
        };
        let dur = (dur_ms + SECOND - 1) / SECOND * SECOND;
        let gap = rng.range_i64(5, 120) * SECOND;
        // The newest recording of a larger set is produced a few minutes after start.
        let pending = n >= 4 && i == n - 1;
        let time_recorded_ms = if pending {
            base - dur + rng.range_i64(1, 60) * SECOND
        } else {
            let earliest = window - SECOND;
            let latest = (dur + gap + 60 * SECOND).min(earliest);
            base - rng.range_i64(latest / SECOND, earliest / SECOND) * SECOND
        };
        let create_ms = if pending {
            base + rng.range_i64(60, 600) * SECOND
        } else {
            time_recorded_ms + dur + gap
        };
        let other = phone(&mut rng);
        let own_number = phone(&mut rng);
        let outbound = rng.chance(0.4);
        let (calling_number, called_number) = if outbound {
            (own_number, other.clone())
        } else {
            (other.clone(), own_number)
        };
        let topic = format!("Call with {other}");
        let audio = (!zero).then(|| Mp3Audio {
            prefix: id3_tag(&id, &topic),
            template,
        });
        let with_transcript = !zero && !no_transcript && rng.chance(0.6);
        let transcript_seed = rng.next_u64();
        let transcript = with_transcript.then(|| transcript(transcript_seed, &template.talk_spans));
        out.push(CallingRec {
            id,
            topic,
            time_recorded_ms,
            create_ms,
            owner_id,
            owner_type,
            owner_name,
            owner_email,
            service_type,
            status,
            location_id: rng.pick(&locations).clone(),
            call_session_id: rng.uuid().to_string(),
            call_recording_id: rng.uuid().to_string(),
            call_id: format!("SSE{}@10.0.0.{}", rng.alnum(24), rng.range(2, 250)),
            personality: if outbound { "originator" } else { "terminator" },
            calling_number,
            called_number,
            recording_type: if rng.chance(0.8) {
                "alwaysON"
            } else {
                "onDemand"
            },
            audio,
            transcript,
            sha: OnceLock::new(),
        });
    }
    out.sort_by(|a, b| b.create_ms.cmp(&a.create_ms).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Ground truth of one org's Calling recordings (hashes computed once, in parallel).
pub(crate) fn calling_manifest(recs: &[CallingRec]) -> CallingManifest {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = recs.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        for part in recs.chunks(chunk) {
            s.spawn(move || {
                for r in part {
                    r.sha256();
                }
            });
        }
    });
    CallingManifest {
        recordings: recs
            .iter()
            .map(|r| ExpectedCallingRecording {
                id: r.id.clone(),
                status: r.status.to_owned(),
                service_type: r.service_type.to_owned(),
                owner_type: r.owner_type.to_owned(),
                owner_id: r.owner_id.clone(),
                time_recorded_ms: r.time_recorded_ms,
                create_time_ms: r.create_ms,
                duration_seconds: r.duration_secs(),
                size_bytes: r.size(),
                sha256: r.sha256().to_owned(),
                has_transcript: r.transcript.is_some(),
                transcript_sha256: r
                    .transcript
                    .as_ref()
                    .map(|t| hex::encode(Sha256::digest(t.as_bytes()))),
                talk_spans: r
                    .audio
                    .as_ref()
                    .map(|a| a.template.talk_spans.clone())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_750_000_000_123;

    fn ids(seed: u64) -> Vec<(String, i64, u64)> {
        let spec = DatasetSpec::small().with_calling(10);
        gen_calling(&spec, seed, 0, START, &[])
            .iter()
            .map(|r| (r.id.clone(), r.create_ms, r.size()))
            .collect()
    }

    #[test]
    fn seeded_sorted_whole_seconds() {
        assert_eq!(ids(3), ids(3));
        assert_ne!(ids(3), ids(4));
        let recs = gen_calling(&DatasetSpec::small().with_calling(10), 3, 0, START, &[]);
        assert!(recs.windows(2).all(|w| w[0].create_ms >= w[1].create_ms));
        assert!(recs.iter().all(|r| r.create_ms % 1_000 == 0));
        // No agents: user owners fall back to call queues rather than panicking.
        assert!(
            recs.iter()
                .all(|r| r.owner_type != "user" || r.owner_email.is_some())
        );
    }
}
