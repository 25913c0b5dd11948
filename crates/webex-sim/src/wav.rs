//! Procedural WAV audio.
//!
//! Recordings are never stored: every byte is a pure function of
//! `(recording seed, byte offset)`, so any range of a 1 GiB file can be served
//! (or hashed) in constant memory, and the same seed always yields the same
//! bytes and therefore the same sha256. The signal is speech-like on purpose:
//! syllable-sized tone bursts under an on/off envelope, caller on the left
//! channel and agent on the right, with known turn timings that downstream
//! analysis (diarisation, talk-time metrics) can be checked against.

use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::rng::{SplitMix64, mix2};

/// Samples per second per channel.
pub(crate) const SAMPLE_RATE: u32 = 8_000;
/// Bytes per stereo 16-bit frame.
const BYTES_PER_FRAME: u64 = 4;
/// Canonical 44-byte RIFF/WAVE PCM header.
pub(crate) const HEADER_LEN: u64 = 44;
/// Frames per syllable (150 ms).
const SYLLABLE: u64 = 1_200;
/// Attack/decay ramp of a syllable, in frames (20 ms).
const RAMP: u64 = 160;
/// Largest data chunk a RIFF header can describe.
const MAX_FRAMES: u64 = (u32::MAX as u64 - 36) / BYTES_PER_FRAME;

/// One party talking without interruption, in frames from the start of the file.
#[derive(Debug, Clone, Copy)]
struct Turn {
    start: u64,
    end: u64,
    /// 0 = caller (left channel), 1 = agent (right channel).
    speaker: u8,
}

/// A stretch of speech in a recording, for checking analysis results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TalkSpan {
    /// `"caller"` (left channel) or `"agent"` (right channel).
    pub speaker: String,
    /// Offset from the start of the audio, in milliseconds.
    pub start_ms: u64,
    /// End offset (exclusive), in milliseconds.
    pub end_ms: u64,
}

/// Everything needed to produce one recording's bytes.
#[derive(Debug, Clone)]
pub(crate) struct WavPlan {
    seed: u64,
    frames: u64,
    turns: Vec<Turn>,
}

fn sine_table() -> &'static [i32; 1024] {
    static TABLE: OnceLock<[i32; 1024]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0i32; 1024];
        for (i, v) in t.iter_mut().enumerate() {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let s = ((i as f64) * std::f64::consts::TAU / 1024.0).sin() * 16_384.0;
            #[allow(clippy::cast_possible_truncation)]
            {
                *v = s.round() as i32;
            }
        }
        t
    })
}

impl WavPlan {
    /// Plans a file of about `total_bytes` (exact when `total_bytes - 44` is a
    /// multiple of 4; never smaller than one frame).
    pub(crate) fn new(seed: u64, total_bytes: u64) -> Self {
        let frames =
            (total_bytes.saturating_sub(HEADER_LEN) / BYTES_PER_FRAME).clamp(1, MAX_FRAMES);
        let mut rng = SplitMix64::new(seed ^ 0x5741_5645);
        let mut turns = Vec::new();
        let mut t = rng.range(2_400, 8_000);
        let mut speaker: u8 = u8::from(rng.chance(0.7));
        while t < frames {
            let end = (t + rng.range(12_000, 64_000)).min(frames);
            turns.push(Turn {
                start: t,
                end,
                speaker,
            });
            t = end + rng.range(1_600, 9_600);
            if rng.chance(0.85) {
                speaker ^= 1;
            }
        }
        Self {
            seed,
            frames,
            turns,
        }
    }

    /// Total file size in bytes, header included.
    pub(crate) fn len(&self) -> u64 {
        HEADER_LEN + self.frames * BYTES_PER_FRAME
    }

    /// Audio duration in milliseconds.
    pub(crate) fn duration_ms(&self) -> u64 {
        self.frames * 1_000 / u64::from(SAMPLE_RATE)
    }

    pub(crate) fn talk_spans(&self) -> Vec<TalkSpan> {
        let ms = |f: u64| f * 1_000 / u64::from(SAMPLE_RATE);
        self.turns
            .iter()
            .map(|t| TalkSpan {
                speaker: if t.speaker == 0 { "caller" } else { "agent" }.to_owned(),
                start_ms: ms(t.start),
                end_ms: ms(t.end),
            })
            .collect()
    }

