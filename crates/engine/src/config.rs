//! The one configuration file (`wxvault.toml`), with defaults that work with no file at all.
//!
//! Relative paths in the file (the SQLite database, a `file://` archive, the master key file) are
//! resolved against the directory that holds the file, so `wxvault --config some/dir/wxvault.toml`
//! works from any working directory. Without a file they are relative to the working directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default root for state when no configuration file says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./wxvault-data";

/// Everything wxvault reads from `wxvault.toml`. Unknown keys are rejected so a typo is reported
/// instead of silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub webex: WebexConfig,
    #[serde(default)]
    pub wxcc: WxccConfig,
    #[serde(default)]
    pub calling: crate::source::calling::CallingConfig,
    #[serde(default)]
    pub vault: VaultConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub schedule: crate::queue::ScheduleConfig,
    #[serde(default)]
    pub worker: crate::queue::WorkerConfig,
}

/// `[serve]`: the web app (`wxvault serve`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address browsers use to reach the app (behind a proxy: the proxy's https URL). The
    /// OAuth redirect URI is `<public_url>/oauth/callback` and must be registered on the
    /// integration. Default: `http://` + the address actually bound.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Who customer admins are told is asking for access, on the connect page.
    #[serde(default = "default_vendor_name")]
    pub vendor_name: String,
    /// The operator's password as an argon2id hash (`wxvault hash-password` prints one). Without
    /// it the dashboard refuses every login.
    #[serde(default)]
    pub operator_password_hash: Option<String>,
    /// The integration new orgs connect through; its secret comes from WXVAULT_CLIENT_SECRET.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How to send that client secret: "form" or "basic".
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    /// How long an invite link stays usable.
    #[serde(default = "default_invite_ttl")]
    pub invite_ttl_hours: u64,
    /// How long an operator login lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// How often the keep-alive pass runs inside `serve` (it refreshes only what is due).
    #[serde(default = "default_keepalive_minutes")]
    pub keepalive_minutes: u64,
    /// Seconds a connection may take to send a request's headers (and may sit idle between
    /// requests) before `serve` closes it: slow or stalled clients cannot hold connections.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Connections `serve` holds open at once; further ones get a 503 and are closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Seconds `serve` and `worker` give in-flight jobs after SIGTERM before they are released
    /// back to the queue; then the process exits 0.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_vendor_name() -> String {
    "wxvault".into()
}
fn default_client_auth() -> String {
    "form".into()
}
fn default_invite_ttl() -> u64 {
    72
}
fn default_session_hours() -> u64 {
    12
}
fn default_keepalive_minutes() -> u64 {
    60
}
fn default_header_read_timeout_secs() -> u64 {
    15
}
fn default_max_connections() -> u64 {
    256
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            vendor_name: default_vendor_name(),
            operator_password_hash: None,
            client_id: None,
            client_auth: default_client_auth(),
            invite_ttl_hours: default_invite_ttl(),
            session_hours: default_session_hours(),
            keepalive_minutes: default_keepalive_minutes(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            max_connections: default_max_connections(),
            shutdown_grace_seconds: default_shutdown_grace_seconds(),
        }
    }
}

/// `[notify]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where notices are POSTed as JSON (needs_reauth, expiry warnings, missing scopes, sync
    /// failures). None: notices are only logged.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Re-connect link put into notices; `{org}` is replaced by the org's name.
    #[serde(default)]
    pub reconnect_url: Option<String>,
    /// Delivery attempts per notice (with backoff).
    #[serde(default = "default_notify_attempts")]
    pub attempts: u32,
}

