//! The one request loop every bearer-authenticated Webex API call goes through.
//!
//! Centralising it is what makes the policy uniform: rate gate before every send, 429 →
//! `Retry-After` → gate, 5xx/network → backoff, 401 → one refresh and one retry, and the host
//! breaker ([`crate::health::HostHealth`]) around every send so a host that is down is given up
//! on once for the whole run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{ErrorBody, WXCC_READ_SCOPE, status_is_transient, summarize_body};
use crate::health::{HostHealth, host_key};
use crate::http::{RateGate, RetryPolicy};
use crate::{Error, TokenProvider};

/// A successful (or explicitly accepted) response, fully read.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
}

pub(crate) struct ApiCaller {
    pub http: reqwest::Client,
    pub tokens: Arc<dyn TokenProvider>,
    pub gate: Arc<RateGate>,
    pub retry: RetryPolicy,
    pub calls: AtomicU64,
}

/// The `TrackingId` of a response: header first, then the body field.
pub(crate) fn tracking_id(headers: &HeaderMap, parsed: Option<&ErrorBody>) -> Option<String> {
    headers
        .get("trackingid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parsed.and_then(|p| p.tracking_id.clone()))
}

/// Describes a reqwest transport error without echoing the URL (which may carry a signature).
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "response body interrupted"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what} ({detail})")
    }
}

/// Sends one request, unless `health` knows its host is down, and reports the outcome to it.
///
/// The outer error is [`Error::HostUnreachable`] (the breaker is or just became open: do not
/// retry); the inner result is what the transport said.
///
/// # Errors
///
/// As above.
pub(crate) async fn guarded_execute(
    http: &reqwest::Client,
    health: &HostHealth,
    req: reqwest::Request,
) -> Result<Result<reqwest::Response, reqwest::Error>, Error> {
    let host = host_key(req.url());
    health.admit(&host)?;
    match http.execute(req).await {
        Ok(resp) => {
            health.succeeded(&host);
            Ok(Ok(resp))
        }
        Err(e) => {
            // A link refused by the media policy is not a sign of a host being down.
            if e.is_connect()
                && crate::link_policy::refusal_in(&e).is_none()
                && let Some(err) = health.failed(&host, &describe_transport(&e))
            {
                return Err(err);
            }
            Ok(Err(e))
        }
    }
}

/// Builds a request, turning a builder error (bad header value) into a Permanent error.
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming `endpoint`.
pub(crate) fn build_request(
    builder: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<reqwest::Request, Error> {
    builder.build().map_err(|e| Error::InvalidRequest {
        endpoint: endpoint.to_owned(),
        reason: describe_transport(&e),
    })
}

impl ApiCaller {
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<dyn TokenProvider>,
        gate: Arc<RateGate>,
        retry: RetryPolicy,
    ) -> Self {
        ApiCaller {
            http,
            tokens,
            gate,
            retry,
            calls: AtomicU64::new(0),
        }
    }

    /// Sends the request built by `build` (called once per attempt) with the bearer token.
    ///
    /// Returns the response for 2xx statuses and for any status listed in `accept`; every
    /// other status becomes a classified [`Error`].
    pub async fn send<F>(
        &self,
        endpoint: &str,
        accept: &[u16],
        build: F,
    ) -> Result<ApiResponse, Error>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut token: SecretString = self.tokens.access_token().await?;
        let mut refreshed = false;
        let mut attempt: u32 = 0;
        let max_attempts = self.retry.max_attempts.max(1);
        loop {
            attempt += 1;
            let req = build_request(
                build(&self.http).bearer_auth(token.expose_secret()),
                endpoint,
            )?;
            self.gate.ready().await;
            // Refused while the host is known to be down: counted as nothing sent.
            self.gate.health().admit(&host_key(req.url()))?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let sent = guarded_execute(&self.http, self.gate.health(), req).await?;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let err = Error::Network {
                        endpoint: endpoint.to_owned(),
                        message: describe_transport(&e),
                        timeout: e.is_timeout(),
                    };
                    if attempt >= max_attempts {
                        return Err(err);
                    }
                    let delay = self.retry.backoff(attempt);
                    // Not a warning: a host that stays down is reported once, by the breaker.
                    tracing::debug!(endpoint, attempt, ?delay, error = %err, "retrying after network error");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    let err = Error::Network {
                        endpoint: endpoint.to_owned(),
                        message: describe_transport(&e),
                        timeout: e.is_timeout(),
                    };
                    if attempt >= max_attempts {
                        return Err(err);
                    }
                    let delay = self.retry.backoff(attempt);
                    tracing::warn!(endpoint, attempt, ?delay, error = %err, "retrying after interrupted response");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if (200..300).contains(&status) || accept.contains(&status) {
                return Ok(ApiResponse { status, body });
            }
            let parsed = ErrorBody::parse(&body);
            let tracking = tracking_id(&headers, Some(&parsed));
            let retry_after_header = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
            match status {
                401 if !refreshed => {
                    tracing::info!(
                        endpoint,
                        tracking_id = tracking.as_deref(),
                        "401: refreshing the access token and retrying once"
                    );
                    token = self.tokens.refresh_after_unauthorized(&token).await?;
                    refreshed = true;
                    // The 401 retry does not consume the transient-retry budget.
                    attempt -= 1;
                    continue;
                }
                401 => {
                    let err = Error::Unauthorized {
                        endpoint: endpoint.to_owned(),
                        tracking_id: tracking,
                        body: summarize_body(&body, &parsed, &[token.expose_secret()]),
                    };
                    tracing::warn!(endpoint, tracking_id = err.tracking_id(), "{err}");
                    return Err(err);
                }
                429 => {
                    let wait = self.retry.retry_after_from_header(retry_after_header);
                    self.gate.block_for(wait);
                    if attempt >= max_attempts {
                        let err = Error::RateLimited {
                            endpoint: endpoint.to_owned(),
                            retry_after: wait,
                            tracking_id: tracking,
                        };
                        tracing::warn!(endpoint, tracking_id = err.tracking_id(), "{err}");
                        return Err(err);
                    }
                    tracing::warn!(
                        endpoint,
                        attempt,
                        ?wait,
                        tracking_id = tracking.as_deref(),
                        "429: waiting for Retry-After through the shared rate gate"
                    );
                    continue;
                }
                _ => {}
            }
            let server_wait = retry_after_header
                .and_then(|v| crate::http::parse_retry_after(v, std::time::SystemTime::now()))
                .map(|d| d.min(self.retry.max_retry_after));
            let err = match status {
                403 => Error::Forbidden {
                    endpoint: endpoint.to_owned(),
                    scope: WXCC_READ_SCOPE,
                    tracking_id: tracking,
                    body: summarize_body(&body, &parsed, &[token.expose_secret()]),
                },
                _ => Error::Http {
                    endpoint: endpoint.to_owned(),
                    status,
                    tracking_id: tracking,
                    body: summarize_body(&body, &parsed, &[token.expose_secret()]),
                    retry_after: server_wait,
                },
            };
            if status_is_transient(status) && attempt < max_attempts {
                let delay = server_wait
                    .unwrap_or_default()
                    .max(self.retry.backoff(attempt));
                tracing::warn!(endpoint, attempt, ?delay, tracking_id = err.tracking_id(), error = %err, "retrying after server error");
                tokio::time::sleep(delay).await;
                continue;
            }
            tracing::warn!(endpoint, status, tracking_id = err.tracking_id(), error = %err, "Webex API call failed");
            return Err(err);
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
