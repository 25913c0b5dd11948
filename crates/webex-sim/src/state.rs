//! Mutable simulator state shared by every handler: clock, grants, limiter, counters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use url::Url;

use crate::config::{ConsentMode, Faults, SimConfig};
use crate::dataset::Dataset;
use crate::late::LateRecording;
use crate::model::Stats;
use crate::rng::{SplitMix64, mix2};

/// CI cluster embedded in every token and code, as in real US tokens.
pub(crate) const CLUSTER: &str = "PF84";
/// Authorization codes live this long (sim time).
const CODE_TTL_MS: i64 = 5 * 60_000;
/// An interactive consent page must be answered within this long (sim time).
pub(crate) const CONSENT_TTL_MS: i64 = 10 * 60_000;

/// Locks a mutex, ignoring poisoning: a panicking handler must not take the
/// whole simulator down with it, and every critical section leaves the state consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Simulator clock: a fixed start, plus manual advances, plus (optionally) real elapsed time.
#[derive(Debug)]
pub(crate) struct Clock {
    start_ms: i64,
    offset_ms: AtomicI64,
    realtime: bool,
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new(start_ms: i64, realtime: bool) -> Self {
        Self {
            start_ms,
            offset_ms: AtomicI64::new(0),
            realtime,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        let real = if self.realtime {
            i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX / 4)
        } else {
            0
        };
        self.start_ms + self.offset_ms.load(Ordering::SeqCst) + real
    }

    pub(crate) fn advance(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

/// One consent (or `issue_grant`): the unit `revoke_grants` kills.
#[derive(Debug)]
pub(crate) struct Grant {
    pub client_id: String,
    pub org_id: String,
    pub scopes: Vec<String>,
    pub refresh_token: String,
    pub refresh_expires_ms: i64,
    pub revoked: bool,
}

#[derive(Debug)]
struct AccessEntry {
    grant: u64,
    expires_ms: i64,
}

/// PKCE challenge recorded at the authorize step.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub value: String,
    pub method_s256: bool,
}

#[derive(Debug)]
pub(crate) struct CodeEntry {
    pub client_id: String,
    pub org_id: String,
    pub redirect_uri: Option<String>,
    pub scopes: Vec<String>,
    pub challenge: Option<Challenge>,
    pub expires_ms: i64,
    /// Grant minted from this code; a replay revokes it (RFC 6749 §4.1.2).
    pub redeemed: Option<u64>,
}

/// An authorization request shown on the interactive consent page, waiting for
/// the user's Accept or Decline. Single use: the decision removes it.
#[derive(Debug)]
pub(crate) struct PendingConsent {
    pub client_id: String,
    pub org_id: String,
    /// `redirect_uri` exactly as the authorize request sent it (bound into the code).
    pub redirect_uri: Option<String>,
    /// Where the decision redirects to (the sent or the single registered URI).
    pub target: Url,
    pub state: Option<String>,
    pub scopes: Vec<String>,
    pub challenge: Option<Challenge>,
    pub expires_ms: i64,
}

/// Identity behind a valid bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    pub client_id: String,
    pub org_id: String,
    pub scopes: Vec<String>,
}

