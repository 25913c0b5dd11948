//! Command-line surface. Every flag here is documented in `--help` and docs/cli.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wxvault",
    version,
    about = "Archive Webex Contact Center recordings into storage you control"
)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./wxvault.toml when it exists, else built-in defaults
    /// that keep everything under ./wxvault-data.
    #[arg(long, global = true, env = "WXVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the master key (mode 0600) and the state database if they do not exist.
    Init,
    /// Connect an org (or re-authorize one) through the Webex OAuth authorization-code flow: opens
    /// the browser when it can, always prints the link, and receives the answer on a loopback
    /// listener (or, with --no-browser, from the address you paste).
    Connect(ConnectArgs),
    /// Manage connected Webex organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Master-key management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Discover and archive recordings for a time window.
    Sync(SyncArgs),
    /// Put failed recordings and failed or missing tasks back in line, so the next sync tries them
    /// again from the start (objects already archived are adopted, never overwritten).
    Retry(RetryArgs),
    /// Keep every org's grant alive: refresh idle grants every few days, warn before refresh tokens
    /// lapse, and send notices (log, and the [notify] webhook). Run it daily, e.g. from cron.
    Keepalive(JsonFlag),
    /// Per org: token health, window progress, archived / pending / missing / failed counts.
    Status(JsonFlag),
    /// The web app: self-service connect pages for customer admins (from invite links) and the
    /// operator dashboard, with the keep-alive pass running every [serve] keepalive_minutes.
    Serve(ServeArgs),
    /// Run jobs from the queue shared through the state database (workers only; `--plan` also
    /// plans): start one per machine beside `serve --no-workers`, or several, on one PostgreSQL
    /// database. SIGTERM stops claiming and hands unfinished jobs back within [serve]
    /// shutdown_grace_seconds.
    Worker(WorkerArgs),
    /// The work queue: depth, jobs in flight per process, org leases, the planner's last run
    /// and failed jobs with their reasons.
    Queue(JsonFlag),
    /// Invitation links that let a customer admin connect an org without handling any secret.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Print an argon2id hash of the operator password for [serve] operator_password_hash. The
    /// password is read from WXVAULT_OPERATOR_PASSWORD or a hidden prompt.
    HashPassword,
    /// The Webex simulator.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Run the whole flow against an in-process simulator into ./wxvault-demo.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Only these orgs (repeatable); default all.
    #[arg(long = "org")]
    pub orgs: Vec<String>,
    /// Only items whose task was created at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// Only items whose task was created before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// Machine-readable output on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Import credentials obtained elsewhere. The client secret and tokens are read from
    /// WXVAULT_CLIENT_SECRET, WXVAULT_REFRESH_TOKEN and (optional) WXVAULT_ACCESS_TOKEN, or from a
    /// hidden prompt; never from the command line.
    Add(OrgAddArgs),
    /// List connected orgs (no secrets).
    List(JsonFlag),
    /// Remove an org: revokes its grant at Webex where the token allows it, then deletes its
    /// secrets and ledger here. Archived recordings stay where they are.
    Remove(OrgRemoveArgs),
    /// Change what an org is archived for (wxcc, calling or both). Items already archived stay;
    /// a source added later starts from its own first lookback. Says which scopes the org's grant
    /// still lacks for the new sources and how to fix that.
    Sources(OrgSourcesArgs),
}

#[derive(Debug, Args)]
pub struct OrgRemoveArgs {
    /// The org's name.
    pub name: String,
    /// Delete locally without asking Webex to revoke the grant.
    #[arg(long)]
    pub keep_grant: bool,
    /// Do not ask for confirmation (required when there is no terminal to ask on).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address; overrides [serve] listen.
    #[arg(long)]
    pub listen: Option<String>,
    /// Web pages only: no planner and no workers (run `wxvault worker` elsewhere).
    #[arg(long)]
    pub no_workers: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Also plan: queue every org's harvest every [schedule] interval_minutes and the daily
    /// rescan (one planner at a time across all processes; `serve` plans unless --no-workers).
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create a single-use invitation link and print it (shown once; only its hash is kept).
    Create(InviteCreateArgs),
    /// List invitations and whether they are open, used, expired or withdrawn.
    List(JsonFlag),
    /// Withdraw an unused invitation.
    Revoke(InviteRevokeArgs),
}

#[derive(Debug, Args)]
pub struct InviteCreateArgs {
    /// The name the org will be registered under (an existing name re-connects that org).
    #[arg(long)]
    pub name: String,
    /// What the org will be archived for: wxcc, calling, or both (wxcc,calling); decides the
    /// scopes asked for. Default: wxcc for a new org, an existing org's current sources.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// The org's WxCC region; without it the customer admin picks it on the connect page.
    #[arg(long)]
    pub region: Option<String>,
    /// Accept a --region missing from wxvault's list of known regions (a region Webex opened
    /// after this release).
    #[arg(long)]
    pub region_unlisted: bool,
    /// How long the link works; default [serve] invite_ttl_hours.
    #[arg(long)]
    pub ttl_hours: Option<u64>,
    /// Machine-readable output (includes the link).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InviteRevokeArgs {
    /// The invitation's id (from `wxvault invite list`).
    pub id: i64,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new master key to the key file, re-encrypt every stored secret with it in one
    /// transaction, then retire the old key. Safe to re-run after an interruption.
    Rotate(JsonFlag),
}

