//! The crate's error type and the one place it becomes the IoT Events wire error.

use axum::http::StatusCode;
use fleetcore_api::ApiError;
use fleetcore_core::StoreError;

/// What can go wrong in the events service; each variant is one IoT Events error code.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// No such input, detector model, version or detector.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already.
    #[error("{message}")]
    AlreadyExists {
        /// What exists.
        message: String,
        /// Its name.
        id: String,
        /// Its ARN.
        arn: String,
    },
    /// A parameter or definition is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The engine is not running.
    #[error("{0}")]
    Unavailable(String),
}

impl From<EventsError> for ApiError {
    fn from(error: EventsError) -> ApiError {
        match error {
            EventsError::NotFound(m) => ApiError::not_found(m),
            EventsError::AlreadyExists { message, id, arn } => {
                ApiError::already_exists(message, &id, &arn)
            }
            EventsError::Invalid(m) => ApiError::invalid_request(m),
            EventsError::Store(e) => ApiError::internal(e.to_string()),
            EventsError::Unavailable(m) => ApiError::new(
                "ServiceUnavailableException",
                StatusCode::SERVICE_UNAVAILABLE,
                m,
            ),
        }
    }
}