impl Bearer {
    pub(crate) fn has_any(&self, scopes: &[&str]) -> bool {
        self.scopes.iter().any(|s| scopes.contains(&s.as_str()))
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerError {
    Unknown,
    Expired,
    Revoked,
}

/// Token-endpoint outcome carried back to the handler.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_token_expires_in: u64,
    pub scopes: Vec<String>,
}

/// Failure at the token endpoint, RFC 6749 style.
#[derive(Debug)]
pub(crate) struct GrantError {
    pub code: &'static str,
    pub description: &'static str,
}

impl GrantError {
    pub(crate) const fn new(code: &'static str, description: &'static str) -> Self {
        Self { code, description }
    }
}

#[derive(Debug)]
pub(crate) struct Auth {
    rng: SplitMix64,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, u64>,
    codes: HashMap<String, CodeEntry>,
    consents: HashMap<String, PendingConsent>,
}

impl Auth {
    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(mix2(seed, 0x4F41_5554)),
            grants: HashMap::new(),
            next_grant: 1,
            access: HashMap::new(),
            refresh: HashMap::new(),
            codes: HashMap::new(),
            consents: HashMap::new(),
        }
    }

    fn token(&mut self, len: usize, org_id: &str) -> String {
        format!("{}_{CLUSTER}_{org_id}", self.rng.alnum(len))
    }

    pub(crate) fn new_code(&mut self, mut entry: CodeEntry, now_ms: i64) -> String {
        let code = self.token(48, &entry.org_id);
        entry.expires_ms = now_ms + CODE_TTL_MS;
        self.codes.insert(code.clone(), entry);
        code
    }

    /// Parks an interactive consent request; returns its single-use id. Expired
    /// requests are dropped here, so abandoned pages do not pile up.
    pub(crate) fn new_consent(&mut self, mut entry: PendingConsent, now_ms: i64) -> String {
        self.consents.retain(|_, c| c.expires_ms > now_ms);
        let id = self.rng.alnum(40);
        entry.expires_ms = now_ms + CONSENT_TTL_MS;
        self.consents.insert(id.clone(), entry);
        id
    }

    /// Removes and returns a pending consent request (a second call gets `None`).
    pub(crate) fn take_consent(&mut self, id: &str) -> Option<PendingConsent> {
        self.consents.remove(id)
    }

    /// Creates a grant with fresh access and refresh tokens.
    pub(crate) fn mint(
        &mut self,
        client_id: &str,
        org_id: &str,
        scopes: Vec<String>,
        now_ms: i64,
        access_ttl: u64,
        refresh_ttl: u64,
    ) -> (u64, Issued) {
        let id = self.next_grant;
        self.next_grant += 1;
        let refresh_token = self.token(64, org_id);
        let refresh_expires_ms = now_ms + secs_to_ms(refresh_ttl);
        self.refresh.insert(refresh_token.clone(), id);
        self.grants.insert(
            id,
            Grant {
                client_id: client_id.to_owned(),
                org_id: org_id.to_owned(),
                scopes: scopes.clone(),
                refresh_token: refresh_token.clone(),
                refresh_expires_ms,
                revoked: false,
            },
        );
        let access_token = self.new_access(id, org_id, now_ms, access_ttl);
        (
            id,
            Issued {
                access_token,
                expires_in: access_ttl,
                refresh_token,
                refresh_token_expires_in: refresh_ttl,
                scopes,
            },
        )
    }

    fn new_access(&mut self, grant: u64, org_id: &str, now_ms: i64, ttl: u64) -> String {
        let token = self.token(64, org_id);
        self.access.insert(
            token.clone(),
            AccessEntry {
                grant,
                expires_ms: now_ms + secs_to_ms(ttl),
            },
        );
        token
    }

    /// Redeems an authorization code (single use).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn redeem_code(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now_ms: i64,
        access_ttl: u64,
        refresh_ttl: u64,
    ) -> Result<Issued, GrantError> {
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(GrantError::new(
                "invalid_grant",
                "The authorization code is invalid.",
            ));
        };
        if let Some(grant) = entry.redeemed {
            // Replay: refuse and revoke what the first redemption produced.
            if let Some(g) = self.grants.get_mut(&grant) {
                g.revoked = true;
            }
            return Err(GrantError::new(
                "invalid_grant",
                "The authorization code has already been used.",
            ));
        }
        if entry.client_id != client_id {
            return Err(GrantError::new(
                "invalid_grant",
                "The authorization code was issued to another client.",
            ));
        }
        if now_ms >= entry.expires_ms {
            return Err(GrantError::new(
                "invalid_grant",
                "The authorization code has expired.",
            ));
        }
        // RFC 6749 §4.1.3: required and byte-identical only when the authorize request had one.
        if entry.redirect_uri.is_some() && entry.redirect_uri.as_deref() != redirect_uri {
            return Err(GrantError::new(
                "invalid_grant",
                "redirect_uri does not match the authorization request.",
            ));
        }
        if let Some(ch) = &entry.challenge {
            let Some(v) = verifier else {
                return Err(GrantError::new(
                    "invalid_request",
                    "code_verifier is required.",
                ));
            };
            // RFC 7636 §4.1: 43–128 unreserved characters.
            let well_formed = (43..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed {
                return Err(GrantError::new(
                    "invalid_grant",
                    "code_verifier is malformed.",
                ));
            }
            let computed = if ch.method_s256 {
                use base64::Engine as _;
                use sha2::Digest as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(v.as_bytes()))
            } else {
                v.to_owned()
            };
            if computed != ch.value {
                return Err(GrantError::new(
                    "invalid_grant",
                    "PKCE verification failed.",
                ));
            }
        }
        let org_id = entry.org_id.clone();
        let scopes = entry.scopes.clone();
        let (grant, issued) =
            self.mint(client_id, &org_id, scopes, now_ms, access_ttl, refresh_ttl);
        if let Some(e) = self.codes.get_mut(code) {
            e.redeemed = Some(grant);
        }
        Ok(issued)
    }

    /// Exchanges a refresh token for a new access token.
    pub(crate) fn refresh(
        &mut self,
        client_id: &str,
        refresh_token: &str,
        now_ms: i64,
        access_ttl: u64,
        refresh_ttl: u64,
        rotate: bool,
    ) -> Result<Issued, GrantError> {
        let invalid = || {
            GrantError::new(
                "invalid_grant",
                "The refresh token provided is expired, revoked, malformed, or invalid.",
            )
        };
        let grant_id = *self.refresh.get(refresh_token).ok_or_else(invalid)?;
        let grant = self.grants.get(&grant_id).ok_or_else(invalid)?;
        if grant.revoked || grant.client_id != client_id || now_ms >= grant.refresh_expires_ms {
            return Err(invalid());
        }
        let org_id = grant.org_id.clone();
        let scopes = grant.scopes.clone();
        if rotate {
            let new_refresh = self.token(64, &org_id);
            self.refresh.remove(refresh_token);
            self.refresh.insert(new_refresh.clone(), grant_id);
            if let Some(g) = self.grants.get_mut(&grant_id) {
                g.refresh_token = new_refresh;
                g.refresh_expires_ms = now_ms + secs_to_ms(refresh_ttl);
            }
        }
        let access_token = self.new_access(grant_id, &org_id, now_ms, access_ttl);
        let g = &self.grants[&grant_id];
        let remaining_ms = (g.refresh_expires_ms - now_ms).max(0);
        Ok(Issued {
            access_token,
            expires_in: access_ttl,
            refresh_token: g.refresh_token.clone(),
            refresh_token_expires_in: u64::try_from(remaining_ms / 1_000).unwrap_or(0),
            scopes,
        })
    }

    pub(crate) fn bearer(&self, token: &str, now_ms: i64) -> Result<Bearer, BearerError> {
        let entry = self.access.get(token).ok_or(BearerError::Unknown)?;
        let grant = self.grants.get(&entry.grant).ok_or(BearerError::Unknown)?;
        if grant.revoked {
            return Err(BearerError::Revoked);
        }
        if now_ms >= entry.expires_ms {
            return Err(BearerError::Expired);
        }
        Ok(Bearer {
            client_id: grant.client_id.clone(),
            org_id: grant.org_id.clone(),
            scopes: grant.scopes.clone(),
        })
    }

    /// Admin revocation of one integration in one org (`DELETE /v1/authorizations`):
    /// every grant (refresh and access tokens) of `client_id` in `org_id` dies, and
    /// codes not yet redeemed stop working. Returns how many grants were live.
    pub(crate) fn revoke_client_org(&mut self, client_id: &str, org_id: &str) -> usize {
        let mut n = 0;
        for g in self
            .grants
            .values_mut()
            .filter(|g| g.client_id == client_id && g.org_id == org_id)
        {
            if !g.revoked {
                n += 1;
            }
            g.revoked = true;
        }
        self.codes
            .retain(|_, c| c.redeemed.is_some() || c.client_id != client_id || c.org_id != org_id);
        n
    }

    pub(crate) fn revoke_org(&mut self, org_id: &str) {
        for g in self.grants.values_mut().filter(|g| g.org_id == org_id) {
            g.revoked = true;
        }
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1_000)).unwrap_or(i64::MAX / 4)
}

