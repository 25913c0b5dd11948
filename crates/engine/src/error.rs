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
