//! What can go wrong in the registry and certificate operations, as a caller can act on it.

use fleetcore_core::StoreError;

/// A failed registry or certificate operation. Each variant corresponds to one AWS IoT error
/// code, so the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The named resource does not exist (`ResourceNotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// A resource with this name or id exists with a different configuration
    /// (`ResourceAlreadyExistsException`).
    #[error("{message}")]
    AlreadyExists {
        /// A sentence for a person.
        message: String,
        /// The existing resource's name or id.
        id: String,
        /// The existing resource's ARN.
        arn: String,
    },
    /// The request conflicts with the resource's current state (`ConflictException`).
    #[error("{0}")]
    Conflict(String),
    /// The caller's `expectedVersion` is not the current version (`VersionConflictException`).
    #[error("{0}")]
    VersionConflict(String),
    /// The request is malformed or not allowed as asked (`InvalidRequestException`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The certificate's status does not allow the operation (`CertificateStateException`).
    #[error("{0}")]
    CertificateState(String),
    /// A certificate is unparsable, expired, or does not chain as required
    /// (`CertificateValidationException`).
    #[error("{0}")]
    CertificateValidation(String),
    /// A CA's verification certificate does not carry the registration code
    /// (`RegistrationCodeValidationException`).
    #[error("{0}")]
    RegistrationCodeValidation(String),
    /// The resource is still attached to others (`DeleteConflictException`).
    #[error("{0}")]
    DeleteConflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure that is the server's fault: an unreadable stored record, the CA key, the
    /// random number generator.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    pub(crate) fn not_found(what: &str, name: &str) -> RegistryError {
        RegistryError::NotFound(format!("{what} {name} does not exist"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> RegistryError {
        RegistryError::InvalidRequest(message.into())
    }
}