    fn header(&self) -> [u8; 44] {
        #[allow(clippy::cast_possible_truncation)] // frames <= MAX_FRAMES
        let data_len = (self.frames * BYTES_PER_FRAME) as u32;
        let mut h = [0u8; 44];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
        h[22..24].copy_from_slice(&2u16.to_le_bytes()); // channels
        h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
        h[28..32].copy_from_slice(&(SAMPLE_RATE * 4).to_le_bytes()); // byte rate
        h[32..34].copy_from_slice(&4u16.to_le_bytes()); // block align
        h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data_len.to_le_bytes());
        h
    }

    /// Fills `buf` with the file bytes starting at `offset`. Bytes past the end
    /// of the file are left untouched; callers never ask for them.
    pub(crate) fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut written = 0usize;
        let total = buf.len();
        let mut pos = offset;
        if pos < HEADER_LEN {
            let header = self.header();
            #[allow(clippy::cast_possible_truncation)]
            let start = pos as usize;
            let n = (44 - start).min(total);
            buf[..n].copy_from_slice(&header[start..start + n]);
            written = n;
            pos += n as u64;
        }
        if written == total {
            return;
        }
        let mut frame = (pos - HEADER_LEN) / BYTES_PER_FRAME;
        #[allow(clippy::cast_possible_truncation)]
        let mut within = ((pos - HEADER_LEN) % BYTES_PER_FRAME) as usize;
        let mut cursor = self.turns.partition_point(|t| t.end <= frame);
        let table = sine_table();
        while written < total && frame < self.frames {
            while cursor < self.turns.len() && self.turns[cursor].end <= frame {
                cursor += 1;
            }
            let (l, r) = self.frame(frame, cursor, table);
            let mut bytes = [0u8; 4];
            bytes[..2].copy_from_slice(&l.to_le_bytes());
            bytes[2..].copy_from_slice(&r.to_le_bytes());
            let n = (4 - within).min(total - written);
            buf[written..written + n].copy_from_slice(&bytes[within..within + n]);
            written += n;
            within = 0;
            frame += 1;
        }
    }

    /// One stereo frame. `cursor` is the first turn that has not ended yet.
    fn frame(&self, n: u64, cursor: usize, table: &[i32; 1024]) -> (i16, i16) {
        let noise = mix2(self.seed, n);
        // Comfort noise on both channels, +-32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let mut left = ((noise & 0x3F) as i32) - 32;
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let mut right = (((noise >> 8) & 0x3F) as i32) - 32;
        if let Some(turn) = self.turns.get(cursor).filter(|t| t.start <= n) {
            let local = n - turn.start;
            let syllable = local / SYLLABLE;
            let h = mix2(self.seed ^ (turn.start << 1), syllable);
            if h & 7 != 0 {
                let pos = local % SYLLABLE;
                let edge = pos.min(SYLLABLE - pos).min(turn.end - n).min(RAMP);
                let f0 = if turn.speaker == 0 {
                    110 + (h >> 8) % 60
                } else {
                    190 + (h >> 8) % 70
                };
                #[allow(clippy::cast_possible_truncation)]
                let step = ((f0 << 32) / u64::from(SAMPLE_RATE)) as u32;
                #[allow(clippy::cast_possible_truncation)]
                let phase = (n as u32).wrapping_mul(step);
                let s1 = table[(phase >> 22) as usize];
                let s2 = table[(phase.wrapping_mul(2) >> 22) as usize];
                let s3 = table[(phase.wrapping_mul(3) >> 22) as usize];
                let voice = (5 * s1 + 3 * s2 + 2 * s3) / 20;
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                let v = voice * edge as i32 / RAMP as i32;
                if turn.speaker == 0 {
                    left += v;
                } else {
                    right += v;
                }
            }
        }
        #[allow(clippy::cast_possible_truncation)]
        (
            left.clamp(-32_768, 32_767) as i16,
            right.clamp(-32_768, 32_767) as i16,
        )
    }

    /// Hex sha256 of the whole file, computed by streaming.
    pub(crate) fn sha256_hex(&self) -> String {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let len = self.len();
        let mut off = 0u64;
        while off < len {
            #[allow(clippy::cast_possible_truncation)]
            let n = (len - off).min(buf.len() as u64) as usize;
            self.fill(off, &mut buf[..n]);
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(plan: &WavPlan) -> Vec<u8> {
        #[allow(clippy::cast_possible_truncation)]
        let mut v = vec![0u8; plan.len() as usize];
        plan.fill(0, &mut v);
        v
    }

    #[test]
    fn header_is_valid_pcm_stereo_8k() {
        let plan = WavPlan::new(42, 10_044);
        assert_eq!(plan.len(), 10_044);
        let b = whole(&plan);
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 10_036);
        assert_eq!(&b[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([b[20], b[21]]), 1);
        assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 8_000);
        assert_eq!(u16::from_le_bytes([b[34], b[35]]), 16);
        assert_eq!(&b[36..40], b"data");
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 10_000);
    }

    #[test]
    fn any_range_matches_the_whole_file() {
        let plan = WavPlan::new(9, 50_000);
        let full = whole(&plan);
        for (start, len) in [
            (0usize, 1usize),
            (3, 50),
            (43, 9),
            (45, 7),
            (1_001, 4_003),
            (49_990, 10),
        ] {
            let mut part = vec![0u8; len];
            plan.fill(start as u64, &mut part);
            assert_eq!(part, full[start..start + len], "range {start}+{len}");
        }
    }

    #[test]
    fn caller_left_agent_right_follow_turns() {
        let plan = WavPlan::new(3, 44 + 4 * 8_000 * 20);
        let full = whole(&plan);
        let turn = plan.turns[0];
        // Energy of each channel inside the first turn.
        let (mut el, mut er) = (0i64, 0i64);
        for f in turn.start..turn.end {
            #[allow(clippy::cast_possible_truncation)]
            let o = (44 + f * 4) as usize;
            let l = i64::from(i16::from_le_bytes([full[o], full[o + 1]]));
            let r = i64::from(i16::from_le_bytes([full[o + 2], full[o + 3]]));
            el += l * l;
            er += r * r;
        }
        if turn.speaker == 0 {
            assert!(el > er * 100, "caller turn must be on the left");
        } else {
            assert!(er > el * 100, "agent turn must be on the right");
        }
    }

    #[test]
    fn same_seed_same_hash() {
        assert_eq!(
            WavPlan::new(5, 9_000).sha256_hex(),
            WavPlan::new(5, 9_000).sha256_hex()
        );
        assert_ne!(
            WavPlan::new(5, 9_000).sha256_hex(),
            WavPlan::new(6, 9_000).sha256_hex()
        );
    }
}
