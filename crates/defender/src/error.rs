//! What can go wrong in Device Defender, as a caller can act on it; `api` maps it to AWS's
//! error shapes.

use fleetcore_core::StoreError;

/// A failed Defender operation.
#[derive(Debug, thiserror::Error)]
pub enum DefenderError {
    /// No such security profile, custom metric or target.
    #[error("{0}")]
    NotFound(String),
    /// A security profile or custom metric with this name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed or asks for something this server does not do.
    #[error("{0}")]
    Invalid(String),
    /// `expectedVersion` is not the profile's current version.
    #[error("{0}")]
    VersionConflict(String),
    /// Too many profiles attached to a target.
    #[error("{0}")]
    LimitExceeded(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry could not be read.
    #[error("{0}")]
    Registry(String),
}
