//! A standing simulator with a Webex Calling dataset of a chosen size, for the Calling part of
//! `scripts/bench.sh`.
//!
//! `wxvault sim serve` has no flag for the number of Calling recordings yet (its presets put 0 in
//! `small`/`bench` and 12 in `demo`), so the benchmark starts the simulator through this example:
//!
//! ```sh
//! cargo run --release -p webex-sim --example calling_sim -- \
//!     --port 0 --calling 2000 --days 3 --no-rate-limit
//! ```
//!
//! The dataset is one org: [`DatasetSpec::bench`] with a single WxCC task (so the org has agents
//! to own `user` recordings) plus `--calling` converged recordings spread over `--days` days
//! before the start. It prints the lines `wxvault sim serve` prints ("simulator listening on …",
//! one "org …" line per org) and serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use webex_sim::{DatasetSpec, SimConfig, SimServer};

const USAGE: &str =
    "usage: calling_sim [--port N] [--seed N] [--calling N] [--days N] [--no-rate-limit]";

struct Args {
    port: u16,
    seed: u64,
    calling: u32,
    days: u32,
    no_rate_limit: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 8089,
        seed: 1,
        calling: 2_000,
        days: 3,
        no_rate_limit: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-rate-limit" {
            args.no_rate_limit = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value:?}: {e}\n{USAGE}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(bad)?,
            "--seed" => args.seed = value.parse().map_err(bad)?,
            "--calling" => args.calling = value.parse().map_err(bad)?,
            "--days" => args.days = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    if !(1..=365).contains(&args.days) {
        return Err(format!("--days must be between 1 and 365\n{USAGE}"));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut dataset = DatasetSpec::bench(1, 1, 4_044).with_calling(args.calling);
    dataset.days = args.days;
    let config = SimConfig {
        seed: args.seed,
        dataset,
        rate_limit_per_minute: if args.no_rate_limit { None } else { Some(300) },
        ..SimConfig::default()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let server = match SimServer::start(config, addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("simulator listening on {}", server.base_url());
    println!("calling media host {}", server.calling_media_url());
    for org in server.handle().orgs() {
        println!("org {} id {} region {}", org.name, org.org_id, org.region);
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot watch SIGTERM: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
