//! Webex Calling converged recordings in the simulator, over real HTTP: list
//! paging and filters, scopes, Prevent Downloading, metadata readiness, errors,
//! faults and the ground truth.

mod calling_support;

use std::collections::HashSet;
use std::time::Duration;

use calling_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webex_sim::{DatasetSpec, Faults, SimConfig, SimServer};

#[tokio::test]
async fn list_pages_newest_first_with_filters_kept_in_next_links() {
    let ctx = start(40).await;
    let token = ctx.token(&[COMPLIANCE]);
    let (from, to) = (START - 3 * DAY, START + DAY);
    let first = format!(
        "v1/admin/convergedRecordings?max=4&from={}&to={}",
        iso(from),
        iso(to)
    );
    let (items, links) = ctx.list_all(&token, &first).await;
    let m = ctx.manifest();
    let want = expected(&m, START, from, to, |r| r.status == "available");
    assert_eq!(
        ids(&items),
        want.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(links.len(), want.len().div_ceil(4) - 1);
    for l in &links {
        let q: Vec<(String, String)> = url::Url::parse(l)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let keys: HashSet<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        for k in ["max", "from", "to", "status", "cursor"] {
            assert!(keys.contains(k), "{k} missing from {l}");
        }
    }
    let mut last = i64::MAX;
    for (item, exp) in items.iter().zip(&want) {
        let created = ms_of(item["createTime"].as_str().unwrap());
        assert!(created <= last, "newest first");
        last = created;
        assert!(ms_of(item["timeRecorded"].as_str().unwrap()) < created);
        assert_eq!(item["sizeBytes"], exp.size_bytes);
        assert_eq!(item["durationSeconds"], exp.duration_seconds);
        assert_eq!(item["format"], "MP3");
        assert_eq!(item["storageRegion"], "US");
        assert!(item["serviceData"]["callSessionId"].is_string());
        assert!(item.get("temporaryDirectDownloadLinks").is_none());
    }
    // Every owner and service type shows up.
    let owners: HashSet<&str> = items
        .iter()
        .map(|i| i["ownerType"].as_str().unwrap())
        .collect();
    for t in ["user", "place", "virtualLine", "callQueue"] {
        assert!(owners.contains(t), "{t}");
    }
    let services: HashSet<&str> = items
        .iter()
        .map(|i| i["serviceType"].as_str().unwrap())
        .collect();
    assert_eq!(services, HashSet::from(["calling", "customerAssist"]));

    // Default page size is 10; the default window is the 7 days before now.
    let page = ctx.get_json(&token, "v1/admin/convergedRecordings").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(ids(page["items"].as_array().unwrap()), ids(&items[..10]));
    // from inclusive, to exclusive.
    let newest = ms_of(items[0]["createTime"].as_str().unwrap());
    let q = |f: i64, t: i64| format!("v1/admin/convergedRecordings?from={}&to={}", iso(f), iso(t));
    let at = ctx.get_json(&token, &q(newest, newest + 1_000)).await;
    assert_eq!(at["items"][0]["id"], items[0]["id"]);
    let before = ctx.get_json(&token, &q(newest - 1_000, newest)).await;
    assert!(!ids(before["items"].as_array().unwrap()).contains(&ids(&items)[0]));
}

#[tokio::test]
async fn dropped_filters_in_next_links_leak_items_unless_the_client_adds_them_back() {
    let ctx = start(40).await;
    let token = ctx.token(&[COMPLIANCE]);
    ctx.sim.set_faults(Faults {
        drop_filters_in_next_link: true,
        ..Faults::default()
    });
    let (from, to) = (START - 2 * DAY, START);
    let filters = format!(
        "from={}&to={}&serviceType=customerAssist&status=available",
        iso(from),
        iso(to)
    );
    let m = ctx.manifest();
    let want: Vec<String> = expected(&m, START, from, to, |r| {
        r.status == "available" && r.service_type == "customerAssist"
    })
    .iter()
    .map(|r| r.id.clone())
    .collect();
    assert!(want.len() > 2, "dataset must need more than one page");

    // Following the links as given: later pages fall back to the defaults.
    let (naive, links) = ctx
        .list_all(
            &token,
            &format!("v1/admin/convergedRecordings?max=2&{filters}"),
        )
        .await;
    for l in &links {
        let keys: HashSet<String> = url::Url::parse(l)
            .unwrap()
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert_eq!(keys, HashSet::from(["max".to_owned(), "cursor".to_owned()]));
    }
    let leaked = naive
        .iter()
        .filter(|i| {
            i["serviceType"] != "customerAssist" || ms_of(i["createTime"].as_str().unwrap()) < from
        })
        .count();
    assert!(leaked > 0, "items outside the window/filters must show up");

    // A client that re-adds its filters to every next link gets exactly its set.
    let mut got = Vec::new();
    let mut url = ctx.url(&format!("v1/admin/convergedRecordings?max=2&{filters}"));
    loop {
        let r = ctx.http.get(&url).bearer_auth(&token).send().await.unwrap();
        let next = r
            .headers()
            .get("link")
            .map(|v| next_link(v.to_str().unwrap()));
        let body: Value = r.json().await.unwrap();
        got.extend(ids(body["items"].as_array().unwrap()));
        let Some(n) = next else { break };
        url = format!("{n}&{filters}");
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn purged_recordings_and_links_depend_on_scope() {
    let ctx = start(20).await;
    let admin = ctx.token(&[ADMIN]);
    let officer = ctx.token(&[COMPLIANCE]);
    let m = ctx.manifest();
    let purged = m.recordings.iter().find(|r| r.status == "purged").unwrap();
    let deleted = m.recordings.iter().find(|r| r.status == "deleted").unwrap();

    let r = ctx
        .get(&admin, "v1/admin/convergedRecordings?status=purged")
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(body["trackingId"].as_str().unwrap().starts_with("ROUTER_"));
    let listed = ctx
        .get_json(
            &officer,
            "v1/admin/convergedRecordings?status=purged&max=100",
        )
        .await;
    let want: Vec<String> = m
        .recordings
        .iter()
        .filter(|r| r.status == "purged" && r.create_time_ms <= START)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids(listed["items"].as_array().unwrap()), want);
    let del = ctx
        .get_json(
            &admin,
            "v1/admin/convergedRecordings?status=deleted&max=100",
        )
        .await;
    assert!(ids(del["items"].as_array().unwrap()).contains(&deleted.id));

    let path = format!("v1/convergedRecordings/{}", purged.id);
    assert_eq!(ctx.get(&admin, &path).await.status(), StatusCode::NOT_FOUND);
    let d = ctx.get_json(&officer, &path).await;
    assert_eq!(d["status"], "purged");
    assert!(d["temporaryDirectDownloadLinks"]["audioDownloadLink"].is_string());

    // Admin scope: the record, but no links.
    let available = m
        .recordings
        .iter()
        .find(|r| r.status == "available" && r.has_transcript && r.create_time_ms <= START)
        .unwrap();
    let path = format!("v1/convergedRecordings/{}", available.id);
    let d = ctx.get_json(&admin, &path).await;
    assert_eq!(d["id"], available.id.as_str());
    assert_eq!(d["sizeBytes"], available.size_bytes);
    assert!(d.get("temporaryDirectDownloadLinks").is_none());
    // Both scopes: links.
    let both = ctx.token(&[ADMIN, COMPLIANCE]);
    let d = ctx.get_json(&both, &path).await;
    let links = &d["temporaryDirectDownloadLinks"];
    assert_eq!(
        ms_of(links["expiration"].as_str().unwrap()),
        START + 3 * 3_600_000
    );
    let audio = links["audioDownloadLink"].as_str().unwrap();
    let media = ctx.sim.calling_media_url();
    assert!(audio.starts_with(media.as_str()), "{audio}");
    assert_ne!(media.origin(), ctx.base.origin(), "media is a second host");
    assert!(audio.contains("/nbr/MultiThreadDownloadServlet?type=calling&"));
    for k in ["recordUUID=", "ticket=", "timestamp="] {
        assert!(audio.contains(k), "{k}");
    }

    let bytes = ctx.download(audio).await.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, available.size_bytes);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), available.sha256);
    let vtt = ctx
        .download(links["transcriptDownloadLink"].as_str().unwrap())
        .await;
    assert_eq!(vtt.status(), StatusCode::OK);
    let vtt = vtt.bytes().await.unwrap();
    assert!(vtt.starts_with(b"WEBVTT\n"));
    assert_eq!(
        Some(hex::encode(Sha256::digest(&vtt))),
        available.transcript_sha256
    );
    // The WxCC-only token: 403 in the Webex router shape.
    let wxcc = ctx.token(&["cjp:config_read"]);
    let r = ctx.get(&wxcc, &path).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().contains_key("trackingid"));
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].is_string() && body["errors"][0]["description"].is_string());
}

