//! Typed Webex client for wxvault.
//!
//! This crate speaks Webex and nothing else: OAuth (authorization code with PKCE, refresh),
//! the Webex Contact Center APIs wxvault needs (tasks, captures, users), the Webex Calling
//! converged recordings ([`calling::CallingClient`]), media downloads, and the policy around
//! them — error classification ([`Error::class`]), `Retry-After` parsing, the per-client-id
//! [`http::RateGate`] and the [`http::RetryPolicy`], applied by one retry driver to every
//! request.
//! It knows nothing of storage or databases: tokens come in through [`TokenProvider`], which
//! the engine implements on top of its vault, and a request budget shared with other processes
//! through [`http::SharedBudget`], which the engine implements on its state database.
//!
//! Every response is parsed tolerantly, following the UNCERTAIN/Tolerate notes of
//! `webex-api.md`: epoch times may be numbers or strings, optional-looking fields are optional,
//! unknown fields are kept verbatim, and elements that cannot be understood are reported as
//! [`wxcc::Rejected`] rather than failing a whole page.

mod api;
pub mod calling;

mod error;
pub mod health;
pub mod http;
mod json;
mod link_header;
mod link_policy;
pub mod media;
pub mod oauth;
mod retry;
pub mod wxcc;

pub use calling::CallingClient;
pub use error::{
    Access, CALLING_ADMIN_SCOPE, CALLING_COMPLIANCE_SCOPE, Error, ErrorClass, ReauthKind,
    WXCC_READ_SCOPE,
};
pub use secrecy::{ExposeSecret, SecretString};

/// Supplies bearer tokens to API clients.
///
/// Implemented by the engine's token manager (which persists refreshed grants before using
/// them); the client only ever asks for the current token, and for a fresh one after a 401.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// Current access token (the implementation refreshes proactively when close to expiry).
    ///
    /// # Errors
    ///
    /// Any error the implementation met while obtaining a token, typically
    /// [`Error::Grant`] (needs re-authorization) or [`Error::TokenSource`].
    async fn access_token(&self) -> Result<SecretString, Error>;

    /// Called at most once per request after a 401, with the token that was rejected; returns
    /// a fresh token (the implementation is single-flight: if another task already refreshed,
    /// it returns the newer token without refreshing again).
    ///
    /// # Errors
    ///
    /// As for [`TokenProvider::access_token`]; a dead grant should be [`ErrorClass::Reauth`].
    async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, Error>;
}

/// A fixed access token that cannot be refreshed (developer-portal personal tokens, tests).
///
/// A 401 with it becomes a [`ErrorClass::Reauth`] error, since nothing can renew it.
#[derive(Clone)]
pub struct StaticToken(SecretString);

impl StaticToken {
    /// Wraps `token`.
    pub fn new(token: SecretString) -> Self {
        StaticToken(token)
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken([redacted])")
    }
}

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn access_token(&self) -> Result<SecretString, Error> {
        Ok(self.0.clone())
    }

    async fn refresh_after_unauthorized(
        &self,
        _rejected: &SecretString,
    ) -> Result<SecretString, Error> {
        Err(Error::TokenSource {
            reason: "the static access token was rejected (401) and cannot be refreshed; \
                     supply a new token or connect the org with OAuth"
                .to_owned(),
            class: ErrorClass::Reauth,
        })
    }
}
