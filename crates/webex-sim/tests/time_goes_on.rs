//! Data that appears after the start: future tasks and captures added late, over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webex_sim::{DatasetSpec, SimClient, SimConfig, SimServer};

const START: i64 = 1_760_000_000_000;
const HOUR: i64 = 3_600_000;

async fn start(dataset: DatasetSpec) -> SimServer {
    let cfg = SimConfig {
        dataset,
        start_ms: Some(START),
        realtime_clock: false,
        rate_limit_per_minute: None,
        ..SimConfig::default()
    };
    SimServer::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn task_ids(server: &SimServer, token: &str, from: i64) -> Vec<String> {
    let url = server
        .base_url()
        .join(&format!("v1/tasks?from={from}&pageSize=1000"))
        .unwrap();
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn captures(server: &SimServer, token: &str, task: &str) -> Vec<Value> {
    let url = server.base_url().join("v1/captures/query").unwrap();
    let body: Value = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": { "taskIds": [task] } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"][0]["recording"].as_array().unwrap().clone()
}

#[tokio::test]
async fn future_tasks_appear_as_the_clock_passes_them() {
    let server = start(DatasetSpec::small().with_future_tasks(4, 3)).await;
    let h = server.handle();
    let org = h.orgs()[0].org_id.clone();
    let token = h
        .issue_grant(SimClient::DEMO_CLIENT_ID, &org, &["cjp:config_read"])
        .access_token;
    let m = h.manifest(&org);
    let future: Vec<_> = m.tasks.iter().filter(|t| t.created_ms > START).collect();
    assert_eq!(future.len(), 4);
    let listed = task_ids(&server, &token, START - 3 * 24 * HOUR).await;
    assert!(future.iter().all(|t| !listed.contains(&t.task_id)));

    h.advance_clock(Duration::from_secs(3 * 3600 + 1));
    let listed = task_ids(&server, &token, START - 3 * 24 * HOUR).await;
    assert!(future.iter().all(|t| listed.contains(&t.task_id)));
    let first = future[0];
    let rec = m
        .recordings
        .iter()
        .find(|r| r.task_id == first.task_id)
        .expect("a future task has a recording");
    assert!(rec.available_at_ms > first.created_ms);
    h.advance_clock(Duration::from_secs(3600));
    let caps = captures(&server, &token, &first.task_id).await;
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0]["id"].as_str(), Some(rec.recording_id.as_str()));
}

#[tokio::test]
async fn a_late_capture_is_listed_served_and_in_the_manifest() {
    let server = start(DatasetSpec::small()).await;
    let h = server.handle();
    let org = h.orgs()[0].org_id.clone();
    let token = h
        .issue_grant(SimClient::DEMO_CLIENT_ID, &org, &["cjp:config_read"])
        .access_token;
    let m = h.manifest(&org);
    let rec = m.available_at(START)[0].clone();
    let before = captures(&server, &token, &rec.task_id).await.len();

    let http = reqwest::Client::new();
    let ctl = server.base_url().join("_sim/late_recording").unwrap();
    let resp = http
        .post(ctl.clone())
        .json(&json!({ "taskId": rec.task_id, "bytes": 8044 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let late: Value = resp.json().await.unwrap();
    let late_id = late["recording_id"].as_str().unwrap().to_owned();
    let unknown = http
        .post(ctl)
        .json(&json!({ "taskId": "no-such-task", "bytes": 8044 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let caps = captures(&server, &token, &rec.task_id).await;
    assert_eq!(caps.len(), before + 1);
    let cap = caps
        .iter()
        .find(|c| c["id"].as_str() == Some(late_id.as_str()))
        .expect("listed");
    let link = cap["attributes"]["filePath"].as_str().unwrap();
    let bytes = http.get(link).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, late["size_bytes"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        late["sha256"].as_str().unwrap()
    );
    let after = h.manifest(&org);
    assert_eq!(after.recordings.len(), m.recordings.len() + 1);
    assert!(after.recordings.iter().any(|r| r.recording_id == late_id));
}
