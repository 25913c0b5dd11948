//! Engine errors that concern a whole run (not one org or one item).
//!
//! Policy (see ARCHITECTURE.md): errors are classified once where they are produced — Webex
//! errors by the `webex` crate (Transient / Reauth / Permanent), storage errors by `archive`.
//! The engine turns item errors into ledger states and org errors into report outcomes; only
//! what stops the whole run surfaces here.

/// A run-level failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad arguments (unknown org, bad window): exit code 1.
    #[error("{0}")]
    Usage(String),
    /// Configuration problem: exit code 1.
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Webex(#[from] webex::Error),
}

use webex::ErrorClass;

/// Why one org's run stopped. Wraps the error of the component that produced it without
/// relabelling it: a Webex refusal stays a Webex error with its class, a database that could not
/// be reached says "state database unavailable", storage refusing writes says "storage".
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// Webex refused or failed (classified by the `webex` crate).
    #[error(transparent)]
    Webex(#[from] webex::Error),
    /// The state database failed while `op`, after the in-run retries for transient errors.
    #[error("{}", db_message(op, source))]
    Database {
        /// What was being done.
        op: String,
        /// The vault's error.
        #[source]
        source: vault::VaultError,
    },
    /// Our own storage failed or refused a write. Never counted against the item.
    #[error(
        "storage {}: {source} — check [storage] url, credentials, free space and permissions; nothing was marked failed, the next run continues",
        what
    )]
    Storage {
        /// What was being written or read, e.g. "refused org/…/x.wav".
        what: String,
        /// The archive's error.
        #[source]
        source: archive::ArchiveError,
    },
    /// The org's settings make the source unusable (a region without a configured API base).
    #[error("configuration: {0}")]
    Config(String),
    /// Webex answers, but will not let this grant archive a source's recordings until an
    /// administrator changes something (the message says what). Never retried by itself.
    #[error("{source_label}: {message}")]
    NotPermitted {
        /// The source, as operators call it.
        source_label: &'static str,
        /// What is refused and what to change.
        message: String,
    },
}

fn db_message(op: &str, e: &vault::VaultError) -> String {
    if e.is_transient() {
        format!(
            "state database unavailable while {op}: {e} — check that the database is running, reachable and not locked by another program; nothing was marked failed, the next run continues"
        )
    } else {
        format!("state database error while {op}: {e}")
    }
}

impl OrgError {
    /// How the org's outcome treats this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            OrgError::Webex(e) => e.class(),
            OrgError::Database { source, .. } if source.is_transient() => ErrorClass::Transient,
            OrgError::Database { .. } => ErrorClass::Permanent,
            OrgError::Storage { source, .. } if source.is_transient() => ErrorClass::Transient,
            OrgError::Storage { .. } => ErrorClass::Permanent,
            OrgError::Config(_) | OrgError::NotPermitted { .. } => ErrorClass::Permanent,
        }
    }

    /// A database error while doing `op`.
    pub fn db(op: impl Into<String>) -> impl FnOnce(vault::VaultError) -> OrgError {
        let op = op.into();
        move |source| OrgError::Database { op, source }
    }
}
