//! Time as the engine sees it. Injected so tests can run the simulator's clock forward instead of
//! sleeping (grace periods, token expiry, link expiry).

use std::sync::Arc;

/// A source of "now" in epoch milliseconds.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock backed by any closure, e.g. the simulator's clock in tests.
pub struct FnClock<F: Fn() -> i64 + Send + Sync>(pub F);

impl<F: Fn() -> i64 + Send + Sync> Clock for FnClock<F> {
    fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

/// Shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
