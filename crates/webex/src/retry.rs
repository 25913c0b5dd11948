//! The one retry driver every Webex request goes through: API calls ([`crate::api::ApiCaller`]),
//! token exchange and refresh, admin revocation, and media downloads.
//!
//! Each caller supplies a per-attempt closure that sends one request and classifies its answer
//! into an [`Attempt`]; the driver owns everything around it, so the policy is written once:
//! waiting at the client id's [`RateGate`] before every send (and for a slot of its shared
//! budget, when there is one), closing it for a 429's `Retry-After` ([`Error::RateLimited`]), backing off after 5xx/423/network failures while
//! honouring a server `Retry-After`, the attempt budget of the [`RetryPolicy`], and the log
//! lines (debug for network retries — a host that stays down is reported once, by the breaker
//! — warnings for answers from the server).

use std::time::Duration;

use crate::Error;
use crate::http::{RateGate, RetryPolicy, random_up_to};

/// What one attempt came to, as classified by the caller's closure.
pub(crate) enum Attempt<T> {
    /// Success (or an answer the caller handles itself): returned at once.
    Done(T),
    /// A failure that retrying may fix (network, 5xx, 408, 423, 429): retried within budget.
    /// An [`Error::RateLimited`] closes the gate for its `retry_after`; any other error waits
    /// for the larger of its [`Error::retry_after`] (plus jitter) and the policy's backoff.
    Retry(Error),
    /// A failure retrying cannot fix: returned at once.
    Fail(Error),
    /// Send again at once without spending the budget (the one retry after a token refresh).
    /// The closure must make sure this cannot repeat forever.
    Again,
}

/// Where and how to retry.
pub(crate) struct Driver<'a> {
    /// Logical endpoint, for log lines.
    pub what: &'a str,
    /// The client id's gate; `None` for hosts outside the Webex API rate limit (media).
    pub gate: Option<&'a RateGate>,
    /// Attempt budget and delays.
    pub policy: &'a RetryPolicy,
    /// Whether to log the final failure as a warning (callers that report it themselves don't).
    pub warn_on_failure: bool,
}

