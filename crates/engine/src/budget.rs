//! The per-client-id request budget shared by every process on the state database: the engine's
//! [`SharedBudget`] for the webex crate's rate gates.
//!
//! Webex allows `[webex] requests_per_minute` (300 by default) per integration client id,
//! whichever process sends them. Each API request first takes a slot of the client id's
//! schedule in the vault (one upsert, `vault::BudgetSlot`) and waits until the slot is due; a
//! 429's `Retry-After` is stored there too, so every process pauses that client id. The schedule
//! is a GCRA: slots one emission interval apart, with a small burst allowance, aimed a little
//! under the limit (95 %, burst 3 %) so that the processes together stay within the limit in any
//! rolling window even when requests reach Webex a little late.
//!
//! When the database cannot be reached the budget falls back to a schedule kept in this
//! process at a quarter of the limit (other processes are still sending), honouring the last
//! `Retry-After` pause it saw, and says so in the log at most once a minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vault::{BudgetSlot, Vault};
use webex::http::{RateGates, Reservation, SharedBudget};

use crate::clock::{Clock, SystemClock};
use crate::config::WebexConfig;

/// Share of the limit the sustained rate aims at.
const TARGET_PERCENT: u64 = 95;
/// Share of the limit that may go out at once after a quiet spell.
const BURST_PERCENT: u64 = 3;
/// How often a fallback to the in-process schedule is logged.
const WARN_EVERY_MS: i64 = 60_000;
/// While the database does not answer, a process spaces its requests this many times wider
/// than the shared schedule: a quarter of the limit, so a few processes falling back together
/// do not exceed it.
const FALLBACK_SHARE_DIVISOR: i64 = 4;

/// How one client id's requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Milliseconds between two slots at the sustained rate.
    pub interval_ms: i64,
    /// Slots that may be used at once after a quiet spell (at least 1).
    pub burst: i64,
}

impl BudgetPolicy {
    /// Webex's shape: `limit` requests in any rolling `window`. The sustained rate is 95 % of
    /// the limit and the burst 3 % (at least one request), so burst plus a window's worth of
    /// slots stays about 2 % under the limit, the margin for requests that arrive late.
    pub fn per_window(limit: u32, window: Duration) -> BudgetPolicy {
        let limit = u64::from(limit.max(1));
        let burst = (limit * BURST_PERCENT / 100).max(1);
        let target = (limit * TARGET_PERCENT / 100).min(limit - burst).max(1);
        let window_ms = u64::try_from(window.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        BudgetPolicy {
            interval_ms: i64::try_from(window_ms.div_ceil(target)).unwrap_or(i64::MAX / 4),
            burst: i64::try_from(burst).unwrap_or(1),
        }
    }

    /// `requests_per_minute` in any rolling minute (`[webex] requests_per_minute`).
    pub fn per_minute(requests_per_minute: u32) -> BudgetPolicy {
        BudgetPolicy::per_window(requests_per_minute, Duration::from_secs(60))
    }

    /// When a request holding `slot` (taken at `now_ms`) may be sent: not before now, not
    /// during a pause, and not before its place in the schedule minus the burst allowance.
    pub fn send_at(&self, slot: BudgetSlot, now_ms: i64) -> i64 {
        let scheduled = slot
            .tat_ms
            .saturating_sub(self.burst.saturating_mul(self.interval_ms));
        now_ms.max(slot.paused_until_ms).max(scheduled)
    }
}

/// The [`SharedBudget`] kept in the vault; see the module docs.
#[derive(Debug)]
pub struct DbBudget {
    vault: Vault,
    policy: BudgetPolicy,
    /// The in-process schedule used while the database does not answer.
    fallback: Mutex<HashMap<String, BudgetSlot>>,
    /// When the last fallback warning was logged (epoch ms).
    warned_at_ms: AtomicI64,
}

impl DbBudget {
    /// A budget in `vault` spacing requests by `policy`.
    pub fn new(vault: Vault, policy: BudgetPolicy) -> DbBudget {
        DbBudget {
            vault,
            policy,
            fallback: Mutex::default(),
            warned_at_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    /// The spacing this budget applies.
    pub fn policy(&self) -> BudgetPolicy {
        self.policy
    }

    fn now_ms() -> i64 {
        // Real time, whatever the engine's clock: Webex counts requests in real time.
        SystemClock.now_ms()
    }

    fn warn(&self, now_ms: i64, what: &str, e: &vault::VaultError) {
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        if now_ms - last >= WARN_EVERY_MS
            && self
                .warned_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "could not {what} in the state database ({e}); spacing Webex requests by this \
                 process's own schedule, at a quarter of the limit and honouring the last \
                 Retry-After pause seen, until it answers"
            );
        }
    }

