//! `[calling]` in `wxvault.toml`: how Webex Calling converged recordings are harvested.

use serde::{Deserialize, Serialize};

/// `[calling]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingConfig {
    /// `serviceType` values listed, one list sweep each (`calling`, `customerAssist`).
    #[serde(default = "default_service_types")]
    pub service_types: Vec<String>,
    /// Listing windows are at most this many days (Webex allows 30).
    #[serde(default = "default_window_days")]
    pub window_days: u64,
    /// Link hosts (the host itself or a subdomain of it) that may receive the bearer token
    /// when a download link refuses a request without one.
    #[serde(default = "default_bearer_hosts")]
    pub bearer_hosts: Vec<String>,
    /// How long after wxvault first asked for a recording's metadata it may still answer "not
    /// ready" before the sidecar is written without it.
    #[serde(default = "default_metadata_grace_hours")]
    pub metadata_grace_hours: u64,
    /// Also archive `purged` recordings (visible to compliance officers only).
    #[serde(default)]
    pub include_purged: bool,
    /// Also archive the transcript when Webex offers one.
    #[serde(default)]
    pub transcripts: bool,
}

fn default_service_types() -> Vec<String> {
    vec!["calling".into()]
}
fn default_window_days() -> u64 {
    1
}
fn default_bearer_hosts() -> Vec<String> {
    vec!["webex.com".into()]
}
fn default_metadata_grace_hours() -> u64 {
    24
}

impl Default for CallingConfig {
    fn default() -> Self {
        CallingConfig {
            service_types: default_service_types(),
            window_days: default_window_days(),
            bearer_hosts: default_bearer_hosts(),
            metadata_grace_hours: default_metadata_grace_hours(),
            include_purged: false,
            transcripts: false,
        }
    }
}

/// Service types Webex documents for the converged recordings list.
pub const SERVICE_TYPES: &[&str] = &["calling", "customerAssist"];

impl CallingConfig {
    /// Checks the section; the error names the key, what was there and what is allowed.
    ///
    /// # Errors
    /// `(key, value, why)` of the first bad value.
    pub fn check(&self) -> Result<(), (&'static str, String, String)> {
        if self.service_types.is_empty() {
            return Err((
                "calling.service_types",
                "[]".into(),
                "name at least one of calling, customerAssist".into(),
            ));
        }
        for t in &self.service_types {
            if !SERVICE_TYPES.contains(&t.as_str()) {
                return Err((
                    "calling.service_types",
                    t.clone(),
                    "allowed: calling, customerAssist".into(),
                ));
            }
        }
        if !(1..=30).contains(&self.window_days) {
            return Err((
                "calling.window_days",
                self.window_days.to_string(),
                "must be between 1 and 30 (Webex lists at most 30 days at once)".into(),
            ));
        }
        for h in &self.bearer_hosts {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err((
                    "calling.bearer_hosts",
                    h.clone(),
                    "must be host names such as webex.com (no scheme, port or path)".into(),
                ));
            }
        }
        if self.metadata_grace_hours > 24 * 365 {
            return Err((
                "calling.metadata_grace_hours",
                self.metadata_grace_hours.to_string(),
                "must be between 0 and 8760".into(),
            ));
        }
        Ok(())
    }
}
