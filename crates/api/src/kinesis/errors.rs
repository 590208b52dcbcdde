//! The Kinesis error shapes (JSON 1.1 `__type`, status 400 unless the server is at fault) and
//! the one mapping from [`StreamError`] to them.

use axum::http::StatusCode;
use fleetcore_stream::StreamError;

use super::token::TokenError;
use crate::error::ApiError;

fn client(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(code, StatusCode::BAD_REQUEST, message).json11()
}

/// `InvalidArgumentException`.
pub fn invalid_argument(message: impl Into<String>) -> ApiError {
    client("InvalidArgumentException", message)
}

/// `ResourceNotFoundException`.
pub fn not_found(message: impl Into<String>) -> ApiError {
    client("ResourceNotFoundException", message)
}

/// `SerializationException` (a body that is not the operation's JSON).
pub fn serialization(message: impl Into<String>) -> ApiError {
    client("SerializationException", message)
}

/// `UnknownOperationException`.
pub fn unknown_operation(target: &str) -> ApiError {
    client(
        "UnknownOperationException",
        format!("{target:?} is not an operation of Kinesis_20131202."),
    )
}

/// An iterator that could not be used.
pub fn bad_iterator(error: TokenError) -> ApiError {
    match error {
        TokenError::Invalid => invalid_argument("The shard iterator is not valid."),
        TokenError::Expired => client(
            "ExpiredIteratorException",
            "Iterator expired. The iterator was created more than 5 minutes ago.",
        ),
    }
}

/// A pagination token that could not be used.
pub fn bad_next_token(error: TokenError) -> ApiError {
    match error {
        TokenError::Invalid => invalid_argument("NextToken is not valid."),
        TokenError::Expired => client(
            "ExpiredNextTokenException",
            "NextToken has expired; list again from the start.",
        ),
    }
}

/// The AWS shape of a stream store error.
pub fn from_stream(error: StreamError) -> ApiError {
    let message = error.to_string();
    match error {
        StreamError::NotFound(_) => not_found(message),
        StreamError::AlreadyExists(_) | StreamError::ResourceInUse(_) => {
            client("ResourceInUseException", message)
        }
        StreamError::LimitExceeded(_) => client("LimitExceededException", message),
        StreamError::InvalidArgument(_) => invalid_argument(message),
        StreamError::LeaseLost { .. } => client("ResourceInUseException", message),
        StreamError::Storage(_) => {
            tracing::error!(error = %message, "stream storage failed");
            ApiError::new(
                "InternalFailureException",
                StatusCode::INTERNAL_SERVER_ERROR,
                message,
            )
            .json11()
        }
    }
}
