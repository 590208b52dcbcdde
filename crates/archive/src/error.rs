//! Errors of the archive, with variants the API maps to Firehose's error codes.

use fleetcore_stream::StreamError;

/// Why an archive operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// No delivery stream (or source stream) by that name: `ResourceNotFoundException`.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or the stream is being deleted: `ResourceInUseException`.
    #[error("{0}")]
    InUse(String),
    /// A request value is malformed or unsupported: `InvalidArgumentException`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller's `CurrentDeliveryStreamVersionId` is not the current one (another update
    /// came first): `ConcurrentModificationException`.
    #[error("{0}")]
    ConcurrentModification(String),
    /// Too many delivery streams: `LimitExceededException`.
    #[error("{0}")]
    LimitExceeded(String),
    /// The delivery stream's undelivered backlog is full (the destination is slow or down):
    /// `ServiceUnavailableException`; the client retries later.
    #[error("{0}")]
    Unavailable(String),
    /// The server failed (store or stream I/O).
    #[error("{0}")]
    Internal(String),
}

impl From<fleetcore_core::StoreError> for ArchiveError {
    fn from(e: fleetcore_core::StoreError) -> ArchiveError {
        ArchiveError::Internal(e.to_string())
    }
}

impl From<StreamError> for ArchiveError {
    fn from(e: StreamError) -> ArchiveError {
        match e {
            StreamError::NotFound(m) => ArchiveError::NotFound(m),
            StreamError::InvalidArgument(m) => ArchiveError::InvalidArgument(m),
            StreamError::LimitExceeded(m) => ArchiveError::InvalidArgument(m),
            StreamError::ResourceInUse(m) | StreamError::AlreadyExists(m) => ArchiveError::InUse(m),
            other => ArchiveError::Internal(other.to_string()),
        }
    }
}
