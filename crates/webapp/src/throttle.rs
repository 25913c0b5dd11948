//! Throttles: operator sign-in attempts, and the connect records one client address may create.
//!
//! Both count against the app's clock (the engine's, so tests move it), and both decide under
//! one lock before any slow or storing work starts, so concurrent requests cannot all slip
//! through a check that only looked at the past.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Sign-in attempts tolerated within [`FAILURE_WINDOW_MS`] before sign-in pauses.
pub(crate) const MAX_FAILURES: usize = 10;
pub(crate) const FAILURE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Connect records (sessions from opening an invite link without a cookie, pending
/// authorizations from "Connect with Webex") one client address may create per
/// [`ADDRESS_WINDOW_MS`].
pub(crate) const CONNECT_RECORDS_PER_ADDRESS: u32 = 30;
pub(crate) const ADDRESS_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Addresses tracked at once; beyond this (after dropping finished windows) new addresses are
/// refused rather than letting the table grow without bound.
const TRACKED_ADDRESSES: usize = 65_536;

/// Throttles password guessing: every attempt reserves a slot in the failure window before it
/// waits for an argon2id permit, and the slot is given back only when the password was right.
/// An attempt whose client went away mid-check therefore still counts, and at most
/// [`MAX_FAILURES`] attempts within [`FAILURE_WINDOW_MS`] ever get a verdict. At most two
/// argon2id checks (slow and memory-hungry by design) run at once.
pub(crate) struct LoginGuard {
    attempts: Mutex<Attempts>,
    pub(crate) checks: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Attempts {
    /// (attempt id, when it was reserved), oldest first.
    window: VecDeque<(u64, i64)>,
    next_id: u64,
}

impl Attempts {
    fn prune(&mut self, now: i64) {
        while self
            .window
            .front()
            .is_some_and(|(_, t)| now - t >= FAILURE_WINDOW_MS)
        {
            self.window.pop_front();
        }
    }
}

/// A reserved sign-in attempt; see [`LoginGuard::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt(u64);

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard {
            attempts: Mutex::new(Attempts::default()),
            checks: tokio::sync::Semaphore::new(2),
        }
    }
}

impl LoginGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an attempt at `now`, counted as a failure until [`LoginGuard::succeeded`];
    /// `None` when sign-in is paused.
    pub(crate) fn reserve(&self, now: i64) -> Option<Attempt> {
        let mut a = self.lock();
        a.prune(now);
        if a.window.len() >= MAX_FAILURES {
            return None;
        }
        let id = a.next_id;
        a.next_id += 1;
        a.window.push_back((id, now));
        Some(Attempt(id))
    }

    /// Re-checks a reservation once its argon2id permit is held: if the wait outlasted the
    /// window, the attempt must find room again at `now` (it is re-reserved then), or it is
    /// refused as paused.
    pub(crate) fn still_allowed(&self, attempt: Attempt, now: i64) -> bool {
        let mut a = self.lock();
        a.prune(now);
        if a.window.iter().any(|(id, _)| *id == attempt.0) {
            return true;
        }
        if a.window.len() >= MAX_FAILURES {
            return false;
        }
        a.window.push_back((attempt.0, now));
        true
    }

    /// The password was right: the attempt no longer counts against the window.
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        self.lock().window.retain(|(id, _)| *id != attempt.0);
    }

    /// Attempts counted in the window at `now` (failed, in flight, or abandoned).
    #[cfg(test)]
    pub(crate) fn counted(&self, now: i64) -> usize {
        let mut a = self.lock();
        a.prune(now);
        a.window.len()
    }
}

/// The client address of a request: the TCP peer `serve` accepted (behind a reverse proxy that
/// is the proxy's address). `None` when the router runs without a socket (in-process tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// What one address is charged under: an IPv4 address, or the /64 of an IPv6 address (one
/// subscriber usually holds a whole /64, so per-address IPv6 limits would be no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    Unknown,
    V4(u32),
    V6Prefix(u64),
}

