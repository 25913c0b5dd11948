//! `wxvault connect`: the operator's own org from a terminal. The browser talks to Webex; the
//! answer comes back to a loopback listener (or is pasted), and the engine does the rest.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use engine::Config;
use engine::onboard::{Callback, ConnectTarget, scopes_for};
use tokio::sync::mpsc;
use webex::oauth::ClientAuth;

use crate::cli::{ClientAuthArg, ConnectArgs};

const DONE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>wxvault</title></head>\
<body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\"><h1>Answer received</h1>\
<p>wxvault has the answer from Webex. You can close this tab and return to the terminal.</p></body></html>";

pub async fn run(config: Config, mut args: ConnectArgs) -> Result<u8> {
    if let Some(r) = &args.region {
        args.region =
            Some(engine::regions::check(r, args.region_unlisted).map_err(anyhow::Error::msg)?);
    }
    // Checked before anything else: an unknown or repeated source is a usage error.
    let requested = (!args.sources.is_empty())
        .then(|| engine::source::parse_sources(&args.sources))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let engine = crate::commands::open_engine(config).await?;
    let existing = engine.vault.org_by_name(&args.name).await?;
    let mut new_secret = None;
    let (target, secret) = match &existing {
        Some(org) => {
            if args.region.as_deref().is_some_and(|r| r != org.region) {
                bail!(
                    "org {} is in region {}; --region must match or be left out",
                    org.name,
                    org.region
                );
            }
            if args
                .client_id
                .as_deref()
                .is_some_and(|c| c != org.client_id)
            {
                bail!(
                    "org {} is connected through client id {}; --client-id must match or be left out",
                    org.name,
                    org.client_id
                );
            }
            // A secret in the environment replaces the stored one (the integration's secret was
            // rotated); it is stored only once Webex accepted it in the code exchange.
            let secrets = engine.vault.org_secrets(org).await?;
            new_secret = std::env::var("WXVAULT_CLIENT_SECRET")
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(secrecy::SecretString::from);
            let mut target = ConnectTarget::for_org(org);
            target.sources = match &requested {
                Some(s) => s.clone(),
                None => engine::sync::org_sources(org),
            };
            println!(
                "Re-authorizing org {} (Webex org {}).",
                org.name, org.org_id
            );
            (target, new_secret.clone().unwrap_or(secrets.client_secret))
        }
        None => {
            let (Some(region), Some(client_id)) = (args.region.clone(), args.client_id.clone())
            else {
                bail!("org {:?} is new: pass --region and --client-id", args.name);
            };
            let secret =
                crate::commands::read_secret("WXVAULT_CLIENT_SECRET", "Client secret: ", true)?
                    .context("a client secret is required")?;
            let target = ConnectTarget {
                name: args.name.clone(),
                region,
                client_id,
                client_auth: match args.client_auth {
                    ClientAuthArg::Form => ClientAuth::Form,
                    ClientAuthArg::Basic => ClientAuth::Basic,
                },
                sources: requested
                    .clone()
                    .unwrap_or_else(|| vec![engine::source::DEFAULT_SOURCE.to_owned()]),
            };
            (target, secret)
        }
    };
    let redirect_uri = args
        .redirect_uri
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}/callback", args.port));
    let pending = engine.begin_connect(&target.client_id, &redirect_uri, &target.sources)?;

    println!("wxvault will ask Webex for these scopes:");
    for (scope, why) in scopes_for(&target.sources)? {
        println!("  {scope:<18} to {why}");
    }
    println!(
        "The person who signs in must be an administrator (or supervisor) of the org's Contact Center."
    );

    let callback = if args.no_browser {
        println!(
            "\nOpen this link in a browser, sign in and accept:\n{}\n",
            pending.authorize_url
        );
        print!("Then paste the address the browser landed on (it starts with {redirect_uri}): ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        let n = tokio::task::spawn_blocking(move || {
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map(|n| (n, line))
        })
        .await??;
        if n.0 == 0 {
            bail!("no address was pasted (standard input closed)");
        }
        Callback::parse(&n.1)?
    } else {
        let listen = loopback_addr(&redirect_uri)?;
        let (tx, mut rx) = mpsc::channel::<String>(16);
        let app = axum::Router::new()
            .route("/callback", get(receive))
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for the redirect; pick another --port (registered on the integration) or use --no-browser"))?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        println!(
            "\nOpening the browser. If it does not open, visit this link:\n{}\n",
            pending.authorize_url
        );
        open_browser(pending.authorize_url.as_str());
        println!("Waiting for the answer on {redirect_uri} …");
        std::io::stdout().flush()?;
        // Anything can knock on a loopback port: only an answer carrying this attempt's state
        // counts; others are ignored and the wait goes on.
        let wait = async {
            while let Some(q) = rx.recv().await {
                match Callback::parse(&format!("?{q}")) {
                    Ok(cb) if pending.state_matches(cb.state()) => return Some(cb),
                    _ => {
                        println!("Ignored an answer that does not belong to this connect attempt.")
                    }
                }
            }
            None
        };
        let answer = tokio::time::timeout(Duration::from_secs(args.timeout_secs), wait).await;
        server.abort();
        match answer {
            Ok(Some(cb)) => cb,
            Ok(None) => bail!("the redirect listener stopped before an answer arrived"),
            Err(_) => bail!(
                "no answer within {} s. If the browser showed \"Access denied - Your administrator denied access to the \
                 integration\", a Webex administrator must allow this integration (client id {}) in Control Hub: \
                 Management → Apps → Integrations. Otherwise check that {redirect_uri} is registered on the integration.",
                args.timeout_secs,
                target.client_id
            ),
        }
    };

    let connected = engine
        .complete_connect(pending, callback, &target, secret)
        .await
        .map_err(|e| match e {
            engine::EngineError::Usage(m) => anyhow::anyhow!(m),
            other => anyhow::Error::new(other),
        })?;
    let org = &connected.org;
    if let Some(secret) = &new_secret {
        engine.vault.set_client_secret(org, secret).await?;
        println!("Client secret updated from WXVAULT_CLIENT_SECRET.");
    }
    println!(
        "\n{} org {} — Webex org {}, region {}; tokens stored encrypted.",
        if connected.reconnected {
            "Re-authorized"
        } else {
            "Connected"
        },
        org.name,
        org.org_id,
        org.region
    );
    match &connected.granted {
        Some(g) => println!("Granted scopes: {}", g.join(" ")),
        None => println!(
            "Webex did not report the granted scopes; the first sync will show whether access works."
        ),
    }
    if !connected.missing.is_empty() {
        println!(
            "Missing scopes: {}. Add them to the integration in the Webex developer portal (My Webex Apps → your \
             integration → Scopes), then run `wxvault connect --name {}` again.",
            connected.missing.join(", "),
            org.name
        );
        for line in engine::onboard::missing_scope_advice(&org.sources, &connected.missing) {
            println!("  {line}");
        }
        return Ok(2);
    }
    if !crate::commands::check_sources(&engine, org).await {
        return Ok(2);
    }
    println!("Next: `wxvault sync --org {}`.", org.name);
    Ok(0)
}

