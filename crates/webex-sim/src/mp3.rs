//! MP3 audio and WebVTT transcripts for Webex Calling recordings.
//!
//! Encoding MP3 per recording would make a 2,000-recording dataset take
//! minutes, so a few template clips are synthesised with the WAV speech model
//! ([`crate::wav`]: caller on the left channel, agent on the right) and
//! encoded once per process by LAME. Each recording serves a small ID3v2 tag
//! naming its id followed by one template's frames, so every recording has
//! distinct bytes (and sha256) while sharing the expensive part.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, InterleavedPcm, Mode, Quality};

use crate::rng::{SplitMix64, mix2};
use crate::wav::{HEADER_LEN, SAMPLE_RATE, TalkSpan, WavPlan};

/// MPEG-1 sample rate of the encoded clips (LAME resamples the 8 kHz speech).
pub(crate) const MP3_SAMPLE_RATE: u32 = 32_000;
/// Clip lengths in seconds; a recording picks one of them.
const TEMPLATE_SECS: &[u64] = &[6, 9, 13, 18, 24, 31, 40];

/// One encoded clip shared by many recordings.
#[derive(Debug)]
pub(crate) struct Template {
    /// MPEG-1 Layer III frames, no tags.
    pub bytes: Vec<u8>,
    pub duration_ms: u64,
    pub talk_spans: Vec<TalkSpan>,
}

/// Number of templates a recording can pick from.
pub(crate) const fn template_count() -> usize {
    TEMPLATE_SECS.len()
}

/// The encoded templates, produced on first use (in parallel) and kept for the process.
///
/// The clips do not depend on the simulator seed, so every simulator in a test
/// process shares one encoding pass.
pub(crate) fn templates() -> &'static [Template] {
    static CACHE: OnceLock<Vec<Template>> = OnceLock::new();
    CACHE.get_or_init(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = TEMPLATE_SECS
                .iter()
                .enumerate()
                .map(|(k, &secs)| s.spawn(move || encode_template(k as u64, secs)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    })
}

fn encode_template(k: u64, secs: u64) -> Template {
    let frames = secs * u64::from(SAMPLE_RATE);
    let plan = WavPlan::new(mix2(0x4D50_3354_454D_504C, k), HEADER_LEN + frames * 4);
    #[allow(clippy::cast_possible_truncation)] // at most a few MiB
    let mut wav = vec![0u8; plan.len() as usize];
    plan.fill(0, &mut wav);
    let pcm: Vec<i16> = wav[HEADER_LEN as usize..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let bytes = encode(&pcm).unwrap_or_else(|e| {
        // LAME only fails on invalid settings or allocation failure; both are
        // bugs in the fixed settings above or an out-of-memory machine.
        panic!("webex-sim could not encode its MP3 template ({e}); this is a simulator bug")
    });
    Template {
        bytes,
        duration_ms: plan.duration_ms(),
        talk_spans: plan.talk_spans(),
    }
}

/// Why LAME refused: a message naming the failing step.
#[derive(Debug, thiserror::Error)]
#[error("LAME {step} failed: {detail}")]
pub(crate) struct EncodeFailure {
    step: &'static str,
    detail: String,
}

fn fail(step: &'static str) -> impl FnOnce(String) -> EncodeFailure {
    move |detail| EncodeFailure { step, detail }
}

/// Encodes interleaved 8 kHz stereo PCM as CBR 32 kbit/s, 32 kHz, stereo
/// (not joint: the channels carry different speakers) MPEG-1 Layer III.
fn encode(interleaved: &[i16]) -> Result<Vec<u8>, EncodeFailure> {
    let mut b = Builder::new().ok_or_else(|| fail("init")("allocation failed".to_owned()))?;
    b.set_num_channels(2)
        .map_err(|e| fail("channels")(e.to_string()))?;
    b.set_sample_rate(SAMPLE_RATE)
        .map_err(|e| fail("input rate")(e.to_string()))?;
    b.set_output_sample_rate(NonZeroU32::new(MP3_SAMPLE_RATE))
        .map_err(|e| fail("output rate")(e.to_string()))?;
    b.set_brate(Bitrate::Kbps32)
        .map_err(|e| fail("bitrate")(e.to_string()))?;
    b.set_mode(Mode::Stereo)
        .map_err(|e| fail("mode")(e.to_string()))?;
    b.set_quality(Quality::Worst)
        .map_err(|e| fail("quality")(e.to_string()))?;
    b.set_to_write_vbr_tag(false)
        .map_err(|e| fail("vbr tag")(e.to_string()))?;
    let mut enc = b.build().map_err(|e| fail("build")(e.to_string()))?;
    let per_channel = interleaved.len() / 2;
    let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(per_channel));
    enc.encode_to_vec(InterleavedPcm(interleaved), &mut out)
        .map_err(|e| fail("encode")(e.to_string()))?;
    out.reserve(7_200);
    enc.flush_to_vec::<FlushNoGap>(&mut out)
        .map_err(|e| fail("flush")(e.to_string()))?;
    Ok(out)
}

