//! HTTP plumbing shared by every Webex call: the client, the retry policy, `Retry-After`
//! parsing, the per-client-id rate gate and the per-host connection breaker it carries.
//!
//! Webex rate limits belong to the integration's client id, not to an org (webex-api.md §2.10),
//! so all orgs connected through one integration must share one [`RateGate`]; [`RateGates`] is
//! the registry that hands out that shared gate. Several processes share a client id's limit
//! too: a registry given a [`SharedBudget`] ([`RateGates::with_budget`]) has every gate take a
//! request slot from it before each send and report every 429 to it, so the processes together
//! stay under the limit and all wait out a `Retry-After` any one of them was given. This crate
//! only defines the seam; the engine implements it on its state database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;

use crate::health::HostHealth;

/// Builds the `reqwest::Client` every Webex call should use.
///
/// rustls, redirects disabled (Webex never redirects APIs, and a redirect to another host must
/// not carry the bearer token), a 10 s connect timeout and a 60 s read timeout but no total
/// timeout, so multi-gigabyte media downloads are bounded only by progress, gzip, and a
/// `wxvault/<version>` user agent.
///
/// # Panics
///
/// Panics if the TLS backend cannot be initialised, exactly like `reqwest::Client::new`.
pub fn build_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .gzip(true)
        .user_agent(concat!("wxvault/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("TLS backend initialisation failed")
}

/// Whether `url` points at this machine: `localhost`, 127.0.0.0/8 or `::1`.
///
/// Only such bases may use plain `http://` (the simulator, a local proxy); anything else would
/// carry the bearer token and the client secret in clear.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL-ish text for messages: scheme, host, port and path only — never userinfo, query or
/// fragment, which is where credentials travel. Unparseable text is cut the same way.
pub fn display_url(text: &str) -> String {
    if let Ok(u) = url::Url::parse(text) {
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        return format!(
            "{}://{}{port}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        );
    }
    let cut = text.split(['?', '#']).next().unwrap_or("");
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}{path}")
        }
        None => cut.rsplit('@').next().unwrap_or("").to_owned(),
    }
}

/// How often and how long to retry transient failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request, including the first (429s and 5xx both count).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub base_delay: Duration,
    /// Cap on one backoff delay.
    pub max_delay: Duration,
    /// Wait used when a 429 has no usable `Retry-After` (what the official samples sleep).
    pub default_retry_after: Duration,
    /// Cap on any server-requested wait.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            default_retry_after: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `attempt` (1-based): exponential, capped, with "equal
    /// jitter" (half fixed, half random) so that many clients do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let raw = self
            .base_delay
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let half = raw / 2;
        half + random_up_to(raw - half)
    }

    /// The wait to honour for a `Retry-After` header value (`None` when absent): parsed,
    /// defaulted when absent or garbage, and clamped to `max_retry_after`.
    pub fn retry_after_from_header(&self, value: Option<&str>) -> Duration {
        value
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .unwrap_or(self.default_retry_after)
            .min(self.max_retry_after)
    }
}

/// A uniformly random duration in `[0, max]`.
pub(crate) fn random_up_to(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}

/// Parses a `Retry-After` value: integer (or decimal) seconds, or an HTTP-date relative to `now`.
///
/// Returns `None` for anything else (e.g. the `rand(30),add(30)` Webex has been seen sending,
/// or negative numbers); the caller then uses [`RetryPolicy::default_retry_after`]. A date in
/// the past yields zero. The result is not clamped: that is the caller's job.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && v.bytes().filter(|&b| b == b'.').count() == 1
    {
        let secs: f64 = v.parse().ok()?;
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A per-client-id request budget shared with other processes.
///
/// [`RateGate::ready`] asks it for a slot before every API request (media downloads never get
/// here: they are outside the API limit), and a 429 is reported to it with the `Retry-After`,
/// so every process holding the same budget pauses that client id. Implementations decide how
/// the slots are shared (the engine keeps them in its state database) and deal with their own
/// failures: these methods cannot fail, because a budget that is unavailable must neither stop
/// API calls nor be mistaken for a Webex error.
#[async_trait::async_trait]
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Takes one request slot of `client_id` and says when it may be used.
    async fn reserve(&self, client_id: &str) -> Reservation;

    /// How long `client_id` stays paused by a `Retry-After` from now (zero when it is not).
    async fn paused_for(&self, client_id: &str) -> Duration;

    /// Notes a 429 for `client_id`: nobody may send for it during `retry_after` from now
    /// (never shortens a pause already noted).
    async fn pause(&self, client_id: &str, retry_after: Duration);
}