/// Keys of [`Stats::by_endpoint`], present from the start (with 0) so lookups never miss.
const ENDPOINTS: &[&str] = &[
    "access_token",
    "authorize",
    "authorize_decision",
    "authorizations",
    "tasks",
    "captures",
    "users",
    "media",
    "calling_list",
    "calling_details",
    "calling_metadata",
    "calling_media",
];

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub data: Dataset,
    pub clock: Clock,
    pub faults: Mutex<Faults>,
    pub consent: Mutex<ConsentMode>,
    pub auth: Mutex<Auth>,
    limiter: Mutex<HashMap<String, VecDeque<i64>>>,
    /// Per client id: the arrival time (simulator ms) of every API request the limit let
    /// through, in arrival order ([`crate::SimHandle::accepted_request_times`]).
    accepted: Mutex<HashMap<String, Vec<i64>>>,
    /// Per client id: when the last 429 was answered and until when its `Retry-After` runs.
    retry_after: Mutex<HashMap<String, (i64, i64)>>,
    rng: Mutex<SplitMix64>,
    pub stats: Mutex<Stats>,
    pub base_url: Url,
    /// Base URL of the Calling media host (a second listener, normally on 127.0.0.2).
    pub calling_media_url: Url,
    /// Orgs with Prevent Downloading on: Calling details carry no links.
    pub prevent_downloading: Mutex<HashSet<String>>,
    /// Captures added to existing tasks after the start (`crate::late`).
    pub late: Mutex<Vec<Arc<LateRecording>>>,
    pub sign_key: [u8; 32],
}

