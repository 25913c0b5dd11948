//! Downloading capture media from pre-signed URLs (webex-api.md §2.5).
//!
//! The URL's query string is the credential, so: no `Authorization` header is ever sent (the
//! Webex token must never reach S3), and the query string never appears in errors or logs.
//! An error body must never be stored as audio, hence the status and content-type checks
//! before the stream is handed out, and the length check while it is consumed.

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use url::Url;

use crate::Error;
use crate::api::describe_transport;
use crate::error::status_is_transient;
use crate::http::RetryPolicy;

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

/// Plain GET with NO Authorization header (pre-signed URL).
///
/// 400/401/403 → [`Error::LinkExpired`]; 5xx/429/network → retried per `retry` before
/// returning a transient error; 200 with a JSON/XML/HTML content type →
/// [`Error::UnexpectedContentType`]. A body that ends before `Content-Length` yields
/// [`Error::Truncated`] from the stream.
///
/// # Errors
///
/// As above; [`Error::InvalidRequest`] when `url` is not an http(s) URL; [`Error::Http`]
/// (Permanent) for other statuses such as 404 (object purged).
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    retry: &RetryPolicy,
) -> Result<MediaStream, Error> {
    let location = redacted_location(url);
    let endpoint = format!("GET media {location}");
    let parsed = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| Error::InvalidRequest {
            endpoint: "GET media".to_owned(),
            reason: "the capture's filePath is not an http(s) URL".to_owned(),
        })?;
    let max_attempts = retry.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (err, wait) = match http.get(parsed.clone()).send().await {
            Err(e) => (
                Error::Network {
                    endpoint: endpoint.clone(),
                    message: describe_transport(&e),
                    timeout: e.is_timeout(),
                },
                None,
            ),
            Ok(resp) => {
                let status = resp.status().as_u16();
                if matches!(status, 200 | 203) {
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
                    return Ok(MediaStream {
                        content_length,
                        content_type,
                        stream: checked_stream(resp, content_length, location),
                    });
                }
                if matches!(status, 400 | 401 | 403) {
                    return Err(Error::LinkExpired { location, status });
                }
                let server_wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| {
                        if status == 429 {
                            retry.retry_after_from_header(Some(v))
                        } else {
                            crate::http::parse_retry_after(v, std::time::SystemTime::now())
                                .unwrap_or_default()
                                .min(retry.max_retry_after)
                        }
                    });
                let err = Error::Http {
                    endpoint: endpoint.clone(),
                    status,
                    tracking_id: None,
                    body: format!("media host answered {status}"),
                    retry_after: server_wait,
                };
                if !status_is_transient(status) {
                    return Err(err);
                }
                (err, server_wait)
            }
        };
        if attempt >= max_attempts {
            return Err(err);
        }
        let delay = wait.unwrap_or_default().max(retry.backoff(attempt));
        tracing::warn!(attempt, ?delay, error = %err, "retrying media download");
        tokio::time::sleep(delay).await;
    }
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
