//! The errors of the analytics capability, and their one mapping to AWS error shapes.

use fleetcore_api::ApiError;
use fleetcore_core::StoreError;

/// What went wrong in an analytics operation.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// No resource of that kind and name.
    #[error("{kind} {name} does not exist")]
    NotFound {
        /// `channel`, `pipeline`, `datastore`, `dataset` or `dataset content`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A resource of that kind and name exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// The kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Its ARN.
        arn: String,
    },
    /// The request is malformed or asks for something this server does not do.
    #[error("{0}")]
    Invalid(String),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of a channel, datastore or dataset content could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An object of a customer-managed bucket could not be read, written or deleted.
    #[error("bucket {bucket}: {message}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// The query engine failed (the message is the engine's).
    #[error("{0}")]
    Query(String),
    /// The stream a channel is fed from failed.
    #[error("stream: {0}")]
    Stream(#[from] fleetcore_stream::StreamError),
}

impl AnalyticsError {
    /// An I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> AnalyticsError {
        AnalyticsError::Io {
            what: what.into(),
            source,
        }
    }

    /// A not-found error.
    pub(crate) fn not_found(kind: &'static str, name: &str) -> AnalyticsError {
        AnalyticsError::NotFound {
            kind,
            name: name.to_string(),
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> ApiError {
        match &e {
            AnalyticsError::NotFound { .. } => ApiError::not_found(e.to_string()),
            AnalyticsError::AlreadyExists { name, arn, .. } => {
                ApiError::already_exists(e.to_string(), name, arn)
            }
            AnalyticsError::Invalid(_) | AnalyticsError::Query(_) => {
                ApiError::invalid_request(e.to_string())
            }
            AnalyticsError::Store(_)
            | AnalyticsError::Io { .. }
            | AnalyticsError::Bucket { .. }
            | AnalyticsError::Stream(_) => ApiError::internal(e.to_string()),
        }
    }
}
