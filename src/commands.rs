//! Command implementations: load configuration, call the engine, print, choose the exit code.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use engine::{Clock, Config, Engine, SyncOptions, SystemClock};
use secrecy::{ExposeSecret, SecretString};
use vault::NewOrg;

use crate::cli::{
    Cli, ClientAuthArg, Command, KeysCommand, OrgAddArgs, OrgCommand, OrgRemoveArgs,
    OrgSourcesArgs, RetryArgs, SimCommand, SyncArgs,
};
use crate::output;

/// Runs one command and returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    init_logging(&cli);
    let path = engine::config::locate(cli.config.as_deref());
    // Said on standard error (stdout stays clean for --json) by every command that reads the
    // configuration, so nobody runs on defaults without knowing it.
    let load_config = || -> Result<Config> {
        match &path {
            Some(p) => eprintln!("config: {}", p.display()),
            None => eprintln!(
                "config: built-in defaults (no --config, no WXVAULT_CONFIG, no ./{} here)",
                engine::config::LOCAL_CONFIG_FILE
            ),
        }
        Ok(Config::load(path.as_deref())?)
    };
    match cli.command {
        Command::Init => init(&load_config()?).await.map(|()| 0),
        Command::Connect(args) => crate::connect::run(load_config()?, args).await,
        Command::Org(OrgCommand::Add(args)) => org_add(&load_config()?, args).await.map(|()| 0),
        Command::Org(OrgCommand::Remove(args)) => org_remove(&load_config()?, args).await,
        Command::Keys(KeysCommand::Rotate(j)) => {
            keys_rotate(&load_config()?, j.json).await.map(|()| 0)
        }
        Command::Org(OrgCommand::Sources(args)) => {
            org_sources(&load_config()?, args).await.map(|()| 0)
        }
        Command::Org(OrgCommand::List(j)) => org_list(&load_config()?, j.json).await.map(|()| 0),
        Command::Sync(args) => sync(&load_config()?, args).await,
        Command::Retry(args) => retry(&load_config()?, args).await.map(|()| 0),
        Command::Keepalive(j) => keepalive(&load_config()?, j.json).await,
        Command::Status(j) => status(&load_config()?, j.json).await,
        Command::Serve(args) => crate::serve::run(load_config()?, args).await.map(|()| 0),
        Command::Worker(args) => crate::worker::run(load_config()?, args).await.map(|()| 0),
        Command::Queue(j) => crate::worker::queue(&load_config()?, j.json)
            .await
            .map(|()| 0),
        Command::Invite(cmd) => crate::serve::invite(load_config()?, cmd).await,
        Command::HashPassword => crate::serve::hash_password().map(|()| 0),
        Command::Sim(SimCommand::Serve(args)) => crate::demo::sim_serve(args).await.map(|()| 0),
        Command::Demo(args) => crate::demo::run(args).await,
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs piped to files and journals stay plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cli.log_format {
        crate::cli::LogFormat::Json => builder.json().try_init(),
        crate::cli::LogFormat::Text => builder.try_init(),
    };
}

