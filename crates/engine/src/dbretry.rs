//! State-database calls inside a run. A database that is busy, locked or briefly unreachable
//! is transient: the call is retried with backoff a few times, and only then does the org's run
//! stop with "state database unavailable". Nothing is counted against an item for it.

use std::future::Future;

use webex::http::RetryPolicy;

use crate::error::OrgError;

/// Tries per database call within a run (the first try included).
pub const DB_ATTEMPTS: u32 = 4;

/// Runs `f` until it succeeds, fails permanently, or [`DB_ATTEMPTS`] transient failures passed.
///
/// # Errors
/// [`OrgError::Database`] naming `op` with the last error.
pub async fn with_db_retry<T, F, Fut>(
    retry: &RetryPolicy,
    op: &str,
    mut f: F,
) -> Result<T, OrgError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, vault::VaultError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt + 1 < DB_ATTEMPTS => {
                attempt += 1;
                let wait = retry.backoff(attempt);
                tracing::warn!(
                    "state database unavailable while {op} ({e}); try {attempt} of {DB_ATTEMPTS}, retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(OrgError::db(op)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use vault::VaultError;
    use webex::ErrorClass;

    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    fn unreachable_db() -> VaultError {
        VaultError::Open {
            url: "postgres://db/x".into(),
            detail: "connection refused".into(),
            transient: true,
        }
    }

    #[tokio::test]
    async fn a_brief_outage_is_ridden_out() {
        let calls = AtomicU32::new(0);
        let got = with_db_retry(&quick(), "saving tasks", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(unreachable_db())
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((got, calls.load(Ordering::SeqCst)), (7, 3));
    }

    #[tokio::test]
    async fn a_lasting_outage_stops_the_org_as_unavailable_not_as_configuration() {
        let calls = AtomicU32::new(0);
        let e = with_db_retry(&quick(), "saving tasks", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(unreachable_db())
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), DB_ATTEMPTS);
        assert_eq!(e.class(), ErrorClass::Transient);
        let msg = e.to_string();
        assert!(
            msg.starts_with("state database unavailable while saving tasks"),
            "{msg}"
        );
        assert!(!msg.contains("configuration"), "{msg}");
    }

    #[tokio::test]
    async fn a_permanent_database_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let e = with_db_retry(&quick(), "reading a task", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(VaultError::Corrupt {
                what: "task t".into(),
                detail: "unknown state".into(),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
}