impl Shared {
    pub(crate) fn new(
        cfg: SimConfig,
        data: Dataset,
        start_ms: i64,
        base_url: Url,
        calling_media_url: Url,
    ) -> Self {
        let mut key_rng = SplitMix64::new(mix2(cfg.seed, 0x5349_474E));
        let mut sign_key = [0u8; 32];
        for c in sign_key.chunks_mut(8) {
            c.copy_from_slice(&key_rng.next_u64().to_le_bytes());
        }
        Self {
            clock: Clock::new(start_ms, cfg.realtime_clock),
            faults: Mutex::new(cfg.faults.clone()),
            consent: Mutex::new(cfg.consent),
            auth: Mutex::new(Auth::new(cfg.seed)),
            limiter: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            retry_after: Mutex::new(HashMap::new()),
            rng: Mutex::new(SplitMix64::new(mix2(cfg.seed, 0x4641_554C))),
            stats: Mutex::new(Stats {
                by_endpoint: ENDPOINTS.iter().map(|e| ((*e).to_owned(), 0)).collect(),
                ..Stats::default()
            }),
            base_url,
            calling_media_url,
            prevent_downloading: Mutex::new(HashSet::new()),
            late: Mutex::new(Vec::new()),
            sign_key,
            data,
            cfg,
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Seeded coin flip for fault injection.
    pub(crate) fn roll(&self, p: f64) -> bool {
        p > 0.0 && lock(&self.rng).chance(p)
    }

    pub(crate) fn pick_index(&self, n: u64) -> u64 {
        lock(&self.rng).range(0, n.saturating_sub(1))
    }

    pub(crate) fn tracking_id(&self) -> String {
        format!("WXSIM_{}", lock(&self.rng).uuid())
    }

    /// A fresh upper-case UUID for tracking ids (`ROUTER_…` on webexapis.com).
    pub(crate) fn tracking_uuid(&self) -> String {
        lock(&self.rng).uuid().to_string().to_ascii_uppercase()
    }

    pub(crate) fn count(&self, endpoint: &str) {
        *lock(&self.stats)
            .by_endpoint
            .entry(endpoint.to_owned())
            .or_insert(0) += 1;
    }

    /// Sliding window ([`SimConfig::rate_limit_window_secs`], a minute by default) per client
    /// id. `Err(secs)` = retry after. Also counts requests that arrive while a `Retry-After`
    /// given to the client id is still running ([`Stats::retry_after_violations`]), and records
    /// the arrival of every request it lets through.
    pub(crate) fn rate_check(&self, client_id: &str) -> Result<(), u64> {
        let now = self.now_ms();
        self.check_retry_after(client_id, now);
        let Some(limit) = self.cfg.rate_limit_per_minute else {
            self.note_accepted(client_id, now);
            return Ok(());
        };
        let window = secs_to_ms(self.cfg.rate_limit_window_secs.max(1));
        let mut lim = lock(&self.limiter);
        let q = lim.entry(client_id.to_owned()).or_default();
        while q.front().is_some_and(|&t| t <= now - window) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            let oldest = q.front().copied().unwrap_or(now);
            drop(lim);
            lock(&self.stats).rate_limited_429 += 1;
            let wait_ms = (oldest + window - now).max(1);
            return Err(u64::try_from(wait_ms).unwrap_or(1).div_ceil(1_000));
        }
        q.push_back(now);
        let in_window = q.len() as u64;
        drop(lim);
        self.note_accepted(client_id, now);
        let mut stats = lock(&self.stats);
        stats.peak_requests_in_window = stats.peak_requests_in_window.max(in_window);
        Ok(())
    }

    fn note_accepted(&self, client_id: &str, now: i64) {
        lock(&self.accepted)
            .entry(client_id.to_owned())
            .or_default()
            .push(now);
    }

    /// Arrival times of the API requests of `client_id` the limit let through (see
    /// [`crate::SimHandle::accepted_request_times`]).
    pub(crate) fn accepted_times(&self, client_id: &str) -> Vec<i64> {
        lock(&self.accepted)
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Records that `client_id` was told to wait `secs` from now (never shortens a wait).
    pub(crate) fn note_retry_after(&self, client_id: &str, secs: u64) {
        let now = self.now_ms();
        let until = now + secs_to_ms(secs);
        let mut map = lock(&self.retry_after);
        let entry = map.entry(client_id.to_owned()).or_insert((now, until));
        if entry.1 < until {
            *entry = (now, until);
        }
    }

    fn check_retry_after(&self, client_id: &str, now: i64) {
        let Some((issued, until)) = lock(&self.retry_after).get(client_id).copied() else {
            return;
        };
        if now >= until {
            return;
        }
        let grace = i64::try_from(self.cfg.retry_after_grace_ms).unwrap_or(i64::MAX / 4);
        let mut stats = lock(&self.stats);
        if now < issued.saturating_add(grace) {
            stats.retry_after_in_flight += 1;
        } else {
            stats.retry_after_violations += 1;
            tracing::warn!(
                client_id,
                early_ms = until - now,
                "webex-sim: request before Retry-After elapsed"
            );
        }
    }
}