fn default_notify_attempts() -> u32 {
    5
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            reconnect_url: None,
            attempts: default_notify_attempts(),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (default) or `postgres://user@host/db`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// PostgreSQL only: the schema holding wxvault's tables (default `wxvault`, created if
    /// missing); ignored for SQLite. Unset keeps an older deployment's tables in `public`.
    #[serde(default)]
    pub schema: Option<String>,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `file://path` (default `./wxvault-data/archive`), `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`.
    #[serde(default = "default_storage_url")]
    pub url: String,
    /// S3-compatible endpoint (MinIO, Ceph, …), a GCS emulator, or an Azure blob endpoint;
    /// the cloud's own when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local S3 implementations and emulators).
    #[serde(default)]
    pub allow_http: bool,
    /// Bodies above this size are uploaded in parts: a byte count, or a string such as
    /// `"16MiB"` (default 16 MiB).
    #[serde(default)]
    pub multipart_threshold: ByteSize,
    /// S3 server-side encryption: `"s3"` (SSE-S3) or `"kms"` (SSE-KMS with
    /// `sse_kms_key_id`); absent leaves it to the bucket.
    #[serde(default)]
    pub sse: Option<SseMode>,
    /// The KMS key (id, ARN or alias) for `sse = "kms"`.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
}

/// `[storage] sse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SseMode {
    /// SSE-S3: keys managed by S3.
    S3,
    /// SSE-KMS with `sse_kms_key_id`.
    Kms,
}

/// A size in bytes, written in the file as an integer or as a string with a unit
/// (`"16MiB"`, `"512 KiB"`, `"1GB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Default for ByteSize {
    fn default() -> Self {
        ByteSize(archive::DEFAULT_MULTIPART_THRESHOLD)
    }
}

impl ByteSize {
    /// Parses `"16MiB"`, `"16 MiB"`, `"16mb"`, `"1048576"`, `"1048576B"`.
    ///
    /// # Errors
    /// A message naming the accepted forms when `text` is none of them.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let bad = || {
            format!(
                "{text:?} is not a size; use a byte count or a number with B, KiB, MiB, GiB, KB, MB or GB"
            )
        };
        let number: u64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(bad()),
        };
        number.checked_mul(factor).map(ByteSize).ok_or_else(bad)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a byte count or a size such as \"16MiB\" (B, KiB, MiB, GiB, KB, MB, GB)",
            )
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `[webex]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebexConfig {
    /// OAuth and REST root; the simulator's URL in tests and the demo.
    #[serde(default = "default_webex_base")]
    pub api_base: String,
    /// Webex's request limit per integration client id (all processes on this state database
    /// together); requests are spaced to stay a little under it (see `engine::budget`).
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
}

/// `[wxcc]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WxccConfig {
    /// WxCC API root; `{region}` is replaced by each org's region.
    #[serde(default = "default_wxcc_base")]
    pub api_base: String,
    /// How long after a task was created a requested capture may still appear before it is
    /// reported missing.
    #[serde(default = "default_grace_hours")]
    pub capture_grace_hours: u64,
    /// Lifetime asked for capture links (1–60 minutes); links are used right after the query.
    #[serde(default = "default_url_expiration")]
    pub url_expiration_minutes: u32,
}

/// `[vault]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// File holding the base64 master key; `WXVAULT_MASTER_KEY` takes precedence.
    #[serde(default = "default_key_file")]
    pub master_key_file: String,
}

/// `[sync]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Captures queries (of up to 10 tasks) in flight per org.
    #[serde(default = "default_batches")]
    pub batch_concurrency: usize,
    /// Downloads in flight per captures batch.
    #[serde(default = "default_downloads")]
    pub downloads_per_batch: usize,
    /// Attempts per recording across runs before a transient problem becomes a failure.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// First run with no `--from`: look back this many hours.
    #[serde(default = "default_lookback")]
    pub first_lookback_hours: u64,
    /// Tasks created within this many days that settled without a capture (`missing`, or
    /// never requested) are asked about again, at most once a day each; 0 turns it off.
    #[serde(default = "default_rescan_days")]
    pub rescan_days: u64,
    /// An org's sync lease lasts this long unless renewed; a lease whose process died can be
    /// taken over after it.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// The running process renews its leases this often (less than `lease_ttl_secs`).
    #[serde(default = "default_lease_renew")]
    pub lease_renew_secs: u64,
}

