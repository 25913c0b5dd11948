//! `wxvault demo` and `wxvault sim serve`: the simulator, in-process or standing alone.
//!
//! The demo is the real product path end to end — authorization-code flow with PKCE, encrypted
//! vault, the harvest of both sources (Contact Center captures and Webex Calling recordings),
//! verified archive, sidecars — only the Webex side is the simulator and the consenting browser
//! is played by an HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use engine::{Config, SyncOptions};
use secrecy::SecretString;
use webex::oauth::ClientAuth;
use webex_sim::{DatasetSpec, SimClient, SimConfig, SimServer};

use crate::cli::{DatasetArg, DemoArgs, SimServeArgs};
use crate::output;

/// Marks a folder as the demo's own, so re-running the demo may replace it but nothing else.
const MARKER: &str = ".wxvault-demo";
/// Redirect URI registered for the simulator's demo integration (the demo intercepts it).
const DEMO_REDIRECT: &str = "http://localhost:8765/callback";
/// The sources the demo org is connected with: every one the simulator serves.
const DEMO_SOURCES: &[&str] = &["wxcc", "calling"];

pub async fn sim_serve(args: SimServeArgs) -> Result<()> {
    let mut dataset = match args.dataset {
        DatasetArg::Small => DatasetSpec::small(),
        DatasetArg::Demo => DatasetSpec::demo(),
        DatasetArg::Bench => DatasetSpec::bench(args.tasks, args.recordings, args.recording_bytes),
    };
    if let Some(b) = args.large_recording_bytes {
        dataset = dataset.with_large_recording(b);
    }
    if let Some(n) = args.calling {
        dataset = dataset.with_calling(n);
    }
    if let Some(d) = args.days {
        dataset.days = d;
    }
    if let Some(n) = args.orgs {
        dataset.orgs = n;
    }
    let config = SimConfig {
        seed: args.seed,
        dataset,
        rate_limit_per_minute: if args.no_rate_limit { None } else { Some(300) },
        ..SimConfig::default()
    };
    let client = config.clients.first().cloned();
    let addr: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let server = SimServer::start(config, addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("simulator listening on {}", server.base_url());
    if let Some(c) = client {
        println!(
            "integration: client id {} (client secret: see docs/simulator.md)",
            c.client_id
        );
    }
    for org in server.handle().orgs() {
        println!("org {} id {} region {}", org.name, org.org_id, org.region);
    }
    println!(
        "controls: GET /_sim/orgs, /_sim/manifest?orgId=, /_sim/stats; POST /_sim/clock/advance, /_sim/faults, /_sim/grant, /_sim/revoke, /_sim/consent"
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by `wxvault demo`; pass --dir with a new folder",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("clearing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by wxvault demo; safe to delete\n")?;
    Ok(())
}

pub async fn run(args: DemoArgs) -> Result<u8> {
    let started = Instant::now();
    let dir = args.dir;
    prepare_dir(&dir)?;

    let demo_client = SimClient {
        redirect_uris: vec![DEMO_REDIRECT.to_string()],
        ..SimClient::demo()
    };
    let sim_config = SimConfig {
        seed: 7,
        dataset: DatasetSpec::demo(),
        clients: vec![demo_client.clone()],
        ..SimConfig::default()
    };
    let server = SimServer::start(sim_config, ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the simulator")?;
    let sim_url = server.base_url().to_string();
    println!("1/4 simulator of the Webex APIs running at {sim_url}");

    let mut config = Config::default();
    config.database.url = "sqlite://wxvault.db".into();
    config.storage.url = "file://archive".into();
    config.vault.master_key_file = "master.key".into();
    config.webex.api_base = sim_url.clone();
    config.wxcc.api_base = sim_url.clone();
    let config_path = dir.join("wxvault.toml");
    let text = format!(
        "# Written by `wxvault demo`. Paths are relative to this file.\n\
         # The api_base URLs point at the demo's in-process simulator, which stopped when the demo ended;\n\
         # `status` and `org list` work as they are.\n{}",
        config.to_toml()?
    );
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // The demo never reads --config, WXVAULT_CONFIG or ./wxvault.toml: it runs on its own file.
    eprintln!("config: {} (written by the demo)", config_path.display());
    let config = Config::load(Some(&config_path))?;
    vault::init_key_file(Path::new(&config.vault.master_key_file))?;
    let engine = crate::commands::open_engine(config.clone()).await?;

    // The authorization-code flow, exactly as `connect` runs it, with an HTTP client as browser.
    // Both sources, so the consent asks for every scope they need (Calling:
    // spark-compliance:recordings_read, which the simulator's integration has registered).
    let sources: Vec<String> = DEMO_SOURCES.iter().map(|s| (*s).to_string()).collect();
    let pending = engine.begin_connect(&demo_client.client_id, DEMO_REDIRECT, &sources)?;
    let resp = engine
        .http
        .get(pending.authorize_url.clone())
        .send()
        .await
        .context("opening the authorize page")?;
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the authorize endpoint did not redirect back")?;
    let callback = engine::onboard::Callback::parse(location)?;
    let target = engine::onboard::ConnectTarget {
        name: "demo".into(),
        region: "us1".into(),
        client_id: demo_client.client_id.clone(),
        client_auth: ClientAuth::Form,
        sources: sources.clone(),
    };
    let secret = SecretString::from(demo_client.client_secret.clone());
    let connected = engine
        .complete_connect(pending, callback, &target, secret)
        .await?;
    if !connected.missing.is_empty() {
        // The simulator registers every scope the sources need, so this means the two drifted
        // apart; a half-connected demo would only show one source.
        bail!(
            "the demo's consent did not grant {}: {}",
            connected.missing.join(", "),
            engine::onboard::missing_scope_advice(&sources, &connected.missing).join("; ")
        );
    }
    let org = connected.org;
    println!(
        "2/4 connected org {} for {} through the OAuth authorization-code flow (PKCE); tokens stored encrypted",
        org.org_id,
        source_labels(&sources).join(" and ")
    );

    println!(
        "3/4 archiving the last 24 hours of {} recordings…",
        source_labels(&sources).join(" and ")
    );
    let mut engine = engine;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        engine.progress = output::Bars::new();
    }
    let now = engine.clock.now_ms();
    let report = engine
        .sync(&SyncOptions {
            orgs: vec![],
            from_ms: Some(now - 24 * 3_600_000),
            to_ms: Some(now),
            rescan: false,
        })
        .await?;
    server.shutdown().await;
    println!();
    // One row per source under the org's total (archived count and bytes of each).
    output::print_sync_report(&report);
    let archive_dir = dir.join("archive");
    println!();
    println!(
        "4/4 done in {:.1} s. Where to look:",
        started.elapsed().as_secs_f64()
    );
    let org_dir = archive_dir.join(&org.org_id);
    for source in &sources {
        if let Some(layout) = layout_hint(source) {
            let what = format!("{} recordings:", source_label(source));
            println!("  {what:<27}{}/{layout}", org_dir.display());
            if let Some(example) = first_sidecar(&org_dir.join(source)) {
                println!("  {:<27}{}", "  for example:", example.display());
            }
        }
    }
    println!(
        "  {:<27}wxvault --config {} status",
        "status:",
        config_path.display()
    );
    println!(
        "  {:<27}(cargo run --release -- --config {} status)",
        "",
        config_path.display()
    );
    Ok(u8::try_from(report.exit_code()).unwrap_or(2))
}

/// What operators call `source` ("Contact Center", "Webex Calling").
fn source_label(source: &str) -> &str {
    engine::source::spec(source).map_or(source, |s| s.label)
}

fn source_labels(sources: &[String]) -> Vec<&str> {
    sources.iter().map(|s| source_label(s)).collect()
}

/// Where a source's objects land under `<archive>/<org_id>/` (docs/layout.md).
fn layout_hint(source: &str) -> Option<&'static str> {
    match source {
        "wxcc" => Some("wxcc/YYYY/MM/DD/<task>/<recording>.wav|.json"),
        "calling" => Some("calling/YYYY/MM/DD/<recording>/<recording>.mp3|.json"),
        _ => None,
    }
}

fn first_sidecar(dir: &Path) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                return Some(p);
            }
        }
    }
    None
}