#[tokio::test]
async fn prevent_downloading_withholds_links() {
    let ctx = start(8).await;
    let officer = ctx.token(&[COMPLIANCE]);
    let m = ctx.manifest();
    let rec = m
        .recordings
        .iter()
        .find(|r| r.status == "available" && r.create_time_ms <= START)
        .unwrap();
    let path = format!("v1/convergedRecordings/{}", rec.id);
    let r = ctx
        .http
        .post(ctx.url("_sim/calling/prevent_downloading"))
        .json(&json!({ "orgId": ctx.org, "on": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let d = ctx.get_json(&officer, &path).await;
    assert!(d.get("temporaryDirectDownloadLinks").is_none());
    ctx.sim.set_prevent_downloading(&ctx.org, false);
    let d = ctx.get_json(&officer, &path).await;
    assert!(d["temporaryDirectDownloadLinks"]["audioDownloadLink"].is_string());
}

#[tokio::test]
async fn recordings_appear_at_create_time_and_metadata_answers_204_until_ready() {
    let ctx = start(8).await;
    ctx.sim.set_faults(Faults {
        calling_metadata_not_ready_secs: 600,
        ..Faults::default()
    });
    let token = ctx.token(&[ADMIN]);
    let m = ctx.manifest();
    let pending = m
        .recordings
        .iter()
        .find(|r| r.create_time_ms > START)
        .unwrap();
    let path = format!("v1/convergedRecordings/{}", pending.id);
    let meta = format!("{path}/metadata");
    assert_eq!(ctx.get(&token, &path).await.status(), StatusCode::NOT_FOUND);
    let listed = ctx
        .get_json(&token, "v1/admin/convergedRecordings?max=100")
        .await;
    assert!(!ids(listed["items"].as_array().unwrap()).contains(&pending.id));

    // One second past createTime: the default window's `to` (now) is exclusive.
    let wait = u64::try_from(pending.create_time_ms - START).unwrap() + 1_000;
    ctx.sim.advance_clock(Duration::from_millis(wait));
    let listed = ctx
        .get_json(&token, "v1/admin/convergedRecordings?max=100")
        .await;
    assert_eq!(listed["items"][0]["id"], pending.id.as_str());
    assert_eq!(ctx.get(&token, &path).await.status(), StatusCode::OK);
    let r = ctx.get(&token, &meta).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    ctx.sim.advance_clock(Duration::from_secs(598));
    assert_eq!(
        ctx.get(&token, &meta).await.status(),
        StatusCode::NO_CONTENT
    );
    ctx.sim.advance_clock(Duration::from_secs(1));
    let md = ctx.get_json(&token, &meta).await;
    assert_eq!(md["id"], pending.id.as_str());
    assert_eq!(md["orgId"], ctx.org.as_str());
    assert_eq!(md["version"], "1.2");
    assert_eq!(md["ownerId"], pending.owner_id.as_str());
    assert_eq!(md["serviceType"], pending.service_type.as_str());
    let sd = &md["serviceData"];
    for k in ["callRecordingId", "callSessionId", "recordingType"] {
        assert!(sd[k].is_string(), "{k}");
    }
    assert!(sd["callingParty"]["number"].is_string());
    assert!(sd["calledParty"]["number"].is_string());
    assert_eq!(
        ms_of(sd["session"]["startTime"].as_str().unwrap()),
        pending.time_recorded_ms
    );
    assert!(ms_of(sd["session"]["stopTime"].as_str().unwrap()) > pending.time_recorded_ms);
    assert_eq!(ctx.sim.stats().by_endpoint["calling_metadata"], 3);
    assert_eq!(ctx.sim.stats().by_endpoint["calling_list"], 2);
}

#[tokio::test]
async fn bad_requests_and_tokens() {
    let ctx = start(4).await;
    let token = ctx.token(&[ADMIN]);
    let list = "v1/admin/convergedRecordings";
    let r = ctx.http.get(ctx.url(list)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        ctx.get("unknown", list).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let expired = ctx.token(&[ADMIN]);
    ctx.sim.advance_clock(Duration::from_secs(43_200));
    assert_eq!(
        ctx.get(&expired, list).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let token2 = ctx.token(&[ADMIN]);
    for q in [
        "max=101".to_owned(),
        "max=0".to_owned(),
        "status=gone".to_owned(),
        "serviceType=meetings".to_owned(),
        "format=MP4".to_owned(),
        "from=yesterday".to_owned(),
        "cursor=%%%".to_owned(),
        format!("from={}&to={}", iso(START - 31 * DAY), iso(START)),
    ] {
        let r = ctx.get(&token2, &format!("{list}?{q}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = r.json().await.unwrap();
        assert!(body["trackingId"].is_string(), "{q}");
    }
    let ok = ctx
        .get(
            &token2,
            &format!("{list}?from={}&to={}", iso(START - 30 * DAY), iso(START)),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let r = ctx
        .get(
            &token2,
            "v1/convergedRecordings/00000000-0000-4000-8000-000000000000",
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Another org's recording is not found either.
    let other = ctx.sim.orgs()[1].org_id.clone();
    let theirs = ctx.sim.calling_manifest(&other).recordings[0].id.clone();
    let r = ctx
        .get(&token2, &format!("v1/convergedRecordings/{theirs}"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    drop(token);
}

#[tokio::test]
async fn injected_faults_apply_to_calling_endpoints() {
    let ctx = start(4).await;
    let token = ctx.token(&[ADMIN]);
    ctx.sim.set_faults(Faults {
        rate_429_rate: 1.0,
        ..Faults::default()
    });
    let r = ctx.get(&token, "v1/admin/convergedRecordings").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    ctx.sim.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let r = ctx.get(&token, "v1/admin/convergedRecordings").await;
    assert!(r.status().is_server_error());

    ctx.sim.set_faults(Faults::default());
    let officer = ctx.token(&[COMPLIANCE]);
    let rec = ctx
        .manifest()
        .recordings
        .into_iter()
        .find(|r| r.status == "available" && r.create_time_ms <= START && r.size_bytes > 0)
        .unwrap();
    let link = audio_link(&ctx, &officer, &rec.id).await;
    ctx.sim.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    });
    let r = ctx.download(&link).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(rec.size_bytes));
    assert!(r.bytes().await.is_err(), "the body is cut short");
    // The knobs are settable through the control API too.
    let r = ctx
        .http
        .post(ctx.url("_sim/faults"))
        .json(&json!({ "drop_filters_in_next_link": true, "calling_url_expiry_secs": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(ctx.sim.faults().drop_filters_in_next_link);
    assert_eq!(ctx.sim.faults().calling_url_expiry_secs, Some(5));
}

#[tokio::test]
async fn calling_data_leaves_the_wxcc_dataset_unchanged() {
    let cfg = |n: u32| SimConfig {
        start_ms: Some(START),
        realtime_clock: false,
        dataset: DatasetSpec::small().with_calling(n),
        ..SimConfig::default()
    };
    let plain = SimServer::start(cfg(0), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let with = SimServer::start(cfg(25), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (a, b) = (plain.handle(), with.handle());
    assert_eq!(
        serde_json::to_value(a.orgs()).unwrap(),
        serde_json::to_value(b.orgs()).unwrap()
    );
    for org in a.orgs() {
        assert_eq!(
            serde_json::to_value(a.manifest(&org.org_id)).unwrap(),
            serde_json::to_value(b.manifest(&org.org_id)).unwrap()
        );
        assert!(a.calling_manifest(&org.org_id).recordings.is_empty());
        assert_eq!(b.calling_manifest(&org.org_id).recordings.len(), 25);
    }
    // The control API serves the same ground truth.
    let org = b.orgs()[0].org_id.clone();
    let url = with
        .base_url()
        .join(&format!("_sim/calling/manifest?orgId={org}"))
        .unwrap();
    let got: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(got, serde_json::to_value(b.calling_manifest(&org)).unwrap());
    assert_eq!(DatasetSpec::demo().calling_per_org, 12);
    assert_eq!(DatasetSpec::small().calling_per_org, 0);
}

#[tokio::test]
async fn two_thousand_recordings_build_from_shared_templates() {
    let ctx = start(2_000).await;
    let m = ctx.manifest();
    assert_eq!(m.recordings.len(), 2_000);
    let unique: HashSet<&str> = m.recordings.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(unique.len(), 2_000);
    let shas: HashSet<&str> = m.recordings.iter().map(|r| r.sha256.as_str()).collect();
    assert_eq!(
        shas.len(),
        2_000,
        "one zero-size recording, the rest distinct"
    );
    let purged = m.recordings.iter().filter(|r| r.status == "purged").count();
    let deleted = m
        .recordings
        .iter()
        .filter(|r| r.status == "deleted")
        .count();
    assert!(purged > 100 && deleted > 100);
    assert!(
        m.recordings
            .iter()
            .all(|r| r.create_time_ms > r.time_recorded_ms)
    );
}
