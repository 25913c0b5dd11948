//! Downloading capture media from pre-signed URLs (webex-api.md §2.5).
//!
//! The URL's query string is the credential, so: no `Authorization` header is ever sent (the
//! Webex token must never reach S3), and the query string never appears in errors or logs.
//! An error body must never be stored as audio, hence the status and content-type checks
//! before the stream is handed out, and the length check while it is consumed. Where a link
//! may point is the [`LinkPolicy`]'s decision, enforced in the resolver the client connects
//! with; redirects are never followed.

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use url::Url;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::Error;
use crate::api::{build_request, describe_transport, guarded_execute, network_error};
use crate::error::status_is_transient;
use crate::health::HostHealth;
use crate::http::RetryPolicy;
use crate::link_policy::refusal_in;
pub use crate::link_policy::{LinkPolicy, LinkRefused, PolicyResolver, is_public};
use crate::retry::{Attempt, Driver};

/// An open media download.
pub struct MediaStream {
    /// Declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// Declared `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body. Ends with [`Error::Truncated`] if it stops short of `content_length`.
    pub stream: BoxStream<'static, Result<bytes::Bytes, Error>>,
}

impl std::fmt::Debug for MediaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStream")
            .field("content_length", &self.content_length)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// `host/path` of a URL, without the signed query string, for messages.
pub fn redacted_location(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => format!("{}{}", u.host_str().unwrap_or(""), u.path()),
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

/// Whether a content type is an error page rather than media.
fn is_error_content_type(ct: &str) -> bool {
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct == "application/json"
        || ct == "text/json"
        || ct == "application/xml"
        || ct == "text/xml"
        || ct == "text/html"
        || ct == "application/xhtml+xml"
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
}

/// Downloads media links under a [`LinkPolicy`], reporting connection failures to the run's
/// [`HostHealth`].
#[derive(Debug, Clone)]
pub struct MediaClient {
    http: reqwest::Client,
    policy: LinkPolicy,
    retry: RetryPolicy,
    health: Arc<HostHealth>,
}

impl MediaClient {
    /// A client whose connections resolve through `policy`'s checking resolver.
    ///
    /// # Panics
    ///
    /// Panics if the TLS backend cannot be initialised, exactly like `reqwest::Client::new`.
    pub fn new(policy: LinkPolicy, retry: RetryPolicy, health: Arc<HostHealth>) -> Self {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(policy.resolver()))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("wxvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend initialisation failed");
        MediaClient {
            http,
            policy,
            retry,
            health,
        }
    }

    /// The policy links are checked against.
    pub fn policy(&self) -> &LinkPolicy {
        &self.policy
    }

    /// Plain GET with NO Authorization header (pre-signed URL).
    ///
    /// 400/401/403 → [`Error::LinkExpired`]; 5xx/429/network → retried per the retry policy
    /// before returning a transient error; 200 with a JSON/XML/HTML content type →
    /// [`Error::UnexpectedContentType`]. A body that ends before `Content-Length` yields
    /// [`Error::Truncated`] from the stream.
    ///
    /// # Errors
    ///
    /// As above; [`Error::InvalidRequest`] when `url` is not an http(s) URL;
    /// [`Error::MediaLinkRefused`] (Permanent) when the policy refuses the link, its resolved
    /// addresses, or a redirect; [`Error::HostUnreachable`] when the media host's breaker is
    /// open; [`Error::Http`] (Permanent) for other statuses such as 404 (object purged).
    pub async fn download(&self, url: &str) -> Result<MediaStream, Error> {
        let parsed = self.checked_link(url, "the capture's filePath")?;
        match self.fetch(&parsed, None, WXCC_REFUSALS).await? {
            Fetched::Media(m) => Ok(m),
            Fetched::Refused(status) => Err(Error::LinkExpired {
                location: redacted_location(url),
                status,
            }),
        }
    }

    /// Parses `url` and checks it against the policy before anything is sent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `url` is not an http(s) URL (`what` says where it came
    /// from); [`Error::MediaLinkRefused`] when the policy refuses it.
    pub(crate) fn checked_link(&self, url: &str, what: &str) -> Result<Url, Error> {
        let parsed = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| Error::InvalidRequest {
                endpoint: "GET media".to_owned(),
                reason: format!("{what} is not an http(s) URL"),
            })?;
        self.policy.check_url(&parsed).map_err(refused)?;
        Ok(parsed)
    }

    /// One GET of a checked link through the retry driver, optionally with a bearer token.
    ///
    /// A status in `refusals` is handed back as [`Fetched::Refused`] (the caller decides
    /// between a bearer retry and [`Error::LinkExpired`]); 5xx/408/423/429 and network errors
    /// are retried; a redirect is refused, never followed (least of all with a bearer).
    pub(crate) async fn fetch(
        &self,
        link: &Url,
        bearer: Option<&SecretString>,
        refusals: &[u16],
    ) -> Result<Fetched, Error> {
        let location = redacted_location(link.as_str());
        let endpoint = format!("GET media {location}");
        let retry = &self.retry;
        let driver = Driver {
            what: &endpoint,
            gate: None,
            policy: retry,
            warn_on_failure: false,
        };
        let (endpoint, location) = (&endpoint, &location);
        driver
            .run_simple(|_| async move {
                let mut builder = self.http.get(link.clone());
                if let Some(token) = bearer {
                    builder = builder.bearer_auth(token.expose_secret());
                }
                let req = match build_request(builder, "GET media") {
                    Ok(r) => r,
                    Err(e) => return Attempt::Fail(e),
                };
                let resp = match guarded_execute(&self.http, &self.health, req).await {
                    Err(e) => return Attempt::Fail(e),
                    Ok(Err(e)) => {
                        if let Some(r) = refusal_in(&e) {
                            return Attempt::Fail(refused(r));
                        }
                        return Attempt::Retry(network_error(endpoint, &e));
                    }
                    Ok(Ok(resp)) => resp,
                };
                let status = resp.status().as_u16();
                if matches!(status, 200 | 203) {
                    return match open_stream(resp, location.clone()) {
                        Ok(m) => Attempt::Done(Fetched::Media(m)),
                        Err(e) => Attempt::Fail(e),
                    };
                }
                if refusals.contains(&status) {
                    return Attempt::Done(Fetched::Refused(status));
                }
                if resp.status().is_redirection() {
                    return Attempt::Fail(redirect_refused(link, &resp));
                }
                let header = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                // Media hosts are outside the Webex API rate limit: a 429 here is waited out
                // by this request alone, not through a client id's gate.
                let server_wait = match (status, header) {
                    (429, Some(v)) => Some(retry.retry_after_from_header(Some(v))),
                    (_, Some(v)) => Some(
                        crate::http::parse_retry_after(v, std::time::SystemTime::now())
                            .unwrap_or_default()
                            .min(retry.max_retry_after),
                    ),
                    (_, None) => None,
                };
                let err = Error::Http {
                    endpoint: endpoint.to_owned(),
                    status,
                    tracking_id: None,
                    body: format!("media host answered {status}"),
                    retry_after: server_wait,
                };
                if status_is_transient(status) {
                    Attempt::Retry(err)
                } else {
                    Attempt::Fail(err)
                }
            })
            .await
    }
}

