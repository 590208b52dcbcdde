//! `DEVICE_CERTIFICATE_EXPIRING_CHECK` and `CA_CERTIFICATE_EXPIRING_CHECK`: ACTIVE
//! certificates that expire within 30 days or have expired (AWS's window).

use serde_json::json;

use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;

/// How far ahead an expiry is reported.
const WINDOW_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// Whether a certificate valid until `not_after` is to be reported at `now` (epoch seconds),
/// and with which code.
pub fn expiry_code(not_after: f64, now: f64) -> Option<&'static str> {
    if not_after <= now {
        Some("CERTIFICATE_EXPIRED")
    } else if not_after - now <= WINDOW_SECONDS {
        Some("CERTIFICATE_EXPIRING")
    } else {
        None
    }
}

fn finding(
    kind: &str,
    id_field: &str,
    id: &str,
    not_after: f64,
    code: &'static str,
) -> NonCompliance {
    NonCompliance {
        resource: json!({
            "resourceType": kind,
            "resourceIdentifier": {id_field: id},
            "additionalInfo": {"EXPIRATION_TIME": format!("{}", not_after as i64)},
        }),
        severity: "MEDIUM",
        reason: if code == "CERTIFICATE_EXPIRED" {
            "Certificate has expired".into()
        } else {
            "Certificate is expiring within 30 days".into()
        },
        code,
        related: Vec::new(),
    }
}

/// Device certificates.
pub struct DeviceCertificatesExpiring;

impl AuditCheck for DeviceCertificatesExpiring {
    fn name(&self) -> &'static str {
        "DEVICE_CERTIFICATE_EXPIRING_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let now = crate::store::now();
        let certificates = sources.active_device_certificates()?;
        let findings = certificates
            .iter()
            .filter_map(|(id, not_after)| {
                expiry_code(*not_after, now).map(|code| {
                    finding(
                        "DEVICE_CERTIFICATE",
                        "deviceCertificateId",
                        id,
                        *not_after,
                        code,
                    )
                })
            })
            .collect();
        Ok(CheckOutcome {
            total: certificates.len() as u64,
            findings,
        })
    }
}

/// Registered CA certificates.
pub struct CaCertificatesExpiring;

impl AuditCheck for CaCertificatesExpiring {
    fn name(&self) -> &'static str {
        "CA_CERTIFICATE_EXPIRING_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let now = crate::store::now();
        let certificates = sources.active_ca_certificates()?;
        let findings = certificates
            .iter()
            .filter_map(|(id, not_after)| {
                expiry_code(*not_after, now)
                    .map(|code| finding("CA_CERTIFICATE", "caCertificateId", id, *not_after, code))
            })
            .collect();
        Ok(CheckOutcome {
            total: certificates.len() as u64,
            findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_expired_and_expiring_within_30_days() {
        let now = 1_000_000_000.0;
        assert_eq!(expiry_code(now - 1.0, now), Some("CERTIFICATE_EXPIRED"));
        assert_eq!(
            expiry_code(now + 29.0 * 86400.0, now),
            Some("CERTIFICATE_EXPIRING")
        );
        assert_eq!(expiry_code(now + 31.0 * 86400.0, now), None);
    }
}
