//! Shared set-up of the Webex Calling tests: a simulator with Calling data and helpers.
#![allow(dead_code)] // each test crate uses a different subset

use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use webex_sim::{
    CallingManifest, DatasetSpec, ExpectedCallingRecording, SimClient, SimConfig, SimHandle,
    SimServer,
};

pub const START: i64 = 1_760_000_000_000;
pub const DAY: i64 = 86_400_000;
pub const ADMIN: &str = "spark-admin:recordings_read";
pub const COMPLIANCE: &str = "spark-compliance:recordings_read";

pub struct Ctx {
    _server: SimServer,
    pub sim: SimHandle,
    pub http: reqwest::Client,
    pub base: url::Url,
    pub org: String,
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        self.base.join(path).unwrap().to_string()
    }

    pub fn token(&self, scopes: &[&str]) -> String {
        self.sim
            .issue_grant(SimClient::DEMO_CLIENT_ID, &self.org, scopes)
            .access_token
    }

    pub fn manifest(&self) -> CallingManifest {
        self.sim.calling_manifest(&self.org)
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        let r = self.get(token, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    /// Follows `rel="next"` links as given; returns every page's items.
    pub async fn list_all(&self, token: &str, first: &str) -> (Vec<Value>, Vec<String>) {
        let mut items = Vec::new();
        let mut links = Vec::new();
        let mut url = self.url(first);
        loop {
            let r = self.http.get(&url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            let next = r
                .headers()
                .get("link")
                .map(|v| next_link(v.to_str().unwrap()));
            let body: Value = r.json().await.unwrap();
            items.extend(body["items"].as_array().unwrap().iter().cloned());
            match next {
                Some(n) => {
                    links.push(n.clone());
                    url = n;
                }
                None => return (items, links),
            }
        }
    }

    pub async fn download(&self, link: &str) -> reqwest::Response {
        self.http.get(link).send().await.unwrap()
    }
}

pub fn next_link(header: &str) -> String {
    let (url, rel) = header.split_once(';').unwrap();
    assert_eq!(rel.trim(), "rel=\"next\"");
    url.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

pub fn iso(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

pub fn ms_of(iso: &str) -> i64 {
    i64::try_from(
        OffsetDateTime::parse(iso, &Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000,
    )
    .unwrap()
}

pub async fn start(n: u32) -> Ctx {
    let cfg = SimConfig {
        start_ms: Some(START),
        realtime_clock: false,
        rate_limit_per_minute: None,
        dataset: DatasetSpec::small().with_calling(n),
        ..SimConfig::default()
    };
    let server = SimServer::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sim = server.handle();
    let org = sim.orgs()[0].org_id.clone();
    Ctx {
        base: server.base_url(),
        _server: server,
        sim,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        org,
    }
}

pub fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Manifest entries a filtered list shows at `now`, newest first.
pub fn expected(
    m: &CallingManifest,
    now: i64,
    from: i64,
    to: i64,
    keep: impl Fn(&ExpectedCallingRecording) -> bool,
) -> Vec<&ExpectedCallingRecording> {
    m.recordings
        .iter()
        .filter(|r| r.create_time_ms <= now && r.create_time_ms >= from && r.create_time_ms < to)
        .filter(|r| keep(r))
        .collect()
}

pub async fn audio_link(ctx: &Ctx, token: &str, id: &str) -> String {
    let d = ctx
        .get_json(token, &format!("v1/convergedRecordings/{id}"))
        .await;
    d["temporaryDirectDownloadLinks"]["audioDownloadLink"]
        .as_str()
        .unwrap()
        .to_owned()
}