/// When a slot taken from a [`SharedBudget`] may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    /// Wait this long before sending (zero: send now).
    pub wait: Duration,
    /// Whether the wait comes from a `Retry-After` pause rather than from the rate (waiters
    /// then add jitter so that they do not all come back in the same instant).
    pub paused: bool,
}

/// Blocks every request for one client id while Webex has told any of them to back off.
///
/// Driven only by 429s: a request that sees `429 + Retry-After` calls [`RateGate::block_for`],
/// and every request going through the same gate then waits in [`RateGate::ready`] until the
/// deadline. Waiters wake with a little random jitter (up to 10% of the block, at most 1 s) so
/// they do not stampede the API the moment the block lifts.
///
/// A gate also carries the run's [`HostHealth`], so every request that waits at a gate is
/// refused at once while its host is known to be down.
///
/// With a [`SharedBudget`] (from [`RateGates::with_budget`]) the gate also takes a slot of
/// its client id's budget before every request, and a 429 pauses the client id there too.
#[derive(Debug, Default)]
pub struct RateGate {
    state: Mutex<GateState>,
    health: Arc<HostHealth>,
    shared: Option<SharedGate>,
}

/// The shared budget a gate consults, and the client id it asks for.
#[derive(Debug, Clone)]
struct SharedGate {
    budget: Arc<dyn SharedBudget>,
    client_id: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct GateState {
    until: Option<Instant>,
    jitter: Duration,
}

impl RateGate {
    /// A new, open gate with its own [`HostHealth`].
    pub fn new() -> Self {
        RateGate::default()
    }

    /// A new, open gate sharing `health` with other gates.
    pub fn with_health(health: Arc<HostHealth>) -> Self {
        RateGate {
            state: Mutex::default(),
            health,
            shared: None,
        }
    }

    /// A new, open gate for `client_id` that also takes every request's slot from `budget`
    /// and reports 429s to it.
    pub fn with_budget(
        health: Arc<HostHealth>,
        budget: Arc<dyn SharedBudget>,
        client_id: &str,
    ) -> Self {
        RateGate {
            state: Mutex::default(),
            health,
            shared: Some(SharedGate {
                budget,
                client_id: client_id.to_owned(),
            }),
        }
    }

    /// The connection breaker requests through this gate report to.
    pub fn health(&self) -> &Arc<HostHealth> {
        &self.health
    }

    /// Waits until the gate is open and, with a [`SharedBudget`], until the slot it took for
    /// this request is due. Returns at once when nothing holds the request back.
    ///
    /// After waiting for a slot it asks the budget once more whether a 429 paused the client
    /// id meanwhile (in this process or another); if so it waits that out and takes a new slot.
    /// A request therefore costs one budget round trip, two when it had to wait.
    pub async fn ready(&self) {
        loop {
            self.local_ready().await;
            let Some(shared) = &self.shared else { return };
            let slot = shared.budget.reserve(&shared.client_id).await;
            if slot.wait.is_zero() {
                return;
            }
            let jitter = if slot.paused {
                random_up_to((slot.wait / 10).min(Duration::from_secs(1)))
            } else {
                Duration::ZERO
            };
            tokio::time::sleep(slot.wait + jitter).await;
            let paused = shared.budget.paused_for(&shared.client_id).await;
            if paused.is_zero() && self.blocked_for().is_zero() {
                return;
            }
            // Paused while we waited: wait it out (with jitter), then take a fresh slot.
            tokio::time::sleep(paused + random_up_to((paused / 10).min(Duration::from_secs(1))))
                .await;
        }
    }

    /// Waits until neither this process's gate nor (with a [`SharedBudget`]) a 429 pause of
    /// the client id holds requests back, without taking a slot. For work that must not
    /// start waiting once begun (a token refresh holding a lease waits here before taking it).
    pub async fn wait_unpaused(&self) {
        loop {
            self.local_ready().await;
            let Some(shared) = &self.shared else { return };
            let paused = shared.budget.paused_for(&shared.client_id).await;
            if paused.is_zero() {
                return;
            }
            tokio::time::sleep(paused + random_up_to((paused / 10).min(Duration::from_secs(1))))
                .await;
        }
    }

    /// Notes a 429 whose `Retry-After` is `d`: closes this gate and, with a [`SharedBudget`],
    /// pauses the client id for every process sharing it.
    pub async fn rate_limited(&self, d: Duration) {
        self.block_for(d);
        if let Some(shared) = &self.shared {
            shared.budget.pause(&shared.client_id, d).await;
        }
    }