/// Statuses with which a pre-signed WxCC capture link is refused when expired or invalid.
const WXCC_REFUSALS: &[u16] = &[400, 401, 403];

/// The outcome of [`MediaClient::fetch`].
pub(crate) enum Fetched {
    /// The media, length-checked while it is read.
    Media(MediaStream),
    /// The host refused the link with this status.
    Refused(u16),
}

fn refused(r: LinkRefused) -> Error {
    Error::MediaLinkRefused {
        host: r.host,
        reason: r.reason,
    }
}

/// A redirect answer to a media link: refused, naming both hosts but no query string.
fn redirect_refused(link: &Url, resp: &reqwest::Response) -> Error {
    let target = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| link.join(v).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "an unnamed location".to_owned());
    Error::MediaLinkRefused {
        host: link.host_str().unwrap_or("(no host)").to_owned(),
        reason: format!(
            "the media host answered a redirect (HTTP {}) to {target}; redirects from media \
             links are not followed",
            resp.status().as_u16()
        ),
    }
}

/// Checks the content type of a 200 and hands out the length-checked body.
fn open_stream(resp: reqwest::Response, location: String) -> Result<MediaStream, Error> {
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(ct) = content_type
        .as_deref()
        .filter(|ct| is_error_content_type(ct))
    {
        return Err(Error::UnexpectedContentType {
            location,
            content_type: ct.to_owned(),
        });
    }
    let content_length = resp.content_length();
    Ok(MediaStream {
        content_length,
        content_type,
        stream: checked_stream(resp, content_length, location),
    })
}

struct StreamState {
    inner: BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
    received: u64,
    expected: Option<u64>,
    location: String,
    done: bool,
}

/// Wraps the body so that an early end — clean EOF or a transport error — surfaces as
/// [`Error::Truncated`] when the length was declared.
fn checked_stream(
    resp: reqwest::Response,
    expected: Option<u64>,
    location: String,
) -> BoxStream<'static, Result<bytes::Bytes, Error>> {
    let state = StreamState {
        inner: resp.bytes_stream().boxed(),
        received: 0,
        expected,
        location,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                st.received += chunk.len() as u64;
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.done = true;
                let err = match st.expected {
                    Some(expected) if st.received < expected => Error::Truncated {
                        location: st.location.clone(),
                        expected,
                        received: st.received,
                    },
                    _ => Error::Network {
                        endpoint: format!("GET media {}", st.location),
                        message: describe_transport(&e),
                        timeout: e.is_timeout(),
                    },
                };
                Some((Err(err), st))
            }
            None => {
                st.done = true;
                match st.expected {
                    Some(expected) if st.received != expected => {
                        let err = Error::Truncated {
                            location: st.location.clone(),
                            expected,
                            received: st.received,
                        };
                        Some((Err(err), st))
                    }
                    _ => None,
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_content_types() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "text/html",
            "TEXT/HTML; charset=UTF-8",
            "application/xml",
            "text/xml",
            "application/problem+json",
        ] {
            assert!(is_error_content_type(ct), "{ct}");
        }
        for ct in [
            "audio/wav",
            "audio/x-wav",
            "application/octet-stream",
            "binary/octet-stream",
            "",
        ] {
            assert!(!is_error_content_type(ct), "{ct}");
        }
    }

    #[test]
    fn location_drops_signature() {
        assert_eq!(
            redacted_location("https://b.s3.amazonaws.com/o/a.wav?X-Amz-Signature=abc"),
            "b.s3.amazonaws.com/o/a.wav"
        );
        assert_eq!(redacted_location("::"), "(unparseable URL)");
    }
}
