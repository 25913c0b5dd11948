//! The wxvault state database: orgs and their sealed OAuth secrets, the recording ledger,
//! completed harvest windows and an event log.
//!
//! Why one crate owns all of this: "nothing lost" (see the design notes) is a property of the
//! ledger's state machine, and the ledger is only trustworthy if every transition goes through
//! one place that makes it a single idempotent write. The same runtime SQL runs on SQLite
//! (embedded, the default) and PostgreSQL (many workers) through sqlx's `Any` driver; only the
//! identity columns of the schema differ, so each backend has its own migrations directory.
//!
//! Secrets never leave this crate unsealed except through [`Vault::org_secrets`], which
//! returns [`secrecy::SecretString`]s. See [`Keyring`] for the sealed format.
//!
//! The connect web app's state lives here too (`connect.rs`): single-use invites, pending
//! OAuth authorizations bound to a browser session, operator / connect sessions and the
//! operator password hash. Bearer secrets are stored only as SHA-256 and single use is one
//! conditional SQL statement, so it holds across processes and on both backends.
//!
//! Per-org leases (`lease.rs`) keep two processes from working on one org at once: taken by one
//! conditional upsert, renewed by their holder, taken over only once expired.
//!
//! Per-client-id request budgets (`budget.rs`) let every process on the database share one
//! Webex rate limit: a slot is one upsert of a GCRA schedule, a 429 pauses the client id for all.
//!
//! Tasks and recordings are keyed by (org, source, id): every call on one item names its source
//! (the engine owns the names, e.g. `wxcc`); `counts`, `failures` and `retry` span all sources.
//!
//! Times are epoch milliseconds (`i64`); JSON is stored as text.

mod budget;
mod connect;
mod crypto;
mod db;
mod error;
mod health;
mod jobs;
mod keyfile;
mod lease;
mod ledger;
mod model;
mod orgs;
mod queue_status;
mod recheck;
mod recordings;
mod rotation;
mod sealing;
mod singleton;
mod status;
#[cfg(feature = "testing")]
pub mod testing;
mod windows;

pub use budget::BudgetSlot;
pub use connect::{CONNECT_SESSIONS_PER_INVITE, PENDING_AUTHS_PER_INVITE};
pub use connect::{
    Invite, InviteStatus, IssuedInvite, IssuedSession, NewInvite, NewPendingAuth, PendingAuth,
    SESSION_KINDS, Session, hash_password, verify_password,
};
pub use crypto::{KEY_LEN, Keyring, generate_key_base64, init_key_file};
pub use db::{DEFAULT_PG_SCHEMA, Vault};
pub use error::VaultError;
pub use jobs::{Job, KIND_BACKFILL, KIND_HARVEST, KIND_RESCAN, NewJob};
pub use keyfile::{add_key_version, retire_key_versions};
pub use lease::{Lease, LeaseAcquire, LeaseHolder, LeaseRenewal};
pub use model::{
    Archived, Counts, Event, Failure, NewOrg, Org, OrgSecrets, OrgStatus, RecordingRow,
    RecordingState, RecordingUpsert, RotationReport, TaskRow, TaskState, TaskUpsert, TokenUpdate,
};
pub use queue_status::{OPEN_JOBS_SHOWN, ProcessJobs, QueueStatus};
pub use recheck::{RetryCounts, WindowProblems};
pub use secrecy::SecretString;
pub use singleton::Singleton;
