//! Webex Calling converged recordings (webex-api.md §3): list, details, metadata, download.
//!
//! Listing trusts the server as little as the WxCC side does: it follows `Link: rel="next"`
//! until absent, puts back any filter a next link dropped, checks every item against the
//! window and filters itself (dropping and counting the rest), de-duplicates on `id`, and never
//! lets one unreadable item fail the page. A next link that loops or leaves the API host is
//! refused: following it would either never end or hand the bearer token to another host.
//!
//! Downloads follow the Tolerate rule of §3.3: the first GET carries no `Authorization` (the
//! link's `ticket` is the credential); only a 401/403 from a configured bearer host (by
//! default `*.webex.com`) earns one retry with the bearer, and never through a redirect.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use url::Url;

use crate::api::ApiCaller;
use crate::http::{RateGate, RetryPolicy};
use crate::link_header::next_link;
use crate::media::{Fetched, LinkPolicy, MediaClient, MediaStream, redacted_location};
use crate::oauth::endpoint_url;
use crate::{Access, Error, TokenProvider, json};

mod model;

pub use model::{ConvergedRecording, ListQuery, Listing, RecordingDetails};
use model::{parse_list_page, parse_recording};

pub(super) const LIST: &str = "GET /v1/admin/convergedRecordings";
const DETAILS: &str = "GET /v1/convergedRecordings/{id}";
const METADATA: &str = "GET /v1/convergedRecordings/{id}/metadata";

/// Page size sent with every list request (the API's maximum; webex-api.md §3.2).
pub const LIST_PAGE_SIZE: u32 = 100;
/// Safety stop for a listing whose next links never end (10,000 pages of 100).
const MAX_PAGES: u32 = 10_000;
/// Statuses with which a recording link is refused when expired or invalid.
const REFUSALS: &[u16] = &[400, 401, 403, 410];
/// The field of the details response that carries the links (never kept in `raw`).
const LINKS_FIELD: &str = "temporaryDirectDownloadLinks";

/// Hosts (and their subdomains) that may receive the bearer token on a download retry.
pub const DEFAULT_BEARER_HOSTS: &[&str] = &["webex.com"];

/// [`DEFAULT_BEARER_HOSTS`] as owned strings, for [`CallingClient::new`].
pub fn default_bearer_hosts() -> Vec<String> {
    DEFAULT_BEARER_HOSTS
        .iter()
        .map(|h| (*h).to_owned())
        .collect()
}

/// Client for one org's converged recordings at `https://webexapis.com` (or a stand-in).
pub struct CallingClient {
    api: ApiCaller,
    api_base: Url,
    media: MediaClient,
    bearer_hosts: Vec<String>,
}

impl std::fmt::Debug for CallingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallingClient")
            .field("api_base", &self.api_base.as_str())
            .field("bearer_hosts", &self.bearer_hosts)
            .field("api_calls", &self.api_calls())
            .finish_non_exhaustive()
    }
}

