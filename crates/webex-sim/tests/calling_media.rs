//! Webex Calling media in the simulator: download links on the second host,
//! ticket expiry by the simulator clock, the Authorization refusal, the bearer
//! mode, and the MP3 bytes themselves (frame walk and a real decode).

mod calling_support;

use std::collections::HashSet;
use std::time::Duration;

use calling_support::*;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use webex_sim::{Faults, SimClient};

#[tokio::test]
async fn links_expire_by_the_simulator_clock_and_the_expiry_knob() {
    let ctx = start(8).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let rec = ctx
        .manifest()
        .recordings
        .into_iter()
        .find(|r| r.status == "available" && r.create_time_ms <= START && r.size_bytes > 0)
        .unwrap();
    let link = audio_link(&ctx, &officer, &rec.id).await;
    ctx.sim.advance_clock(Duration::from_secs(3 * 3_600 - 1));
    assert_eq!(ctx.download(&link).await.status(), StatusCode::OK);
    ctx.sim.advance_clock(Duration::from_secs(1));
    assert_eq!(ctx.download(&link).await.status(), StatusCode::FORBIDDEN);

    // A ticket for another recording does not open this one.
    let tampered = link.replace(&rec.id, &ctx.manifest().recordings[0].id);
    assert_eq!(
        ctx.download(&tampered).await.status(),
        StatusCode::FORBIDDEN
    );

    let officer = ctx.token(&[COMPLIANCE]);
    ctx.sim.set_faults(Faults {
        calling_url_expiry_secs: Some(0),
        ..Faults::default()
    });
    let link = audio_link(&ctx, &officer, &rec.id).await;
    assert_eq!(ctx.download(&link).await.status(), StatusCode::FORBIDDEN);
    ctx.sim.set_faults(Faults {
        calling_url_expiry_secs: Some(60),
        ..Faults::default()
    });
    let d = ctx
        .get_json(&officer, &format!("v1/convergedRecordings/{}", rec.id))
        .await;
    let links = &d["temporaryDirectDownloadLinks"];
    assert_eq!(
        ms_of(links["expiration"].as_str().unwrap()),
        ctx.sim.now_ms() + 60_000
    );
    let link = links["audioDownloadLink"].as_str().unwrap();
    assert_eq!(ctx.download(link).await.status(), StatusCode::OK);
    ctx.sim.advance_clock(Duration::from_secs(60));
    assert_eq!(ctx.download(link).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn media_host_refuses_and_counts_any_authorization_header() {
    let ctx = start(8).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let rec = ctx
        .manifest()
        .recordings
        .into_iter()
        .find(|r| r.status == "available" && r.create_time_ms <= START && r.size_bytes > 0)
        .unwrap();
    let link = audio_link(&ctx, &officer, &rec.id).await;
    let r = ctx
        .http
        .get(&link)
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&officer), "the token is never echoed");
    let r = ctx
        .http
        .get(&link)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(ctx.download(&link).await.status(), StatusCode::OK);
    let stats = ctx.sim.stats();
    assert_eq!(stats.calling_media_with_authorization, 2);
    assert_eq!(stats.by_endpoint["calling_media"], 3);
    assert_eq!(stats.by_endpoint["calling_details"], 1);
    // The main host does not serve the ticket-only link without a bearer.
    let on_main = link.replace(ctx.sim.calling_media_url().as_str(), ctx.base.as_str());
    assert_eq!(
        ctx.download(&on_main).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bearer_media_mode_serves_from_the_main_host_with_the_token() {
    let ctx = start(8).await;
    ctx.sim.set_faults(Faults {
        calling_media_requires_bearer: true,
        ..Faults::default()
    });
    let officer = ctx.token(&[COMPLIANCE]);
    let rec = ctx
        .manifest()
        .recordings
        .into_iter()
        .find(|r| r.status == "available" && r.create_time_ms <= START && r.size_bytes > 0)
        .unwrap();
    let link = audio_link(&ctx, &officer, &rec.id).await;
    assert!(link.starts_with(ctx.base.as_str()), "{link}");
    let r = ctx.download(&link).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = ctx
        .http
        .get(&link)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = ctx
        .http
        .get(&link)
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), rec.sha256);
    // A token of another org does not open this org's link.
    let other = ctx.sim.orgs()[1].org_id.clone();
    let foreign = ctx
        .sim
        .issue_grant(SimClient::DEMO_CLIENT_ID, &other, &[COMPLIANCE])
        .access_token;
    let r = ctx
        .http
        .get(&link)
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(ctx.sim.stats().calling_media_with_authorization, 0);
}

/// Walks MPEG audio frames after an ID3v2 tag; returns (frames, sample rate, all stereo).
fn walk_mp3(b: &[u8]) -> (usize, u32, bool) {
    assert_eq!(&b[..3], b"ID3");
    let tag = (usize::from(b[6]) << 21)
        | (usize::from(b[7]) << 14)
        | (usize::from(b[8]) << 7)
        | usize::from(b[9]);
    let mut pos = 10 + tag;
    let (mut frames, mut rate, mut stereo) = (0, 0, true);
    const KBPS: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    while pos < b.len() {
        let h = &b[pos..pos + 4];
        assert_eq!(h[0], 0xFF, "frame sync at {pos}");
        assert_eq!(h[1] & 0xE0, 0xE0, "frame sync at {pos}");
        assert_eq!((h[1] >> 3) & 3, 0b11, "MPEG-1 at {pos}");
        assert_eq!((h[1] >> 1) & 3, 0b01, "Layer III at {pos}");
        let kbps = KBPS[usize::from(h[2] >> 4)];
        rate = [44_100, 48_000, 32_000][usize::from((h[2] >> 2) & 3)];
        let padding = u32::from((h[2] >> 1) & 1);
        stereo &= h[3] >> 6 != 0b11;
        pos += (144 * kbps * 1_000 / rate + padding) as usize;
        frames += 1;
    }
    assert_eq!(pos, b.len(), "frames end exactly at the end of the file");
    (frames, rate, stereo)
}

