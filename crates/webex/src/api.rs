//! The one request loop every bearer-authenticated Webex API call goes through.
//!
//! Retries are the shared driver's ([`crate::retry`]): rate gate before every send, 429 →
//! `Retry-After` → gate, 5xx/network → backoff. This module adds what only bearer calls need:
//! 401 → one refresh and one retry, 403 → [`Error::Forbidden`] naming the endpoint's
//! [`Access`], and the host breaker ([`crate::health::HostHealth`]) around every send so a host
//! that is down is given up on once for the whole run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Access, ErrorBody, status_is_transient, summarize_body};
use crate::health::{HostHealth, host_key};
use crate::http::{RateGate, RetryPolicy};
use crate::retry::{Attempt, Driver};
use crate::{Error, TokenProvider};

/// A successful (or explicitly accepted) response, fully read.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
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

/// A transport failure on `endpoint` as a (Transient) [`Error::Network`].
pub(crate) fn network_error(endpoint: &str, e: &reqwest::Error) -> Error {
    Error::Network {
        endpoint: endpoint.to_owned(),
        message: describe_transport(e),
        timeout: e.is_timeout(),
    }
}

/// A server's `Retry-After` on a non-429 answer (423, 503): parsed and clamped; `None` when
/// absent or unreadable (the backoff applies then).
pub(crate) fn server_retry_after(
    policy: &RetryPolicy,
    header: Option<&str>,
) -> Option<std::time::Duration> {
    header
        .and_then(|v| crate::http::parse_retry_after(v, std::time::SystemTime::now()))
        .map(|d| d.min(policy.max_retry_after))
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

    /// Sends the request built by `build` (called once per attempt) with the bearer token,
    /// through the shared retry driver ([`crate::retry`]).
    ///
    /// Returns the response for 2xx statuses and for any status listed in `accept`; every
    /// other status becomes a classified [`Error`]. A 401 refreshes the token once and retries
    /// once; a 403 becomes [`Error::Forbidden`] naming `access`'s scope and role.
    pub async fn send<F>(
        &self,
        endpoint: &str,
        access: &Access,
        accept: &[u16],
        build: F,
    ) -> Result<ApiResponse, Error>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let token: SecretString = self.tokens.access_token().await?;
        let build = &build;
        let driver = Driver {
            what: endpoint,
            gate: Some(&self.gate),
            policy: &self.retry,
            warn_on_failure: true,
        };
        driver
            .run((token, false), |_, (mut token, mut refreshed)| async move {
                let outcome = async {
                    let req = match build_request(
                        build(&self.http).bearer_auth(token.expose_secret()),
                        endpoint,
                    ) {
                        Ok(r) => r,
                        Err(e) => return Attempt::Fail(e),
                    };
                    // Refused while the host is known to be down: counted as nothing sent.
                    if let Err(e) = self.gate.health().admit(&host_key(req.url())) {
                        return Attempt::Fail(e);
                    }
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    let resp = match guarded_execute(&self.http, self.gate.health(), req).await {
                        Err(e) => return Attempt::Fail(e),
                        Ok(Err(e)) => return Attempt::Retry(network_error(endpoint, &e)),
                        Ok(Ok(r)) => r,
                    };
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => return Attempt::Retry(network_error(endpoint, &e)),
                    };
                    if (200..300).contains(&status) || accept.contains(&status) {
                        return Attempt::Done(ApiResponse {
                            status,
                            headers,
                            body,
                        });
                    }
                    let parsed = ErrorBody::parse(&body);
                    let tracking = tracking_id(&headers, Some(&parsed));
                    let retry_after_header = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
                    let summary = || summarize_body(&body, &parsed, &[token.expose_secret()]);
                    let err = match status {
                        401 if !refreshed => {
                            tracing::info!(
                                endpoint,
                                tracking_id = tracking.as_deref(),
                                "401: refreshing the access token and retrying once"
                            );
                            match self.tokens.refresh_after_unauthorized(&token).await {
                                Ok(t) => token = t,
                                Err(e) => return Attempt::Fail(e),
                            }
                            refreshed = true;
                            // The 401 retry does not consume the transient-retry budget.
                            return Attempt::Again;
                        }
                        401 => Error::Unauthorized {
                            endpoint: endpoint.to_owned(),
                            tracking_id: tracking,
                            body: summary(),
                        },
                        429 => Error::RateLimited {
                            endpoint: endpoint.to_owned(),
                            retry_after: self.retry.retry_after_from_header(retry_after_header),
                            tracking_id: tracking,
                        },
                        403 => Error::Forbidden {
                            endpoint: endpoint.to_owned(),
                            scope: access.scope,
                            role: access.role,
                            tracking_id: tracking,
                            body: summary(),
                        },
                        _ => Error::Http {
                            endpoint: endpoint.to_owned(),
                            status,
                            tracking_id: tracking,
                            body: summary(),
                            retry_after: server_retry_after(&self.retry, retry_after_header),
                        },
                    };
                    if status_is_transient(status) {
                        Attempt::Retry(err)
                    } else {
                        Attempt::Fail(err)
                    }
                }
                .await;
                ((token, refreshed), outcome)
            })
            .await
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
