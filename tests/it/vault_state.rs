//! The state database and master key as the binary reports them (issue 7): `status` with a
//! master key that does not open the stored secrets, and a database that cannot be written.

use webex_sim::DatasetSpec;

use crate::harness::{Env, MASTER_KEY, assert_ok, text};

/// Another valid key: decodes to 32 bytes, but not the one that sealed the secrets.
const WRONG_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Issue 7 item 2: with the wrong master key `status` says, per org, that its secrets cannot be
/// opened with this key — in text and in `--json` — and exits 2; with the right key it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_when_the_master_key_cannot_open_an_orgs_secrets() {
    let env = Env::start(DatasetSpec::small()).await;
    let orgs = env.handle().orgs();
    env.add_org("acme", &orgs[0].org_id).await;
    env.add_org("beta", &orgs[1].org_id).await;

    let out = env.run(&["status"], &[]).await;
    assert_ok(&out, "status with the right key");
    assert!(!text(&out).contains("cannot be opened"), "{}", text(&out));
    let out = env.run(&["status", "--json"], &[]).await;
    assert_ok(&out, "status --json with the right key");
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for v in views.as_array().unwrap() {
        assert_eq!(v["secrets"]["state"], "readable", "{v}");
    }

    let wrong = [("WXVAULT_MASTER_KEY", WRONG_KEY)];
    let out = env.run(&["status"], &wrong).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for org in ["acme", "beta"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{org}: ")) && l.contains("cannot be opened"))
            .unwrap_or_else(|| panic!("no line for {org}:\n{shown}"));
        assert!(line.contains("master key"), "{line}");
        // The table no longer calls the org healthy.
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(org))
            .unwrap_or_else(|| panic!("no table row for {org}:\n{shown}"));
        assert!(!row.contains("active"), "{row}");
        assert!(row.contains("SECRETS UNREADABLE"), "{row}");
    }

    let out = env.run(&["status", "--json"], &wrong).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let views = views.as_array().unwrap();
    assert_eq!(views.len(), 2);
    for v in views {
        assert_eq!(v["secrets"]["state"], "unreadable", "{v}");
        let reason = v["secrets"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("cannot be opened with this master key"),
            "{reason}"
        );
    }
    for secret in [MASTER_KEY, WRONG_KEY, &env.client.client_secret] {
        assert!(!text(&out).contains(secret));
        assert!(!shown.contains(secret));
    }
}

/// Issue 7 item 3: a database the process cannot write fails at once with one error line that
/// names the path and the cause — no retries, no pile of pool errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_database_fails_at_once_with_one_line() {
    let env = Env::start(DatasetSpec::small()).await;
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    for path in ["/proc/version", "/proc/self/wxvault.db"] {
        let changed = config.replace(
            "url = \"sqlite://state/wxvault.db\"",
            &format!("url = \"sqlite://{path}\""),
        );
        assert_ne!(changed, config);
        std::fs::write(&env.config_path, changed).unwrap();
        let out = env.run(&["status"], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        // Besides the line naming the config file in use: one error line, no retry noise.
        let errors: Vec<_> = stderr
            .lines()
            .filter(|l| !l.starts_with("config: "))
            .collect();
        assert_eq!(errors.len(), 1, "one line:\n{stderr}");
        assert!(
            stderr.contains(path) && stderr.contains("os error"),
            "{stderr}"
        );
        assert!(!stderr.contains("ERROR"), "{stderr}");
    }
}
