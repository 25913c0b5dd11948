//! Integration tests of the vault. Every database test runs against SQLite (in a temp dir) and
//! PostgreSQL (a fresh database per test, see `vault::testing`).

mod backfill;
mod budget;
mod common;
mod connect;
mod health;
mod jobs;
mod keys;
mod lease;
mod ledger;
mod open;
mod orgs;
mod recheck;
mod rotation;
mod sources;
mod upgrade;
