//! What goes wrong: links expiring mid-download, metadata not ready (then ready, or never
//! within the grace period), kill -9 and resume, and the bearer token and the media host.

use std::time::Duration;

use engine::OrgOutcome;
use vault::RecordingState;
use webex_sim::Faults;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_expiring_during_a_download_gets_fresh_details_not_a_failure() {
    // One recording at a time, each request held 300 ms, so the clock can be moved while the
    // third audio request waits: its link (3 h) is then expired when the media host checks it.
    let faults = Faults {
        latency_ms: 300,
        ..Faults::default()
    };
    let extra = "\n[sync]\nbatch_concurrency = 1\ndownloads_per_batch = 1\n";
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 12, faults, extra, &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    assert!(expected.len() >= 5, "{}", expected.len());

    let opts = window(from, t0);
    let sync = engine.sync(&opts);
    let mover = async {
        let h = env.handle();
        let reached = wait_until(Duration::from_secs(60), || async {
            hits(&h, "calling_media") >= 3
        })
        .await;
        assert!(reached, "the sync never reached its third download");
        h.advance_clock(Duration::from_secs(4 * 3600));
    };
    let (report, ()) = tokio::join!(sync, mover);
    let o = &report.unwrap().orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert!(
        o.failed.is_empty(),
        "an expired link is not a failure: {o:#?}"
    );
    assert_eq!(o.transient_left, 0, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert!(
        hits(&h, "calling_details") > listed.len() as u64,
        "the expired link must have been replaced through a fresh details call"
    );
    assert_eq!(
        hits(&h, "calling_media"),
        expected.len() as u64 + 1,
        "one refused audio request, then each recording once"
    );
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_not_ready_keeps_the_audio_and_writes_the_sidecar_later() {
    // Metadata comes 5 days after each recording; the grace period is longer than that.
    let faults = Faults {
        calling_metadata_not_ready_secs: 5 * 86_400,
        ..Faults::default()
    };
    let extra = "\n[calling]\nmetadata_grace_hours = 240\n";
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(2, 20, faults, extra, &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));

    let first = engine.sync(&window(from, t0)).await.unwrap();
    let o = &first.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(
        first.exit_code(),
        0,
        "waiting for metadata is not a problem: {o:#?}"
    );
    assert_eq!(o.awaiting_metadata, expected.len() as u64, "{o:#?}");
    assert_eq!(o.archived, 0, "{o:#?}");
    let objects = calling_objects(&env, &sim_org.org_id);
    assert_eq!(objects.len(), expected.len(), "audio only: {objects:?}");
    for r in &expected {
        let audio = format!("{}.mp3", calling_stem(&sim_org.org_id, r));
        assert_eq!(
            objects.get(&audio).map(|o| &o.0),
            Some(&r.sha256),
            "{audio}"
        );
    }
    let stored = engine
        .vault
        .recordings_in_states(&org, "calling", &[RecordingState::Stored])
        .await
        .unwrap();
    assert_eq!(stored.len(), expected.len());

    // Six days later the metadata is there: the next run writes the sidecars, no new audio.
    h.advance_clock(Duration::from_secs(6 * 86_400));
    let media = hits(&h, "calling_media");
    let second = engine.sync(&window(from, t0)).await.unwrap();
    let o = &second.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_eq!(o.awaiting_metadata, 0, "{o:#?}");
    assert_eq!(
        hits(&h, "calling_media"),
        media,
        "the stored audio is not fetched again"
    );
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
    for r in &expected {
        let v = read_json(&env, &format!("{}.json", calling_stem(&sim_org.org_id, r)));
        assert!(v["metadata"].is_object(), "{v:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_missing_past_the_grace_period_gives_a_null_sidecar_never_rewritten() {
    let faults = Faults {
        calling_metadata_not_ready_secs: 30 * 86_400,
        ..Faults::default()
    };
    let extra = "\n[calling]\nmetadata_grace_hours = 72\n";
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 20, faults, extra, &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));

    let first = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(
        first.orgs[0].awaiting_metadata,
        expected.len() as u64,
        "{first:#?}"
    );
    assert_eq!(first.exit_code(), 0);

    // Four days on, every recording is past its 72 h: sidecars without metadata, with why.
    h.advance_clock(Duration::from_secs(4 * 86_400));
    let second = engine.sync(&window(from, t0)).await.unwrap();
    let o = &second.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_eq!(second.exit_code(), 0, "{o:#?}");
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
    for r in &expected {
        let v = read_json(&env, &format!("{}.json", calling_stem(&sim_org.org_id, r)));
        assert!(v["metadata"].is_null(), "{v:#}");
        assert!(
            v["metadata_reason"]
                .as_str()
                .is_some_and(|s| s.contains("72 h")),
            "{v:#}"
        );
    }

    // The metadata arrives later still: the sidecars stay as they are.
    let before = files(&env.archive_dir());
    h.advance_clock(Duration::from_secs(30 * 86_400));
    let third = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(third.orgs[0].archived, 0, "{third:#?}");
    assert_eq!(
        files(&env.archive_dir()),
        before,
        "a sidecar is never rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_grace_runs_from_the_first_ask_not_from_the_recording() {
    // A backfill of recordings older than the (default, 24 h) grace: their metadata still gets
    // the whole grace period from the run that first asked for it.
    let faults = Faults {
        calling_metadata_not_ready_secs: 30 * 86_400,
        ..Faults::default()
    };
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(3, 20, faults, "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 3 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    assert!(
        expected
            .iter()
            .any(|r| t0 - r.time_recorded_ms > 30 * 3_600_000),
        "the dataset must hold recordings older than the grace"
    );
    let first = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(
        first.orgs[0].awaiting_metadata,
        expected.len() as u64,
        "{first:#?}"
    );
    assert_eq!(first.orgs[0].archived, 0, "{first:#?}");

    // 23 h later: still within the grace of every one of them.
    h.advance_clock(Duration::from_secs(23 * 3600));
    let second = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(second.orgs[0].archived, 0, "{second:#?}");
    assert_eq!(second.orgs[0].awaiting_metadata, expected.len() as u64);

    // Past 24 h from the first ask: sidecars without metadata, with why.
    h.advance_clock(Duration::from_secs(2 * 3600));
    let third = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(third.orgs[0].archived, expected.len() as u64, "{third:#?}");
    for r in &expected {
        let v = read_json(&env, &format!("{}.json", calling_stem(&sim_org.org_id, r)));
        assert!(v["metadata"].is_null(), "{v:#}");
        assert!(
            v["metadata_reason"]
                .as_str()
                .is_some_and(|s| s.contains("24 h after wxvault first asked")),
            "{v:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_resume_leaves_the_archive_complete_and_exact() {
    let faults = Faults {
        latency_ms: 15,
        ..Faults::default()
    };
    let extra = "\n[sync]\nbatch_concurrency = 1\ndownloads_per_batch = 1\n";
    let env = calling_env(3, 40, faults, extra).await;
    let h = env.handle();
    let sim_org = h.orgs()[0].clone();
    {
        let engine = engine_on_sim_clock(&env).await;
        add_org_with(
            &env,
            &engine,
            "acme",
            &sim_org.org_id,
            &["calling"],
            &[COMPLIANCE],
        )
        .await;
    }
    let t0 = h.now_ms();
    let from = t0 - 3 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0 + 1, false));
    let (from_s, to_s) = (rfc3339(from), rfc3339(t0 + 1));
    let mut child = env
        .command(&["sync", "--from", &from_s, "--to", &to_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(60), || async {
        hits(&h, "calling_media") >= 4
    })
    .await;
    assert!(started, "the sync never started downloading");
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success(), "killed mid-way");
    let partial = calling_objects(&env, &sim_org.org_id);
    assert!(
        partial.len() < expected.len() * 2,
        "the kill came too late to test anything ({} objects)",
        partial.len()
    );

    // Recordings whose audio and sidecar were both written before the kill.
    let complete = expected
        .iter()
        .filter(|r| {
            let stem = calling_stem(&sim_org.org_id, r);
            partial.contains_key(&format!("{stem}.mp3"))
                && partial.contains_key(&format!("{stem}.json"))
        })
        .count() as u64;
    assert!(complete > 0, "the kill came before anything was archived");

    h.set_faults(Faults::default());
    let media = hits(&h, "calling_media");
    let out = env
        .run(&["sync", "--from", &from_s, "--to", &to_s], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        hits(&h, "calling_media") - media,
        expected.len() as u64 - complete,
        "what the killed run finished is adopted, not downloaded again"
    );
    for (k, v) in &partial {
        if !k.contains('#') {
            assert_eq!(
                calling_objects(&env, &sim_org.org_id).get(k),
                Some(v),
                "{k} changed"
            );
        }
    }
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
    // A third run finds everything done.
    let media = hits(&h, "calling_media");
    let out = env
        .run(&["sync", "--from", &from_s, "--to", &to_s], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hits(&h, "calling_media"), media);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_never_reaches_the_media_host() {
    // Even with the loopback address as a bearer host, the first request (without a token)
    // succeeds, so the token never travels with a download.
    let extra = "\n[calling]\nbearer_hosts = [\"127.0.0.1\", \"127.0.0.2\"]\n";
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 20, Faults::default(), extra, &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_eq!(hits(&h, "calling_media"), expected.len() as u64);
    assert_eq!(h.stats().calling_media_with_authorization, 0);
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_needing_the_bearer_gets_it_only_on_a_configured_bearer_host() {
    let faults = Faults {
        calling_media_requires_bearer: true,
        ..Faults::default()
    };
    // Without the host in bearer_hosts (default: webex.com only): the item fails, clearly.
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(2, 8, faults, "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(
        o.archived, 0,
        "the link refuses requests without the bearer: {o:#?}"
    );
    assert_eq!(o.failed.len(), expected.len(), "{o:#?}");
    assert_eq!(report.exit_code(), 2);
    for f in &o.failed {
        assert!(f.contains("HTTP 401") && f.contains("refused again"), "{f}");
        assert!(
            f.contains("bearer_hosts") && f.contains("127.0.0.1"),
            "the reason says the token was withheld from that host and how to allow it: {f}"
        );
        assert!(
            !f.contains("ticket="),
            "no signed query string in reasons: {f}"
        );
    }
    // Each recording: one refused link, fresh details, refused again; never with the token
    // (the host accepts the org's token, so one sent would have succeeded).
    assert_eq!(hits(&h, "calling_media"), 2 * expected.len() as u64);
    assert_eq!(
        hits(&h, "calling_details"),
        2 * expected.len() as u64 + (listed.len() - expected.len()) as u64
    );
    assert!(calling_objects(&env, &sim_org.org_id).is_empty());

    // With the host configured: the one bearer retry succeeds.
    drop(engine);
    let cfg = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        format!("{cfg}\n[calling]\nbearer_hosts = [\"127.0.0.1\"]\n"),
    )
    .unwrap();
    let engine = engine_on_sim_clock(&env).await;
    engine.retry_failed(&[], None, None).await.unwrap();
    let media = hits(&h, "calling_media");
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert!(o.failed.is_empty(), "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_eq!(
        hits(&h, "calling_media") - media,
        2 * expected.len() as u64,
        "one request without the token, one with it, per recording"
    );
    assert_eq!(h.stats().calling_media_with_authorization, 0);
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_refused_even_when_fresh_fails_after_one_fresh_details_call() {
    // Every link is already expired when handed out: one fresh details call per recording,
    // then the recording fails with the reason; no further calls.
    let faults = Faults {
        calling_url_expiry_secs: Some(0),
        ..Faults::default()
    };
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 8, faults, "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.archived, 0, "{o:#?}");
    assert_eq!(o.failed.len(), expected.len(), "{o:#?}");
    for f in &o.failed {
        assert!(f.contains("HTTP 403") && f.contains("refused again"), "{f}");
    }
    assert_eq!(hits(&h, "calling_media"), 2 * expected.len() as u64);
    assert_eq!(
        hits(&h, "calling_details"),
        2 * expected.len() as u64 + (listed.len() - expected.len()) as u64,
        "one details call for the link, one fresh one after the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_5xx_429_and_truncated_downloads() {
    // Both service types this time; transient faults on every endpoint and the media host.
    let extra = "\n[calling]\nservice_types = [\"calling\", \"customerAssist\"]\n";
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 40, Faults::default(), extra, &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let both = ["calling", "customerAssist"];
    let expected = archivable(&listed_of_types(
        &h,
        &sim_org.org_id,
        from,
        t0,
        false,
        &both,
    ));
    assert!(expected.iter().any(|r| r.service_type == "customerAssist"));
    h.set_faults(Faults {
        error_5xx_rate: 0.15,
        rate_429_rate: 0.05,
        truncate_rate: 0.25,
        ..Faults::default()
    });
    // Transient failures are retried within the run and, if they persist, by the next one.
    let mut runs = 0;
    loop {
        runs += 1;
        let report = engine.sync(&window(from, t0)).await.unwrap();
        let o = &report.orgs[0];
        assert_eq!(o.outcome, OrgOutcome::Ok, "faults are transient: {o:#?}");
        assert!(
            o.failed.is_empty(),
            "transient faults are not failures: {o:#?}"
        );
        if o.transient_left == 0 {
            break;
        }
        assert!(runs < 4, "still not done after {runs} runs: {o:#?}");
    }
    let stats = h.stats();
    assert!(
        stats.injected_5xx > 0 && stats.throttled_429 > 0,
        "{stats:?}"
    );
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}