impl CallingClient {
    /// A client for the Webex API at `api_base` (normally `https://webexapis.com/`).
    ///
    /// `gate` must be the shared gate of the integration's client id. `bearer_hosts` are the
    /// host suffixes that may get the bearer on a download retry (whole labels: `webex.com`
    /// matches `x.webex.com`, not `evilwebex.com`; see [`default_bearer_hosts`]; empty means
    /// never). `links` is the policy download links must pass (see
    /// [`LinkPolicy::for_api_base`]).
    pub fn new(
        http: reqwest::Client,
        api_base: Url,
        tokens: Arc<dyn TokenProvider>,
        gate: Arc<RateGate>,
        retry: RetryPolicy,
        bearer_hosts: Vec<String>,
        links: LinkPolicy,
    ) -> Self {
        let media = MediaClient::new(links, retry.clone(), gate.health().clone());
        let bearer_hosts = bearer_hosts
            .iter()
            .map(|h| h.trim().trim_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        CallingClient {
            api: ApiCaller::new(http, tokens, gate, retry),
            api_base,
            media,
            bearer_hosts,
        }
    }

    /// The downloader for recording links (its [`MediaClient::policy`] is the link policy).
    pub fn media(&self) -> &MediaClient {
        &self.media
    }

    /// API requests sent (list pages, details, metadata, including retries); downloads are
    /// not counted.
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    /// The bearer host suffixes in use (normalised).
    pub fn bearer_hosts(&self) -> &[String] {
        &self.bearer_hosts
    }

    /// Every recording of `q` (webex-api.md §3.2, §3.8): `max=100`, ISO 8601 `from`/`to`,
    /// pages followed through `Link: rel="next"`. Each item is checked against the window: it
    /// is kept when its `createTime` or its `timeRecorded` falls inside (an item with neither
    /// is kept, the server's filter being all there is) and against `status`/`serviceType`. `from_ms >= to_ms` returns an
    /// empty listing without a request. Keep windows at 30 days or less (1 day in practice).
    ///
    /// # Errors
    ///
    /// Classified API errors ([`Error::Forbidden`] names [`crate::CALLING_COMPLIANCE_SCOPE`]
    /// and the compliance officer role); [`Error::Decode`] (Permanent) when a page is not an
    /// object with an `items` array, or when a next link loops, leaves the API host, or never
    /// ends; [`Error::InvalidRequest`] for a window outside the years 0000–9999.
    pub async fn list(&self, q: &ListQuery) -> Result<Listing, Error> {
        self.list_pages(q, MAX_PAGES).await
    }

    /// The first page of `q` only (up to 100 recordings), as [`Self::list`] reads it: enough to
    /// check, when an org is connected, that the grant can list and download.
    ///
    /// # Errors
    ///
    /// As [`Self::list`].
    pub async fn list_first_page(&self, q: &ListQuery) -> Result<Listing, Error> {
        self.list_pages(q, 1).await
    }

    async fn list_pages(&self, q: &ListQuery, page_limit: u32) -> Result<Listing, Error> {
        let mut listing = Listing::default();
        if q.from_ms >= q.to_ms {
            return Ok(listing);
        }
        let iso = |ms: i64| {
            json::iso_from_ms(ms).ok_or_else(|| Error::InvalidRequest {
                endpoint: LIST.to_owned(),
                reason: format!("{ms} ms is outside the years 0000-9999"),
            })
        };
        let mut filters: Vec<(&str, String)> = vec![
            ("max", LIST_PAGE_SIZE.to_string()),
            ("from", iso(q.from_ms)?),
            ("to", iso(q.to_ms)?),
        ];
        if !q.status.is_empty() {
            filters.push(("status", q.status.clone()));
        }
        if !q.service_type.is_empty() {
            filters.push(("serviceType", q.service_type.clone()));
        }
        let mut url = endpoint_url(&self.api_base, "v1/admin/convergedRecordings")?;
        url.query_pairs_mut().extend_pairs(&filters);
        let mut visited: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut seen_rejected: HashSet<String> = HashSet::new();
        let mut next = Some(url);
        while let Some(page_url) = next.take() {
            if !visited.insert(page_url.as_str().to_owned()) {
                return Err(paging_error(format!(
                    "the next-page link after page {} repeats an earlier page; stopped to avoid \
                     a loop (the listing for this window is incomplete; retry later)",
                    listing.pages
                )));
            }
            if listing.pages >= MAX_PAGES {
                return Err(paging_error(format!(
                    "more than {MAX_PAGES} pages; use a smaller window"
                )));
            }
            let resp = self
                .api
                .send(LIST, &Access::CALLING_COMPLIANCE, &[], |c| {
                    c.get(page_url.clone())
                })
                .await?;
            listing.pages += 1;
            for item in parse_list_page(&resp.body)? {
                let rec = match parse_recording(&item) {
                    Ok(r) => r,
                    Err(r) => {
                        match &r.id {
                            Some(id) if !seen_rejected.insert(id.clone()) => {}
                            _ => listing.rejected.push(r),
                        }
                        continue;
                    }
                };
                if !seen.insert(rec.id.clone()) {
                    listing.duplicates += 1;
                    continue;
                }
                // Which time Webex's from/to filter uses is not documented: an item is in the
                // window when either of its times is (de-duplication makes the overlap safe).
                let times = [rec.create_time_ms, rec.time_recorded_ms];
                let mut known = times.iter().flatten().peekable();
                if known.peek().is_some() && !known.any(|t| (q.from_ms..q.to_ms).contains(t)) {
                    listing.outside_window += 1;
                    continue;
                }
                if differs(&q.status, rec.status.as_deref())
                    || differs(&q.service_type, rec.service_type.as_deref())
                {
                    listing.filtered_out += 1;
                    continue;
                }
                listing.items.push(rec);
            }
            next = match next_link(&resp.headers) {
                Some(_) if listing.pages >= page_limit => None,
                Some(link) => Some(self.next_page_url(&page_url, &link, &filters)?),
                None => None,
            };
        }
        Ok(listing)
    }

    /// Resolves a next link, refuses it off the API origin, and adds back dropped filters.
    fn next_page_url(
        &self,
        current: &Url,
        link: &str,
        filters: &[(&str, String)],
    ) -> Result<Url, Error> {
        let mut next = current.join(link).map_err(|e| {
            paging_error(format!("the next-page link is not a URL reference ({e})"))
        })?;
        let origin = |u: &Url| {
            (
                u.scheme().to_owned(),
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default(),
            )
        };
        if origin(&next) != origin(&self.api_base) {
            return Err(paging_error(format!(
                "the next-page link points to {}, not to the API host {}; not followed (the \
                 access token must not go there)",
                crate::http::display_url(next.as_str()),
                crate::http::display_url(self.api_base.as_str()),
            )));
        }
        let present: HashSet<String> = next.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let missing: Vec<&(&str, String)> = filters
            .iter()
            .filter(|(k, _)| !present.contains(*k))
            .collect();
        if !missing.is_empty() {
            tracing::debug!(
                added_back = ?missing.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                "the next-page link dropped filters; adding them back"
            );
            next.query_pairs_mut()
                .extend_pairs(missing.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(next)
    }

    /// `{api_base}v1/convergedRecordings/{id}[/tail]` with `id` percent-encoded as a segment.
    fn recording_url(&self, endpoint: &str, id: &str, tail: Option<&str>) -> Result<Url, Error> {
        if id.trim().is_empty() {
            return Err(Error::InvalidRequest {
                endpoint: endpoint.to_owned(),
                reason: "the recording id is empty".to_owned(),
            });
        }
        let mut url = endpoint_url(&self.api_base, "v1/convergedRecordings")?;
        url.path_segments_mut()
            .map_err(|()| Error::Config(format!("API base {} cannot have paths", self.api_base)))?
            .push(id)
            .extend(tail);
        Ok(url)
    }

    /// `GET /v1/convergedRecordings/{id}` (webex-api.md §3.3): the recording and its
    /// short-lived links (3 h). Call it just before each transfer; never queue the links.
    ///
    /// # Errors
    ///
    /// Classified API errors (404 → Permanent [`Error::Http`]; 403 → [`Error::Forbidden`]);
    /// [`Error::Decode`] when the body is not a readable recording object;
    /// [`Error::InvalidRequest`] for an empty id.
    pub async fn details(&self, id: &str) -> Result<RecordingDetails, Error> {
        let url = self.recording_url(DETAILS, id, None)?;
        let resp = self
            .api
            .send(DETAILS, &Access::CALLING_COMPLIANCE, &[], |c| {
                c.get(url.clone())
            })
            .await?;
        let location = format!("{DETAILS} for {id}");
        let mut body: Value = serde_json::from_slice(&resp.body).map_err(|e| Error::Decode {
            what: "recording details".to_owned(),
            location: location.clone(),
            detail: format!("body is not JSON: {e}"),
        })?;
        let links = match &mut body {
            Value::Object(o) => o.remove(LINKS_FIELD),
            other => {
                return Err(Error::Decode {
                    what: "recording details".to_owned(),
                    location,
                    detail: format!("body is {}, not an object", json::kind(other)),
                });
            }
        };
        let recording = parse_recording(&body).map_err(|r| Error::Decode {
            what: "recording details".to_owned(),
            location,
            detail: r.reason,
        })?;
        let link = |name: &str| json::string(links.as_ref().and_then(|l| l.get(name)));
        Ok(RecordingDetails {
            recording,
            audio_link: link("audioDownloadLink"),
            transcript_link: link("transcriptDownloadLink"),
            expiration_ms: links
                .as_ref()
                .and_then(|l| l.get("expiration"))
                .and_then(json::iso_ms),
            raw_without_links: body,
        })
    }

    /// `GET /v1/convergedRecordings/{id}/metadata` (webex-api.md §3.4), kept as received.
    /// A 204 or an empty body means "no metadata yet": `Ok(None)`.
    ///
    /// # Errors
    ///
    /// Classified API errors; [`Error::Decode`] when the body is not JSON;
    /// [`Error::InvalidRequest`] for an empty id.
    pub async fn metadata(&self, id: &str) -> Result<Option<Value>, Error> {
        let url = self.recording_url(METADATA, id, Some("metadata"))?;
        let resp = self
            .api
            .send(METADATA, &Access::CALLING_COMPLIANCE, &[204], |c| {
                c.get(url.clone())
            })
            .await?;
        if resp.status == 204 || resp.body.trim_ascii().is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&resp.body)
            .map(Some)
            .map_err(|e| Error::Decode {
                what: "recording metadata".to_owned(),
                location: format!("{METADATA} for {id}"),
                detail: format!("body is not JSON: {e}"),
            })
    }

    /// Downloads a recording link (webex-api.md §3.3 Tolerate): first without
    /// `Authorization`; on 401/403 from a bearer host, once more with the bearer token; the
    /// token never goes to any other host, and redirects are never followed.
    ///
    /// # Errors
    ///
    /// [`Error::LinkExpired`] (Transient, [`Error::is_link_expired`]) for 400/401/403/410
    /// after that: request the details again for a fresh link, once. Otherwise as
    /// [`MediaClient::download`]: [`Error::MediaLinkRefused`] for links or redirects the
    /// policy refuses, [`Error::UnexpectedContentType`], transient errors after retries, and
    /// [`Error::Truncated`] from the stream.
    pub async fn download(&self, link: &str) -> Result<MediaStream, Error> {
        let url = self
            .media
            .checked_link(link, "the recording's audioDownloadLink")?;
        let status = match self.media.fetch(&url, None, REFUSALS).await? {
            Fetched::Media(m) => return Ok(m),
            Fetched::Refused(status) => status,
        };
        let status = if matches!(status, 401 | 403) && self.is_bearer_host(&url) {
            tracing::debug!(
                host = url.host_str(),
                status,
                "recording link refused without a token; retrying once with the bearer token"
            );
            let token = self.api.tokens.access_token().await?;
            match self.media.fetch(&url, Some(&token), REFUSALS).await? {
                Fetched::Media(m) => return Ok(m),
                Fetched::Refused(status) => status,
            }
        } else {
            status
        };
        Err(Error::LinkExpired {
            location: redacted_location(link),
            status,
        })
    }

    fn is_bearer_host(&self, url: &Url) -> bool {
        host_matches(&self.bearer_hosts, url)
    }
}

/// Whether `url`'s host is one of `suffixes` or a subdomain of one, by whole labels
/// (`webex.com` matches `x.webex.com`, never `evilwebex.com`); an IP-literal host must equal
/// one exactly. `suffixes` are lowercase without surrounding dots.
fn host_matches(suffixes: &[String], url: &Url) -> bool {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(_) => {
            let ip = url.host_str().unwrap_or("");
            return suffixes.iter().any(|h| h == ip);
        }
        None => return false,
    };
    suffixes.iter().any(|suffix| {
        host == *suffix
            || host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// A Permanent paging failure naming the list endpoint.
fn paging_error(detail: String) -> Error {
    Error::Decode {
        what: "next-page link".to_owned(),
        location: LIST.to_owned(),
        detail,
    }
}

/// Whether an item's value contradicts a requested filter (case-insensitively). An empty
/// filter or a missing value cannot contradict.
fn differs(wanted: &str, got: Option<&str>) -> bool {
    !wanted.is_empty() && got.is_some_and(|g| !g.trim().eq_ignore_ascii_case(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_hosts_match_whole_labels() {
        let hosts = default_bearer_hosts();
        let m = |u: &str| host_matches(&hosts, &Url::parse(u).unwrap());
        assert!(m("https://webex.com/x"));
        assert!(m("https://nsq1wss.dmz.webex.com/nbr/x?ticket=t"));
        assert!(m("https://NSQ1WSS.DMZ.WEBEX.COM./x"));
        assert!(!m("https://evilwebex.com/x"));
        assert!(!m("https://webex.com.evil.example/x"));
        assert!(!m("https://127.0.0.1/x"));
        let ips = vec!["127.0.0.1".to_owned(), "[::1]".to_owned()];
        assert!(host_matches(
            &ips,
            &Url::parse("http://127.0.0.1:9/x").unwrap()
        ));
        assert!(host_matches(&ips, &Url::parse("http://[::1]:9/x").unwrap()));
        assert!(!host_matches(
            &ips,
            &Url::parse("http://127.0.0.2/x").unwrap()
        ));
    }

    #[test]
    fn filters_compare_case_insensitively_and_tolerate_missing_values() {
        assert!(!differs("calling", Some("Calling")));
        assert!(differs("calling", Some("customerAssist")));
        assert!(!differs("calling", None));
        assert!(!differs("", Some("anything")));
    }
}