fn default_db_url() -> String {
    format!("sqlite://{DEFAULT_DATA_DIR}/wxvault.db")
}
fn default_storage_url() -> String {
    format!("file://{DEFAULT_DATA_DIR}/archive")
}
fn default_webex_base() -> String {
    "https://webexapis.com".into()
}
fn default_requests_per_minute() -> u32 {
    300
}
fn default_wxcc_base() -> String {
    "https://api.wxcc-{region}.cisco.com".into()
}
fn default_grace_hours() -> u64 {
    48
}
fn default_url_expiration() -> u32 {
    30
}
fn default_key_file() -> String {
    format!("{DEFAULT_DATA_DIR}/master.key")
}
fn default_batches() -> usize {
    4
}
fn default_downloads() -> usize {
    4
}
fn default_max_attempts() -> i64 {
    5
}
fn default_lookback() -> u64 {
    24
}
fn default_rescan_days() -> u64 {
    7
}
fn default_lease_ttl() -> u64 {
    120
}
fn default_lease_renew() -> u64 {
    30
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            schema: None,
        }
    }
}
impl Default for StorageSection {
    fn default() -> Self {
        Self {
            url: default_storage_url(),
            endpoint: None,
            region: None,
            allow_http: false,
            multipart_threshold: ByteSize::default(),
            sse: None,
            sse_kms_key_id: None,
        }
    }
}
impl Default for WebexConfig {
    fn default() -> Self {
        Self {
            api_base: default_webex_base(),
            requests_per_minute: default_requests_per_minute(),
        }
    }
}
impl Default for WxccConfig {
    fn default() -> Self {
        Self {
            api_base: default_wxcc_base(),
            capture_grace_hours: default_grace_hours(),
            url_expiration_minutes: default_url_expiration(),
        }
    }
}
impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_key_file: default_key_file(),
        }
    }
}
impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            batch_concurrency: default_batches(),
            downloads_per_batch: default_downloads(),
            max_attempts: default_max_attempts(),
            first_lookback_hours: default_lookback(),
            rescan_days: default_rescan_days(),
            lease_ttl_secs: default_lease_ttl(),
            lease_renew_secs: default_lease_renew(),
        }
    }
}

/// A configuration problem: what, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `detail` names the line, column and key, never the line's text or a quoted value.
    #[error("config file {path} is not valid: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// `value` is already redacted: URLs lose userinfo and query string, secrets are hidden.
    #[error("config file {path}: {key} = {value:?} is not valid: {why}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: String,
    },
}

/// The file looked for in the working directory when neither `--config` nor `WXVAULT_CONFIG`
/// names one.
pub const LOCAL_CONFIG_FILE: &str = "wxvault.toml";

/// Which configuration file a command uses: the one named (`--config` / `WXVAULT_CONFIG`), else
/// `./wxvault.toml` when it exists, else none (built-in defaults).
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let local = Path::new(".").join(LOCAL_CONFIG_FILE);
            local.is_file().then_some(local)
        }
    }
}

/// Where and what a TOML error is, without the offending line or any quoted value: a webhook
/// token or a database password sits right there (the parser would quote both).
fn parse_detail(text: &str, e: &toml::de::Error) -> String {
    let message = hide_quoted(e.message());
    let Some(span) = e.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, column {column} (key `{k}`): {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}

/// `"…"` in place of every double-quoted part of a parser message.
fn hide_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push_str("\"…");
    }
    out
}

