//! `--sources`, `org sources` and per-source views through the real binary.

use serde_json::Value;
use webex_sim::DatasetSpec;

use crate::harness::{Env, assert_ok, text};

/// `org add` for `org_id` with `sources` and a grant of `scopes`; what it said.
async fn add(env: &Env, name: &str, org_id: &str, sources: &str, scopes: &[&str]) -> String {
    let (_, out) = env
        .add_org_with(name, org_id, &["--sources", sources], scopes)
        .await;
    assert_ok(&out, "org add");
    text(&out)
}

async fn org_list(env: &Env) -> Value {
    let out = env.run(&["org", "list", "--json"], &[]).await;
    assert_ok(&out, "org list");
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_chosen_changed_and_checked_against_the_grant() {
    let env = Env::start(DatasetSpec::small().with_calling(6)).await;
    let orgs = env.handle().orgs();
    // An org added the old way keeps wxcc.
    env.add_org("old", &orgs[0].org_id).await;
    // Both sources with a grant that lacks the Calling scope: added, with one warning that says
    // which scope, for what, and what to do.
    let said = add(
        &env,
        "both",
        &orgs[1].org_id,
        "wxcc,calling",
        &["cjp:config_read"],
    )
    .await;
    assert!(said.contains("spark-compliance:recordings_read"), "{said}");
    assert!(said.contains("Compliance Officer"), "{said}");
    assert!(
        !said.contains("cjp:config_read:"),
        "wxcc is not missing anything: {said}"
    );
    // The check after adding: WxCC works, Calling is refused for the missing scope.
    assert!(said.contains("checked wxcc: Webex lists"), "{said}");
    assert!(said.contains("warning: org both: calling:"), "{said}");
    let list = org_list(&env).await;
    let sources = |name: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .map(|o| serde_json::from_value(o["sources"].clone()).unwrap())
            .unwrap()
    };
    assert_eq!(sources("old"), vec!["wxcc"]);
    assert_eq!(sources("both"), vec!["wxcc", "calling"]);

    // Changing them later.
    let out = env.run(&["org", "sources", "old", "calling"], &[]).await;
    assert_ok(&out, "org sources");
    assert!(text(&out).contains("wxcc to calling"), "{}", text(&out));
    let list = org_list(&env).await;
    let old = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "old")
        .unwrap();
    assert_eq!(old["sources"], serde_json::json!(["calling"]));

    // Unknown sources are refused with the known ones named, and nothing changes.
    for bad in [
        &["org", "sources", "old", "fax"][..],
        &["org", "sources", "old", ""][..],
    ] {
        let out = env.run(bad, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("wxcc, calling"), "{}", text(&out));
    }
    let (_, out) = env
        .add_org_with(
            "x",
            &orgs[1].org_id,
            &["--sources", "wxcc,meetings"],
            &["cjp:config_read"],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown source \"meetings\""),
        "{}",
        text(&out)
    );
    assert_eq!(org_list(&env).await.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_status_show_each_source_of_an_org() {
    let env = Env::start(DatasetSpec::small().with_calling(6)).await;
    let org = env.handle().orgs()[0].clone();
    add(
        &env,
        "acme",
        &org.org_id,
        "wxcc,calling",
        &["cjp:config_read", "spark-compliance:recordings_read"],
    )
    .await;
    let out = env.sync_all(40, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let acme = &report["orgs"][0];
    let names: Vec<&str> = acme["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wxcc", "calling"], "{acme}");
    let archived = |i: usize| acme["sources"][i]["archived"].as_u64().unwrap();
    assert!(archived(0) > 0 && archived(1) > 0, "{acme}");
    assert_eq!(
        acme["archived"].as_u64().unwrap(),
        archived(0) + archived(1)
    );

    let out = env.run(&["status", "--json"], &[]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    let view = &status[0];
    let per: Vec<(String, i64)> = view["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_owned(),
                s["counts"]["archived"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per[0].0, "wxcc");
    assert_eq!(per[1].0, "calling");
    assert_eq!(per[0].1 as u64, archived(0));
    assert_eq!(per[1].1 as u64, archived(1));
    assert_eq!(
        view["counts"]["archived"].as_i64().unwrap(),
        per[0].1 + per[1].1
    );
    let out = env.run(&["status"], &[]).await;
    let shown = text(&out);
    assert!(
        shown.contains("  calling") && shown.contains("  wxcc"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_is_checked_for_downloads_when_calling_is_added() {
    let env = Env::start(DatasetSpec::small().with_calling(6)).await;
    let orgs = env.handle().orgs();
    // Admin scope lists but never gets links: said at once, with what to change.
    let said = add(
        &env,
        "admin",
        &orgs[0].org_id,
        "calling",
        &["spark-admin:recordings_read"],
    )
    .await;
    assert!(said.contains("warning: org admin: calling:"), "{said}");
    assert!(said.contains("Compliance Officer"), "{said}");
    // A compliance officer's grant downloads.
    let said = add(
        &env,
        "officer",
        &orgs[1].org_id,
        "calling",
        &["spark-compliance:recordings_read"],
    )
    .await;
    assert!(
        said.contains(
            "checked calling: Webex lists the org's Calling recordings and gives download links"
        ),
        "{said}"
    );
    // Prevent Downloading on: the same check says so.
    env.handle().set_prevent_downloading(&orgs[1].org_id, true);
    let out = env
        .run(&["org", "sources", "officer", "calling"], &[])
        .await;
    assert_ok(&out, "org sources");
    assert!(text(&out).contains("Prevent Downloading"), "{}", text(&out));
}