fn master_key_env() -> Option<String> {
    std::env::var("WXVAULT_MASTER_KEY")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

pub async fn open_engine(config: Config) -> Result<Engine> {
    let env = master_key_env();
    Engine::open(config, env.as_deref(), Arc::new(SystemClock))
        .await
        .context("cannot open wxvault's state")
}

/// [`open_engine`] for the long-running processes (`serve`, `worker`): a database that is busy,
/// restarting or not reachable yet (a boot where wxvault starts before PostgreSQL) is tried
/// again with a growing pause, up to a minute apart, instead of ending the process; anything
/// else (bad config, bad key, a schema from a newer release) still ends it at once. `None` when
/// a stop was requested meanwhile: the caller exits 0, there is nothing to hand back.
///
/// # Errors
/// What [`open_engine`] reports, unless it is transient.
pub async fn open_engine_until_stopped(
    config: Config,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Engine>> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let env = master_key_env();
        let opened = tokio::select! {
            r = Engine::open(config.clone(), env.as_deref(), Arc::new(SystemClock)) => r,
            _ = stop.wait_for(|s| *s) => return Ok(None),
        };
        match opened {
            Ok(engine) => return Ok(Some(engine)),
            Err(engine::EngineError::Vault(e)) if e.is_transient() => {
                eprintln!(
                    "wxvault: the state database is not usable yet, trying again in {} s: {e}",
                    pause.as_secs()
                );
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot open wxvault's state")),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(60));
    }
}

async fn init(config: &Config) -> Result<()> {
    // Everything that can be checked without the key is checked before the key is written, so a
    // bad [storage] section does not leave a key file behind (the config, with the database URL,
    // was validated when it loaded).
    archive::Archive::open(&config.storage_config())
        .context("checking [storage] before creating the master key")?;
    let key = std::path::Path::new(&config.vault.master_key_file);
    if master_key_env().is_some() {
        println!("master key: taken from WXVAULT_MASTER_KEY (no key file written)");
    } else if vault::init_key_file(key).with_context(|| format!("creating {}", key.display()))? {
        println!(
            "master key: created {} (mode 0600) — back it up; without it the stored secrets cannot be read",
            key.display()
        );
    } else {
        println!(
            "master key: {} already exists, left as it is",
            key.display()
        );
    }
    let engine = open_engine(config.clone()).await?;
    match engine.vault.schema() {
        Some(schema) => println!(
            "database:   {} ({}, schema {schema})",
            redact::redact_url(&config.database.url),
            engine.vault.backend()
        ),
        None => println!(
            "database:   {} ({})",
            redact::redact_url(&config.database.url),
            engine.vault.backend()
        ),
    }
    println!("archive:    {}", engine.archive.describe());
    Ok(())
}

/// Reads a secret from the environment, or from a hidden prompt on a terminal.
pub fn read_secret(var: &str, prompt: &str, required: bool) -> Result<Option<SecretString>> {
    if let Ok(v) = std::env::var(var) {
        let v = v.trim().to_string();
        if !v.is_empty() {
            return Ok(Some(SecretString::from(v)));
        }
    }
    if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(prompt)
            .with_context(|| format!("reading {var} from the terminal"))?;
        let v = v.trim().to_string();
        if !v.is_empty() {
            return Ok(Some(SecretString::from(v)));
        }
    }
    if required {
        bail!(
            "{var} is not set and there is no terminal to ask on; set {var} in the environment (never pass secrets as arguments)"
        );
    }
    Ok(None)
}

async fn org_add(config: &Config, args: OrgAddArgs) -> Result<()> {
    let sources = engine::source::parse_sources(&args.sources).map_err(anyhow::Error::msg)?;
    let region =
        engine::regions::check(&args.region, args.region_unlisted).map_err(anyhow::Error::msg)?;
    let client_secret =
        read_secret("WXVAULT_CLIENT_SECRET", "Client secret: ", true)?.expect("required");
    let refresh = read_secret("WXVAULT_REFRESH_TOKEN", "Refresh token: ", true)?.expect("required");
    let access = read_secret(
        "WXVAULT_ACCESS_TOKEN",
        "Access token (optional, Enter to skip): ",
        false,
    )?;
    let from_token = webex::oauth::token_anatomy(refresh.expose_secret()).or_else(|| {
        access
            .as_ref()
            .and_then(|a| webex::oauth::token_anatomy(a.expose_secret()))
    });
    let org_id = match (&args.org_id, from_token) {
        (Some(given), Some(anat)) if !given.eq_ignore_ascii_case(&anat.org_id) => bail!(
            "--org-id {given} does not match the org id in the token ({}); check that the tokens belong to this org",
            anat.org_id
        ),
        (Some(given), _) => webex::oauth::org_uuid_from_rest_id(given)
            .with_context(|| format!("--org-id {given:?} is neither a UUID nor a Webex org id"))?,
        (None, Some(anat)) => anat.org_id,
        (None, None) => bail!(
            "cannot read the org id from the token (expected <opaque>_<cluster>_<orgId>); pass --org-id"
        ),
    };
    let engine = open_engine(config.clone()).await?;
    if engine.vault.org_by_name(&args.name).await?.is_some() {
        bail!(
            "an org named {:?} already exists; pick another --name, or re-authorize it with `wxvault connect --name {}`",
            args.name,
            args.name
        );
    }
    let client_auth = match args.client_auth {
        ClientAuthArg::Form => webex::oauth::ClientAuth::Form,
        ClientAuthArg::Basic => webex::oauth::ClientAuth::Basic,
    };
    // One refresh proves the client secret and the refresh token work together before anything
    // is stored; a refused grant is reported now, not as needs_reauth on the first sync. The
    // access token given (if any) only helped find the org id: the fresh one is stored.
    let tokens = engine
        .check_imported_grant(&args.client_id, client_auth, &client_secret, &refresh)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "org {} was not added: refreshing the imported grant at Webex's token endpoint failed: {e}",
                args.name
            )
        })?;
    let org = engine
        .vault
        .add_org(NewOrg {
            name: args.name.clone(),
            org_id,
            region,
            client_id: args.client_id.clone(),
            client_secret,
            client_auth: match args.client_auth {
                ClientAuthArg::Form => "form".into(),
                ClientAuthArg::Basic => "basic".into(),
            },
            sources: sources.clone(),
            tokens,
        })
        .await
        .with_context(|| format!("adding org {}", args.name))?;
    println!(
        "added org {} (org id {}, region {}, sources {}); Webex accepted its grant (refreshed once); secrets stored encrypted",
        org.name,
        org.org_id,
        org.region,
        sources.join(",")
    );
    print_scope_advice(&org, &sources);
    check_sources(&engine, &org).await;
    Ok(())
}

