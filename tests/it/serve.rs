//! `wxvault serve` as a real process: invitations from the CLI, and the whole customer-admin
//! path in headless Chromium (Debian's `chromium` driven through `chromedriver`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use webex_sim::{ConsentMode, SimConfig};

use crate::harness::{Env, MASTER_KEY, assert_ok, small_with_client, text};

const PASSWORD: &str = "an operator password for tests";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sim plus a config with a `[serve]` section for it; returns the env and the app's origin.
async fn serve_env(sim: SimConfig) -> (Env, String) {
    let port = free_port();
    let hash = vault::hash_password(&secrecy::SecretString::from(PASSWORD)).unwrap();
    let client_id = sim.clients[0].client_id.clone();
    let extra = format!(
        "\n[serve]\nlisten = \"127.0.0.1:{port}\"\nvendor_name = \"Acme Analytics\"\n\
         client_id = \"{client_id}\"\noperator_password_hash = \"{hash}\"\n"
    );
    let env = Env::start_with(sim, Some(&extra)).await;
    (env, format!("http://127.0.0.1:{port}"))
}

/// A child process whose output lines are collected (and kept for the secret scan).
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
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
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("never printed {needle:?}; saw {:?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Stops the process and returns everything it printed.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

fn serve(env: &Env) -> Proc {
    let mut cmd = env.command(&["-v", "serve"]);
    cmd.env("WXVAULT_CLIENT_SECRET", &env.client.client_secret);
    let mut p = Proc::spawn(cmd);
    p.wait_for("listening on");
    p
}

async fn invite(env: &Env, name: &str) -> String {
    let out = env
        .run(
            &[
                "invite", "create", "--name", name, "--region", "us1", "--json",
            ],
            &[],
        )
        .await;
    assert_ok(&out, "invite create");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["link"].as_str().expect("link").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_commands_print_a_link_once_and_keep_only_its_hash() {
    let (env, origin) = serve_env(small_with_client()).await;
    let out = env
        .run(
            &["invite", "create", "--name", "globex", "--region", "eu1"],
            &[],
        )
        .await;
    assert_ok(&out, "invite create");
    let shown = text(&out);
    assert!(shown.contains("cjp:config_read"), "the scopes: {shown}");
    let link = shown
        .lines()
        .find(|l| l.starts_with(&format!("{origin}/connect?invite=")))
        .unwrap_or_else(|| panic!("a link on {origin}: {shown}"))
        .to_string();
    let token = link.split("invite=").nth(1).unwrap();

    let out = env.run(&["invite", "list", "--json"], &[]).await;
    assert_ok(&out, "invite list");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["org_name"], "globex");
    assert_eq!(list[0]["region"], "eu1");
    assert_eq!(list[0]["status"], "open");
    assert!(!text(&out).contains(token), "listing never shows the token");
    let db = std::fs::read(env.db_path()).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is not in the database"
    );

    let id = list[0]["id"].as_i64().unwrap().to_string();
    assert_ok(&env.run(&["invite", "revoke", &id], &[]).await, "revoke");
    let out = env.run(&["invite", "list", "--json"], &[]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["status"], "revoked");

    let out = env
        .run(
            &["invite", "create", "--name", "x", "--sources", "fax"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fax"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_prints_a_verifiable_argon2id_hash() {
    let env = Env::start(webex_sim::DatasetSpec::small()).await;
    let out = env
        .run(
            &["hash-password"],
            &[("WXVAULT_OPERATOR_PASSWORD", PASSWORD)],
        )
        .await;
    assert_ok(&out, "hash-password");
    let hash = String::from_utf8(out.stdout.clone()).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    assert!(vault::verify_password(
        &secrecy::SecretString::from(PASSWORD),
        hash
    ));
    let out = env
        .run(
            &["hash-password"],
            &[("WXVAULT_OPERATOR_PASSWORD", "short")],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_without_the_client_secret_or_with_a_plaintext_password() {
    let (env, _) = serve_env(small_with_client()).await;
    let out = env.run(&["serve"], &[("WXVAULT_CLIENT_SECRET", "")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("WXVAULT_CLIENT_SECRET"),
        "{}",
        text(&out)
    );

    let cfg = std::fs::read_to_string(&env.config_path).unwrap();
    let start = cfg.find("operator_password_hash").unwrap();
    let plain = format!(
        "{}operator_password_hash = \"hunter2-plaintext\"\n",
        &cfg[..start]
    );
    std::fs::write(&env.config_path, plain).unwrap();
    let out = env.run(&["serve"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("hash-password"), "{}", text(&out));
    assert!(
        !text(&out).contains("hunter2"),
        "never echoed: {}",
        text(&out)
    );
}

/// chromedriver on a free port with Debian's chromium; `None` (test skipped with a note) when
/// they are not installed, unless WXVAULT_REQUIRE_BROWSER is set (CI sets it).
async fn browser() -> Option<(Client, Proc)> {
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let chromium = std::path::Path::new("/usr/bin/chromium");
    let (Some(driver), true) = (driver, chromium.exists()) else {
        assert!(
            std::env::var_os("WXVAULT_REQUIRE_BROWSER").is_none(),
            "WXVAULT_REQUIRE_BROWSER is set but chromium / chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        eprintln!("note: chromium or chromedriver missing; skipping the browser test");
        return None;
    };
    let port = free_port();
    let mut cmd = Command::new(driver);
    cmd.arg(format!("--port={port}"));
    let mut child = Proc::spawn(cmd);
    // It says so once its port is open.
    child.wait_for("started successfully");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-dev-shm-usage"],
        }),
    );
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    let client = builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver starts a Chromium session");
    Some((client, child))
}

/// Waits for `css`; on failure says where the browser is and what it shows.
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let page = c.source().await.unwrap_or_default();
            panic!("no {css} ({e}) at {url:?}: {page}");
        }
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

async fn click(c: &Client, css: &str) {
    find(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_admin_connects_from_an_invite_link_in_a_real_browser() {
    let Some((c, driver)) = browser().await else {
        return;
    };
    let (env, origin) = serve_env(SimConfig {
        consent: ConsentMode::Interactive,
        ..small_with_client()
    })
    .await;
    let sim_org = env.handle().orgs()[0].clone();
    let app = serve(&env);
    let started = Instant::now();

    // The admin opens the link, reads what is asked, clicks Connect, accepts at Webex.
    let link = invite(&env, "acme").await;
    c.goto(&link).await.unwrap();
    let scopes = text_of(&c, "#scopes").await;
    assert!(scopes.contains("cjp:config_read"), "{scopes}");
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        format!("{origin}/connect"),
        "the invite token left the address bar"
    );
    click(&c, "#connect").await;
    // Webex's consent page (our page has a #scopes list too: wait for one only Webex's has).
    let integration = text_of(&c, "#client-id").await;
    assert_eq!(integration, env.client.client_id);
    let asked = text_of(&c, "#scopes").await;
    assert!(
        asked.contains("cjp:config_read"),
        "Webex's consent page: {asked}"
    );
    click(&c, "#accept").await;
    assert_eq!(text_of(&c, "#result").await, "Connected");
    assert_eq!(text_of(&c, "#org-id").await, sim_org.org_id);
    assert_eq!(text_of(&c, "#region").await, "us1");
    assert!(text_of(&c, "#granted").await.contains("cjp:config_read"));
    let took = started.elapsed();

    // The operator signs in and sees the org, healthy.
    c.goto(&format!("{origin}/")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "#sign-in").await;
    assert_eq!(
        text_of(&c, "tr[data-org=\"acme\"] .health").await,
        "healthy"
    );
    let refresh = text_of(&c, "tr[data-org=\"acme\"] .refresh").await;
    assert!(refresh.contains("in 89 days"), "{refresh}");

    // A second org whose Webex administrator blocked the integration: the plain explanation.
    env.handle().set_consent(ConsentMode::Blocked);
    let link = invite(&env, "blocked-org").await;
    c.goto(&link).await.unwrap();
    click(&c, "#connect").await;
    assert_eq!(text_of(&c, "#result").await, "Not connected");
    let problem = text_of(&c, "#problem").await;
    assert!(problem.contains("blocked this integration"), "{problem}");
    assert!(problem.contains("Control Hub"), "{problem}");
    let fix = text_of(&c, "#fix").await;
    assert!(fix.contains(&env.client.client_id), "{fix}");

    c.close().await.unwrap();
    driver.stop();
    let log = app.stop();
    eprintln!("browser connect took {took:?}");

    // Nothing secret in the app's log (it logs every request at -v).
    let out = env.run(&["org", "list", "--json"], &[]).await;
    assert!(text(&out).contains("acme"), "{}", text(&out));
    assert!(
        log.contains("path=\"/oauth/callback\""),
        "requests are logged: {log}"
    );
    for q in ["?invite=", "?code=", "&code=", "state="] {
        assert!(!log.contains(q), "no query strings in the log: {log}");
    }
    assert!(!log.contains(&env.client.client_secret), "{log}");
    // The database file and its write-ahead log (serve was killed, so it was not checkpointed).
    let mut db = std::fs::read(env.db_path()).unwrap();
    let wal = env.db_path().with_extension("db-wal");
    db.extend(std::fs::read(&wal).unwrap_or_default());
    let keyring = vault::Keyring::load(Some(MASTER_KEY), std::path::Path::new("unused")).unwrap();
    let db_url = format!("sqlite://{}", env.db_path().display());
    let v = vault::Vault::open(&db_url, keyring).await.unwrap();
    let org = v.org_by_name("acme").await.unwrap().unwrap();
    let stored = v.org_secrets(&org).await.unwrap();
    v.close().await;
    for t in [stored.access_token, stored.refresh_token]
        .into_iter()
        .flatten()
    {
        use secrecy::ExposeSecret as _;
        let t = t.expose_secret();
        assert!(t.len() > 20);
        assert!(!log.contains(t), "a token in the log: {log}");
        assert!(
            !db.windows(t.len()).any(|w| w == t.as_bytes()),
            "a plaintext token in the database"
        );
    }
    assert!(
        !db.windows(env.client.client_secret.len())
            .any(|w| w == env.client.client_secret.as_bytes()),
        "no plaintext client secret in the database"
    );
}