/// An ID3v2.3 tag with the recording id (`TXXX:WEBEX_RECORDING_ID`) and topic
/// (`TIT2`); players and decoders skip it. Text is written as ISO-8859-1, so
/// non-ASCII characters become `?`.
pub(crate) fn id3_tag(recording_id: &str, topic: &str) -> Vec<u8> {
    fn latin1(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' })
    }
    fn frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
        out.extend_from_slice(id);
        #[allow(clippy::cast_possible_truncation)] // bodies are short texts
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(body);
    }
    let mut frames = Vec::new();
    let mut title = vec![0u8];
    title.extend(latin1(topic));
    frame(&mut frames, b"TIT2", &title);
    let mut txxx = vec![0u8];
    txxx.extend_from_slice(b"WEBEX_RECORDING_ID\0");
    txxx.extend(latin1(recording_id));
    frame(&mut frames, b"TXXX", &txxx);
    let mut out = Vec::with_capacity(10 + frames.len());
    out.extend_from_slice(b"ID3\x03\x00\x00");
    #[allow(clippy::cast_possible_truncation)]
    let n = frames.len() as u32;
    // Sync-safe size: 7 bits per byte.
    out.extend_from_slice(&[
        ((n >> 21) & 0x7F) as u8,
        ((n >> 14) & 0x7F) as u8,
        ((n >> 7) & 0x7F) as u8,
        (n & 0x7F) as u8,
    ]);
    out.extend_from_slice(&frames);
    out
}

const WORDS: &[&str] = &[
    "hello",
    "thanks",
    "for",
    "calling",
    "my",
    "account",
    "number",
    "is",
    "the",
    "invoice",
    "please",
    "hold",
    "on",
    "yes",
    "that",
    "works",
    "can",
    "you",
    "confirm",
    "address",
    "order",
    "today",
    "we",
    "will",
    "send",
    "it",
    "again",
    "great",
    "appreciate",
    "help",
];

fn vtt_time(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

/// A WebVTT transcript with one cue per speech turn, voices `Caller`/`Agent`.
pub(crate) fn transcript(seed: u64, spans: &[TalkSpan]) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut out = String::from("WEBVTT\n");
    for (i, s) in spans.iter().enumerate() {
        let voice = if s.speaker == "agent" {
            "Agent"
        } else {
            "Caller"
        };
        let n = rng.range(3, 12);
        let text: Vec<&str> = (0..n).map(|_| *rng.pick(WORDS)).collect();
        out.push_str(&format!(
            "\n{}\n{} --> {}\n<v {voice}>{}.\n",
            i + 1,
            vtt_time(s.start_ms),
            vtt_time(s.end_ms),
            text.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_mpeg1_layer3_stereo() {
        let t = &templates()[0];
        let h = &t.bytes[..4];
        assert_eq!(h[0], 0xFF);
        assert_eq!(h[1] & 0xFE, 0xFA, "MPEG-1 Layer III sync");
        assert_eq!((h[2] >> 2) & 3, 2, "32 kHz");
        assert_eq!(h[3] >> 6, 0, "stereo");
        assert!(!t.talk_spans.is_empty());
    }

    #[test]
    fn id3_size_is_syncsafe() {
        let tag = id3_tag("abc", "Call");
        assert_eq!(&tag[..3], b"ID3");
        let n = (usize::from(tag[6]) << 21)
            | (usize::from(tag[7]) << 14)
            | (usize::from(tag[8]) << 7)
            | usize::from(tag[9]);
        assert_eq!(n + 10, tag.len());
    }

    #[test]
    fn transcript_is_webvtt() {
        let spans = vec![TalkSpan {
            speaker: "agent".to_owned(),
            start_ms: 1_200,
            end_ms: 61_005,
        }];
        let t = transcript(1, &spans);
        assert!(t.starts_with("WEBVTT\n\n1\n00:00:01.200 --> 00:01:01.005\n<v Agent>"));
    }
}
