//! `wxvault`: archive Webex Contact Center recordings into storage you control.
//!
//! The binary is thin: argument parsing, output and exit codes. The work is in the `engine`
//! crate and the crates it drives.

mod cli;
mod commands;
mod connect;
mod demo;
mod output;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Exit codes are a contract (docs/cli.md): 0 ok, 1 usage/configuration, 2 items/orgs need
    // attention. clap's own default for usage errors is 2, so map it.
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
