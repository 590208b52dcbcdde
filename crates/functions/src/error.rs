//! The crate's error type and the one place it becomes Lambda's wire error.

use axum::http::StatusCode;
use fleetcore_api::ApiError;
use fleetcore_core::StoreError;

/// What can go wrong in the functions service; each variant is one Lambda error code.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// No such function, version, alias, permission or mapping.
    #[error("{0}")]
    NotFound(String),
    /// A parameter is missing or out of range.
    #[error("{0}")]
    InvalidParameter(String),
    /// The resource exists already or is being changed.
    #[error("{0}")]
    Conflict(String),
    /// Concurrency or queue limits are exhausted.
    #[error("{0}")]
    TooManyRequests(String),
    /// The request or response payload is over Lambda's limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A file of the function's code could not be written or read.
    #[error("{0}")]
    Io(String),
}

impl FunctionsError {
    /// An I/O failure with what was being done.
    pub(crate) fn io(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Self {
        FunctionsError::Io(format!("{what}: {error}"))
    }

    /// Function `name` (with its qualifier, if any) was not found, in Lambda's words.
    pub(crate) fn function_not_found(arn: &str) -> Self {
        FunctionsError::NotFound(format!("Function not found: {arn}"))
    }
}

impl From<FunctionsError> for ApiError {
    fn from(error: FunctionsError) -> ApiError {
        let message = error.to_string();
        let (code, status, kind) = match error {
            FunctionsError::NotFound(_) => {
                ("ResourceNotFoundException", StatusCode::NOT_FOUND, "User")
            }
            FunctionsError::InvalidParameter(_) => (
                "InvalidParameterValueException",
                StatusCode::BAD_REQUEST,
                "User",
            ),
            FunctionsError::Conflict(_) => {
                ("ResourceConflictException", StatusCode::CONFLICT, "User")
            }
            FunctionsError::TooManyRequests(_) => (
                "TooManyRequestsException",
                StatusCode::TOO_MANY_REQUESTS,
                "User",
            ),
            FunctionsError::TooLarge(_) => (
                "RequestTooLargeException",
                StatusCode::PAYLOAD_TOO_LARGE,
                "User",
            ),
            FunctionsError::Store(_) | FunctionsError::Io(_) => (
                "ServiceException",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Service",
            ),
        };
        ApiError::new(code, status, message).with_field("Type", kind)
    }
}

impl From<FunctionsError> for fleetcore_core::InvokeError {
    fn from(error: FunctionsError) -> Self {
        use fleetcore_core::InvokeError;
        match error {
            FunctionsError::NotFound(m) => InvokeError::NotFound(m),
            FunctionsError::TooManyRequests(m) => InvokeError::Throttled(m),
            FunctionsError::InvalidParameter(m) | FunctionsError::TooLarge(m) => {
                InvokeError::Invalid(m)
            }
            other => InvokeError::Service(other.to_string()),
        }
    }
}