impl From<Option<IpAddr>> for AddressKey {
    fn from(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            None => AddressKey::Unknown,
            Some(IpAddr::V4(v4)) => AddressKey::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Per-address budget of connect records: [`CONNECT_RECORDS_PER_ADDRESS`] per fixed window of
/// [`ADDRESS_WINDOW_MS`], counted from the address's first record in the window.
#[derive(Default)]
pub(crate) struct AddressBudget {
    windows: Mutex<HashMap<AddressKey, (i64, u32)>>,
}

impl AddressBudget {
    /// Charges one record to `addr` at `now`; `false` when its budget is spent (or too many
    /// addresses are being tracked), in which case nothing must be stored.
    pub(crate) fn charge(&self, addr: ClientAddr, now: i64) -> bool {
        let key = AddressKey::from(addr.0);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !w.contains_key(&key) && w.len() >= TRACKED_ADDRESSES {
            w.retain(|_, (start, _)| now - *start < ADDRESS_WINDOW_MS);
            if w.len() >= TRACKED_ADDRESSES {
                tracing::warn!(
                    tracked = w.len(),
                    "connect records refused: too many client addresses in the last hour"
                );
                return false;
            }
        }
        let entry = w.entry(key).or_insert((now, 0));
        if now - entry.0 >= ADDRESS_WINDOW_MS {
            *entry = (now, 0);
        }
        if entry.1 >= CONNECT_RECORDS_PER_ADDRESS {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Forgets addresses whose window has ended (run with the scheduled purge).
    pub(crate) fn prune(&self, now: i64) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (start, _)| now - *start < ADDRESS_WINDOW_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_counts_until_it_succeeds_and_abandoned_ones_keep_counting() {
        let g = LoginGuard::default();
        let a = g.reserve(0).unwrap();
        let abandoned = g.reserve(0).unwrap();
        assert_eq!(g.counted(0), 2);
        g.succeeded(a);
        assert_eq!(g.counted(0), 1, "the abandoned attempt still counts");
        let _ = abandoned;
        for _ in 1..MAX_FAILURES {
            assert!(g.reserve(1).is_some());
        }
        assert!(g.reserve(2).is_none(), "paused");
        assert_eq!(
            g.counted(FAILURE_WINDOW_MS),
            MAX_FAILURES - 1,
            "the first aged out"
        );
        assert!(g.reserve(FAILURE_WINDOW_MS).is_some());
    }

    #[test]
    fn an_attempt_that_waited_out_the_window_must_find_room_again() {
        let g = LoginGuard::default();
        let waited = g.reserve(0).unwrap();
        // Its slot ages out while it waits; meanwhile the window fills up.
        for _ in 0..MAX_FAILURES {
            assert!(g.reserve(FAILURE_WINDOW_MS).is_some());
        }
        assert!(!g.still_allowed(waited, FAILURE_WINDOW_MS));
        let fresh = LoginGuard::default();
        let w = fresh.reserve(0).unwrap();
        assert!(
            fresh.still_allowed(w, FAILURE_WINDOW_MS),
            "room: re-reserved"
        );
        assert_eq!(fresh.counted(FAILURE_WINDOW_MS), 1);
    }

    #[test]
    fn an_address_budget_is_per_address_and_per_ipv6_64() {
        let b = AddressBudget::default();
        let v4 = ClientAddr(Some("192.0.2.7".parse().unwrap()));
        let other = ClientAddr(Some("192.0.2.8".parse().unwrap()));
        for _ in 0..CONNECT_RECORDS_PER_ADDRESS {
            assert!(b.charge(v4, 0));
        }
        assert!(!b.charge(v4, 1));
        assert!(b.charge(other, 1));
        assert!(b.charge(v4, ADDRESS_WINDOW_MS), "a new window");
        let a = ClientAddr(Some("2001:db8:1:2::1".parse().unwrap()));
        let same64 = ClientAddr(Some("2001:db8:1:2:ffff::9".parse().unwrap()));
        for _ in 0..CONNECT_RECORDS_PER_ADDRESS {
            assert!(b.charge(a, 0));
        }
        assert!(!b.charge(same64, 0), "the same /64");
        let mapped = ClientAddr(Some("::ffff:192.0.2.8".parse().unwrap()));
        for _ in 1..CONNECT_RECORDS_PER_ADDRESS {
            assert!(b.charge(other, 2));
        }
        assert!(
            !b.charge(mapped, 2),
            "a v4-mapped address is the v4 address"
        );
        b.prune(2 * ADDRESS_WINDOW_MS);
        assert!(b.windows.lock().unwrap().is_empty());
    }
}