    /// Waits until this process's gate is open (the 429s this process has seen).
    async fn local_ready(&self) {
        loop {
            let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
            let Some(until) = state.until else { return };
            let now = Instant::now();
            if now >= until {
                return;
            }
            let deadline = until + random_up_to(state.jitter);
            tokio::time::sleep_until(deadline).await;
            // Loop: another 429 may have extended the block while we slept.
            let after = *self.state.lock().unwrap_or_else(|e| e.into_inner());
            if after.until.is_none_or(|u| u <= until) {
                return;
            }
        }
    }

    /// Closes the gate for `d` from now (never shortens an existing block).
    pub fn block_for(&self, d: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(d)
            .unwrap_or(now + Duration::from_secs(86_400));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.until.is_none_or(|u| u < until) {
            state.until = Some(until);
            state.jitter = (d / 10).min(Duration::from_secs(1));
        }
    }

    /// How long the gate stays closed from now (zero when open).
    pub fn blocked_for(&self) -> Duration {
        let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::ZERO)
    }
}

/// Registry of [`RateGate`]s keyed by client id; clones share the same gates, and all gates
/// of one registry share one [`HostHealth`] (a host that is down is down for every org) and,
/// when set, one [`SharedBudget`].
#[derive(Debug, Default, Clone)]
pub struct RateGates {
    gates: Arc<Mutex<HashMap<String, Arc<RateGate>>>>,
    health: Arc<HostHealth>,
    budget: Option<Arc<dyn SharedBudget>>,
}

impl RateGates {
    /// An empty registry whose gates report to `health`.
    pub fn with_health(health: HostHealth) -> Self {
        RateGates {
            gates: Arc::default(),
            health: Arc::new(health),
            budget: None,
        }
    }

