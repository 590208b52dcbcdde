//! What can go wrong in provisioning, as a caller can act on it. The HTTP layer maps it in
//! `api::error` and the MQTT flow in `claim::rejected`.

use fleetcore_core::StoreError;
use fleetcore_identity::policy::PolicyError;
use fleetcore_identity::registry::RegistryError;

use crate::template::TemplateError;

/// A failed provisioning operation.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    /// No such template, template version, certificate or function.
    #[error("{0}")]
    NotFound(String),
    /// A template with this name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed (a template body, a name, a disabled template).
    #[error("{0}")]
    Invalid(String),
    /// The device's parameters do not fit the template.
    #[error("{0}")]
    Parameters(String),
    /// The certificate ownership token is unknown, used, expired or for another certificate.
    #[error("{0}")]
    Token(String),
    /// A certificate signing request that does not parse or verify.
    #[error("{0}")]
    Csr(String),
    /// The pre-provisioning hook refused the device, failed, timed out or answered malformed.
    #[error("{0}")]
    Refused(String),
    /// The template already has the most versions allowed.
    #[error("{0}")]
    VersionsLimit(String),
    /// The request conflicts with the current state (deleting the default version).
    #[error("{0}")]
    Conflict(String),
    /// Too many requests in flight.
    #[error("{0}")]
    Throttled(String),
    /// A registry or certificate operation failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A policy operation failed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A server-side failure.
    #[error("{0}")]
    Internal(String),
}

impl From<TemplateError> for ProvisioningError {
    fn from(error: TemplateError) -> ProvisioningError {
        match error {
            TemplateError::Invalid(m) => ProvisioningError::Invalid(m),
            TemplateError::Parameters(m) => ProvisioningError::Parameters(m),
        }
    }
}
