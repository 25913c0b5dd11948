//! A storage failure at the callback: the invite is given back only when nothing of the
//! connection was stored. Failures are injected with SQLite triggers on the app's own database.

use reqwest::StatusCode;
use vault::InviteStatus;

use crate::harness::{App, Browser, HOUR};

/// Makes every insert into `table` (matching `when`) fail, as a full disk or a lost database
/// would at that step.
async fn fail_inserts(app: &App, name: &str, table: &str, when: &str) {
    app.execute(&format!(
        "CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {when} \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    ))
    .await;
}

async fn invite_status(app: &App, org: &str) -> InviteStatus {
    let invites = app.engine.vault.invites().await.unwrap();
    invites
        .iter()
        .find(|i| i.org_name == org)
        .map(|i| i.status)
        .expect("the invite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_org_row_is_stored_keeps_the_invite_used() {
    let app = App::start().await;
    let link = app.invite("acme", Some("us1"), HOUR).await;
    // The org row commits; recording the "connected" event after it fails.
    fail_inserts(&app, "fail_connected", "events", "NEW.kind = 'connected'").await;
    let page = Browser::new().connect(&app, &link).await;
    assert_eq!(
        page.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        page.body
    );
    assert!(page.body.contains("was connected"), "{}", page.body);
    assert!(
        page.body.contains("The invitation is used up"),
        "{}",
        page.body
    );
    assert!(
        app.engine
            .vault
            .org_by_name("acme")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(invite_status(&app, "acme").await, InviteStatus::Used);
    // The link does not open a second connection.
    let again = Browser::new().get(&link).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconnect_whose_tokens_were_saved_keeps_its_invite_used() {
    let app = App::start().await;
    let first = Browser::new()
        .connect(&app, &app.invite("acme", Some("us1"), HOUR).await)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let link = app.invite("acme", None, HOUR).await;
    // The new tokens are saved; recording the "reconnected" event after it fails.
    fail_inserts(
        &app,
        "fail_reconnected",
        "events",
        "NEW.kind = 'reconnected'",
    )
    .await;
    let page = Browser::new().connect(&app, &link).await;
    assert_eq!(
        page.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        page.body
    );
    assert!(
        page.body.contains("The invitation is used up"),
        "{}",
        page.body
    );
    let open = app
        .engine
        .vault
        .invites()
        .await
        .unwrap()
        .iter()
        .filter(|i| i.status == InviteStatus::Open)
        .count();
    assert_eq!(open, 0, "neither invite is usable again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_anything_is_stored_gives_the_invite_back() {
    let app = App::start().await;
    let link = app.invite("acme", Some("us1"), HOUR).await;
    fail_inserts(&app, "fail_orgs", "orgs", "1 = 1").await;
    let page = Browser::new().connect(&app, &link).await;
    assert_eq!(
        page.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        page.body
    );
    assert!(page.body.contains("Nothing was changed"), "{}", page.body);
    assert!(
        app.engine
            .vault
            .org_by_name("acme")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(invite_status(&app, "acme").await, InviteStatus::Open);
    // Once storage works again, the same link connects.
    app.execute("DROP TRIGGER fail_orgs").await;
    let page = Browser::new().connect(&app, &link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(invite_status(&app, "acme").await, InviteStatus::Used);
    app.stop().await;
}