impl Driver<'_> {
    /// Runs `attempt` (given the 1-based attempt number and the caller's state, which it
    /// hands back) until it is done, fails for good, or the budget is spent.
    ///
    /// The state is threaded through by value, rather than borrowed by an async closure, so
    /// that the futures of the public API stay `Send` (async closures that borrow mutable
    /// state are not, today).
    ///
    /// # Errors
    ///
    /// The error of the last attempt.
    pub async fn run<S, T, F, Fut>(&self, mut state: S, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(u32, S) -> Fut,
        Fut: Future<Output = (S, Attempt<T>)>,
    {
        let max_attempts = self.policy.max_attempts.max(1);
        let what = self.what;
        let mut n: u32 = 0;
        loop {
            n += 1;
            if let Some(gate) = self.gate {
                gate.ready().await;
            }
            let (next, outcome) = attempt(n, state).await;
            state = next;
            let err = match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Again => {
                    n -= 1;
                    continue;
                }
                Attempt::Fail(err) => {
                    self.close_gate_for(&err).await;
                    return Err(self.failed(err));
                }
                Attempt::Retry(err) => err,
            };
            self.close_gate_for(&err).await;
            if n >= max_attempts {
                return Err(self.failed(err));
            }
            if let (Error::RateLimited { retry_after, .. }, Some(_)) = (&err, self.gate) {
                // The closed gate makes this retry (and every other call of the client id)
                // wait out the Retry-After, with jitter.
                tracing::warn!(
                    endpoint = what,
                    attempt = n,
                    wait = ?retry_after,
                    tracking_id = err.tracking_id(),
                    "429: waiting for Retry-After through the shared rate gate"
                );
                continue;
            }
            let delay = self.delay(n, &err);
            if matches!(err, Error::Network { .. }) {
                tracing::debug!(endpoint = what, attempt = n, ?delay, error = %err, "retrying after network error");
            } else {
                tracing::warn!(endpoint = what, attempt = n, ?delay, tracking_id = err.tracking_id(), error = %err, "retrying after server error");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// [`Driver::run`] for callers without state between attempts.
    ///
    /// # Errors
    ///
    /// The error of the last attempt.
    pub async fn run_simple<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        self.run((), |n, ()| {
            let fut = attempt(n);
            async move { ((), fut.await) }
        })
        .await
    }

    /// A 429 closes the client id's gate for its `Retry-After`, and pauses the client id in the
    /// shared budget when there is one (every process then waits it out).
    async fn close_gate_for(&self, err: &Error) {
        if let (Error::RateLimited { retry_after, .. }, Some(gate)) = (err, self.gate) {
            gate.rate_limited(*retry_after).await;
        }
    }

    /// The larger of the server's wait (with up to 10 % jitter, at most 1 s, so that clients
    /// told the same time do not come back in lockstep) and the policy's backoff.
    fn delay(&self, attempt: u32, err: &Error) -> Duration {
        let backoff = self.policy.backoff(attempt);
        match err.retry_after() {
            Some(d) => (d + random_up_to((d / 10).min(Duration::from_secs(1)))).max(backoff),
            None => backoff,
        }
    }

    fn failed(&self, err: Error) -> Error {
        // An unreachable host is reported once, by the breaker.
        if self.warn_on_failure && !err.is_host_unreachable() {
            tracing::warn!(endpoint = self.what, status = err.status(), tracking_id = err.tracking_id(), error = %err, "Webex call failed");
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            default_retry_after: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }

    fn http(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Http {
            endpoint: "GET /x".into(),
            status,
            tracking_id: None,
            body: String::new(),
            retry_after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_within_budget_then_returns_the_last_error() {
        let p = policy(3);
        let d = Driver {
            what: "GET /x",
            gate: None,
            policy: &p,
            warn_on_failure: true,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let err = d
            .run((), |n, ()| {
                tx.send(n).unwrap();
                async { ((), Attempt::<()>::Retry(http(503, None))) }
            })
            .await
            .unwrap_err();
        let seen: Vec<u32> = rx.try_iter().collect();
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(err.status(), Some(503));
    }

    #[tokio::test(start_paused = true)]
    async fn fail_and_done_stop_at_once_and_again_is_free() {
        let p = policy(2);
        let d = Driver {
            what: "GET /x",
            gate: None,
            policy: &p,
            warn_on_failure: false,
        };
        let err = d
            .run(0, |_, calls| async move {
                assert_eq!(calls, 0, "sent once");
                (calls + 1, Attempt::<()>::Fail(http(404, None)))
            })
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
        let got = d
            .run(0, |n, calls| async move {
                let outcome = match calls {
                    0 => Attempt::Again,
                    1 => Attempt::Retry(http(500, None)),
                    _ => Attempt::Done((calls + 1, n)),
                };
                (calls + 1, outcome)
            })
            .await
            .unwrap();
        assert_eq!(got, (3, 2), "the refresh retry did not use the budget");
    }

    #[tokio::test(start_paused = true)]
    async fn server_wait_is_honoured_and_429_closes_the_gate() {
        let p = policy(2);
        let d = Driver {
            what: "GET /x",
            gate: None,
            policy: &p,
            warn_on_failure: true,
        };
        let t0 = tokio::time::Instant::now();
        d.run(true, |_, first| async move {
            if first {
                (
                    false,
                    Attempt::Retry(http(503, Some(Duration::from_secs(7)))),
                )
            } else {
                (false, Attempt::Done(()))
            }
        })
        .await
        .unwrap();
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(7) && waited <= Duration::from_secs(8));

        let gate = RateGate::new();
        let d = Driver {
            gate: Some(&gate),
            ..d
        };
        let err = d
            .run((), |_, ()| async {
                let err = Error::RateLimited {
                    endpoint: "GET /x".into(),
                    retry_after: Duration::from_secs(30),
                    tracking_id: None,
                };
                ((), Attempt::<()>::Retry(err))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }));
        assert!(gate.blocked_for() > Duration::from_secs(25));
    }
}
