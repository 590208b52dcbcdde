//! Why a shadow request was refused, with the code AWS answers for it (the MQTT `/rejected`
//! document's `code` and the HTTP status).

use fleetcore_core::StoreError;

/// A refused shadow request.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The request is malformed (bad JSON, missing or unknown node, bad name, too deep): 400.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller's policies do not allow the operation: 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such shadow: 404.
    #[error("No shadow exists with name: '{0}'")]
    NotFound(String),
    /// The request's `version` is not the shadow's current version: 409.
    #[error("Version conflict")]
    VersionConflict,
    /// The resulting state document is larger than the limit: 413.
    #[error("The payload exceeds the maximum size allowed")]
    TooLarge,
    /// The service's queue is full: 429.
    #[error("Too many requests: the shadow service is busy")]
    Throttled,
    /// The store failed: 500.
    #[error("Internal service failure: {0}")]
    Store(#[from] StoreError),
    /// The service has stopped (server shutting down): 503.
    #[error("The shadow service is not available")]
    Unavailable,
}

impl ShadowError {
    /// The AWS error code: the `code` of a `/rejected` document and the HTTP status.
    pub fn code(&self) -> u16 {
        match self {
            ShadowError::InvalidRequest(_) => 400,
            ShadowError::Forbidden(_) => 403,
            ShadowError::NotFound(_) => 404,
            ShadowError::VersionConflict => 409,
            ShadowError::TooLarge => 413,
            ShadowError::Throttled => 429,
            ShadowError::Store(_) => 500,
            ShadowError::Unavailable => 503,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ShadowError {
        ShadowError::InvalidRequest(message.into())
    }
}
