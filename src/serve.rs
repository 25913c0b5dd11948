//! `wxvault serve`, `wxvault invite …` and `wxvault hash-password`. The web app itself is the
//! `webapp` crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use engine::Config;
use engine::onboard::scopes_for;
use secrecy::ExposeSecret as _;
use vault::NewInvite;

use crate::cli::{InviteCommand, InviteCreateArgs, ServeArgs};

pub async fn run(config: Config, args: ServeArgs) -> Result<()> {
    let listen = args.listen.unwrap_or_else(|| config.serve.listen.clone());
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: use IP:PORT, e.g. 127.0.0.1:8080"))?;
    let secret = match &config.serve.client_id {
        Some(_) => Some(
            crate::commands::read_secret("WXVAULT_CLIENT_SECRET", "Client secret: ", true)?
                .context("a client secret is required")?,
        ),
        None => None,
    };
    let keepalive = Duration::from_secs(config.serve.keepalive_minutes * 60);
    let serve_config = config.serve.clone();
    // The handlers first: a SIGTERM while the engine opens still ends in a clean exit.
    let mut stop = crate::worker::shutdown_signal();
    let Some(engine) = crate::commands::open_engine_until_stopped(config, &mut stop).await? else {
        eprintln!("wxvault serve: stopped before it started");
        return Ok(());
    };
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let settings = webapp::Settings::from_config(&serve_config, bound, secret)?;
    if settings.operator_password_hash.is_none() {
        eprintln!(
            "warning: [serve] operator_password_hash is not set, so nobody can sign in to the dashboard; create one with `wxvault hash-password`"
        );
    }
    if settings.integration.is_none() {
        eprintln!(
            "warning: [serve] client_id is not set: invitations can re-connect existing orgs but not connect new ones"
        );
    }
    if serve_config.public_url.is_none() {
        eprintln!(
            "note: [serve] public_url is not set, so browsers must use http://{bound} exactly (forms sent from another address are refused); behind a proxy, set it to the proxy's https address"
        );
    }
    println!("wxvault serve: listening on http://{bound}");
    println!("dashboard:    {}", settings.public_url);
    println!(
        "redirect URI: {} (register it on the integration)",
        settings.redirect_uri()
    );
    println!(
        "limits:       request headers within {} s, at most {} connections ([serve] header_read_timeout_secs, max_connections)",
        settings.limits.header_read_timeout.as_secs(),
        settings.limits.max_connections
    );
    if !args.no_workers {
        println!(
            "workers:      up to {} job(s) at once, planning every {} min ([worker] concurrency, [schedule] interval_minutes)",
            engine.config.worker.concurrency, engine.config.schedule.interval_minutes
        );
    }
    let summary = webapp::run_service(
        engine,
        settings,
        listener,
        keepalive,
        stop,
        !args.no_workers,
    )
    .await?;
    if !args.no_workers {
        eprintln!(
            "wxvault serve: stopped ({} job(s) done, {} to retry, {} failed, {} handed back)",
            summary.jobs_done, summary.jobs_retried, summary.jobs_failed, summary.jobs_released
        );
    }
    Ok(())
}

pub async fn invite(config: Config, cmd: InviteCommand) -> Result<u8> {
    let listen: SocketAddr = config
        .serve
        .listen
        .parse()
        .context("[serve] listen must be IP:PORT")?;
    let public = webapp::public_url(&config.serve, listen)?;
    let ttl_default = config.serve.invite_ttl_hours;
    let engine = crate::commands::open_engine(config).await?;
    let now = engine.clock.now_ms();
    match cmd {
        InviteCommand::Create(args) => {
            create(&engine, &public, ttl_default, args, now).await?;
            Ok(0)
        }
        InviteCommand::List(j) => {
            let invites = engine.vault.invites().await?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&invites)?);
            } else if invites.is_empty() {
                println!("no invitations");
            } else {
                for i in invites {
                    println!(
                        "#{:<4} {:<24} {:<8} sources {:<12} expires {}",
                        i.id,
                        i.org_name,
                        i.status,
                        i.sources.join(","),
                        engine::clock::rfc3339(i.expires_at_ms)
                    );
                }
            }
            Ok(0)
        }
        InviteCommand::Revoke(a) => {
            engine.vault.revoke_invite(a.id).await?;
            println!("invitation #{} withdrawn", a.id);
            Ok(0)
        }
    }
}

async fn create(
    engine: &engine::Engine,
    public: &url::Url,
    ttl_default: u64,
    args: InviteCreateArgs,
    now: i64,
) -> Result<()> {
    let requested = (!args.sources.is_empty())
        .then(|| engine::source::parse_sources(&args.sources))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let region = args
        .region
        .as_deref()
        .map(|r| engine::regions::check(r, args.region_unlisted))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let hours = args.ttl_hours.unwrap_or(ttl_default);
    if hours == 0 || hours > 24 * 90 {
        bail!("--ttl-hours must be between 1 and 2160 (90 days)");
    }
    let existing = engine.vault.org_by_name(args.name.trim()).await?;
    // Default: what an existing org is archived for already, else Contact Center.
    let sources = requested.unwrap_or_else(|| match &existing {
        Some(org) => engine::sync::org_sources(org),
        None => vec![engine::source::DEFAULT_SOURCE.to_owned()],
    });
    let scopes = scopes_for(&sources)?;
    if let (Some(org), Some(r)) = (&existing, &region)
        && *r != org.region
    {
        bail!(
            "org {} is in region {}; --region must match or be left out",
            org.name,
            org.region
        );
    }
    let issued = engine
        .vault
        .create_invite(
            NewInvite {
                org_name: args.name.trim().to_string(),
                sources: sources.clone(),
                created_by: "operator (cli)".into(),
                ttl_ms: i64::try_from(hours)? * 3_600_000,
                client_id: existing.as_ref().map(|o| o.client_id.clone()),
                region: region
                    .clone()
                    .or_else(|| existing.as_ref().map(|o| o.region.clone())),
            },
            now,
        )
        .await?;
    let link = webapp::invite_link(public, issued.token.expose_secret());
    if args.json {
        let v = serde_json::json!({
            "id": issued.invite.id,
            "org": issued.invite.org_name,
            "sources": issued.invite.sources,
            "region": issued.invite.region,
            "expires_at": engine::clock::rfc3339(issued.invite.expires_at_ms),
            "link": link,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "Invitation #{} for {}{}",
            issued.invite.id,
            issued.invite.org_name,
            if existing.is_some() {
                " (re-connect)"
            } else {
                ""
            }
        );
        println!("Scopes it asks for:");
        for (scope, why) in scopes {
            println!("  {scope:<18} to {why}");
        }
        println!(
            "Expires {}. It works once and is shown only now:\n\n{link}\n",
            engine::clock::rfc3339(issued.invite.expires_at_ms)
        );
        println!(
            "Send it to an administrator of the org's Webex Contact Center; `wxvault serve` must be running at that address."
        );
    }
    Ok(())
}

pub fn hash_password() -> Result<()> {
    let password =
        crate::commands::read_secret("WXVAULT_OPERATOR_PASSWORD", "Operator password: ", true)?
            .context("a password is required")?;
    if password.expose_secret().chars().count() < 12 {
        bail!("choose an operator password of at least 12 characters");
    }
    let hash = vault::hash_password(&password)?;
    println!("{hash}");
    Ok(())
}