    /// This registry, with every gate created from now on taking its slots from `budget`
    /// (shared with other processes). Set it before handing out gates.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<dyn SharedBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The gate for `client_id`, created on first use.
    pub fn gate(&self, client_id: &str) -> Arc<RateGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(client_id.to_owned())
            .or_insert_with(|| {
                Arc::new(match &self.budget {
                    Some(b) => RateGate::with_budget(self.health.clone(), b.clone(), client_id),
                    None => RateGate::with_health(self.health.clone()),
                })
            })
            .clone()
    }

    /// The connection breaker shared by every gate of this registry.
    pub fn health(&self) -> &Arc<HostHealth> {
        &self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // 2015-10-21T07:28:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn loopback_urls_and_display_without_credentials() {
        for u in [
            "http://127.0.0.1:9/",
            "http://127.1.2.3/",
            "http://[::1]:8080/x",
            "http://localhost/",
            "http://LOCALHOST:1/",
        ] {
            assert!(is_loopback_url(&url::Url::parse(u).unwrap()), "{u}");
        }
        for u in [
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "http://128.0.0.1/",
            "https://webexapis.com/",
            "http://[::2]/",
            "file:///tmp/x",
        ] {
            assert!(!is_loopback_url(&url::Url::parse(u).unwrap()), "{u}");
        }
        assert_eq!(
            display_url("http://user:pw@api.example.com:8443/v1/?token=abc#f"),
            "http://api.example.com:8443/v1/"
        );
        assert_eq!(
            display_url("http://user:pw@api example/v1?token=abc"),
            "http://api example/v1"
        );
        assert_eq!(display_url("pw@host?q=1"), "host");
    }

    #[test]
    fn retry_after_integer_and_decimal_seconds() {
        assert_eq!(parse_retry_after("4", now()), Some(Duration::from_secs(4)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_http_date() {
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for v in [
            "rand(30),add(30)",
            "",
            "  ",
            "-5",
            "soon",
            "1.2.3",
            "5s",
            "1e3",
        ] {
            assert_eq!(parse_retry_after(v, now()), None, "{v:?}");
        }
    }

    #[test]
    fn policy_defaults_and_clamps() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 6);
        assert_eq!(p.retry_after_from_header(None), Duration::from_secs(60));
        assert_eq!(
            p.retry_after_from_header(Some("rand(30),add(30)")),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.retry_after_from_header(Some("100000")),
            Duration::from_secs(300)
        );
        assert_eq!(p.retry_after_from_header(Some("4")), Duration::from_secs(4));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b40 = p.backoff(40);
            assert!(b40 >= Duration::from_millis(250) && b40 <= Duration::from_millis(500));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_blocks_every_waiter_until_deadline() {
        let gates = RateGates::default();
        let gate = gates.gate("C1");
        assert!(Arc::ptr_eq(&gate, &gates.clone().gate("C1")));
        assert!(!Arc::ptr_eq(&gate, &gates.gate("C2")));

        // Open gate: no wait at all.
        let t0 = Instant::now();
        gate.ready().await;
        assert_eq!(Instant::now(), t0);

        gate.block_for(Duration::from_secs(10));
        // A shorter block never shortens the existing one.
        gate.block_for(Duration::from_secs(1));
        let other = gates.gate("C1");
        let waiter = tokio::spawn(async move {
            other.ready().await;
            Instant::now()
        });
        gate.ready().await;
        let woke = waiter.await.unwrap();
        for t in [Instant::now(), woke] {
            let waited = t - t0;
            assert!(waited >= Duration::from_secs(10), "{waited:?}");
            assert!(waited <= Duration::from_secs(11), "{waited:?}");
        }
        // The other client id was never blocked.
        let t1 = Instant::now();
        gates.gate("C2").ready().await;
        assert_eq!(Instant::now(), t1);
    }

    /// A budget kept in memory, as several processes sharing one database would see it.
    #[derive(Debug, Default)]
    struct FakeBudget {
        /// Per reservation: how long to wait (then consumed in order; zero when exhausted).
        waits: Mutex<std::collections::VecDeque<Duration>>,
        /// Paused until (tokio time).
        paused_until: Mutex<Option<Instant>>,
        reserved: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SharedBudget for FakeBudget {
        async fn reserve(&self, client_id: &str) -> Reservation {
            assert_eq!(client_id, "C1");
            self.reserved
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let paused = self.paused_for(client_id).await;
            let wait = self.waits.lock().unwrap().pop_front().unwrap_or_default();
            Reservation {
                wait: wait.max(paused),
                paused: !paused.is_zero(),
            }
        }

        async fn paused_for(&self, _client_id: &str) -> Duration {
            self.paused_until
                .lock()
                .unwrap()
                .map(|u| u.saturating_duration_since(Instant::now()))
                .unwrap_or_default()
        }

        async fn pause(&self, _client_id: &str, retry_after: Duration) {
            let until = Instant::now() + retry_after;
            let mut p = self.paused_until.lock().unwrap();
            if p.is_none_or(|u| u < until) {
                *p = Some(until);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_waits_for_its_shared_budget_slot() {
        let budget = Arc::new(FakeBudget::default());
        budget
            .waits
            .lock()
            .unwrap()
            .extend([Duration::ZERO, Duration::from_secs(3)]);
        let gates = RateGates::default().with_budget(budget.clone());
        let gate = gates.gate("C1");
        let t0 = Instant::now();
        gate.ready().await;
        assert_eq!(Instant::now(), t0, "a slot due now goes at once");
        gate.ready().await;
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(3),
            "waits for its slot"
        );
        assert_eq!(budget.reserved.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_noted_elsewhere_while_waiting_for_a_slot_is_waited_out() {
        let budget = Arc::new(FakeBudget::default());
        budget
            .waits
            .lock()
            .unwrap()
            .push_back(Duration::from_secs(2));
        let gate = Arc::new(RateGates::default().with_budget(budget.clone()).gate("C1"));
        let t0 = Instant::now();
        let g = gate.clone();
        let waiter = tokio::spawn(async move {
            g.ready().await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        // Another process got a 429 with Retry-After 30 s while this one waited for its slot.
        budget.pause("C1", Duration::from_secs(30)).await;
        let woke = waiter.await.unwrap();
        let waited = woke - t0;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
        assert!(waited <= Duration::from_secs(32), "{waited:?}");
        // It took a fresh slot after the pause.
        assert_eq!(budget.reserved.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The local gate was never closed: the pause came from the budget alone.
        assert_eq!(gate.blocked_for(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_here_pauses_the_shared_budget_too() {
        let budget = Arc::new(FakeBudget::default());
        let gate = RateGates::default().with_budget(budget.clone()).gate("C1");
        gate.rate_limited(Duration::from_secs(7)).await;
        assert_eq!(budget.paused_for("C1").await, Duration::from_secs(7));
        assert_eq!(gate.blocked_for(), Duration::from_secs(7));
        let t0 = Instant::now();
        gate.ready().await;
        let waited = Instant::now() - t0;
        assert!(
            waited >= Duration::from_secs(7) && waited <= Duration::from_secs(9),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gate_extension_while_waiting_is_honoured() {
        let gate = Arc::new(RateGate::new());
        let t0 = Instant::now();
        gate.block_for(Duration::from_secs(2));
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move {
            g2.ready().await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        gate.block_for(Duration::from_secs(20));
        let woke = waiter.await.unwrap();
        assert!(woke - t0 >= Duration::from_secs(20));
        assert_eq!(gate.blocked_for(), Duration::ZERO);
    }
}