impl Config {
    /// Loads `path` (or the defaults when `None`), resolves relative paths and validates values.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key when the file is unreadable, is not TOML, has
    /// unknown keys or holds a value out of range.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let cfg = Config::default();
            cfg.validate(Path::new("(defaults)"))?;
            return Ok(cfg);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: parse_detail(&text, &e),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_relative(&base);
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Rewrites relative local paths so they are relative to `base` (the config file's folder).
    pub fn resolve_relative(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        if let Some(rest) = self.database.url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            self.database.url = format!("sqlite://{}", base.join(rest).display());
        }
        if let Some(rest) = self.storage.url.strip_prefix("file://")
            && !rest.starts_with('/')
        {
            self.storage.url = format!("file://{}", base.join(rest).display());
        }
        let key = Path::new(&self.vault.master_key_file);
        if key.is_relative() {
            self.vault.master_key_file = base.join(key).display().to_string();
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        // Every value goes through the URL redaction: a rejected value may be a URL that holds
        // a password or a token, and the message must not repeat it.
        let bad = |key: &'static str, value: &str, why: &str| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value: redact::redact_url(value),
            why: why.to_string(),
        };
        let db = &self.database.url;
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            match url::Url::parse(db) {
                Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
                Ok(_) => {
                    return Err(bad(
                        "database.url",
                        db,
                        "names no host; use postgres://USER@HOST/DB",
                    ));
                }
                Err(e) => {
                    return Err(bad(
                        "database.url",
                        db,
                        &format!("is not a URL ({e}); use postgres://USER@HOST/DB"),
                    ));
                }
            }
        } else if let Some(rest) = db.strip_prefix("sqlite:") {
            if rest.trim_start_matches('/').is_empty() {
                return Err(bad("database.url", db, "names no file; use sqlite://PATH"));
            }
        } else {
            return Err(bad(
                "database.url",
                db,
                "use sqlite://PATH or postgres://USER@HOST/DB",
            ));
        }
        let st = &self.storage.url;
        if !["file://", "s3://", "gs://", "az://"]
            .iter()
            .any(|scheme| st.starts_with(scheme))
        {
            return Err(bad(
                "storage.url",
                st,
                "use file://PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX",
            ));
        }
        self.validate_storage_extras(&bad)?;
        if let Some(e) = &self.storage.endpoint {
            match url::Url::parse(e) {
                // Credentials in the endpoint would end up in logs and error messages; they
                // belong in the environment the store reads (AWS_*, GOOGLE_*, AZURE_*).
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return Err(bad(
                        "storage.endpoint",
                        e,
                        "must not contain a user name or password; give the store's \
                         credentials through its environment variables (AWS_*, GOOGLE_*, AZURE_*)",
                    ));
                }
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                _ => {
                    return Err(bad(
                        "storage.endpoint",
                        e,
                        "must be an http(s) URL such as https://s3.example.com",
                    ));
                }
            }
        }
        for (key, value) in [
            ("webex.api_base", &self.webex.api_base),
            ("wxcc.api_base", &self.wxcc.api_base),
        ] {
            // Messages show the base without userinfo or query: that is where credentials hide.
            let shown = webex::http::display_url(value);
            let probe = value.replace("{region}", "us1");
            match url::Url::parse(&probe) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return Err(bad(
                        key,
                        &shown,
                        "must not contain user:password@ (credentials belong in the vault, not the URL)",
                    ));
                }
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && webex::http::is_loopback_url(&u) => {}
                Ok(u) if u.scheme() == "http" => {
                    return Err(bad(
                        key,
                        &shown,
                        "http:// is allowed only for loopback (127.0.0.0/8, ::1, localhost); use \
                         https:// so the bearer token and client secret are not sent in clear",
                    ));
                }
                _ => return Err(bad(key, &shown, "must be an http(s) URL")),
            }
        }
        if self.webex.requests_per_minute == 0 {
            return Err(bad(
                "webex.requests_per_minute",
                "0",
                "must be at least 1 (Webex allows 300 per client id by default)",
            ));
        }
        if !(1..=60).contains(&self.wxcc.url_expiration_minutes) {
            return Err(bad(
                "wxcc.url_expiration_minutes",
                &self.wxcc.url_expiration_minutes.to_string(),
                "Webex accepts 1 to 60 minutes",
            ));
        }
        if self.sync.batch_concurrency == 0 || self.sync.downloads_per_batch == 0 {
            return Err(bad("sync.*_concurrency", "0", "must be at least 1"));
        }
        if self.sync.lease_renew_secs == 0 || self.sync.lease_renew_secs >= self.sync.lease_ttl_secs
        {
            return Err(bad(
                "sync.lease_renew_secs",
                &self.sync.lease_renew_secs.to_string(),
                "must be at least 1 and less than sync.lease_ttl_secs",
            ));
        }
        if let Some(u) = &self.notify.webhook_url {
            match url::Url::parse(u) {
                Ok(p) if p.scheme() == "https" || p.scheme() == "http" => {}
                // Webhook URLs often carry their token in the path (not only in userinfo or
                // the query), so the rejected value is not repeated at all.
                _ => {
                    return Err(bad(
                        "notify.webhook_url",
                        "(hidden: it may hold a token)",
                        "must be an http(s) URL such as https://hooks.example.com/wxvault",
                    ));
                }
            }
        }
        let serve = &self.serve;
        if serve.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "serve.listen",
                &serve.listen,
                "use IP:PORT, e.g. 127.0.0.1:8080",
            ));
        }
        if let Some(u) = &serve.public_url {
            match url::Url::parse(u) {
                Ok(p)
                    if (p.scheme() == "https" || p.scheme() == "http")
                        && p.query().is_none()
                        && p.username().is_empty()
                        && p.password().is_none()
                        && p.path() == "/" => {}
                _ => {
                    return Err(bad(
                        "serve.public_url",
                        u,
                        "must be an http(s) origin such as https://vault.example.com (no user, path or query)",
                    ));
                }
            }
        }
        if !matches!(serve.client_auth.as_str(), "form" | "basic") {
            return Err(bad(
                "serve.client_auth",
                &serve.client_auth,
                "use \"form\" or \"basic\"",
            ));
        }
        if let Some(h) = &serve.operator_password_hash
            && !h.starts_with("$argon2")
        {
            // Never echo what was there: it may be a plaintext password put in by mistake.
            return Err(bad(
                "serve.operator_password_hash",
                "(hidden)",
                "must be an argon2 hash; create one with `wxvault hash-password`",
            ));
        }
        for (key, v) in [
            ("serve.invite_ttl_hours", serve.invite_ttl_hours),
            ("serve.session_hours", serve.session_hours),
            ("serve.keepalive_minutes", serve.keepalive_minutes),
        ] {
            if v == 0 || v > 24 * 365 {
                return Err(bad(key, &v.to_string(), "must be between 1 and 8760"));
            }
        }
        for checked in [
            self.calling.check(),
            self.schedule.check(),
            self.worker.check(),
        ] {
            if let Err((key, value, why)) = checked {
                return Err(bad(key, &value, &why));
            }
        }
        if serve.shutdown_grace_seconds > 3600 {
            return Err(bad(
                "serve.shutdown_grace_seconds",
                &serve.shutdown_grace_seconds.to_string(),
                "must be between 0 and 3600",
            ));
        }
        if self.sync.rescan_days > 3650 {
            return Err(bad(
                "sync.rescan_days",
                &self.sync.rescan_days.to_string(),
                "must be between 0 and 3650",
            ));
        }
        if !(1..=300).contains(&serve.header_read_timeout_secs) {
            return Err(bad(
                "serve.header_read_timeout_secs",
                &serve.header_read_timeout_secs.to_string(),
                "must be between 1 and 300",
            ));
        }
        if !(1..=100_000).contains(&serve.max_connections) {
            return Err(bad(
                "serve.max_connections",
                &serve.max_connections.to_string(),
                "must be between 1 and 100000",
            ));
        }
        if self.sync.max_attempts < 1 {
            return Err(bad(
                "sync.max_attempts",
                &self.sync.max_attempts.to_string(),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// `[storage]` multipart threshold and server-side encryption: in range, and the KMS key id
    /// given exactly when `sse = "kms"`, on an `s3://` archive.
    fn validate_storage_extras(
        &self,
        bad: &dyn Fn(&'static str, &str, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let st = &self.storage;
        let threshold = st.multipart_threshold.0;
        if !(archive::MIN_MULTIPART_THRESHOLD..=archive::MAX_MULTIPART_THRESHOLD)
            .contains(&threshold)
        {
            return Err(bad(
                "storage.multipart_threshold",
                &threshold.to_string(),
                "must be between 1 MiB and 64 MiB (bytes, or a size such as \"16MiB\")",
            ));
        }
        let key_id = st
            .sse_kms_key_id
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        match (st.sse, key_id) {
            (Some(SseMode::Kms), None) => {
                return Err(bad(
                    "storage.sse_kms_key_id",
                    "",
                    "is required with sse = \"kms\"; set it to the KMS key id, ARN or alias",
                ));
            }
            (Some(SseMode::S3) | None, Some(k)) => {
                return Err(bad(
                    "storage.sse_kms_key_id",
                    k,
                    "is only used with sse = \"kms\"; set sse = \"kms\" or remove it",
                ));
            }
            _ => {}
        }
        if st.sse.is_some() && !st.url.starts_with("s3://") {
            return Err(bad(
                "storage.sse",
                match st.sse {
                    Some(SseMode::Kms) => "kms",
                    _ => "s3",
                },
                "applies to s3:// archives only (Google Cloud Storage and Azure encrypt at rest \
                 by default); remove it",
            ));
        }
        Ok(())
    }

    /// The archive crate's view of `[storage]`.
    pub fn storage_config(&self) -> archive::StorageConfig {
        let st = &self.storage;
        let mut cfg = archive::StorageConfig::new(st.url.clone());
        cfg.endpoint = st.endpoint.clone();
        cfg.region = st.region.clone();
        cfg.allow_http = st.allow_http;
        cfg.multipart_threshold = st.multipart_threshold.0;
        cfg.sse = match st.sse {
            None => None,
            Some(SseMode::S3) => Some(archive::Sse::S3),
            Some(SseMode::Kms) => Some(archive::Sse::Kms {
                key_id: st
                    .sse_kms_key_id
                    .clone()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            }),
        };
        cfg
    }

    /// Serializes the configuration back to TOML (used by `demo` to leave its config behind).
    ///
    /// # Errors
    /// Only if serialization fails, which would be a bug.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod api_base_tests {
    use super::*;

    fn check(webex: &str, wxcc: &str) -> Result<(), ConfigError> {
        let mut cfg = Config::default();
        cfg.webex.api_base = webex.to_owned();
        cfg.wxcc.api_base = wxcc.to_owned();
        cfg.validate(Path::new("wxvault.toml"))
    }

    #[test]
    fn http_api_bases_are_refused_unless_loopback() {
        let https = "https://webexapis.com/";
        let wxcc = "https://api.wxcc-{region}.cisco.com/";
        check(https, wxcc).unwrap();
        for ok in [
            "http://127.0.0.1:9/",
            "http://127.0.0.2/sim",
            "http://[::1]:8080/",
            "http://localhost:8080/",
        ] {
            check(ok, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (webex, wxcc_base, key) in [
            ("http://webexapis.com/", wxcc, "webex.api_base"),
            (
                https,
                "http://api.wxcc-{region}.cisco.com/",
                "wxcc.api_base",
            ),
            ("http://10.0.0.5:8080/", wxcc, "webex.api_base"),
            ("http://localhost.evil.example/", wxcc, "webex.api_base"),
        ] {
            let msg = check(webex, wxcc_base).unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(
                msg.contains("https://") && msg.contains("loopback"),
                "{msg}"
            );
        }
    }

    #[test]
    fn api_base_errors_never_echo_userinfo_or_query() {
        let wxcc = "https://api.wxcc-{region}.cisco.com/";
        for bad in [
            "http://admin:hunter2pw@webexapis.com/?access_token=TOKSECRET",
            "https://admin:hunter2pw@webexapis.com/",
            "http://webexapis.com/?access_token=TOKSECRET",
            "ftp://admin:hunter2pw@webexapis.com/?access_token=TOKSECRET",
            "not a url hunter2pw@x?access_token=TOKSECRET",
        ] {
            let msg = check(bad, wxcc).unwrap_err().to_string();
            assert!(msg.contains("webex.api_base"), "{msg}");
            assert!(!msg.contains("hunter2pw"), "{msg}");
            assert!(!msg.contains("TOKSECRET"), "{msg}");
        }
    }
}

#[cfg(test)]
mod parse_error_tests {
    use super::*;

    /// A syntax or type error on a line holding a secret names the line and key, never the text.
    #[test]
    fn parse_errors_never_quote_the_offending_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxvault.toml");
        for text in [
            "[notify]\nwebhook_url = \"https://hooks.example.com/T0KEN-s3cret\" x\n",
            "[notify]\nwebhook_url = 7\nattempts = \"https://hooks.example.com/T0KEN-s3cret\"\n",
            "[database]\nurl = \"postgres://u:T0KEN-s3cret@db/x\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(!msg.contains("T0KEN"), "{msg}");
            assert!(msg.contains("line "), "{msg}");
        }
        std::fs::write(&path, "[notify]\nattempts = \"five\"\n").unwrap();
        let msg = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            msg.contains("line 2") && msg.contains("key `attempts`"),
            "{msg}"
        );
        assert!(!msg.contains("five"), "{msg}");
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxvault.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    #[test]
    fn multipart_threshold_takes_bytes_or_a_size() {
        let cfg = load("[storage]\nurl = \"s3://b/p\"\n").unwrap();
        assert_eq!(cfg.storage_config().multipart_threshold, 16 * 1024 * 1024);
        for (value, bytes) in [
            ("5242880", 5 * 1024 * 1024),
            ("\"16MiB\"", 16 * 1024 * 1024),
            ("\"8 MiB\"", 8 * 1024 * 1024),
            ("\"2mb\"", 2_000_000),
            ("\"1GiB\"", 1 << 30),
        ] {
            let text = format!("[storage]\nurl = \"gs://b\"\nmultipart_threshold = {value}\n");
            match load(&text) {
                Ok(cfg) => assert_eq!(cfg.storage.multipart_threshold.0, bytes, "{value}"),
                // 1 GiB is above the limit: refused with the key named.
                Err(e) => {
                    assert_eq!(bytes, 1 << 30, "{value}: {e}");
                    assert!(e.to_string().contains("storage.multipart_threshold"), "{e}");
                }
            }
        }
        for bad in ["\"16 parsecs\"", "\"MiB\"", "-1", "1024"] {
            let text = format!("[storage]\nurl = \"gs://b\"\nmultipart_threshold = {bad}\n");
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains("multipart_threshold"), "{bad}: {e}");
        }
    }

    #[test]
    fn sse_needs_its_key_id_exactly_for_kms() {
        let cfg = load("[storage]\nurl = \"s3://b\"\nsse = \"s3\"\n").unwrap();
        assert_eq!(cfg.storage_config().sse, Some(archive::Sse::S3));
        let cfg = load(
            "[storage]\nurl = \"s3://b\"\nsse = \"kms\"\nsse_kms_key_id = \"alias/archive\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.storage_config().sse,
            Some(archive::Sse::Kms {
                key_id: "alias/archive".into()
            })
        );
        assert_eq!(
            load("[storage]\nurl = \"s3://b\"\n")
                .unwrap()
                .storage_config()
                .sse,
            None
        );

        for (text, key) in [
            ("sse = \"kms\"\n", "storage.sse_kms_key_id"),
            (
                "sse = \"kms\"\nsse_kms_key_id = \" \"\n",
                "storage.sse_kms_key_id",
            ),
            (
                "sse = \"s3\"\nsse_kms_key_id = \"k1\"\n",
                "storage.sse_kms_key_id",
            ),
            ("sse_kms_key_id = \"k1\"\n", "storage.sse_kms_key_id"),
        ] {
            let e = load(&format!("[storage]\nurl = \"s3://b\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("kms"), "{text}: {e}");
        }
        let e = load("[storage]\nurl = \"s3://b\"\nsse = \"aes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sse"), "{e}");
        let e = load("[storage]\nurl = \"az://c\"\nsse = \"s3\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.sse") && e.contains("s3://"), "{e}");
    }

    #[test]
    fn cloud_schemes_are_accepted_and_others_named() {
        for url in ["gs://bucket/p", "az://container", "s3://b", "file://x"] {
            load(&format!("[storage]\nurl = \"{url}\"\n")).unwrap();
        }
        let e = load("[storage]\nurl = \"ftp://u:pw@h/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gs://") && e.contains("az://"), "{e}");
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
        let e = load(
            "[storage]\nurl = \"s3://b\"\nendpoint = \"https://AKIAX:hunter2@s3.example.com\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("storage.endpoint") && e.contains("user name"),
            "{e}"
        );
        assert!(!e.contains("hunter2") && !e.contains("AKIAX"), "{e}");
        load("[storage]\nurl = \"s3://b\"\nendpoint = \"https://s3.example.com\"\n").unwrap();
    }
}
