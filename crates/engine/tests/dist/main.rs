//! Distributed correctness at the library level: several "processes" (each with its own state
//! database handle, token manager and rate gates) on one database — a SQLite file and
//! PostgreSQL — against the simulator.

mod budget_fallback;
mod common;
mod forced;
mod rate_limit;
mod refresh_fixes;
mod refresh_race;
mod token_limit;
