//! Per-host circuit breaker for connection failures.
//!
//! When a Webex host is down, every request would otherwise spend its whole retry budget
//! (and log a warning per retry) before the next one does the same. [`HostHealth`] counts
//! consecutive connection failures per host across all concurrent requests that share it;
//! after [`HostHealth::threshold`] of them it opens, logs one warning, and fails further
//! requests to that host at once with [`Error::HostUnreachable`] until the cool-down lets a
//! probe through. Any HTTP response (whatever its status) proves the host reachable and closes
//! it again, with one more log line.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// Consecutive connection failures after which a host is considered down.
pub const DEFAULT_THRESHOLD: u32 = 5;

/// How long an open breaker refuses requests before letting one probe through.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(60);

/// Connection health of every host a run talks to; share one per run (see
/// [`crate::http::RateGates`], which hands the same instance to all of its gates).
#[derive(Debug)]
pub struct HostHealth {
    threshold: u32,
    cool_down: Duration,
    hosts: Mutex<HashMap<String, HostState>>,
}

#[derive(Debug, Default)]
struct HostState {
    /// Consecutive connection failures since the last response.
    failures: u32,
    /// When the current run of failures began.
    since: Option<Instant>,
    /// Set while the breaker is open (and kept while a probe is in flight after the cool-down).
    open: Option<Open>,
    /// Last transport error, for the message.
    last_error: String,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    until: Instant,
}

impl Default for HostHealth {
    fn default() -> Self {
        HostHealth::new(DEFAULT_THRESHOLD, DEFAULT_COOL_DOWN)
    }
}

impl HostHealth {
    /// A breaker opening after `threshold` (at least 1) consecutive connection failures and
    /// staying open for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        HostHealth {
            threshold: threshold.max(1),
            cool_down,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Consecutive failures that open the breaker.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request to `host` may be sent now.
    ///
    /// # Errors
    ///
    /// [`Error::HostUnreachable`] while the breaker for `host` is open.
    pub fn admit(&self, host: &str) -> Result<(), Error> {
        let hosts = self.lock();
        match hosts.get(host) {
            Some(st) if st.open.is_some_and(|o| Instant::now() < o.until) => {
                Err(unreachable(host, st))
            }
            _ => Ok(()),
        }
    }

    /// Records a connection failure to `host`; returns the error to give up with when this
    /// failure opened (or re-opened) the breaker.
    pub fn failed(&self, host: &str, message: &str) -> Option<Error> {
        let now = Instant::now();
        let mut hosts = self.lock();
        let st = hosts.entry(host.to_owned()).or_default();
        st.failures = st.failures.saturating_add(1);
        st.since.get_or_insert(now);
        message.clone_into(&mut st.last_error);
        if st.open.is_some() {
            // A probe after the cool-down failed: stay open, no new log line.
            st.open = Some(Open {
                until: now + self.cool_down,
            });
            return Some(unreachable(host, st));
        }
        if st.failures < self.threshold {
            return None;
        }
        st.open = Some(Open {
            until: now + self.cool_down,
        });
        let err = unreachable(host, st);
        tracing::warn!(host, attempts = st.failures, "{err}");
        Some(err)
    }

    /// Records that `host` answered (any HTTP status): closes its breaker.
    pub fn succeeded(&self, host: &str) {
        let mut hosts = self.lock();
        if let Some(st) = hosts.remove(host)
            && st.open.is_some()
        {
            tracing::warn!(host, "{host} answers again; requests to it resume");
        }
    }
}

fn unreachable(host: &str, st: &HostState) -> Error {
    Error::HostUnreachable {
        host: host.to_owned(),
        attempts: st.failures,
        spent: st.since.map(|s| s.elapsed()).unwrap_or_default(),
        last_error: st.last_error.clone(),
    }
}

/// `host[:port]` of a URL: the key the breaker counts by and the name messages use.
pub(crate) fn host_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("(no host)");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_closes_on_success() {
        let h = HostHealth::new(3, Duration::from_secs(60));
        assert!(h.admit("api.example:443").is_ok());
        assert!(h.failed("api.example:443", "could not connect").is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.failed("api.example:443", "could not connect").is_none());
        // Another host is counted apart.
        assert!(h.failed("other.example", "x").is_none());
        let err = h.failed("api.example:443", "could not connect").unwrap();
        assert!(matches!(err, Error::HostUnreachable { attempts: 3, .. }));
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.is_host_unreachable());
        let msg = err.to_string();
        for part in [
            "api.example:443",
            "3 ",
            "2.0 s",
            "api_base",
            "region",
            "network",
        ] {
            assert!(msg.contains(part), "{part:?} missing in {msg}");
        }
        // Open: refused at once, for every request.
        assert!(matches!(
            h.admit("api.example:443"),
            Err(Error::HostUnreachable { .. })
        ));
        assert!(h.admit("other.example").is_ok());
        // After the cool-down one probe may go; its failure re-opens without a new count reset.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(h.admit("api.example:443").is_ok());
        assert!(h.failed("api.example:443", "again").is_some());
        assert!(h.admit("api.example:443").is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        h.succeeded("api.example:443");
        assert!(h.admit("api.example:443").is_ok());
        assert!(
            h.failed("api.example:443", "x").is_none(),
            "success reset the count"
        );
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let h = HostHealth::new(2, Duration::from_secs(60));
        assert!(h.failed("h", "x").is_none());
        h.succeeded("h");
        assert!(h.failed("h", "x").is_none());
        assert!(h.failed("h", "x").is_some());
    }
}
