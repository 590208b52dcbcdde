//! The errors of the notification service; [`crate::api`] maps them to SNS's error codes in
//! one place, [`NotifyServiceError::to_seam`] to the `TopicPublisher` seam's.

use fleetcore_core::{NotifyError, StoreError};

/// Why an SNS operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyServiceError {
    /// No such topic or subscription (SNS `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// A parameter is missing or wrong (SNS `InvalidParameter`); the text names it.
    #[error("Invalid parameter: {0}")]
    InvalidParameter(String),
    /// The store failed (SNS `InternalError`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl NotifyServiceError {
    /// An `InvalidParameter` error.
    pub fn invalid(message: impl Into<String>) -> NotifyServiceError {
        NotifyServiceError::InvalidParameter(message.into())
    }

    /// The error as the `TopicPublisher` seam reports it.
    pub fn to_seam(&self) -> NotifyError {
        match self {
            NotifyServiceError::NotFound(m) => NotifyError::NotFound(m.clone()),
            NotifyServiceError::InvalidParameter(m) => NotifyError::Invalid(m.clone()),
            NotifyServiceError::Internal(m) => NotifyError::Service(m.clone()),
        }
    }
}

impl From<StoreError> for NotifyServiceError {
    fn from(error: StoreError) -> NotifyServiceError {
        NotifyServiceError::Internal(error.to_string())
    }
}
