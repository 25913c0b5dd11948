//! What a request can fail with, and the page each failure shows. Messages are written for the
//! person in front of the browser (a customer admin or the operator) and never carry a secret:
//! they are built from classified engine / vault errors, which redact tokens themselves.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A failed request: the status, a heading, what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The request cannot be honoured as it is (bad or replayed link, wrong form).
    #[error("{problem}")]
    Refused {
        status: StatusCode,
        title: &'static str,
        problem: String,
        fix: String,
    },
    /// The operator must sign in first.
    #[error("sign in first")]
    SignIn,
    /// The app is set up wrongly; the operator must fix the configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A database or other internal failure; details are in the log.
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    pub(crate) fn refused(
        status: StatusCode,
        title: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        WebError::Refused {
            status,
            title,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A request that fails the CSRF or origin check.
    pub(crate) fn forbidden() -> Self {
        Self::refused(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not sent from a page of this app, or the page is too old.",
            "Reload the page and try again.",
        )
    }
}

impl From<vault::VaultError> for WebError {
    fn from(e: vault::VaultError) -> Self {
        WebError::Internal(format!("the state database failed: {e}"))
    }
}

impl From<engine::EngineError> for WebError {
    fn from(e: engine::EngineError) -> Self {
        match e {
            // The engine words these for an operator at a terminal: log them, and tell the
            // person at the browser what they can do.
            engine::EngineError::Usage(msg) => {
                tracing::warn!(%msg, "request refused by the engine");
                WebError::refused(
                    StatusCode::BAD_REQUEST,
                    "Not connected",
                    "The connection could not be completed. Nothing was stored.",
                    "Start again from the invitation link; if it fails again, tell the sender of the link.",
                )
            }
            engine::EngineError::Config(msg) => WebError::Config(msg),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn => axum::response::Redirect::to("/login").into_response(),
            WebError::Refused {
                status,
                title,
                problem,
                fix,
            } => {
                tracing::info!(status = status.as_u16(), %problem, "request refused");
                (status, crate::pages::problem(title, &problem, &fix)).into_response()
            }
            WebError::Config(msg) => {
                tracing::error!(%msg, "serve is misconfigured");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    crate::pages::problem(
                        "Not set up",
                        "This service is not fully set up yet, so nothing was changed.",
                        "Tell the sender of the link; the details are in the service's log.",
                    ),
                )
                    .into_response()
            }
            WebError::Internal(msg) => {
                tracing::error!(%msg, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    crate::pages::problem(
                        "Something went wrong",
                        "wxvault could not finish this request. Nothing was changed.",
                        "Try again in a minute; if it keeps failing, the operator will find the cause in wxvault's log.",
                    ),
                )
                    .into_response()
            }
        }
    }
}

pub(crate) async fn not_found() -> WebError {
    WebError::refused(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
        "Check the link you were sent.",
    )
}