    fn fallback_slot(&self, client_id: &str, now_ms: i64) -> BudgetSlot {
        let mut map = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry(client_id.to_owned()).or_insert(BudgetSlot {
            tat_ms: now_ms,
            paused_until_ms: 0,
        });
        // Other processes still send: take only a conservative share of the limit, not all.
        slot.tat_ms = slot.tat_ms.max(now_ms).max(slot.paused_until_ms)
            + self.policy.interval_ms * FALLBACK_SHARE_DIVISOR;
        *slot
    }

    fn fallback_pause(&self, client_id: &str, until_ms: i64) {
        let mut map = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry(client_id.to_owned()).or_insert(BudgetSlot {
            tat_ms: 0,
            paused_until_ms: 0,
        });
        slot.paused_until_ms = slot.paused_until_ms.max(until_ms);
    }

    fn fallback_paused_until(&self, client_id: &str) -> i64 {
        let map = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        map.get(client_id).map_or(0, |s| s.paused_until_ms)
    }
}

/// The rate gates of a process: every client id's requests take their slots from the budget
/// in `vault`, by `[webex] requests_per_minute`.
pub fn shared_gates(vault: &Vault, webex: &WebexConfig) -> RateGates {
    RateGates::default().with_budget(Arc::new(DbBudget::new(
        vault.clone(),
        BudgetPolicy::per_minute(webex.requests_per_minute),
    )))
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[async_trait]
impl SharedBudget for DbBudget {
    async fn reserve(&self, client_id: &str) -> Reservation {
        let now = Self::now_ms();
        let slot = match self
            .vault
            .reserve_request(client_id, now, self.policy.interval_ms)
            .await
        {
            Ok(slot) => {
                // Remembered, so that a database outage does not forget a pause in force.
                self.fallback_pause(client_id, slot.paused_until_ms);
                slot
            }
            Err(e) => {
                self.warn(now, "take a request slot", &e);
                self.fallback_slot(client_id, now)
            }
        };
        let at = self.policy.send_at(slot, now);
        Reservation {
            wait: millis(at - now),
            paused: slot.paused_until_ms > now,
        }
    }

    async fn paused_for(&self, client_id: &str) -> Duration {
        let now = Self::now_ms();
        let until = match self.vault.requests_paused_until(client_id).await {
            Ok(until) => {
                let until = until.unwrap_or(0);
                self.fallback_pause(client_id, until);
                until
            }
            Err(e) => {
                self.warn(now, "read the request pause", &e);
                0
            }
        };
        millis(until.max(self.fallback_paused_until(client_id)) - now)
    }

    async fn pause(&self, client_id: &str, retry_after: Duration) {
        let now = Self::now_ms();
        let until =
            now.saturating_add(i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX / 4));
        // Kept here too, so the pause holds in this process if the database stops answering.
        self.fallback_pause(client_id, until);
        if let Err(e) = self.vault.pause_requests(client_id, now, until).await {
            self.warn(now, "record a Retry-After pause", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_stays_under_the_limit_in_any_window() {
        for (limit, window) in [(300u32, 60_000i64), (100, 10_000), (40, 4_000), (1, 60_000)] {
            let p = BudgetPolicy::per_window(limit, Duration::from_millis(window as u64));
            assert!(p.burst >= 1);
            // Slots in any window: the burst plus one per interval.
            let most = p.burst + window / p.interval_ms;
            assert!(
                most <= i64::from(limit.max(2)),
                "{limit}/{window}: {p:?} allows {most}"
            );
        }
        let p = BudgetPolicy::per_minute(300);
        assert_eq!(p.burst, 9);
        assert_eq!(p.interval_ms, 211, "285 per minute");
        // Sustained: within 10 % under the limit.
        assert!(60_000 / p.interval_ms >= 270);
    }

    #[test]
    fn send_at_follows_schedule_pause_and_burst() {
        let p = BudgetPolicy {
            interval_ms: 100,
            burst: 3,
        };
        let slot = |tat_ms, paused_until_ms| BudgetSlot {
            tat_ms,
            paused_until_ms,
        };
        // A fresh schedule: the first burst goes at once.
        assert_eq!(p.send_at(slot(1_100, 0), 1_000), 1_000);
        assert_eq!(p.send_at(slot(1_300, 0), 1_000), 1_000);
        // The fourth waits one interval.
        assert_eq!(p.send_at(slot(1_400, 0), 1_000), 1_100);
        // A pause holds everything back until it ends.
        assert_eq!(p.send_at(slot(5_100, 5_000), 1_000), 5_000);
    }
}