#[tokio::test]
async fn audio_is_stereo_mpeg1_layer3_matching_the_manifest() {
    let ctx = start(12).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let m = ctx.manifest();
    let mut shas = HashSet::new();
    for rec in m
        .recordings
        .iter()
        .filter(|r| r.create_time_ms <= START && r.size_bytes > 0)
    {
        let link = audio_link(&ctx, &officer, &rec.id).await;
        let r = ctx.download(&link).await;
        assert_eq!(r.headers()["content-type"], "audio/mpeg");
        assert_eq!(
            r.headers()["content-length"],
            rec.size_bytes.to_string().as_str()
        );
        let b = r.bytes().await.unwrap();
        assert_eq!(b.len() as u64, rec.size_bytes);
        assert_eq!(hex::encode(Sha256::digest(&b)), rec.sha256);
        let (frames, rate, stereo) = walk_mp3(&b);
        assert!([32_000, 44_100, 48_000].contains(&rate));
        assert!(stereo);
        let secs = frames as f64 * 1_152.0 / f64::from(rate);
        assert!(
            (secs - rec.duration_seconds as f64).abs() < 1.5,
            "{secs} s of frames vs durationSeconds {}",
            rec.duration_seconds
        );
        assert!(!rec.talk_spans.is_empty());
        assert!(
            shas.insert(rec.sha256.clone()),
            "every recording has its own bytes"
        );
    }
    assert!(shas.len() >= 8);
}

#[tokio::test]
async fn edge_cases_zero_size_and_no_transcript() {
    let ctx = start(6).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let m = ctx.manifest();
    let zero = m.recordings.iter().find(|r| r.size_bytes == 0).unwrap();
    assert_eq!(zero.duration_seconds, 0);
    assert!(!zero.has_transcript);
    let link = audio_link(&ctx, &officer, &zero.id).await;
    let r = ctx.download(&link).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
    let d = ctx
        .get_json(&officer, &format!("v1/convergedRecordings/{}", zero.id))
        .await;
    assert_eq!(d["sizeBytes"], 0);
    let without = m
        .recordings
        .iter()
        .find(|r| r.size_bytes > 0 && !r.has_transcript && r.create_time_ms <= START)
        .unwrap();
    let d = ctx
        .get_json(&officer, &format!("v1/convergedRecordings/{}", without.id))
        .await;
    let links = d["temporaryDirectDownloadLinks"].as_object().unwrap();
    assert!(links.contains_key("audioDownloadLink"));
    assert!(!links.contains_key("transcriptDownloadLink"));
}

/// Decodes an MP3 with symphonia: (codec is MP3, sample rate, channels, interleaved samples).
fn decode_mp3(bytes: Vec<u8>) -> (bool, u32, usize, Vec<f32>) {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::codecs::audio::well_known::CODEC_ID_MP3;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .unwrap();
    let track = format.default_track(TrackType::Audio).unwrap();
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .unwrap();
    let mut samples = Vec::new();
    while let Some(packet) = format.next_packet().unwrap() {
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).unwrap();
        let mut chunk = vec![0f32; buf.samples_interleaved()];
        buf.copy_to_slice_interleaved(&mut chunk);
        samples.extend(chunk);
    }
    (
        params.codec == CODEC_ID_MP3,
        params.sample_rate.unwrap(),
        params.channels.unwrap().count(),
        samples,
    )
}

#[tokio::test]
async fn decoded_audio_puts_caller_left_and_agent_right_at_the_manifest_times() {
    let ctx = start(6).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let rec = ctx
        .manifest()
        .recordings
        .into_iter()
        .find(|r| r.create_time_ms <= START && r.size_bytes > 0)
        .unwrap();
    let link = audio_link(&ctx, &officer, &rec.id).await;
    let bytes = ctx.download(&link).await.bytes().await.unwrap().to_vec();
    let (is_mp3, rate, channels, samples) = decode_mp3(bytes);
    assert!(is_mp3);
    assert_eq!((rate, channels), (32_000, 2));
    let secs = samples.len() as f64 / 2.0 / f64::from(rate);
    assert!((secs - rec.duration_seconds as f64).abs() < 1.5, "{secs}");
    for span in &rec.talk_spans {
        // The middle of each turn, well clear of the encoder delay (~50 ms).
        let from = (span.start_ms + 200) * u64::from(rate) / 1_000;
        let to = (span.end_ms.saturating_sub(200)) * u64::from(rate) / 1_000;
        let (mut left, mut right) = (0f64, 0f64);
        for f in from..to.min(samples.len() as u64 / 2) {
            let i = usize::try_from(f).unwrap() * 2;
            left += f64::from(samples[i]).powi(2);
            right += f64::from(samples[i + 1]).powi(2);
        }
        if span.speaker == "caller" {
            assert!(left > right * 10.0, "caller {span:?} must be on the left");
        } else {
            assert!(right > left * 10.0, "agent {span:?} must be on the right");
        }
    }
}