/// Says which scopes the org's grant lacks for `sources` and how to fix it (nothing when Webex
/// did not report the granted scopes, or none is missing).
fn print_scope_advice(org: &vault::Org, sources: &[String]) {
    let Some(granted) = org.scopes.as_deref() else {
        return;
    };
    let granted: Vec<&str> = granted.split_whitespace().collect();
    let needed = engine::onboard::scopes_for(sources).unwrap_or_default();
    let missing: Vec<String> = needed
        .iter()
        .map(|(s, _)| (*s).to_owned())
        .filter(|s| !granted.contains(&s.as_str()))
        .collect();
    for line in engine::onboard::missing_scope_advice(sources, &missing) {
        println!("warning: org {}: the grant lacks a scope: {line}", org.name);
    }
}

/// Runs each source's check of the org's grant and prints what it found; false when one of
/// them says the grant cannot serve its source (the message says what to change).
pub async fn check_sources(engine: &engine::Engine, org: &vault::Org) -> bool {
    let results = match engine.probe_org(org).await {
        Ok(r) => r,
        Err(e) => {
            println!("warning: org {}: could not check its grant: {e}", org.name);
            return false;
        }
    };
    let mut ok = true;
    for r in results {
        match r.outcome {
            Ok(seen) => println!("checked {}: {seen}", r.source),
            Err(e) if e.class() == webex::ErrorClass::Transient => println!(
                "warning: org {}: {} could not be checked now ({e}); the first sync will tell",
                org.name, r.source
            ),
            Err(e) => {
                ok = false;
                println!("warning: org {}: {}: {e}", org.name, r.source);
            }
        }
    }
    ok
}

/// `wxvault org sources NAME LIST`.
async fn org_sources(config: &Config, args: OrgSourcesArgs) -> Result<()> {
    let sources = engine::source::parse_sources(&args.sources).map_err(anyhow::Error::msg)?;
    let engine = open_engine(config.clone()).await?;
    let org = engine
        .select_orgs(std::slice::from_ref(&args.name))
        .await?
        .remove(0);
    engine
        .vault
        .set_org_sources(&org, &sources)
        .await
        .with_context(|| format!("setting the sources of org {}", org.name))?;
    let msg = format!(
        "sources changed from {} to {}",
        engine::sync::org_sources(&org).join(","),
        sources.join(",")
    );
    let _ = engine.vault.record_event(Some(&org), "sources", &msg).await;
    println!("org {}: {msg}", org.name);
    print_scope_advice(&org, &sources);
    let org = engine
        .select_orgs(std::slice::from_ref(&args.name))
        .await?
        .remove(0);
    check_sources(&engine, &org).await;
    Ok(())
}

async fn org_list(config: &Config, json: bool) -> Result<()> {
    let engine = open_engine(config.clone()).await?;
    let orgs = engine.vault.orgs().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&orgs)?);
    } else {
        output::print_orgs(&orgs);
    }
    Ok(())
}

/// Parses RFC 3339 or a bare date (UTC midnight) into epoch ms.
pub fn parse_time(flag: &str, s: &str) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    bail!("{flag} {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (2026-01-31T12:00:00Z)")
}

