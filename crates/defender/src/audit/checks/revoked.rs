//! `REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK` and `REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK`
//! over fleetcore's own registry. AWS compares its registry with the issuers' CRLs; fleetcore
//! issues or registers every certificate its devices use, so its registry is where a
//! revocation is recorded, and the checks look for what a revocation there left behind:
//!
//! - a registered CA certificate that is INACTIVE (fleetcore's CA states are AWS's, ACTIVE and
//!   INACTIVE: deactivating a CA is how it is revoked here) while device certificates
//!   registered under it are still ACTIVE: reactivating the CA, or registering it again, would
//!   let them all connect. The CA is the non-compliant resource; the ACTIVE device certificates
//!   are its related resources (the first [`RELATED_SHOWN`], and their count);
//! - a device certificate REVOKED in the registry that is still in use: attached to a thing
//!   (the thing still names it as its identity; the things are in `additionalInfo`, as AWS's
//!   resource types have none for a thing) or with a live connection.

use fleetcore_identity::certificates::{CaCertificateStatus, CertificateStatus};
use serde_json::{Value, json};

use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;

/// Most device certificates named in a CA finding's `relatedResources`.
pub const RELATED_SHOWN: usize = 100;

/// AWS's reason code of both checks.
const CODE: &str = "CERTIFICATE_REVOKED_BY_ISSUER";

/// Revoked (INACTIVE) CA certificates whose device certificates are still ACTIVE.
pub struct RevokedCaStillActive;

impl AuditCheck for RevokedCaStillActive {
    fn name(&self) -> &'static str {
        "REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let cas = sources.ca_certificates()?;
        let revoked: Vec<&str> = cas
            .iter()
            .filter(|ca| ca.status == CaCertificateStatus::Inactive)
            .map(|ca| ca.id.as_str())
            .collect();
        let mut findings = Vec::new();
        if !revoked.is_empty() {
            let devices = sources.device_certificates()?;
            for ca in revoked {
                let active: Vec<&str> = devices
                    .iter()
                    .filter(|c| {
                        c.status == CertificateStatus::Active
                            && c.ca_certificate_id.as_deref() == Some(ca)
                    })
                    .map(|c| c.id.as_str())
                    .collect();
                if active.is_empty() {
                    continue;
                }
                findings.push(NonCompliance {
                    resource: json!({
                        "resourceType": "CA_CERTIFICATE",
                        "resourceIdentifier": {"caCertificateId": ca},
                        "additionalInfo": {
                            "CA_STATUS": "INACTIVE",
                            "ACTIVE_DEVICE_CERTIFICATES": active.len().to_string(),
                        },
                    }),
                    related: active
                        .iter()
                        .take(RELATED_SHOWN)
                        .map(|id| {
                            json!({
                                "resourceType": "DEVICE_CERTIFICATE",
                                "resourceIdentifier": {"deviceCertificateId": id},
                                "additionalInfo": {"STATUS": "ACTIVE"},
                            })
                        })
                        .collect(),
                    severity: "CRITICAL",
                    reason: format!(
                        "CA certificate is revoked (INACTIVE) but {} device certificate(s) it signed are still ACTIVE",
                        active.len()
                    ),
                    code: CODE,
                });
            }
        }
        Ok(CheckOutcome {
            total: cas.len() as u64,
            findings,
        })
    }
}

/// REVOKED device certificates still attached to things or connected.
pub struct RevokedDeviceCertificateStillActive;

impl AuditCheck for RevokedDeviceCertificateStillActive {
    fn name(&self) -> &'static str {
        "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let devices = sources.device_certificates()?;
        let mut findings = Vec::new();
        for cert in devices
            .iter()
            .filter(|c| c.status == CertificateStatus::Revoked)
        {
            let things = sources.things_of_certificate(&cert.id)?;
            let live = sources.live_clients_of_certificate(&cert.id);
            if things.is_empty() && live.is_empty() {
                continue;
            }
            let mut info = serde_json::Map::new();
            if !things.is_empty() {
                info.insert("ATTACHED_THINGS".into(), Value::from(things.join(",")));
            }
            if !live.is_empty() {
                info.insert("CONNECTED_CLIENT_IDS".into(), Value::from(live.join(",")));
            }
            let what = match (things.is_empty(), live.is_empty()) {
                (false, false) => "still attached to things and connected",
                (false, true) => "still attached to things",
                _ => "still connected",
            };
            findings.push(NonCompliance {
                resource: json!({
                    "resourceType": "DEVICE_CERTIFICATE",
                    "resourceIdentifier": {"deviceCertificateId": cert.id},
                    "additionalInfo": info,
                }),
                related: Vec::new(),
                severity: "MEDIUM",
                reason: format!("Device certificate is REVOKED but {what}"),
                code: CODE,
            });
        }
        Ok(CheckOutcome {
            total: devices.len() as u64,
            findings,
        })
    }
}
