//! The audit checks this server runs, one module each, in one registry: adding a check is
//! adding a module and a line to [`registry`].

mod anonymous;
mod cognito;
mod connections;
mod expiring;
mod logging;
mod overly_permissive;
mod revoked;

use serde_json::Value;

use super::AuditSources;

/// A resource a check found non-compliant.
#[derive(Debug, Clone)]
pub struct NonCompliance {
    /// `nonCompliantResource` (`resourceType`, `resourceIdentifier`, `additionalInfo`).
    pub resource: Value,
    /// `severity` (`CRITICAL`, `HIGH`, `MEDIUM`, `LOW`).
    pub severity: &'static str,
    /// `reasonForNonCompliance`.
    pub reason: String,
    /// `reasonForNonComplianceCode`.
    pub code: &'static str,
    /// `relatedResources` (empty: none written).
    pub related: Vec<Value>,
}

/// What one check found.
pub struct CheckOutcome {
    /// Resources looked at.
    pub total: u64,
    /// The non-compliant ones.
    pub findings: Vec<NonCompliance>,
}

/// An audit check.
pub trait AuditCheck: Send + Sync {
    /// AWS's check name (`IOT_POLICY_OVERLY_PERMISSIVE_CHECK`).
    fn name(&self) -> &'static str;
    /// Runs the check.
    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String>;
}

/// Every check this server runs.
pub fn registry() -> Vec<Box<dyn AuditCheck>> {
    vec![
        Box::new(overly_permissive::OverlyPermissivePolicies),
        Box::new(expiring::DeviceCertificatesExpiring),
        Box::new(expiring::CaCertificatesExpiring),
        Box::new(connections::ConflictingClientIds),
        Box::new(connections::SharedCertificates),
        Box::new(revoked::RevokedCaStillActive),
        Box::new(revoked::RevokedDeviceCertificateStillActive),
        Box::new(logging::LoggingDisabled),
        Box::new(anonymous::AnonymousAccessOverlyPermissive),
        Box::new(cognito::CognitoRole(
            "AUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK",
        )),
    ]
}
