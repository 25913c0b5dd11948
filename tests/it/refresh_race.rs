//! The refresh race with real processes: eight `wxvault keepalive` processes meet an access
//! token at the end of its life at the same moment, against a simulator that rotates refresh
//! tokens and revokes the old one on every refresh. Exactly one of them refreshes per expiry; the
//! others take the token it stored; nobody presents a dead refresh token (`invalid_grant`).

use vault::{Keyring, TokenUpdate, Vault};
use webex_sim::{DatasetSpec, SimConfig};

use crate::harness::{Env, MASTER_KEY, text};

const PROCESSES: usize = 8;

fn system_now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_refresh_an_expiring_token_exactly_once_per_expiry() {
    let env = Env::start_with(
        SimConfig {
            dataset: DatasetSpec::small(),
            rate_limit_per_minute: None,
            realtime_clock: false,
            rotate_refresh_tokens: true,
            ..SimConfig::default()
        },
        None,
    )
    .await;
    let h = env.handle();
    env.add_org("acme", &h.orgs()[0].org_id).await;
    let url = format!("sqlite://{}", env.db_path().display());
    let db = Vault::open(&url, Keyring::from_base64(MASTER_KEY).unwrap())
        .await
        .unwrap();
    for expiry in 1..=2 {
        // The stored access token is at the end of its life: five minutes left, inside the
        // refresh margin of every process.
        let org = db.org_by_name("acme").await.unwrap().unwrap();
        db.save_tokens(
            &org,
            &TokenUpdate {
                access_expires_at_ms: Some(system_now_ms() + 5 * 60_000),
                ..TokenUpdate::default()
            },
        )
        .await
        .unwrap();
        let before = h.stats();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| env.spawn(&["keepalive", "--json"]))
            .collect();
        let outs = tokio::task::spawn_blocking(move || {
            children
                .into_iter()
                .map(|c| c.wait_with_output().expect("output"))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for out in &outs {
            // Exit 2 only for notices; the one expected here is the simulator's (frozen clock)
            // refresh token that a refresh did not extend.
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "expiry {expiry}: {}",
                text(out)
            );
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("keepalive --json is JSON");
            for org in report.as_array().expect("one entry per org") {
                for notice in org["notices"].as_array().into_iter().flatten() {
                    assert_eq!(
                        notice["event"],
                        "refresh_not_extended",
                        "expiry {expiry}: {}",
                        text(out)
                    );
                }
            }
        }
        let after = h.stats();
        assert_eq!(
            after.refresh_grants - before.refresh_grants,
            1,
            "expiry {expiry}: exactly one refresh among {PROCESSES} processes"
        );
        assert_eq!(
            after.invalid_grant, 0,
            "expiry {expiry}: no dead refresh token presented"
        );
        let org = db.org_by_name("acme").await.unwrap().unwrap();
        assert!(
            org.access_expires_at_ms.unwrap() > system_now_ms() + 60 * 60_000,
            "expiry {expiry}: the refreshed token was stored"
        );
        assert!(
            matches!(org.status, vault::OrgStatus::Active),
            "{:?}",
            org.status
        );
    }
}
