//! `wxvault demo` end to end, as a new user runs it.

use std::collections::BTreeMap;

use webex_sim::{DatasetSpec, SimConfig, SimServer};

/// The demo's simulator: `src/demo.rs` runs seed 7 with [`DatasetSpec::demo`]. Ids and audio
/// bytes depend only on these, so a second simulator built the same way gives the ground truth
/// (its clock, and so every time, differs by the seconds between the two starts).
fn demo_sim_config() -> SimConfig {
    SimConfig {
        seed: 7,
        dataset: DatasetSpec::demo(),
        realtime_clock: false,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_archives_and_leaves_a_usable_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxvault"));
        cmd.args(args)
            .env_remove("WXVAULT_MASTER_KEY")
            .env_remove("WXVAULT_CONFIG")
            .current_dir(tmp.path());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = run(vec![
        "demo".into(),
        "--dir".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("4/4"), "{text}");
    let archived = crate::harness::files(&dir.join("archive"));
    let wavs = archived.keys().filter(|k| k.ends_with(".wav")).count();
    let mp3s = archived.keys().filter(|k| k.ends_with(".mp3")).count();
    let jsons = archived.keys().filter(|k| k.ends_with(".json")).count();
    assert!(wavs > 50, "a day of recordings: {wavs}");
    assert_eq!(wavs + mp3s, jsons, "one sidecar per recording");
    let calling = assert_calling_archived(&dir.join("archive"), &archived).await;
    assert_eq!(mp3s, calling, "only the expected Calling recordings");

    // The summary has a row per source under the org, with its archived count, and names both.
    let row = |source: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(source) && l.starts_with("  "))
            .unwrap_or_else(|| panic!("no {source} row in the summary:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (wxcc_row, calling_row) = (row("wxcc"), row("calling"));
    assert_eq!(wxcc_row[1], "ok", "{text}");
    assert_eq!(wxcc_row[3], wavs.to_string(), "{text}");
    assert_eq!(calling_row[1], "ok", "{text}");
    assert_eq!(calling_row[3], mp3s.to_string(), "{text}");
    assert!(
        text.contains("Contact Center recordings:") && text.contains("Webex Calling recordings:"),
        "{text}"
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let config = dir.join("wxvault.toml");
    let out = run(vec![
        "--config".into(),
        config.display().to_string(),
        "status".into(),
    ])
    .await
    .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{status}");
    assert!(
        status.contains("demo") && status.contains(&wavs.to_string()),
        "{status}"
    );

    // Running the demo again replaces its own folder cleanly.
    let again = run(vec![
        "demo".into(),
        "--dir".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0));
}

/// Checks the demo's Calling archive against the simulator's Calling manifest: every available
/// `calling` recording with audio that existed when the demo started is there, byte-exact, at
/// `<org>/calling/<YYYY>/<MM>/<DD>/<id>/<id>.mp3` (date of its `timeRecorded`) with a sidecar
/// naming it; nothing else is. Returns how many there are.
async fn assert_calling_archived(
    root: &std::path::Path,
    archived: &BTreeMap<String, (String, u64)>,
) -> usize {
    let sim = SimServer::start(demo_sim_config(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("sim starts");
    let h = sim.handle();
    let org_id = h.orgs()[0].org_id.clone();
    let manifest = h.calling_manifest(&org_id);
    let started = h.now_ms();
    sim.shutdown().await;

    // Archived by default: `available`, service type `calling` ([calling] service_types), with
    // audio. The newest is created minutes after the start, past the demo's window.
    let archivable: Vec<_> = manifest
        .recordings
        .iter()
        .filter(|r| r.status == "available" && r.service_type == "calling" && r.size_bytes > 0)
        .collect();
    let required = archivable
        .iter()
        .filter(|r| r.create_time_ms <= started)
        .count();
    assert!(
        required >= 3,
        "the demo dataset has Calling recordings: {required}"
    );

    let prefix = format!("{org_id}/calling/");
    let mut found = 0;
    for (key, (sha, size)) in archived.iter().filter(|(k, _)| k.ends_with(".mp3")) {
        assert!(
            key.starts_with(&prefix),
            "Calling audio outside {prefix}: {key}"
        );
        let parts: Vec<&str> = key[prefix.len()..].split('/').collect();
        let [yyyy, mm, dd, id, file] = parts[..] else {
            panic!("not <YYYY>/<MM>/<DD>/<id>/<id>.mp3: {key}");
        };
        assert_eq!(file, format!("{id}.mp3"), "{key}");
        let want = archivable
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{key} is not an archivable Calling recording"));
        assert_eq!(sha, &want.sha256, "sha256 of {key}");
        assert_eq!(*size, want.size_bytes, "size of {key}");

        let sidecar_path = root.join(key.replace(".mp3", ".json"));
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar_path).expect("Calling sidecar"))
                .expect("sidecar is JSON");
        assert_eq!(sidecar["source"], "calling", "{key}");
        assert_eq!(sidecar["org_id"], org_id.as_str(), "{key}");
        assert_eq!(sidecar["recording_id"], id, "{key}");
        assert_eq!(sidecar["sha256"], sha.as_str(), "{key}");
        assert_eq!(sidecar["size_bytes"], *size, "{key}");
        assert!(sidecar["metadata"].is_object(), "metadata in {key}");
        let recorded = sidecar["recording"]["timeRecorded"]
            .as_str()
            .unwrap_or_else(|| panic!("timeRecorded in {key}"));
        assert_eq!(
            &recorded[..10],
            format!("{yyyy}-{mm}-{dd}"),
            "the folder is the UTC date of timeRecorded: {key}"
        );
        found += 1;
    }
    assert!(
        found >= required && found <= archivable.len(),
        "{found} Calling recordings archived; {required} required, at most {}",
        archivable.len()
    );
    for r in archivable.iter().filter(|r| r.create_time_ms <= started) {
        assert!(
            archived
                .keys()
                .any(|k| k.ends_with(&format!("/{0}/{0}.mp3", r.id))),
            "Calling recording {} is not in the archive",
            r.id
        );
    }
    found
}
