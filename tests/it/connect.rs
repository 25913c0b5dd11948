//! `wxvault connect`: the authorization-code flow end to end, with the test playing the browser.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use webex_sim::{ConsentMode, DatasetSpec, SimConfig};

use crate::harness::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Connect {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Connect {
    fn start(env: &Env, args: &[&str], secret: Option<&str>, stdin: bool) -> Connect {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxvault"));
        cmd.arg("--config")
            .arg(&env.config_path)
            .arg("connect")
            .args(args);
        cmd.env("WXVAULT_MASTER_KEY", MASTER_KEY)
            .env_remove("WXVAULT_CLIENT_SECRET");
        if let Some(s) = secret {
            cmd.env("WXVAULT_CLIENT_SECRET", s);
        }
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Connect { child, lines: rx }
    }

    /// `connect` for a new org "acme" with the simulator's integration, plus `extra` arguments.
    fn new_acme(env: &Env, extra: &[&str], stdin: bool) -> Connect {
        let mut args = vec![
            "--name",
            "acme",
            "--region",
            "us1",
            "--client-id",
            &env.client.client_id,
        ];
        args.extend_from_slice(extra);
        Connect::start(env, &args, Some(&env.client.client_secret), stdin)
    }

    /// The authorize link the command printed (it waits for the browser after printing it).
    fn authorize_url(&self, sim_base: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("connect printed the authorize link");
            if line.starts_with(sim_base) && line.contains("/v1/authorize") {
                return line.trim().to_string();
            }
        }
    }

    /// Exit code and everything printed.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            out.push_str(&l);
            out.push('\n');
        }
        (status.code(), out)
    }
}

