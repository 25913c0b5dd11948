//! Webex Calling converged recordings end to end (issue 8, part 2): the engine on the
//! simulator's clock (the binary for kill -9), compared with the simulator's Calling manifest.
//!
//! Helpers for Calling expectations live here; the tests are split by theme.

mod archive;
mod faults;
mod grants;

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::SecretString;
use serde_json::Value;
use webex_sim::{DatasetSpec, ExpectedCallingRecording, Faults, SimConfig, SimHandle};

use crate::harness::*;

pub const DAY: i64 = 86_400_000;
pub const COMPLIANCE: &str = "spark-compliance:recordings_read";
pub const ADMIN: &str = "spark-admin:recordings_read";
pub const WXCC: &str = "cjp:config_read";

/// A simulator whose clock only moves when told, with `n` Calling recordings per org spread
/// over `days` days, and a config with `extra` appended.
pub async fn calling_env(days: u32, n: u32, faults: Faults, extra: &str) -> Env {
    let dataset = DatasetSpec {
        days,
        ..DatasetSpec::small()
    }
    .with_calling(n);
    Env::start_with(
        SimConfig {
            dataset,
            rate_limit_per_minute: None,
            realtime_clock: false,
            faults,
            ..SimConfig::default()
        },
        Some(extra),
    )
    .await
}

/// A Calling test's usual start: [`calling_env`], the engine on the simulator's clock, and the
/// simulator's first org added as "acme" with `sources` and a grant of `scopes`.
pub struct Acme {
    pub env: Env,
    pub engine: engine::Engine,
    pub sim_org: webex_sim::SimOrg,
    pub org: vault::Org,
}

/// See [`Acme`].
pub async fn acme(
    days: u32,
    n: u32,
    faults: Faults,
    extra: &str,
    sources: &[&str],
    scopes: &[&str],
) -> Acme {
    let env = calling_env(days, n, faults, extra).await;
    let engine = engine_on_sim_clock(&env).await;
    let sim_org = env.handle().orgs()[0].clone();
    let org = add_org_with(&env, &engine, "acme", &sim_org.org_id, sources, scopes).await;
    Acme {
        env,
        engine,
        sim_org,
        org,
    }
}

/// Adds sim org `org_id` as `name` with `sources`, holding a fresh grant of `scopes` (recorded
/// as the org's granted scopes, as a connect would).
pub async fn add_org_with(
    env: &Env,
    engine: &engine::Engine,
    name: &str,
    org_id: &str,
    sources: &[&str],
    scopes: &[&str],
) -> vault::Org {
    let grant = env
        .handle()
        .issue_grant(&env.client.client_id, org_id, scopes);
    engine
        .vault
        .add_org(vault::NewOrg {
            name: name.into(),
            org_id: org_id.into(),
            region: "us1".into(),
            client_id: env.client.client_id.clone(),
            client_secret: SecretString::from(env.client.client_secret.clone()),
            client_auth: "form".into(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            tokens: token_update(env, &grant, scopes),
        })
        .await
        .expect("add org")
}

fn token_update(env: &Env, grant: &webex_sim::GrantTokens, scopes: &[&str]) -> vault::TokenUpdate {
    let t0 = env.handle().now_ms();
    let secs = |s: u64| t0 + i64::try_from(s).expect("lifetime") * 1000;
    vault::TokenUpdate {
        access_token: Some(SecretString::from(grant.access_token.clone())),
        access_expires_at_ms: Some(secs(grant.expires_in)),
        refresh_token: Some(SecretString::from(grant.refresh_token.clone())),
        refresh_expires_at_ms: Some(secs(grant.refresh_token_expires_in)),
        scopes: Some(scopes.join(" ")),
        refreshed_at_ms: Some(t0),
    }
}

/// The org reconnected with a new grant of `scopes` (what `wxvault connect` stores).
pub async fn regrant(env: &Env, engine: &engine::Engine, name: &str, scopes: &[&str]) {
    let org = engine
        .vault
        .org_by_name(name)
        .await
        .expect("db")
        .expect("org");
    let grant = env
        .handle()
        .issue_grant(&env.client.client_id, &org.org_id, scopes);
    engine
        .vault
        .save_tokens(&org, &token_update(env, &grant, scopes))
        .await
        .expect("save tokens");
}

/// A sync of every org over `[from_ms, to_ms)`.
pub fn window(from_ms: i64, to_ms: i64) -> engine::SyncOptions {
    engine::SyncOptions {
        orgs: vec![],
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        rescan: false,
    }
}

/// Requests the simulator counted at `endpoint`.
pub fn hits(h: &SimHandle, endpoint: &str) -> u64 {
    h.stats().by_endpoint.get(endpoint).copied().unwrap_or(0)
}

/// The Calling source's part of an org's report.
pub fn calling_part(o: &engine::OrgReport) -> &engine::report::SourceReport {
    o.sources
        .iter()
        .find(|s| s.source == "calling")
        .unwrap_or_else(|| panic!("no calling part in {o:?}"))
}

/// Recordings a listing of `[from_ms, to_ms)` shows (service type `calling`, status
/// `available`, and `purged` too when asked), whatever their size.
pub fn listed_calling(
    h: &SimHandle,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
    include_purged: bool,
) -> Vec<ExpectedCallingRecording> {
    listed_of_types(h, org_id, from_ms, to_ms, include_purged, &["calling"])
}

/// [`listed_calling`] for the service types `types`.
pub fn listed_of_types(
    h: &SimHandle,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
    include_purged: bool,
    types: &[&str],
) -> Vec<ExpectedCallingRecording> {
    let now = h.now_ms();
    h.calling_manifest(org_id)
        .recordings
        .into_iter()
        .filter(|r| types.contains(&r.service_type.as_str()))
        .filter(|r| r.status == "available" || (include_purged && r.status == "purged"))
        .filter(|r| {
            r.create_time_ms >= from_ms && r.create_time_ms < to_ms && r.create_time_ms <= now
        })
        .collect()
}

/// Of those, the ones with audio to archive (the zero-size one is recorded absent).
pub fn archivable(listed: &[ExpectedCallingRecording]) -> Vec<ExpectedCallingRecording> {
    listed
        .iter()
        .filter(|r| r.size_bytes > 0)
        .cloned()
        .collect()
}

/// `<org_id>/calling/<YYYY>/<MM>/<DD>/<id>/<id>` (date = `timeRecorded`, UTC), no extension.
pub fn calling_stem(org_id: &str, r: &ExpectedCallingRecording) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_recorded_ms) * 1_000_000)
            .expect("time");
    format!(
        "{org_id}/calling/{:04}/{:02}/{:02}/{id}/{id}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        id = r.id
    )
}

