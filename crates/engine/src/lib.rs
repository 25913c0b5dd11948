//! The sync engine: plans harvest windows per org, keeps tokens alive, and drives each recording
//! through `discovered → pending_capture → ready → stored → done` (or `missing` / `absent` /
//! `failed` with a reason).
//!
//! It is the only crate that knows all three of the Webex client (`webex`), the state database
//! (`vault`) and the object store (`archive`); those three know nothing of each other.

pub mod budget;
pub mod clock;
pub mod config;
pub mod dbretry;
pub mod error;
pub mod lease;
pub mod lifecycle;
pub mod onboard;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod queue;
pub mod regions;
pub mod report;
pub mod source;
pub mod sync;
pub mod tokens;

pub use clock::{Clock, FnClock, SharedClock, SystemClock};
pub use config::Config;
pub use error::{EngineError, OrgError};
pub use report::{OrgOutcome, OrgReport, SyncReport};
pub use source::wxcc;
pub use sync::{Engine, OrgStatusView, SecretsHealth, SourceStatus, SyncOptions};
