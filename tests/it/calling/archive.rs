//! The happy path and its variants: a 45-day backfill, paging with next links that drop
//! filters, purged recordings and transcripts when configured, an idempotent rerun, and the
//! number of API calls per recording.

use engine::OrgOutcome;
use vault::RecordingState;
use webex_sim::Faults;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_45_days_archives_every_available_recording_once() {
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(
        45,
        40,
        Faults::default(),
        "",
        &["calling"],
        &[ADMIN, COMPLIANCE],
    )
    .await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 45 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    let manifest = h.calling_manifest(&sim_org.org_id).recordings;
    let in_window = |r: &&webex_sim::ExpectedCallingRecording| {
        r.create_time_ms >= from && r.create_time_ms < t0
    };
    // The dataset must exercise what the test claims to check.
    assert!(expected.len() >= 15, "{} recordings", expected.len());
    assert_eq!(
        listed.len(),
        expected.len() + 1,
        "the zero-size recording is listed"
    );
    for status in ["purged", "deleted"] {
        assert!(
            manifest
                .iter()
                .filter(in_window)
                .any(|r| r.status == status)
        );
    }
    assert!(
        manifest
            .iter()
            .filter(in_window)
            .any(|r| r.service_type == "customerAssist")
    );
    assert!(expected.iter().any(|r| r.has_transcript));

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(report.exit_code(), 0, "{o:#?}");
    assert!(o.failed.is_empty(), "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_eq!(
        o.absent, 1,
        "the zero-size recording is absent, not failed: {o:#?}"
    );
    // One-day windows (the default): 45 of them, one list page each.
    assert_eq!(hits(&h, "calling_list"), 45);
    assert_eq!(o.recording_pages, 45, "{o:#?}");
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);

    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.archived, expected.len() as i64, "{counts:?}");
    assert_eq!(counts.recordings_absent, 1, "{counts:?}");
    assert_eq!(counts.failed, 0, "{counts:?}");
    let absent = engine
        .vault
        .recordings_in_states(&org, "calling", &[RecordingState::Absent])
        .await
        .unwrap();
    let zero = listed.iter().find(|r| r.size_bytes == 0).unwrap();
    assert_eq!(absent.len(), 1);
    assert_eq!(absent[0].recording_id, zero.id);
    assert!(
        absent[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("0 bytes")),
        "{:?}",
        absent[0].reason
    );
    assert_eq!(
        engine.vault.last_window_end(&org, "calling").await.unwrap(),
        Some(t0),
        "every window is recorded as harvested"
    );
    // `status` shows the source with its own counts and cursor.
    let status = engine.status().await.unwrap();
    let view = status[0]
        .sources
        .iter()
        .find(|s| s.source == "calling")
        .unwrap();
    assert!(view.enabled);
    assert_eq!(view.counts.archived, expected.len() as i64);
    assert!(view.last_window_end.is_some());
    assert_eq!(status[0].counts.archived, expected.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_that_drop_filters_change_nothing() {
    let faults = Faults {
        drop_filters_in_next_link: true,
        ..Faults::default()
    };
    // About 140 listed recordings a day: every one-day window takes two pages.
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(3, 700, faults, "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    // Two of the three days: the recordings of the third are only reachable through a next
    // link whose dropped filters were not put back.
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));
    let older = h
        .calling_manifest(&sim_org.org_id)
        .recordings
        .iter()
        .filter(|r| r.create_time_ms < from && r.status == "available")
        .count();
    assert!(
        older > 50 && expected.len() > 150,
        "{older} / {}",
        expected.len()
    );

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert!(o.failed.is_empty(), "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    // The filters were put back: the server's pages hold nothing outside the window (a next
    // link followed as given would have brought older and customerAssist recordings).
    assert_eq!(o.outside_window, 0, "{o:#?}");
    assert!(
        hits(&h, "calling_list") >= 4,
        "two windows of two pages or more: {}",
        hits(&h, "calling_list")
    );
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_recordings_and_transcripts_only_when_configured() {
    let extra = "\n[calling]\ninclude_purged = true\ntranscripts = true\nwindow_days = 7\n";
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(
        10,
        40,
        Faults::default(),
        extra,
        &["calling"],
        &[COMPLIANCE],
    )
    .await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 10 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, true));
    assert!(expected.iter().any(|r| r.status == "purged"));
    assert!(expected.iter().any(|r| r.has_transcript));
    assert!(expected.iter().any(|r| !r.has_transcript));

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert!(o.failed.is_empty(), "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    // Two windows (7 + 3 days), each listed for `available` and for `purged`.
    assert_eq!(hits(&h, "calling_list"), 4);
    assert_calling_archive(&env, &sim_org.org_id, &expected, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_makes_no_media_request_and_archives_nothing_new() {
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(3, 30, Faults::default(), "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 3 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));
    let first = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(first.orgs[0].archived, expected.len() as u64, "{first:#?}");
    let before = files(&env.archive_dir());
    let stats = h.stats();

    let second = engine.sync(&window(from, t0)).await.unwrap();
    let o = &second.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(second.exit_code(), 0, "{o:#?}");
    assert_eq!(o.archived, 0, "{o:#?}");
    assert_eq!(o.already_archived, expected.len() as u64, "{o:#?}");
    let after = h.stats();
    for endpoint in ["calling_media", "calling_details", "calling_metadata"] {
        assert_eq!(
            after.by_endpoint.get(endpoint),
            stats.by_endpoint.get(endpoint),
            "a rerun must not call {endpoint}"
        );
    }
    assert_eq!(
        files(&env.archive_dir()),
        before,
        "the archive must not change"
    );
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_backfill_costs_about_two_api_calls_per_recording() {
    let Acme {
        env,
        engine,
        sim_org,
        ..
    } = acme(2, 300, Faults::default(), "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let listed = listed_calling(&h, &sim_org.org_id, from, t0, false);
    let expected = archivable(&listed);
    assert!(listed.len() > 150, "{}", listed.len());

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    let part = calling_part(o);
    let (list, details, metadata) = (
        hits(&h, "calling_list"),
        hits(&h, "calling_details"),
        hits(&h, "calling_metadata"),
    );
    // One details call per listed recording, one metadata call per archived one, one list
    // call per page; nothing else reaches the API.
    assert_eq!(details, listed.len() as u64);
    assert_eq!(metadata, expected.len() as u64);
    assert_eq!(list, o.recording_pages);
    assert_eq!(part.api_calls, list + details + metadata, "{part:#?}");
    assert_eq!(hits(&h, "access_token"), 0, "no token refresh was due");
    let per_recording = (part.api_calls - list) as f64 / listed.len() as f64;
    assert!(per_recording <= 2.1, "{per_recording} calls per recording");
    // With at most 100 per page: one page per window plus one per further 100.
    assert!(
        list <= 2 + 1 + listed.len() as u64 / 100,
        "{list} list pages"
    );
}
