//! The crate's errors and the one place that maps them to CloudWatch's error codes.

use axum::http::StatusCode;
use fleetcore_api::ApiError;

/// What can go wrong in the observability services.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    /// A parameter's value is not acceptable (`InvalidParameterValue`).
    #[error("{0}")]
    InvalidParameter(String),
    /// A required parameter is absent (`MissingParameter`).
    #[error("{0}")]
    MissingParameter(String),
    /// Parameters that cannot go together (`InvalidParameterCombination`).
    #[error("{0}")]
    InvalidCombination(String),
    /// No such resource (`ResourceNotFound`).
    #[error("{0}")]
    NotFound(String),
    /// A dashboard body of the wrong shape (`InvalidParameterInput`), with
    /// `(DataPath, Message)` per problem.
    #[error("The dashboard body is invalid, there are {} validation errors.", .0.len())]
    InvalidDashboard(Vec<(String, String)>),
    /// The store failed.
    #[error("metric store: {0}")]
    Store(String),
    /// The store's writer is gone (the server is stopping).
    #[error("the metric store is stopped")]
    Stopped,
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ObserveError {
            fn from(e: $t) -> ObserveError {
                ObserveError::Store(e.to_string())
            }
        }
    )*};
}
store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error,
    serde_json::Error
);

impl ObserveError {
    /// The CloudWatch (query-compatible) error for this failure; the caller picks the wire.
    pub fn to_api(&self) -> ApiError {
        let (code, status) = match self {
            ObserveError::InvalidParameter(_) => ("InvalidParameterValue", StatusCode::BAD_REQUEST),
            ObserveError::MissingParameter(_) => ("MissingParameter", StatusCode::BAD_REQUEST),
            ObserveError::InvalidCombination(_) => {
                ("InvalidParameterCombination", StatusCode::BAD_REQUEST)
            }
            ObserveError::NotFound(_) => ("ResourceNotFound", StatusCode::NOT_FOUND),
            ObserveError::InvalidDashboard(problems) => {
                let messages: Vec<serde_json::Value> = problems
                    .iter()
                    .map(
                        |(path, message)| serde_json::json!({"DataPath": path, "Message": message}),
                    )
                    .collect();
                return ApiError::new(
                    "InvalidParameterInput",
                    StatusCode::BAD_REQUEST,
                    self.to_string(),
                )
                .with_field("dashboardValidationMessages", messages);
            }
            ObserveError::Store(_) | ObserveError::Stopped => {
                ("InternalServiceError", StatusCode::INTERNAL_SERVER_ERROR)
            }
        };
        ApiError::new(code, status, self.to_string())
    }
}

/// Shorthand for an invalid parameter.
pub(crate) fn invalid(message: impl Into<String>) -> ObserveError {
    ObserveError::InvalidParameter(message.into())
}
