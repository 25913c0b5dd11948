//! Distributed correctness at the library level: several "processes" (each with its own state
//! database handle, token manager and rate gates) on one database — a SQLite file and
//! PostgreSQL — against the simulator.

mod common;
mod rate_limit;
mod refresh_race;