/// Refuses windows that cannot hold anything: a `--from` in the future, or one not before the
/// end of the window (`--to`, or by default now minus the settle lag).
fn check_window(from: Option<(&str, i64)>, to: Option<(&str, i64)>, now: i64) -> Result<()> {
    let Some((from_text, f)) = from else {
        return Ok(());
    };
    if f > now {
        bail!(
            "--from {from_text} is in the future (now is {}): there is nothing to archive yet; give a --from in the past",
            engine::clock::rfc3339(now)
        );
    }
    match to {
        Some((to_text, t)) if f >= t => bail!(
            "--from {from_text} is not before --to {to_text}: the window is [from, to), so --from must be earlier"
        ),
        Some(_) => {}
        None if f >= now - engine::sync::SETTLE_LAG_MS => bail!(
            "--from {from_text} is within the last {} minutes, but a window without --to ends that long ago (Webex lists tasks a little late); give an earlier --from or an explicit --to",
            engine::sync::SETTLE_LAG_MS / 60_000
        ),
        None => {}
    }
    Ok(())
}

/// `--from` / `--to` as epoch ms, each optional.
fn parse_range(from: Option<&str>, to: Option<&str>) -> Result<(Option<i64>, Option<i64>)> {
    Ok((
        from.map(|s| parse_time("--from", s)).transpose()?,
        to.map(|s| parse_time("--to", s)).transpose()?,
    ))
}

async fn sync(config: &Config, args: SyncArgs) -> Result<u8> {
    let (from, to) = parse_range(args.from.as_deref(), args.to.as_deref())?;
    check_window(
        args.from.as_deref().zip(from),
        args.to.as_deref().zip(to),
        SystemClock.now_ms(),
    )?;
    let mut engine = open_engine(config.clone()).await?;
    let bars = (!args.json && std::io::stderr().is_terminal()).then(output::Bars::new);
    if let Some(b) = &bars {
        engine.progress = b.clone();
    } else if !std::io::stderr().is_terminal() {
        // Cron, systemd, CI: a plain progress line per window, at most one a minute.
        engine.progress = Arc::new(engine::progress::LogLines::stderr());
    }
    let report = engine
        .sync(&SyncOptions {
            orgs: args.orgs,
            from_ms: from,
            to_ms: to,
            rescan: false,
        })
        .await
        .map_err(|e| match e {
            engine::EngineError::Usage(m) => anyhow::anyhow!(m),
            other => anyhow::Error::new(other),
        })?;
    if let Some(b) = bars {
        b.finish();
    }
    let notices = engine.sync_notices(&report).await;
    engine.notify(&notices).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_sync_report(&report);
    }
    Ok(u8::try_from(report.exit_code()).unwrap_or(2))
}