#[derive(Debug, Args)]
pub struct OrgAddArgs {
    /// A name for the org, used by --org and in reports.
    #[arg(long)]
    pub name: String,
    /// WxCC region: us1, eu1, eu2, anz1, ca1, jp1, sg1 or in1 (others need --region-unlisted).
    #[arg(long)]
    pub region: String,
    /// Accept a --region missing from wxvault's list of known regions (a region Webex opened
    /// after this release).
    #[arg(long)]
    pub region_unlisted: bool,
    /// The integration's client id.
    #[arg(long)]
    pub client_id: String,
    /// How to send the client secret to the token endpoint.
    #[arg(long, value_enum, default_value_t = ClientAuthArg::Form)]
    pub client_auth: ClientAuthArg,
    /// The org id, when it cannot be read from the token's last `_` segment.
    #[arg(long)]
    pub org_id: Option<String>,
    /// What the org is archived for: wxcc, calling, or both (wxcc,calling).
    #[arg(long, value_delimiter = ',', default_value = "wxcc")]
    pub sources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OrgSourcesArgs {
    /// The org's name.
    pub name: String,
    /// The sources to archive from now on: wxcc, calling, or both (wxcc,calling).
    #[arg(value_delimiter = ',')]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClientAuthArg {
    Form,
    Basic,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// A name for the org; an existing name re-authorizes that org (e.g. after needs_reauth).
    #[arg(long)]
    pub name: String,
    /// WxCC region (us1, eu1, eu2, anz1, ca1, jp1, sg1, in1; others need --region-unlisted);
    /// required for a new org.
    #[arg(long)]
    pub region: Option<String>,
    /// Accept a --region missing from wxvault's list of known regions (a region Webex opened
    /// after this release).
    #[arg(long)]
    pub region_unlisted: bool,
    /// The integration's client id; required for a new org. The client secret is read from
    /// WXVAULT_CLIENT_SECRET or a hidden prompt.
    #[arg(long)]
    pub client_id: Option<String>,
    /// How to send the client secret to the token endpoint.
    #[arg(long, value_enum, default_value_t = ClientAuthArg::Form)]
    pub client_auth: ClientAuthArg,
    /// What the org will be archived for: wxcc, calling, or both (wxcc,calling); decides the
    /// scopes asked for. Default: wxcc for a new org, an existing org's current sources.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Loopback port for the redirect URI http://localhost:PORT/callback; it must be registered
    /// on the integration.
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// A different registered redirect URI (use with --no-browser when it is not a loopback address).
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// Do not open a browser or listen: paste the address the browser landed on instead.
    #[arg(long)]
    pub no_browser: bool,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only these orgs (repeatable); default all.
    #[arg(long = "org")]
    pub orgs: Vec<String>,
    /// Window start, inclusive (RFC 3339 or YYYY-MM-DD, UTC). Default: end of the last completed window; first run: 24 h ago.
    #[arg(long)]
    pub from: Option<String>,
    /// Window end, exclusive (RFC 3339 or YYYY-MM-DD, UTC). Default: 5 minutes ago (Webex lists items a little late).
    #[arg(long)]
    pub to: Option<String>,
    /// Machine-readable report on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulator on 127.0.0.1 until interrupted.
    Serve(SimServeArgs),
}

#[derive(Debug, Args)]
pub struct SimServeArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// Dataset seed: the same seed gives the same orgs, tasks and bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Dataset preset.
    #[arg(long, value_enum, default_value_t = DatasetArg::Small)]
    pub dataset: DatasetArg,
    /// Telephony tasks for --dataset bench.
    #[arg(long, default_value_t = 2000)]
    pub tasks: u32,
    /// Recordings for --dataset bench.
    #[arg(long, default_value_t = 3000)]
    pub recordings: u32,
    /// Approximate recording size in bytes for --dataset bench.
    #[arg(long, default_value_t = 200_000)]
    pub recording_bytes: u64,
    /// Add one recording of this many bytes (e.g. 1073741824 for the memory benchmark).
    #[arg(long)]
    pub large_recording_bytes: Option<u64>,
    /// Turn the 300 requests/minute per client id limit off.
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Webex Calling recordings per org (added to any preset; the demo preset has 12).
    #[arg(long)]
    pub calling: Option<u32>,
    /// Days the dataset spans before the simulator's start (overrides the preset's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: Option<u32>,
    /// Orgs (overrides the preset's; with --dataset bench each org gets --tasks and --recordings).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub orgs: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetArg {
    Small,
    Demo,
    Bench,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its config, database, key and archive.
    #[arg(long, default_value = "wxvault-demo")]
    pub dir: PathBuf,
}