/// The browser: follows the authorize link to Webex's redirect and returns where it points.
async fn consent(url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        302,
        "the simulator answers the authorize link with a redirect"
    );
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn get(url: &str) -> reqwest::StatusCode {
    reqwest::get(url).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_through_the_loopback_listener_then_sync() {
    let env = Env::start(DatasetSpec::small()).await;
    let sim_base = env.sim.base_url().to_string();
    let port = free_port().to_string();
    let c = Connect::new_acme(&env, &["--port", &port], false);
    let link = c.authorize_url(sim_base.trim_end_matches('/'));
    assert!(
        link.contains("code_challenge_method=S256") && link.contains("state="),
        "{link}"
    );
    assert!(
        link.contains("cjp%3Aconfig_read") || link.contains("cjp:config_read"),
        "{link}"
    );
    let back = consent(&link).await;
    assert!(
        back.starts_with(&format!("http://localhost:{port}/callback?")),
        "{back}"
    );
    let back = back.replace("localhost", "127.0.0.1");
    assert!(get(&back).await.is_success());
    let (code, out) = c.finish();
    assert_eq!(code, Some(0), "{out}");
    let org = env.handle().orgs()[0].clone();
    assert!(
        out.contains(&org.org_id) && out.contains("Granted scopes"),
        "{out}"
    );
    assert!(!out.contains(&env.client.client_secret));

    let list = env.run(&["org", "list", "--json"], &[]).await;
    let orgs: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(orgs[0]["org_id"], org.org_id.as_str());
    assert!(
        orgs[0]["refresh_expires_at_ms"].as_i64().is_some(),
        "token lifetimes from the exchange are kept"
    );
    let now = env.handle().now_ms();
    let out = env.sync_all(3, &["--org", "acme"]).await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    check_archive(&env, &org.org_id, now - 3 * 86_400_000, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_pasted_address() {
    let env = Env::start(DatasetSpec::small()).await;
    let sim_base = env.sim.base_url().to_string();
    let mut c = Connect::new_acme(&env, &["--no-browser"], true);
    let link = c.authorize_url(sim_base.trim_end_matches('/'));
    let back = consent(&link).await;
    let mut stdin = c.child.stdin.take().unwrap();
    writeln!(stdin, "{back}").unwrap();
    drop(stdin);
    let (code, out) = c.finish();
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_the_wrong_state_is_ignored_or_refused() {
    let env = Env::start(DatasetSpec::small()).await;
    let sim_base = env.sim.base_url().to_string();
    let port = free_port().to_string();
    let c = Connect::new_acme(&env, &["--port", &port], false);
    let link = c.authorize_url(sim_base.trim_end_matches('/'));
    let back = consent(&link).await.replace("localhost", "127.0.0.1");
    // An attacker's answers on the loopback port: a real code without this attempt's state, and
    // an error. Both are ignored; the real answer still completes the connect.
    let forged = url::Url::parse(&back).unwrap();
    let code = forged
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    assert!(
        get(&format!(
            "http://127.0.0.1:{port}/callback?code={code}&state=forged"
        ))
        .await
        .is_success()
    );
    assert!(
        get(&format!(
            "http://127.0.0.1:{port}/callback?error=access_denied"
        ))
        .await
        .is_success()
    );
    assert!(get(&back).await.is_success());
    let (exit, out) = c.finish();
    assert_eq!(exit, Some(0), "{out}");
    assert!(out.contains("Ignored an answer"), "{out}");

    // Pasted by hand, a wrong state is refused outright and nothing is stored.
    let env = Env::start(DatasetSpec::small()).await;
    let mut c = Connect::new_acme(&env, &["--no-browser"], true);
    let link = c.authorize_url(env.sim.base_url().as_str().trim_end_matches('/'));
    let back = consent(&link).await;
    let forged = url::Url::parse(&back).unwrap();
    let code = forged
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let mut stdin = c.child.stdin.take().unwrap();
    writeln!(
        stdin,
        "http://localhost:8765/callback?code={code}&state=forged"
    )
    .unwrap();
    drop(stdin);
    let (exit, out) = c.finish();
    assert_eq!(exit, Some(1), "{out}");
    assert!(out.contains("state mismatch"), "{out}");
    let list = env.run(&["org", "list", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_or_blocked_consent_is_explained() {
    let env = Env::start(DatasetSpec::small()).await;
    let sim_base = env.sim.base_url().to_string();
    for mode in [ConsentMode::Deny, ConsentMode::Blocked] {
        env.handle().set_consent(mode);
        let port = free_port().to_string();
        let c = Connect::new_acme(&env, &["--port", &port], false);
        let link = c.authorize_url(sim_base.trim_end_matches('/'));
        let back = consent(&link).await.replace("localhost", "127.0.0.1");
        assert!(back.contains("error=access_denied"), "{back}");
        get(&back).await;
        let (exit, out) = c.finish();
        assert_eq!(exit, Some(1), "{out}");
        assert!(out.contains("Control Hub"), "the fix is named: {out}");
        assert!(out.to_lowercase().contains("administrator"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_the_integration_lacks_is_named() {
    let sim = SimConfig {
        dataset: DatasetSpec::small(),
        rate_limit_per_minute: None,
        realtime_clock: false,
        registered_scopes: vec!["spark:kms".into()],
        ..SimConfig::default()
    };
    let env = Env::start_with(sim, None).await;
    let sim_base = env.sim.base_url().to_string();
    let port = free_port().to_string();
    let c = Connect::new_acme(&env, &["--port", &port], false);
    let link = c.authorize_url(sim_base.trim_end_matches('/'));
    let back = consent(&link).await.replace("localhost", "127.0.0.1");
    get(&back).await;
    let (exit, out) = c.finish();
    assert_ne!(exit, Some(0), "{out}");
    assert!(
        out.contains("cjp:config_read"),
        "the missing scope is named: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_a_revoked_org_makes_it_active_again() {
    let env = Env::start(DatasetSpec::small()).await;
    let org = env.handle().orgs()[0].clone();
    env.add_org("acme", &org.org_id).await;
    env.handle().revoke_grants(&org.org_id);
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["orgs"][0]["outcome"]["state"], "needs_reauth");

    let sim_base = env.sim.base_url().to_string();
    let port = free_port().to_string();
    // Re-authorizing an existing org needs neither the client id nor the secret again; a secret
    // given in the environment (rotated at the integration) replaces the stored one.
    let c = Connect::start(
        &env,
        &["--name", "acme", "--port", &port],
        Some(&env.client.client_secret),
        false,
    );
    let link = c.authorize_url(sim_base.trim_end_matches('/'));
    let back = consent(&link).await.replace("localhost", "127.0.0.1");
    get(&back).await;
    let (exit, out) = c.finish();
    assert_eq!(exit, Some(0), "{out}");
    assert!(
        out.contains("Re-authorized") && out.contains("Client secret updated"),
        "{out}"
    );
    let wrong = Connect::start(
        &env,
        &["--name", "acme", "--region", "eu1", "--port", &port],
        None,
        false,
    );
    let (exit, out) = wrong.finish();
    assert_eq!(exit, Some(1), "a conflicting region is refused: {out}");
    let out = env.sync_all(3, &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["orgs"][0]["outcome"]["state"], "ok", "{report:#}");
}
