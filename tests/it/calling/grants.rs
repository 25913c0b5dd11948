//! Grants of the wrong kind: admin scope only, Prevent Downloading, and an org with both
//! sources where one source's grant is refused. One clear per-org error each; nothing failed
//! item by item; the other source (and the next run, once fixed) archives.

use engine::OrgOutcome;
use webex_sim::Faults;

use super::*;

fn failed_reason(outcome: &OrgOutcome) -> &str {
    match outcome {
        OrgOutcome::Failed(why) => why,
        other => panic!("expected a failed outcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_scope_only_grant_gets_one_clear_error_and_no_failed_recording() {
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(2, 20, Faults::default(), "", &["calling"], &[ADMIN]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    let why = failed_reason(&o.outcome);
    assert!(
        why.contains(COMPLIANCE) && why.contains("Compliance Officer"),
        "the error must say what to change: {why}"
    );
    assert_eq!(report.exit_code(), 2);
    assert!(o.failed.is_empty(), "nothing fails item by item: {o:#?}");
    assert_eq!(o.archived, 0, "{o:#?}");
    let part = calling_part(o);
    assert!(matches!(part.outcome, OrgOutcome::Failed(_)), "{part:#?}");
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert_eq!(counts.archived, 0, "{counts:?}");
    assert!(
        counts.in_progress >= expected.len() as i64 - 1,
        "{counts:?}"
    );
    assert!(calling_objects(&env, &sim_org.org_id).is_empty());
    assert_eq!(hits(&h, "calling_media"), 0);
    assert_eq!(
        engine.vault.last_window_end(&org, "calling").await.unwrap(),
        None,
        "a window whose recordings could not be archived is not recorded as done"
    );

    // A compliance officer reconnects: the next run archives everything.
    regrant(&env, &engine, "acme", &[ADMIN, COMPLIANCE]).await;
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(report.exit_code(), 0, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prevent_downloading_gets_one_clear_error_and_no_failed_recording() {
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(
        2,
        20,
        Faults::default(),
        "",
        &["calling"],
        &[ADMIN, COMPLIANCE],
    )
    .await;
    let h = env.handle();
    h.set_prevent_downloading(&sim_org.org_id, true);
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    let why = failed_reason(&o.outcome);
    assert!(
        why.contains("Prevent Downloading") && why.contains("turn it off"),
        "the error must say what to change: {why}"
    );
    assert!(!why.contains("lacks"), "the grant is fine: {why}");
    assert_eq!(report.exit_code(), 2);
    assert!(o.failed.is_empty(), "nothing fails item by item: {o:#?}");
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert_eq!(counts.archived, 0, "{counts:?}");
    assert_eq!(hits(&h, "calling_media"), 0);

    h.set_prevent_downloading(&sim_org.org_id, false);
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "{o:#?}");
    assert_eq!(o.archived, expected.len() as u64, "{o:#?}");
    assert_calling_archive(&env, &sim_org.org_id, &expected, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_sources_a_refused_grant_stops_only_its_source() {
    let env = calling_env(2, 20, Faults::default(), "").await;
    let h = env.handle();
    let engine = engine_on_sim_clock(&env).await;
    let sim_orgs = h.orgs();
    let (a, b) = (sim_orgs[0].clone(), sim_orgs[1].clone());
    // acme: a Contact Center grant only; globex: the Calling scopes only.
    let both = ["wxcc", "calling"];
    add_org_with(&env, &engine, "acme", &a.org_id, &both, &[WXCC]).await;
    add_org_with(
        &env,
        &engine,
        "globex",
        &b.org_id,
        &both,
        &[ADMIN, COMPLIANCE],
    )
    .await;
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;

    let report = engine.sync(&window(from, t0)).await.unwrap();
    assert_eq!(report.exit_code(), 2);
    let org = |name: &str| report.orgs.iter().find(|o| o.org == name).unwrap();
    let part = |o: &'_ engine::OrgReport, s: &str| {
        o.sources.iter().find(|p| p.source == s).cloned().unwrap()
    };

    let acme = org("acme");
    let why = failed_reason(&acme.outcome);
    assert!(
        why.contains("(calling)") && why.contains(COMPLIANCE),
        "{why}"
    );
    assert_eq!(part(acme, "wxcc").outcome, OrgOutcome::Ok, "{acme:#?}");
    assert!(part(acme, "wxcc").archived > 0, "{acme:#?}");
    assert!(matches!(
        part(acme, "calling").outcome,
        OrgOutcome::Failed(_)
    ));
    assert!(acme.failed.is_empty(), "{acme:#?}");
    // Its WxCC archive is complete and exact; no Calling object.
    let wxcc = expected_recordings(&h, &a.org_id, from, t0);
    assert!(!wxcc.is_empty());
    assert_archive_matches(&files(&env.archive_dir()), &a.org_id, &wxcc);

    let globex = org("globex");
    let why = failed_reason(&globex.outcome);
    assert!(why.contains("(wxcc)") && why.contains(WXCC), "{why}");
    assert_eq!(
        part(globex, "calling").outcome,
        OrgOutcome::Ok,
        "{globex:#?}"
    );
    assert!(matches!(
        part(globex, "wxcc").outcome,
        OrgOutcome::Failed(_)
    ));
    assert!(globex.failed.is_empty(), "{globex:#?}");
    let calling = archivable(&listed_calling(&h, &b.org_id, from, t0, false));
    assert_eq!(part(globex, "calling").archived, calling.len() as u64);
    assert_calling_archive(&env, &b.org_id, &calling, false);
    let wxcc_objects = files(&env.archive_dir())
        .keys()
        .filter(|k| k.starts_with(&format!("{}/wxcc/", b.org_id)))
        .count();
    assert_eq!(wxcc_objects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_scopes_a_missing_link_is_not_blamed_on_the_grant_alone() {
    // An org whose granted scopes were never recorded (imported before scopes were kept), with
    // a compliance grant and Prevent Downloading on: the error must not claim the scope is
    // missing, and must name both possible fixes.
    let env = calling_env(2, 20, Faults::default(), "").await;
    let h = env.handle();
    let engine = engine_on_sim_clock(&env).await;
    let sim_org = h.orgs()[0].clone();
    let grant = h.issue_grant(&env.client.client_id, &sim_org.org_id, &[COMPLIANCE]);
    let org = engine
        .vault
        .add_org(vault::NewOrg {
            name: "acme".into(),
            org_id: sim_org.org_id.clone(),
            region: "us1".into(),
            client_id: env.client.client_id.clone(),
            client_secret: secrecy::SecretString::from(env.client.client_secret.clone()),
            client_auth: "form".into(),
            sources: vec!["calling".into()],
            tokens: vault::TokenUpdate {
                scopes: None,
                ..token_update(&env, &grant, &[])
            },
        })
        .await
        .unwrap();
    assert_eq!(
        engine
            .vault
            .org_by_name("acme")
            .await
            .unwrap()
            .unwrap()
            .scopes,
        None
    );
    h.set_prevent_downloading(&sim_org.org_id, true);
    let t0 = h.now_ms();
    let report = engine.sync(&window(t0 - 2 * DAY, t0)).await.unwrap();
    let o = &report.orgs[0];
    let why = failed_reason(&o.outcome);
    assert!(!why.contains("lacks"), "the scopes are not known: {why}");
    assert!(
        why.contains("Prevent Downloading") && why.contains(COMPLIANCE),
        "both causes and their fixes: {why}"
    );
    assert!(o.failed.is_empty(), "{o:#?}");
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_withheld_alone_fails_alone_while_the_others_archive() {
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(2, 20, Faults::default(), "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let expected = archivable(&listed_calling(&h, &sim_org.org_id, from, t0, false));
    // Prevent Downloading for one owner only: that recording's details carry no link.
    let withheld = expected[expected.len() / 2].id.clone();
    h.set_faults(Faults {
        calling_withheld_ids: vec![withheld.clone()],
        ..Faults::default()
    });

    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    assert_eq!(o.outcome, OrgOutcome::Ok, "not the org's problem: {o:#?}");
    assert_eq!(o.archived, expected.len() as u64 - 1, "{o:#?}");
    assert_eq!(o.failed.len(), 1, "{o:#?}");
    assert!(
        o.failed[0].contains(&withheld) && o.failed[0].contains("Prevent Downloading"),
        "{o:#?}"
    );
    assert_eq!(report.exit_code(), 2);
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 1, "{counts:?}");
    let others: Vec<_> = expected
        .iter()
        .filter(|r| r.id != withheld)
        .cloned()
        .collect();
    assert_calling_archive(&env, &sim_org.org_id, &others, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_withheld_for_the_whole_org_later_are_one_error_judged_by_an_archived_recording() {
    let Acme {
        env,
        engine,
        sim_org,
        org,
    } = acme(2, 20, Faults::default(), "", &["calling"], &[COMPLIANCE]).await;
    let h = env.handle();
    let t0 = h.now_ms();
    let from = t0 - 2 * DAY;
    let mid = t0 - DAY;
    // The older half is archived while downloads are allowed.
    let first = engine.sync(&window(from, mid)).await.unwrap();
    assert_eq!(first.orgs[0].outcome, OrgOutcome::Ok, "{first:#?}");
    let archived_before = first.orgs[0].archived;
    assert!(archived_before > 0, "{first:#?}");

    // Then Prevent Downloading is turned on for the org: the newer half gets no links, and the
    // details of an archived recording (listed again) get none either.
    h.set_prevent_downloading(&sim_org.org_id, true);
    let details_before = hits(&h, "calling_details");
    let report = engine.sync(&window(from, t0)).await.unwrap();
    let o = &report.orgs[0];
    let why = failed_reason(&o.outcome);
    assert!(why.contains("Prevent Downloading"), "{why}");
    assert!(o.failed.is_empty(), "nothing fails item by item: {o:#?}");
    let counts = engine.vault.counts_by_source(&org).await.unwrap()["calling"].clone();
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert_eq!(counts.archived as u64, archived_before, "{counts:?}");
    let pending = counts.in_progress as u64;
    assert!(pending > 0, "{counts:?}");
    assert_eq!(
        hits(&h, "calling_details") - details_before,
        pending + o.absent + 1,
        "one details call per pending recording (one chunk; empty ones become absent) and one \
         for the archived one"
    );
}
