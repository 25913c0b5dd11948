//! End-to-end tests: the real `wxvault` binary (and the engine library where a controllable clock
//! is needed) against the simulator on a loopback port.

mod admin;
mod backfill;
mod calling;
mod chaos;
mod cli;
mod connect;
mod demo;
mod deploy;
mod faults;
mod harness;
mod keepalive;
mod lease;
mod lifecycle;
mod promises;
mod queue;
mod rate_limit;
mod recheck;
mod refresh_race;
mod serve;
mod sources_cli;
mod storage;
mod sync;
mod unattended;
mod vault_state;
