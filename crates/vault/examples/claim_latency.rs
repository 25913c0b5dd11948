//! Queue claim latency: how long [`Vault::claim_job`] takes with a backlog of queued jobs and
//! 1 or more concurrent claimers, on SQLite or PostgreSQL. Run by `scripts/bench.sh`
//! (`BENCH_ONLY=fleet`); figures in BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p vault --example claim_latency -- sqlite 2000 4
//! cargo run --release -p vault --example claim_latency -- postgres 2000 4
//! ```
//!
//! Arguments: backend (`sqlite`: a fresh file in a temp folder; `postgres`: a fresh database on
//! `WXVAULT_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test`), queued jobs (spread
//! over 200 orgs, i.e. 200 lanes), concurrent claimers. Each claimer has its own `Vault` (its own
//! connection pool), as separate worker processes would; it claims, then marks the job done
//! (not timed), until the queue is empty. Prints one line: count, p50, p90, p99 and max of the
//! claim times in milliseconds, and claims per second overall.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use secrecy::SecretString;
use vault::{KIND_HARVEST, LeaseHolder, NewJob, NewOrg, TokenUpdate, Vault};

const LANES: usize = 200;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().map_or("sqlite", String::as_str).to_owned();
    let jobs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let claimers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);

    let dir = tempfile::tempdir().expect("temp dir");
    let pg = if backend == "postgres" {
        Some(
            vault::testing::TempPostgres::create()
                .await
                .expect("PostgreSQL reachable (WXVAULT_TEST_PG)"),
        )
    } else {
        None
    };
    let url = match &pg {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let key = vault::testing::random_keyring;
    let setup = Vault::open(&url, key()).await.expect("open");
    let mut orgs = Vec::new();
    for i in 0..LANES {
        let org = setup
            .add_org(NewOrg {
                name: format!("org{i}"),
                org_id: format!("00000000-0000-4000-8000-{i:012}"),
                region: "us1".into(),
                client_id: "Cbench".into(),
                client_secret: SecretString::from("bench-secret".to_owned()),
                client_auth: "form".into(),
                sources: vec!["wxcc".into()],
                tokens: TokenUpdate::default(),
            })
            .await
            .expect("add org");
        orgs.push(org);
    }
    let job = NewJob {
        kind: KIND_HARVEST.into(),
        from_ms: None,
        to_ms: None,
        requested_by: "bench".into(),
        max_attempts: 5,
    };
    for i in 0..jobs {
        setup
            .enqueue_job(&orgs[i % LANES], &job, now_ms())
            .await
            .expect("enqueue");
    }

    let finished = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..claimers {
        let url = url.clone();
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            // Opened outside the timed claims; the schema is already there.
            let v = Vault::open(&url, key()).await.expect("open");
            let holder = LeaseHolder {
                id: format!("bench-claimer-{c}"),
                host: "bench".into(),
                pid: i64::try_from(c).unwrap_or(0),
            };
            let mut times = Vec::new();
            while finished.load(Ordering::SeqCst) < jobs {
                let start = Instant::now();
                let got = v
                    .claim_job(&holder, now_ms(), 60_000, None, 50)
                    .await
                    .expect("claim");
                times.push(start.elapsed().as_secs_f64() * 1000.0);
                if let Some(j) = got {
                    v.finish_job(j.id, &holder.id, now_ms(), "{}")
                        .await
                        .expect("finish");
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("claimer"));
    }
    let wall = t0.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i.min(all.len() - 1)]
    };
    println!(
        "claim_latency backend={backend} jobs={jobs} lanes={LANES} claimers={claimers}: \
         {} claims, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} jobs/s",
        all.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().copied().unwrap_or(0.0),
        jobs as f64 / wall
    );
    drop(setup);
    drop(pg);
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}
