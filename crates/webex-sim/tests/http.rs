//! End-to-end tests of the simulator over real HTTP on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webex_sim::{ConsentMode, DatasetSpec, Faults, SimClient, SimConfig, SimHandle, SimServer};

const START: i64 = 1_760_000_000_000;
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const READ: &[&str] = &["cjp:config_read"];

struct Ctx {
    server: SimServer,
    sim: SimHandle,
    http: reqwest::Client,
    base: url::Url,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        self.base.join(path).unwrap().to_string()
    }

    fn org(&self, i: usize) -> String {
        self.sim.orgs()[i].org_id.clone()
    }

    fn token(&self, org: &str, scopes: &[&str]) -> String {
        self.sim
            .issue_grant(SimClient::DEMO_CLIENT_ID, org, scopes)
            .access_token
    }

    async fn tasks(&self, token: &str, query: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("v1/tasks?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn captures(&self, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("v1/captures/query"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn config() -> SimConfig {
    SimConfig {
        start_ms: Some(START),
        realtime_clock: false,
        ..SimConfig::default()
    }
}

async fn start(cfg: SimConfig) -> Ctx {
    let server = SimServer::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Ctx {
        sim: server.handle(),
        base: server.base_url(),
        server,
        http,
    }
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Runs the consent step; returns the redirect's query parameters.
async fn authorize(ctx: &Ctx, extra: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", SimClient::DEMO_CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "cjp:config_read spark:kms not:registered"),
        ("state", "st-123"),
    ];
    params.extend_from_slice(extra);
    let resp = ctx
        .http
        .get(ctx.url("v1/authorize"))
        .query(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    query_of(&loc)
}

async fn token_form(ctx: &Ctx, form: &[(&str, &str)], basic: bool) -> reqwest::Response {
    let mut all: Vec<(&str, &str)> = form.to_vec();
    let mut req = ctx.http.post(ctx.url("v1/access_token"));
    if basic {
        req = req.basic_auth(
            SimClient::DEMO_CLIENT_ID,
            Some(SimClient::DEMO_CLIENT_SECRET),
        );
    } else {
        all.push(("client_id", SimClient::DEMO_CLIENT_ID));
        all.push(("client_secret", SimClient::DEMO_CLIENT_SECRET));
    }
    req.form(&all).send().await.unwrap()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9ZzrsWdbz0b8Cq1r2hKpUQbW3pZ7xY1g2";

async fn code_for(ctx: &Ctx, org_name: &str) -> String {
    let challenge = s256(VERIFIER);
    let q = authorize(
        ctx,
        &[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", org_name),
        ],
    )
    .await;
    q["code"].clone()
}

#[tokio::test]
async fn oauth_happy_path_pkce_and_form_auth() {
    let ctx = start(config()).await;
    let org = ctx.sim.orgs()[1].clone();
    let code = code_for(&ctx, &org.name).await;
    assert!(code.ends_with(&format!("_PF84_{}", org.org_id)), "{code}");

    let resp = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        false,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 43_199);
    assert_eq!(t["refresh_token_expires_in"], 7_775_999);
    assert_eq!(t["scope"], "cjp:config_read spark:kms");
    let access = t["access_token"].as_str().unwrap();
    let parts: Vec<&str> = access.rsplitn(3, '_').collect();
    assert_eq!(parts[0], org.org_id);
    assert_eq!(parts[1], "PF84");

    let resp = ctx
        .tasks(access, &format!("from={}", START - 3 * 86_400_000))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["meta"]["orgId"], org.org_id.as_str());
    assert_eq!(ctx.sim.stats().by_endpoint["access_token"], 1);
    assert_eq!(ctx.sim.stats().by_endpoint["authorize"], 1);
    ctx.server.shutdown().await;
}

#[tokio::test]
async fn pkce_failures_and_code_replay() {
    let ctx = start(config()).await;
    let name = ctx.sim.orgs()[0].name.clone();

    let code = code_for(&ctx, &name).await;
    let wrong = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "x".repeat(43).as_str()),
        ],
        false,
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let missing = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        false,
    )
    .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    let other_redirect = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/callback/"),
            ("code_verifier", VERIFIER),
        ],
        false,
    )
    .await;
    assert_eq!(
        other_redirect.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // First redemption works; a replay fails and kills the first grant.
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let ok: Value = token_form(&ctx, &form, false).await.json().await.unwrap();
    let access = ok["access_token"].as_str().unwrap().to_owned();
    let replay = token_form(&ctx, &form, false).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let resp = ctx
        .tasks(&access, &format!("from={}", START - 86_400_000))
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Codes expire.
    let late = code_for(&ctx, &name).await;
    ctx.sim.advance_clock(Duration::from_secs(600));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", late.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    assert_eq!(
        token_form(&ctx, &form, false)
            .await
            .json::<Value>()
            .await
            .unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn basic_auth_refresh_and_revocation() {
    let ctx = start(config()).await;
    let org = ctx.sim.orgs()[0].clone();
    let code = code_for(&ctx, &org.org_id).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let first: Value = token_form(&ctx, &form, true).await.json().await.unwrap();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.ends_with(&org.org_id));

    ctx.sim.advance_clock(Duration::from_secs(3_600));
    let resp = token_form(
        &ctx,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        true,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(
        second["refresh_token"],
        refresh.as_str(),
        "no rotation by default"
    );
    assert_eq!(second["refresh_token_expires_in"], 7_775_999 - 3_600);
    assert_ne!(second["access_token"], first["access_token"]);

    // Form auth on refresh works too; a wrong secret is invalid_client.
    let resp = token_form(
        &ctx,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        false,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = ctx
        .http
        .post(ctx.url("v1/access_token"))
        .basic_auth(SimClient::DEMO_CLIENT_ID, Some("wrong"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body = resp.text().await.unwrap();
    assert!(body.contains("invalid_client") && !body.contains(SimClient::DEMO_CLIENT_SECRET));
    let resp = token_form(&ctx, &[("grant_type", "password")], false).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );

    // Revocation: refresh is invalid_grant, the access token 401.
    ctx.sim.revoke_grants(&org.org_id);
    let resp = token_form(
        &ctx,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        true,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let access = second["access_token"].as_str().unwrap();
    let resp = ctx.tasks(access, &format!("from={START}")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["key"], "401");
}

#[tokio::test]
async fn refresh_rotation_knob() {
    let ctx = start(SimConfig {
        rotate_refresh_tokens: true,
        ..config()
    })
    .await;
    let org = ctx.org(0);
    let g = ctx.sim.issue_grant(SimClient::DEMO_CLIENT_ID, &org, READ);
    let resp: Value = token_form(
        &ctx,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &g.refresh_token),
        ],
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_ne!(resp["refresh_token"], g.refresh_token.as_str());
    let old = token_form(
        &ctx,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &g.refresh_token),
        ],
        false,
    )
    .await;
    assert_eq!(old.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // The counters a refresh race test reads: one refresh minted, one refused.
    let stats = ctx.sim.stats();
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.invalid_grant, 1);
}

#[tokio::test]
async fn consent_deny_and_blocked() {
    let ctx = start(config()).await;
    ctx.sim.set_consent(ConsentMode::Deny);
    let q = authorize(&ctx, &[]).await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-123");
    assert!(!q.contains_key("code"));
    ctx.sim.set_consent(ConsentMode::Blocked);
    let q = authorize(&ctx, &[]).await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_description"], webex_sim::BLOCKED_PAGE_TEXT);
    // Unknown client: no redirect at all.
    let resp = ctx
        .http
        .get(ctx.url("v1/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "Cnope"),
            ("redirect_uri", REDIRECT),
            ("scope", "cjp:config_read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Registered redirect URIs are enforced.
    let strict = start(SimConfig {
        clients: vec![SimClient {
            client_id: "Cstrict".into(),
            client_secret: "s".into(),
            redirect_uris: vec!["http://127.0.0.1:9/ok".into()],
        }],
        ..config()
    })
    .await;
    let resp = strict
        .http
        .get(strict.url("v1/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "Cstrict"),
            ("redirect_uri", REDIRECT),
            ("scope", "cjp:config_read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

fn created(task: &Value) -> i64 {
    task["attributes"]["createdTime"].as_i64().unwrap()
}

#[tokio::test]
async fn tasks_sorting_filter_limits_and_requery_paging() {
    let ctx = start(config()).await;
    let org = ctx.org(0);
    let token = ctx.token(&org, READ);
    let from = START - 3 * 86_400_000;

    let all: Value = ctx
        .tasks(&token, &format!("from={from}&pageSize=1000&orgId={org}"))
        .await
        .json()
        .await
        .unwrap();
    let all = all["data"].as_array().unwrap().clone();
    assert!(
        all.windows(2).all(|w| created(&w[0]) <= created(&w[1])),
        "ascending"
    );
    assert!(
        all.iter().any(|t| t["attributes"].get("owner").is_none()),
        "a task without owner"
    );
    assert!(
        all.iter()
            .any(|t| t["attributes"]["captureRequested"].is_null())
    );
    let manifest = ctx.sim.manifest(&org);
    assert_eq!(all.len(), manifest.tasks.len());

    let tel: Value = ctx
        .tasks(
            &token,
            &format!("from={from}&pageSize=1000&channelTypes=telephony"),
        )
        .await
        .json()
        .await
        .unwrap();
    let tel = tel["data"].as_array().unwrap();
    assert!(!tel.is_empty() && tel.len() < all.len());
    assert!(
        tel.iter()
            .all(|t| t["attributes"]["channelType"] == "telephony")
    );
    let expected_tel = manifest
        .tasks
        .iter()
        .filter(|t| t.channel_type == "telephony")
        .count();
    assert_eq!(tel.len(), expected_tel);

    // Re-query paging with from = last createdTime - 1 reconstructs everything.
    let mut seen = Vec::new();
    let mut cursor = from;
    loop {
        let page: Value = ctx
            .tasks(&token, &format!("from={cursor}&pageSize=3"))
            .await
            .json()
            .await
            .unwrap();
        let page = page["data"].as_array().unwrap().clone();
        let before = seen.len();
        for t in &page {
            let id = t["id"].as_str().unwrap().to_owned();
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        if page.len() < 3 || seen.len() == before {
            break;
        }
        cursor = created(page.last().unwrap()) - 1;
    }
    let want: Vec<String> = manifest.tasks.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(seen.len(), want.len());
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        want.iter().collect::<HashSet<_>>()
    );

    // Default page size is 100, `to` bounds the window.
    let d: Value = ctx
        .tasks(&token, &format!("from={from}&to={}", START - 86_400_000))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        d["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| created(t) < START - 86_400_000)
    );

    for bad in [
        format!("from={from}&pageSize=0"),
        format!("from={from}&pageSize=1001"),
        "pageSize=10".to_owned(),
        format!("from={from}&channelTypes=fax"),
    ] {
        let resp = ctx.tasks(&token, &bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(resp.headers().contains_key("trackingid"));
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["key"], "400");
        assert!(e["error"]["message"][0]["description"].is_string());
    }

    // Another org's id, a missing header, a token without cjp scopes.
    let other = ctx.org(1);
    assert_eq!(
        ctx.tasks(&token, &format!("from={from}&orgId={other}"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let resp = ctx
        .http
        .get(ctx.url(&format!("v1/tasks?from={from}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let weak = ctx.token(&org, &["spark:kms"]);
    assert_eq!(
        ctx.tasks(&weak, &format!("from={from}")).await.status(),
        StatusCode::FORBIDDEN
    );

    // Access tokens expire on the sim clock.
    ctx.sim.advance_clock(Duration::from_secs(43_199));
    let resp = ctx.tasks(&token, &format!("from={from}")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn captures_limits_and_delayed_availability() {
    let ctx = start(config()).await;
    let org = ctx.org(0);
    let token = ctx.token(&org, READ);
    let manifest = ctx.sim.manifest(&org);
    let ids: Vec<String> = manifest.tasks.iter().map(|t| t.task_id.clone()).collect();

    let eleven: Vec<&String> = ids.iter().take(11).collect();
    let resp = ctx
        .captures(&token, json!({"query": {"taskIds": eleven}}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = ctx
        .captures(&token, json!({"query": {"taskIds": [ids[0], ids[0]]}}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = ctx.captures(&token, json!({"taskIds": [ids[0]]})).await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "fields must be wrapped in query"
    );
    let resp = ctx
        .captures(
            &token,
            json!({"query": {"taskIds": [ids[0]], "urlExpiration": 0}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(
        e["error"]["message"][0]["description"],
        "Error: urlExpiration should be greater than 0."
    );
    let resp = ctx
        .captures(
            &token,
            json!({"query": {"taskIds": [ids[0]], "urlExpiration": 61}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let no_read = ctx.token(&org, &["cjp:config"]);
    assert_eq!(
        ctx.captures(&no_read, json!({"query": {"taskIds": [ids[0]]}}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Unknown ids: 200 with empty arrays.
    let resp = ctx
        .captures(
            &token,
            json!({"query": {"taskIds": ["00000000-0000-4000-8000-000000000000"]}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"][0]["recording"], json!([]));
    assert_eq!(v["data"][0]["transcription"], json!([]));
    assert_eq!(v["meta"]["urlExpiration"], 60);

    // Pending recordings appear only once the clock reaches available_at.
    let pending = manifest
        .recordings
        .iter()
        .find(|r| r.available_at_ms > START)
        .expect("a pending capture");
    let ask = json!({"query": {"taskIds": [pending.task_id], "urlExpiration": 30, "orgId": org}});
    let before: Value = ctx
        .captures(&token, ask.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["data"][0]["recording"], json!([]));
    let wait = u64::try_from(pending.available_at_ms - ctx.sim.now_ms()).unwrap();
    ctx.sim.advance_clock(Duration::from_millis(wait));
    let after: Value = ctx.captures(&token, ask).await.json().await.unwrap();
    let rec = &after["data"][0]["recording"][0];
    assert_eq!(rec["id"], pending.recording_id.as_str());
    assert_eq!(rec["attributes"]["fileName"], pending.file_name.as_str());
    let path = rec["attributes"]["filePath"].as_str().unwrap();
    assert!(
        path.contains("X-Amz-Date=")
            && path.contains("X-Amz-Expires=1800")
            && path.contains("X-Amz-Signature=")
    );

    // Every available recording is returned; startTime is a number or a numeric string.
    let mut kinds = HashSet::new();
    let mut got = HashSet::new();
    for chunk in ids.chunks(10) {
        let v: Value = ctx
            .captures(&token, json!({"query": {"taskIds": chunk}}))
            .await
            .json()
            .await
            .unwrap();
        for d in v["data"].as_array().unwrap() {
            for r in d["recording"].as_array().unwrap() {
                got.insert(r["id"].as_str().unwrap().to_owned());
                let st = &r["attributes"]["startTime"];
                kinds.insert(if st.is_string() { "string" } else { "number" });
                let n: i64 = st
                    .as_i64()
                    .unwrap_or_else(|| st.as_str().unwrap().parse().unwrap());
                assert!(n > 0);
            }
        }
    }
    let want: HashSet<String> = manifest
        .available_at(ctx.sim.now_ms())
        .iter()
        .map(|r| r.recording_id.clone())
        .collect();
    assert_eq!(got, want);
    assert_eq!(kinds.len(), 2, "both time encodings occur");
    // Segments only on request.
    let seg = manifest
        .optional_recordings
        .iter()
        .find(|r| r.segment)
        .unwrap();
    let v: Value = ctx
        .captures(
            &token,
            json!({"query": {"taskIds": [seg.task_id], "includeSegments": true}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let segs = v["data"][0]["recording"].as_array().unwrap();
    assert!(segs.iter().all(|r| r["segment"] == true) && segs.len() == 3);
}

async fn first_media(ctx: &Ctx, token: &str) -> (webex_sim::ExpectedRecording, String) {
    let org = ctx.org(0);
    let manifest = ctx.sim.manifest(&org);
    let rec = manifest.available_at(ctx.sim.now_ms())[0].clone();
    let v: Value = ctx
        .captures(token, json!({"query": {"taskIds": [rec.task_id]}}))
        .await
        .json()
        .await
        .unwrap();
    let r = v["data"][0]["recording"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rec.recording_id.as_str())
        .unwrap()
        .clone();
    (
        rec,
        r["attributes"]["filePath"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn media_signature_expiry_auth_rule_and_range() {
    let ctx = start(config()).await;
    let token = ctx.token(&ctx.org(0), READ);
    let (rec, link) = first_media(&ctx, &token).await;

    let resp = ctx.http.get(&link).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(resp.content_length(), Some(rec.size_bytes));
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), rec.sha256);
    // WAV header: RIFF/WAVE, PCM, 2 channels, 8 kHz, 16 bit, sizes consistent.
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1);
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8_000);
    assert_eq!(u16::from_le_bytes([bytes[34], bytes[35]]), 16);
    assert_eq!(
        u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
        bytes.len() - 8
    );
    assert_eq!(
        u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize,
        bytes.len() - 44
    );

    // Range resume.
    let resp = ctx
        .http
        .get(&link)
        .header("Range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000-{}/{}", bytes.len() - 1, bytes.len())
    );
    assert_eq!(resp.bytes().await.unwrap(), bytes.slice(1000..));
    let resp = ctx
        .http
        .get(&link)
        .header("Range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The Webex token must not be sent to the bucket.
    let resp = ctx
        .http
        .get(&link)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Tampering with the signed query fails.
    let tampered = link.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200");
    assert_ne!(tampered, link);
    let resp = ctx.http.get(&tampered).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Expiry on the sim clock.
    ctx.sim.advance_clock(Duration::from_secs(3_600));
    let resp = ctx.http.get(&link).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.text().await.unwrap();
    assert!(body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"));
    // url_expiry_secs = 0: links are dead on arrival.
    ctx.sim.set_faults(Faults {
        url_expiry_secs: Some(0),
        ..Faults::default()
    });
    let (_, link) = first_media(&ctx, &ctx.token(&ctx.org(0), READ)).await;
    assert_eq!(
        ctx.http.get(&link).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(ctx.sim.stats().media_bytes >= rec.size_bytes);
}

#[tokio::test]
async fn truncation_and_5xx_faults() {
    let ctx = start(config()).await;
    let token = ctx.token(&ctx.org(0), READ);
    let (rec, link) = first_media(&ctx, &token).await;
    ctx.sim.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    });
    let resp = ctx.http.get(&link).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(rec.size_bytes));
    let mut resp = resp;
    let mut got = 0u64;
    let outcome = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got += c.len() as u64,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(outcome.is_err(), "a short body must surface as an error");
    assert!(got < rec.size_bytes);
    ctx.sim.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let resp = ctx.tasks(&token, &format!("from={START}")).await;
    assert!(resp.status().is_server_error());
    assert!(
        ctx.http
            .get(&link)
            .send()
            .await
            .unwrap()
            .status()
            .is_server_error()
    );
    assert_eq!(ctx.sim.stats().injected_5xx, 2);
}

#[tokio::test]
async fn rate_limit_429_with_retry_after() {
    let ctx = start(SimConfig {
        rate_limit_per_minute: Some(5),
        ..config()
    })
    .await;
    let org0 = ctx.org(0);
    let org1 = ctx.org(1);
    // Both orgs share the client id's budget.
    let t0 = ctx.token(&org0, READ);
    let t1 = ctx.token(&org1, READ);
    for i in 0..5 {
        let t = if i % 2 == 0 { &t0 } else { &t1 };
        assert_eq!(
            ctx.tasks(t, &format!("from={START}")).await.status(),
            StatusCode::OK
        );
    }
    let resp = ctx.tasks(&t1, &format!("from={START}")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs));
    assert!(resp.bytes().await.unwrap().is_empty());
    // Media is outside the API budget.
    let stats = ctx.sim.stats();
    assert_eq!(stats.throttled_429, 1);
    assert_eq!(stats.rate_limited_429, 1);
    assert_eq!(stats.peak_requests_in_window, 5);
    assert_eq!(stats.retry_after_violations, 0);
    // Only the requests the limit let through are recorded as accepted, with their arrival.
    let first = ctx.sim.now_ms();
    assert_eq!(
        ctx.sim.accepted_request_times(SimClient::DEMO_CLIENT_ID),
        vec![first; 5]
    );
    assert!(ctx.sim.accepted_request_times("C-unknown").is_empty());
    // Coming back before the Retry-After has elapsed is a violation, counted per client id.
    ctx.sim
        .advance_clock(Duration::from_millis(secs * 1_000 - 1));
    assert_eq!(
        ctx.tasks(&t0, &format!("from={START}")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(ctx.sim.stats().retry_after_violations, 1);
    ctx.sim.advance_clock(Duration::from_secs(secs));
    assert_eq!(
        ctx.tasks(&t0, &format!("from={START}")).await.status(),
        StatusCode::OK
    );
    let times = ctx.sim.accepted_request_times(SimClient::DEMO_CLIENT_ID);
    assert_eq!(times.len(), 6, "{times:?}");
    assert_eq!(times[5], ctx.sim.now_ms(), "{times:?}");

    // Injected 429s with the gateway body and a malformed Retry-After.
    ctx.sim.set_faults(Faults {
        rate_429_rate: 1.0,
        gateway_429_body_rate: 1.0,
        malformed_retry_after_rate: 1.0,
        ..Faults::default()
    });
    let resp = ctx.tasks(&t0, &format!("from={START}")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "rand(30),add(30)");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], 429);
}

#[tokio::test]
async fn dataset_is_deterministic_and_bytes_match_manifest() {
    let a = start(config()).await;
    let b = start(config()).await;
    let c = start(SimConfig {
        seed: 2,
        ..config()
    })
    .await;
    assert_eq!(a.sim.orgs(), b.sim.orgs());
    assert_ne!(a.sim.orgs()[0].org_id, c.sim.orgs()[0].org_id);
    let org = a.org(0);
    let ma = serde_json::to_value(a.sim.manifest(&org)).unwrap();
    let mb = serde_json::to_value(b.sim.manifest(&org)).unwrap();
    assert_eq!(ma, mb);

    // Every available recording's bytes hash to the manifest value.
    a.sim.advance_clock(Duration::from_secs(3_600));
    let token = a.token(&org, READ);
    let manifest = a.sim.manifest(&org);
    let mut checked = 0;
    for chunk in manifest.recordings.chunks(10) {
        let ids: Vec<&str> = chunk
            .iter()
            .map(|r| r.task_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let v: Value = a
            .captures(&token, json!({"query": {"taskIds": ids}}))
            .await
            .json()
            .await
            .unwrap();
        for d in v["data"].as_array().unwrap() {
            for r in d["recording"].as_array().unwrap() {
                let exp = manifest
                    .recordings
                    .iter()
                    .find(|e| e.recording_id == r["id"].as_str().unwrap())
                    .unwrap();
                let bytes = a
                    .http
                    .get(r["attributes"]["filePath"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(hex::encode(Sha256::digest(&bytes)), exp.sha256);
                assert_eq!(bytes.len() as u64, exp.size_bytes);
                checked += 1;
            }
        }
    }
    assert!(checked >= manifest.recordings.len(), "{checked}");
}

#[tokio::test]
async fn users_lookup_and_rsql_list() {
    let ctx = start(config()).await;
    let org = ctx.org(0);
    let token = ctx.token(&org, READ);
    let owners: Vec<String> = ctx
        .sim
        .manifest(&org)
        .tasks
        .iter()
        .filter_map(|t| t.owner_ci_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let resp = ctx
        .http
        .get(ctx.url(&format!(
            "organization/{org}/user/by-ci-user-id/{}",
            owners[0]
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let u: Value = resp.json().await.unwrap();
    assert_eq!(u["ciUserId"], owners[0].as_str());
    assert!(u["firstName"].is_string() && u["email"].is_string());
    let cc_id = u["id"].as_str().unwrap();
    let by_id: Value = ctx
        .http
        .get(ctx.url(&format!("organization/{org}/user/{cc_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_id["ciUserId"], owners[0].as_str());
    let resp = ctx
        .http
        .get(ctx.url(&format!("organization/{org}/user/by-ci-user-id/nobody")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let list: Vec<String> = owners.iter().take(2).map(|o| format!("\"{o}\"")).collect();
    let filter = format!("ciUserId=in=({})", list.join(","));
    let resp = ctx
        .http
        .get(ctx.url(&format!("organization/{org}/v2/user")))
        .query(&[("filter", filter.as_str()), ("pageSize", "1")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let want = owners.len().min(2);
    assert_eq!(v["meta"]["totalRecords"], want);
    assert_eq!(v["meta"]["totalPages"], want);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["meta"]["links"].get("next").is_some(), want > 1);
    let resp = ctx
        .http
        .get(ctx.url(&format!("organization/{org}/v2/user")))
        .query(&[("filter", "ciUserId=~x")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(ctx.sim.stats().by_endpoint["users"], 5);
}

#[tokio::test]
async fn default_config_follows_the_wall_clock() {
    let server = SimServer::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(server.base_url().host_str(), Some("127.0.0.1"));
    let h = server.handle();
    let wall = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    assert!((h.now_ms() - wall).abs() < 60_000);
    h.advance_clock(Duration::from_secs(3_600));
    assert!(h.now_ms() - wall >= 3_600_000 - 60_000);
    assert_eq!(h.stats().by_endpoint["media"], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn http_control_api() {
    let ctx = start(config()).await;
    let orgs: Value = ctx
        .http
        .get(ctx.url("_sim/orgs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = orgs[0]["org_id"].as_str().unwrap().to_owned();
    assert_eq!(orgs[0]["region"], "us1");
    let g: Value = ctx
        .http
        .post(ctx.url("_sim/grant"))
        .json(&json!({"clientId": SimClient::DEMO_CLIENT_ID, "orgId": org, "scopes": ["cjp:config_read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = g["access_token"].as_str().unwrap();
    assert_eq!(
        ctx.tasks(token, &format!("from={START}")).await.status(),
        StatusCode::OK
    );
    let now: Value = ctx
        .http
        .post(ctx.url("_sim/clock/advance"))
        .json(&json!({"seconds": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["nowMs"], START + 60_000);
    let resp = ctx
        .http
        .post(ctx.url("_sim/faults"))
        .json(&json!({"latency_ms": 0, "rate_429_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        ctx.tasks(token, &format!("from={START}")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    ctx.http
        .post(ctx.url("_sim/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let resp = ctx
        .http
        .post(ctx.url("_sim/consent"))
        .json(&json!({"mode": "deny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(authorize(&ctx, &[]).await["error"], "access_denied");
    let resp = ctx
        .http
        .post(ctx.url("_sim/consent"))
        .json(&json!({"mode": "maybe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = ctx
        .http
        .post(ctx.url("_sim/revoke"))
        .json(&json!({"orgId": org}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ctx.tasks(token, &format!("from={START}")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let m: Value = ctx
        .http
        .get(ctx.url(&format!("_sim/manifest?orgId={org}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(m["recordings"][0]["sha256"].as_str().unwrap().len() == 64);
    let s: Value = ctx
        .http
        .get(ctx.url("_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["by_endpoint"]["tasks"], 3);
}

#[tokio::test]
async fn bench_and_large_recording_stream_in_constant_memory() {
    // A small bench dataset plus a 64 MiB recording served by streaming.
    let big: u64 = 64 * 1024 * 1024;
    let ctx = start(SimConfig {
        dataset: DatasetSpec::bench(30, 45, 2_000).with_large_recording(big),
        ..config()
    })
    .await;
    let org = ctx.org(0);
    let token = ctx.token(&org, READ);
    let tasks: Value = ctx
        .tasks(
            &token,
            &format!(
                "from={}&channelTypes=telephony&pageSize=1000",
                START - 86_400_000
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tasks["data"].as_array().unwrap().len(), 31);
    let manifest = ctx.sim.manifest(&org);
    assert_eq!(manifest.recordings.len(), 46);
    let large = manifest
        .recordings
        .iter()
        .find(|r| r.size_bytes == big)
        .unwrap()
        .clone();
    let v: Value = ctx
        .captures(&token, json!({"query": {"taskIds": [large.task_id]}}))
        .await
        .json()
        .await
        .unwrap();
    let link = v["data"][0]["recording"][0]["attributes"]["filePath"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut resp = ctx.http.get(&link).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(big));
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(n, big);
    assert_eq!(hex::encode(hasher.finalize()), large.sha256);
}

/// The `value` of the hidden `request` input of an interactive consent page.
fn consent_request_id(page: &str) -> String {
    let marker = "name=\"request\" value=\"";
    let start = page.find(marker).expect("hidden request input") + marker.len();
    let len = page[start..].find('"').unwrap();
    page[start..start + len].to_owned()
}

async fn consent_page(ctx: &Ctx, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", SimClient::DEMO_CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "cjp:config_read spark:kms not:registered"),
        ("state", "st-123"),
    ];
    params.extend_from_slice(extra);
    let resp = ctx
        .http
        .get(ctx.url("v1/authorize"))
        .query(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.text().await.unwrap()
}

async fn decide(ctx: &Ctx, request: &str, decision: &str) -> reqwest::Response {
    ctx.http
        .post(ctx.url("v1/authorize/decision"))
        .form(&[("request", request), ("decision", decision)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn interactive_consent_page_accept_decline_and_replay() {
    let ctx = start(config()).await;
    assert_eq!(
        "interactive".parse::<ConsentMode>().unwrap(),
        ConsentMode::Interactive
    );
    assert_eq!(
        "Interactive".parse::<ConsentMode>().unwrap(),
        ConsentMode::Interactive
    );
    assert!(
        "nope"
            .parse::<ConsentMode>()
            .unwrap_err()
            .to_string()
            .contains("interactive")
    );
    let resp = ctx
        .http
        .post(ctx.url("_sim/consent"))
        .json(&json!({"mode": "interactive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let org = ctx.sim.orgs()[1].clone();
    let challenge = s256(VERIFIER);
    let pkce = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("login_hint", org.name.as_str()),
    ];
    let page = consent_page(&ctx, &pkce).await;
    assert!(page.contains("<title>Webex — Authorize</title>"), "{page}");
    assert!(page.contains(SimClient::DEMO_CLIENT_ID));
    assert!(
        page.contains("<li class=\"scope\">cjp:config_read</li>"),
        "{page}"
    );
    assert!(page.contains("<li class=\"scope\">spark:kms</li>"));
    assert!(
        !page.contains("not:registered"),
        "only grantable scopes are listed"
    );
    assert!(page.contains(&org.org_id) && page.contains(&org.name));
    assert!(page.contains("<form method=\"post\" action=\"/v1/authorize/decision\">"));
    assert!(page.contains("id=\"accept\"") && page.contains(">Accept</button>"));
    assert!(page.contains("id=\"decline\"") && page.contains(">Decline</button>"));
    let request = consent_request_id(&page);
    assert!(request.len() >= 32, "{request}");

    // A bad decision value is refused without consuming the request.
    assert_eq!(
        decide(&ctx, &request, "maybe").await.status(),
        StatusCode::BAD_REQUEST
    );
    let resp = decide(&ctx, &request, "accept").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(q["state"], "st-123");
    let code = q["code"].clone();
    assert!(
        code.ends_with(&org.org_id),
        "the page's org is the one connected"
    );
    let resp = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        false,
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "PKCE and redirect_uri carried over"
    );
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["scope"], "cjp:config_read spark:kms");

    // Single use: a replayed or unknown request id is a 400 page, not a redirect.
    for id in [request.as_str(), "unknown-request"] {
        let resp = decide(&ctx, id, "accept").await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(!resp.headers().contains_key("location"));
        assert!(resp.text().await.unwrap().contains("<html"));
    }
    let resp = ctx
        .http
        .post(ctx.url("v1/authorize/decision"))
        .form(&[("decision", "accept")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Decline: access_denied with the state, no code.
    let request = consent_request_id(&consent_page(&ctx, &[]).await);
    let resp = decide(&ctx, &request, "decline").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-123");
    assert!(!q.contains_key("code"));
    assert_eq!(
        decide(&ctx, &request, "accept").await.status(),
        StatusCode::BAD_REQUEST
    );

    // An unanswered page expires with the sim clock.
    let request = consent_request_id(&consent_page(&ctx, &[]).await);
    ctx.sim.advance_clock(Duration::from_secs(11 * 60));
    let resp = decide(&ctx, &request, "accept").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("expired"));

    // Invalid requests still fail before any page; Approve stays an immediate 302.
    ctx.sim.set_consent(ConsentMode::Approve);
    assert!(authorize(&ctx, &[]).await.contains_key("code"));
    let stats = ctx.sim.stats();
    assert_eq!(stats.by_endpoint["authorize"], 4);
    assert_eq!(stats.by_endpoint["authorize_decision"], 8);
    assert_eq!(SimConfig::default().consent, ConsentMode::Approve);
}

#[tokio::test]
async fn consent_page_escapes_what_it_shows() {
    let ctx = start(SimConfig {
        clients: vec![SimClient {
            client_id: "C<b>\"x\"</b>&".into(),
            client_secret: "s".into(),
            redirect_uris: Vec::new(),
        }],
        consent: ConsentMode::Interactive,
        ..config()
    })
    .await;
    let resp = ctx
        .http
        .get(ctx.url("v1/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "C<b>\"x\"</b>&"),
            ("redirect_uri", REDIRECT),
            ("scope", "cjp:config_read"),
            ("state", "\"><script>alert(1)</script>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("C&lt;b&gt;&quot;x&quot;&lt;/b&gt;&amp;"),
        "{page}"
    );
    assert!(
        !page.contains("<b>") && !page.contains("<script>"),
        "{page}"
    );
    // The state is not on the page, but comes back intact on the redirect.
    let resp = decide(&ctx, &consent_request_id(&page), "accept").await;
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(q["state"], "\"><script>alert(1)</script>");
}

async fn revoke_call(ctx: &Ctx, token: Option<&str>, query: &[(&str, &str)]) -> reqwest::Response {
    let mut req = ctx.http.delete(ctx.url("v1/authorizations")).query(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn assert_router_error(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    let tracking = resp.headers()["trackingid"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["errors"][0]["description"].as_str().is_some(),
        "{body}"
    );
    assert_eq!(body["trackingId"], tracking.as_str());
    assert!(tracking.starts_with("ROUTER_"), "{tracking}");
    body
}

async fn refresh_status(ctx: &Ctx, client: &SimClient, refresh: &str) -> (StatusCode, Value) {
    let resp = ctx
        .http
        .post(ctx.url("v1/access_token"))
        .basic_auth(&client.client_id, Some(&client.client_secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn admin_revocation_of_one_client_in_one_org() {
    let other = SimClient {
        client_id: "Cother0123".into(),
        client_secret: "other-secret".into(),
        redirect_uris: Vec::new(),
    };
    let demo = SimClient::demo();
    let ctx = start(SimConfig {
        clients: vec![demo.clone(), other.clone()],
        ..config()
    })
    .await;
    let (org0, org1) = (ctx.org(0), ctx.org(1));
    assert!(
        webex_sim::DEFAULT_REGISTERED_SCOPES.contains(&"identity:tokens_write"),
        "registered, though not required"
    );
    let a = ctx.sim.issue_grant(&demo.client_id, &org0, READ);
    let b = ctx.sim.issue_grant(&demo.client_id, &org0, READ);
    let other_org = ctx.sim.issue_grant(&demo.client_id, &org1, READ);
    let other_client = ctx.sim.issue_grant(&other.client_id, &org0, READ);
    let rest_org0 = base64::engine::general_purpose::STANDARD
        .encode(format!("ciscospark://us/ORGANIZATION/{org0}"));

    // Refusals first: nothing is revoked by them.
    assert_router_error(
        revoke_call(
            &ctx,
            None,
            &[("clientId", &demo.client_id), ("orgId", &org0)],
        )
        .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_router_error(
        revoke_call(&ctx, Some("garbage"), &[("clientId", &demo.client_id)]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let body = assert_router_error(
        revoke_call(&ctx, Some(&b.access_token), &[("orgId", &org0)]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["errors"][0]["description"]
            .as_str()
            .unwrap()
            .contains("clientId")
    );
    assert_router_error(
        revoke_call(
            &ctx,
            Some(&b.access_token),
            &[("clientId", &demo.client_id), ("orgId", "not-an-org")],
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_router_error(
        revoke_call(
            &ctx,
            Some(&other_org.access_token),
            &[("clientId", &demo.client_id), ("orgId", &rest_org0)],
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        ctx.tasks(&a.access_token, &format!("from={START}"))
            .await
            .status(),
        StatusCode::OK
    );

    // Any valid token of the org may revoke; the base64 REST org id works.
    let resp = revoke_call(
        &ctx,
        Some(&other_client.access_token),
        &[("clientId", &demo.client_id), ("orgId", &rest_org0)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for g in [&a, &b] {
        let (status, body) = refresh_status(&ctx, &demo, &g.refresh_token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        let resp = ctx.tasks(&g.access_token, &format!("from={START}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Other orgs and other integrations keep working.
    assert_eq!(
        refresh_status(&ctx, &demo, &other_org.refresh_token)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        refresh_status(&ctx, &other, &other_client.refresh_token)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        ctx.tasks(&other_client.access_token, &format!("from={START}"))
            .await
            .status(),
        StatusCode::OK
    );

    // Bare uuid orgId; a client id without grants is still 204; a code issued before a
    // revocation cannot be redeemed after it.
    let code = code_for(&ctx, &org1).await;
    let resp = revoke_call(
        &ctx,
        Some(&other_org.access_token),
        &[("clientId", &demo.client_id), ("orgId", &org1)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh_status(&ctx, &demo, &other_org.refresh_token)
            .await
            .1["error"],
        "invalid_grant"
    );
    let resp = token_form(
        &ctx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        false,
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let resp = revoke_call(
        &ctx,
        Some(&other_client.access_token),
        &[("clientId", "Cnobody"), ("orgId", &org0)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // The revoked caller's own token is refused afterwards.
    assert_router_error(
        revoke_call(
            &ctx,
            Some(&a.access_token),
            &[("clientId", &demo.client_id)],
        )
        .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let stats: Value = ctx
        .http
        .get(ctx.url("_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_endpoint"]["authorizations"], 9);
}