async fn retry(config: &Config, args: RetryArgs) -> Result<()> {
    let (from, to) = parse_range(args.from.as_deref(), args.to.as_deref())?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        bail!("--from must be before --to (the range is [from, to))");
    }
    let engine = open_engine(config.clone()).await?;
    let put_back = engine
        .retry_failed(&args.orgs, from, to)
        .await
        .map_err(|e| match e {
            engine::EngineError::Usage(m) => anyhow::anyhow!(m),
            other => anyhow::Error::new(other),
        })?;
    if args.json {
        let rows: Vec<serde_json::Value> = put_back
            .iter()
            .map(|(org, c)| {
                serde_json::json!({ "org": org, "recordings": c.recordings, "tasks": c.tasks })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if put_back.is_empty() {
        println!("no orgs yet: add one with `wxvault org add`, or try `wxvault demo`");
    } else {
        for (org, c) in &put_back {
            println!(
                "{org}: {} recording(s) and {} task(s) put back; the next `wxvault sync` tries them again",
                c.recordings, c.tasks
            );
        }
    }
    Ok(())
}

/// Exit 2 when the master key cannot open some org's secrets (docs/cli.md).
async fn status(config: &Config, json: bool) -> Result<u8> {
    let engine = open_engine(config.clone()).await?;
    let views = engine.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        output::print_status(&views, engine.clock.now_ms());
        let queue = engine.queue_view().await?;
        println!();
        output::print_queue(&queue, engine.clock.now_ms());
    }
    let unreadable = views
        .iter()
        .any(|v| matches!(v.secrets, engine::SecretsHealth::Unreadable { .. }));
    Ok(if unreadable { 2 } else { 0 })
}

async fn org_remove(config: &Config, args: OrgRemoveArgs) -> Result<u8> {
    let engine = open_engine(config.clone()).await?;
    let org = engine
        .vault
        .org_by_name(&args.name)
        .await?
        .with_context(|| format!("no org named {:?} (see `wxvault org list`)", args.name))?;
    if !args.yes && !confirm_removal(&org.name, args.keep_grant)? {
        println!("Org {} left as it is.", org.name);
        return Ok(0);
    }
    let mut code = 0;
    if args.keep_grant {
        println!("Not revoking the grant at Webex (--keep-grant).");
    } else {
        match engine.revoke_grant(&org).await {
            Ok(()) => println!(
                "Revoked client {} in Webex org {}.",
                org.client_id, org.org_id
            ),
            Err(e) => {
                code = 2;
                println!(
                    "Could not revoke the grant at Webex: {e}\nAsk an administrator of the org to remove it in Control Hub \
                     (Management → Apps → Integrations, or the user's Reset Access). Removing it here anyway."
                );
            }
        }
    }
    engine.vault.remove_org(&org).await?;
    engine
        .vault
        .record_event(
            None,
            "org_removed",
            &format!("org {} ({}) removed", org.name, org.org_id),
        )
        .await?;
    println!(
        "Removed org {}: its secrets and ledger are deleted here; archived recordings stay in {}.",
        org.name,
        engine.archive.describe()
    );
    Ok(code)
}

/// Asks on the terminal before `org remove` does anything; without a terminal, refuses (the
/// caller must pass `--yes`). Returns whether the operator agreed.
fn confirm_removal(name: &str, keep_grant: bool) -> Result<bool> {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to remove org {name} without confirmation: there is no terminal to ask on, so pass --yes \
             (removal {}deletes its secrets and ledger here)",
            if keep_grant {
                ""
            } else {
                "revokes its grant at Webex and "
            }
        );
    }
    eprint!(
        "Remove org {name}? This {}deletes its secrets and ledger here (archived recordings stay). Type yes to continue: ",
        if keep_grant {
            ""
        } else {
            "revokes its grant at Webex, "
        }
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation from the terminal")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn keys_rotate(config: &Config, json: bool) -> Result<()> {
    if master_key_env().is_some() {
        bail!(
            "the master key comes from WXVAULT_MASTER_KEY, which wxvault cannot rewrite. To rotate: put both keys in it \
             one per line as `1:<old>` and `2:<new>` (new key: `head -c32 /dev/urandom | base64`), run \
             `wxvault keys rotate` again, then keep only the `2:` line"
        );
    }
    let path = std::path::Path::new(&config.vault.master_key_file);
    let new_version = vault::add_key_version(path)
        .with_context(|| format!("adding a key to {}", path.display()))?;
    // Re-open with the file as it is now, holding the old and the new key.
    let engine = open_engine(config.clone()).await?;
    let report = engine
        .vault
        .rotate_keys()
        .await
        .context("re-encrypting the stored secrets")?;
    let in_use = engine.vault.key_versions_in_use().await?;
    let retired = if in_use.keys().all(|v| *v == report.to_version) {
        vault::retire_key_versions(path, report.to_version)
            .with_context(|| format!("removing old keys from {}", path.display()))?;
        true
    } else {
        false
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "key_version": new_version,
                "re_encrypted": report.re_encrypted,
                "already_current": report.already_current,
                "old_keys_retired": retired,
            })
        );
    } else {
        println!(
            "Master key version {new_version} is in use: {} secret(s) re-encrypted, {} already current.",
            report.re_encrypted, report.already_current
        );
        if retired {
            println!(
                "Old keys removed from {}. Back up the key file again.",
                path.display()
            );
        } else {
            println!(
                "Old keys kept in {}: some secrets still use them ({in_use:?}); run `wxvault keys rotate` again.",
                path.display()
            );
        }
    }
    Ok(())
}

async fn keepalive(config: &Config, json: bool) -> Result<u8> {
    let engine = open_engine(config.clone()).await?;
    let results = engine.keep_alive().await?;
    let notices: Vec<_> = results.iter().flat_map(|r| r.notices.clone()).collect();
    engine.notify(&notices).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!(
                "{}: {}; access token expires {}, refresh token expires {}",
                r.org,
                if r.refreshed {
                    "refreshed"
                } else {
                    "no refresh needed"
                },
                r.access_expires_at.as_deref().unwrap_or("unknown"),
                r.refresh_expires_at.as_deref().unwrap_or("unknown")
            );
            for n in &r.notices {
                println!("{}: {} — {}", r.org, n.event, n.reason);
            }
        }
        if results.is_empty() {
            println!("no orgs yet");
        }
    }
    Ok(if notices.is_empty() { 0 } else { 2 })
}