/// Objects of `org_id`'s Calling archive.
pub fn calling_objects(env: &Env, org_id: &str) -> BTreeMap<String, (String, u64)> {
    files(&env.archive_dir())
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{org_id}/calling/")))
        .collect()
}

pub fn read_json(env: &Env, key: &str) -> Value {
    let bytes = std::fs::read(env.archive_dir().join(Path::new(key)))
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

/// Asserts the Calling archive of `org_id` holds exactly `expected`: each audio byte-exact at
/// its contract key, its sidecar (checked against the contract), its transcript when
/// `transcripts` and Webex has one, and nothing else.
pub fn assert_calling_archive(
    env: &Env,
    org_id: &str,
    expected: &[ExpectedCallingRecording],
    transcripts: bool,
) {
    let got = calling_objects(env, org_id);
    let mut want = std::collections::BTreeSet::new();
    for r in expected {
        let stem = calling_stem(org_id, r);
        let audio = format!("{stem}.mp3");
        let (sha, size) = got
            .get(&audio)
            .unwrap_or_else(|| panic!("missing object {audio}"));
        assert_eq!(sha, &r.sha256, "sha256 of {audio}");
        assert_eq!(*size, r.size_bytes, "size of {audio}");
        let sidecar = format!("{stem}.json");
        assert!(got.contains_key(&sidecar), "missing sidecar {sidecar}");
        check_sidecar(&read_json(env, &sidecar), org_id, r, &audio);
        want.insert(audio);
        want.insert(sidecar);
        if transcripts && r.has_transcript {
            let key = format!("{stem}.transcript.vtt");
            let (sha, _) = got
                .get(&key)
                .unwrap_or_else(|| panic!("missing transcript {key}"));
            assert_eq!(Some(sha), r.transcript_sha256.as_ref(), "sha256 of {key}");
            want.insert(key);
        }
    }
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains(*k)).collect();
    assert!(extra.is_empty(), "unexpected objects: {extra:?}");
}

/// The sidecar contract (docs/layout.md): schema, ids, the details without links, the
/// metadata (or null with a reason), digest, size, key and time.
pub fn check_sidecar(v: &Value, org_id: &str, r: &ExpectedCallingRecording, audio_key: &str) {
    assert_eq!(v["schema"], "wxvault.recording.v1", "{v:#}");
    assert_eq!(v["source"], "calling", "{v:#}");
    assert_eq!(v["org_id"], org_id, "{v:#}");
    assert_eq!(v["recording_id"], r.id.as_str(), "{v:#}");
    assert_eq!(v["sha256"], r.sha256.as_str(), "{v:#}");
    assert_eq!(v["size_bytes"].as_u64(), Some(r.size_bytes), "{v:#}");
    assert_eq!(v["object_key"], audio_key, "{v:#}");
    assert!(
        v["archived_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v:#}"
    );
    let rec = &v["recording"];
    assert_eq!(rec["id"], r.id.as_str(), "details as received: {v:#}");
    assert_eq!(rec["sizeBytes"].as_u64(), Some(r.size_bytes), "{v:#}");
    assert_eq!(rec["serviceType"], r.service_type.as_str(), "{v:#}");
    assert_eq!(rec["status"], r.status.as_str(), "{v:#}");
    let text = v.to_string();
    assert!(
        !text.contains("temporaryDirectDownloadLinks") && !text.contains("ticket"),
        "links must not be kept in the sidecar: {v:#}"
    );
    match &v["metadata"] {
        Value::Object(m) => {
            assert_eq!(m.get("id"), Some(&Value::from(r.id.as_str())), "{v:#}");
            assert!(m.contains_key("serviceData"), "metadata as received: {v:#}");
            assert!(v.get("metadata_reason").is_none(), "{v:#}");
        }
        Value::Null => assert!(
            v["metadata_reason"].as_str().is_some_and(|s| !s.is_empty()),
            "a null metadata needs its reason: {v:#}"
        ),
        other => panic!("metadata must be an object or null, not {other}"),
    }
}