async fn receive(
    State(tx): State<mpsc::Sender<String>>,
    Query(q): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q)
        .finish();
    // The waiting side decides which answer counts (see `run`).
    let _ = tx.try_send(query);
    Html(DONE_PAGE)
}

/// The loopback address to listen on for a redirect URI; refuses anything but localhost.
fn loopback_addr(redirect_uri: &str) -> Result<std::net::SocketAddr> {
    let u = url::Url::parse(redirect_uri)
        .with_context(|| format!("redirect URI {redirect_uri:?} is not a URL"))?;
    let host = u.host_str().unwrap_or_default();
    if !(host == "localhost" || host == "127.0.0.1" || host == "[::1]")
        || u.scheme() != "http"
        || u.path() != "/callback"
    {
        bail!(
            "to receive the answer itself, wxvault needs a redirect URI like http://localhost:PORT/callback; for {redirect_uri} use --no-browser and paste the address"
        );
    }
    let port = u.port().context("the redirect URI needs a port")?;
    let ip: std::net::IpAddr = if host == "[::1]" {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Best effort: a missing or failing browser is fine, the link is printed anyway.
fn open_browser(url: &str) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        let _ = browser_command(cmd, url, std::env::vars_os()).spawn();
    }
}

/// The browser launcher for `url`, with `env` minus every `WXVAULT_*` variable.
///
/// The browser and everything it starts later would otherwise inherit the master key, the
/// client secret and the tokens wxvault reads from its environment.
fn browser_command(
    program: &str,
    url: &str,
    env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.arg(url)
        .env_clear()
        .envs(env.into_iter().filter(|(k, _)| !is_wxvault_var(k)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

fn is_wxvault_var(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_none_or(|n| {
        n.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("WXVAULT_"))
    })
}

#[cfg(test)]
mod browser_tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn the_browser_does_not_inherit_wxvault_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("browser.sh");
        std::fs::write(&script, "#!/bin/sh\nenv > \"$1\"\n").unwrap();
        let out = dir.path().join("env.txt");
        let secrets = [
            "WXVAULT_MASTER_KEY",
            "WXVAULT_CLIENT_SECRET",
            "WXVAULT_REFRESH_TOKEN",
            "WXVAULT_ACCESS_TOKEN",
            "WXVAULT_OPERATOR_PASSWORD",
            "wxvault_lowercase",
        ];
        let mut env: Vec<(OsString, OsString)> = secrets
            .iter()
            .map(|k| (k.into(), format!("SECRET-{k}").into()))
            .collect();
        env.push(("KEEP_ME".into(), "visible".into()));
        env.push(("PATH".into(), std::env::var_os("PATH").unwrap_or_default()));
        // The "browser" is a script that writes its environment to the file given as the URL.
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let status = browser_command(script.to_str().unwrap(), out.to_str().unwrap(), env)
            .status()
            .unwrap();
        assert!(status.success());
        let seen = std::fs::read_to_string(&out).unwrap();
        assert!(seen.contains("KEEP_ME=visible"), "{seen}");
        assert!(!seen.contains("SECRET-"), "{seen}");
        assert!(!seen.to_ascii_uppercase().contains("WXVAULT_"), "{seen}");
    }
}
