//! `CONFLICTING_CLIENT_IDS_CHECK` and `DEVICE_CERTIFICATE_SHARED_CHECK`: what the fleet meter
//! saw at the admitted connections of the last 31 days (AWS's look-back for an on-demand
//! audit): live connections taken over by another with the same client id, and certificates
//! used by several client ids connected at once. The sightings are kept in memory: a restart
//! starts with none.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;
use crate::meter::{SIGHTINGS_KEPT_SECONDS, Sighting};

/// Client ids used by several connections at once.
pub struct ConflictingClientIds;

impl AuditCheck for ConflictingClientIds {
    fn name(&self) -> &'static str {
        "CONFLICTING_CLIENT_IDS_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let since = crate::store::now() - SIGHTINGS_KEPT_SECONDS;
        let mut conflicts: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
        for s in sources.meter.sightings_since(since) {
            if let Sighting::ConflictingClientId {
                client_id,
                principal,
                peer,
                ..
            } = s
            {
                let c = conflicts.entry(client_id).or_default();
                c.0 += 1;
                c.1.insert(format!("{principal}@{peer}"));
            }
        }
        let findings = conflicts
            .into_iter()
            .map(|(client_id, (takeovers, connections))| NonCompliance {
                resource: json!({
                    "resourceType": "CLIENT_ID",
                    "resourceIdentifier": {"clientId": client_id},
                    "additionalInfo": {
                        "TAKEOVERS": takeovers.to_string(),
                        "CONNECTIONS": connections.into_iter().collect::<Vec<_>>().join(","),
                    },
                }),
                severity: "HIGH",
                reason: "Multiple connections were made with the same client ID".into(),
                code: "DUPLICATE_CLIENT_ID_ACROSS_CONNECTIONS",
                related: Vec::new(),
            })
            .collect();
        Ok(CheckOutcome {
            total: sources.meter.known_devices() as u64,
            findings,
        })
    }
}

/// Certificates used by several client ids connected at once.
pub struct SharedCertificates;

impl AuditCheck for SharedCertificates {
    fn name(&self) -> &'static str {
        "DEVICE_CERTIFICATE_SHARED_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let since = crate::store::now() - SIGHTINGS_KEPT_SECONDS;
        let mut shared: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in sources.meter.sightings_since(since) {
            if let Sighting::SharedCertificate {
                certificate_id,
                client_ids,
                ..
            } = s
            {
                shared.entry(certificate_id).or_default().extend(client_ids);
            }
        }
        let findings = shared
            .into_iter()
            .map(|(certificate_id, client_ids)| NonCompliance {
                resource: json!({
                    "resourceType": "DEVICE_CERTIFICATE",
                    "resourceIdentifier": {"deviceCertificateId": certificate_id},
                    "additionalInfo": {
                        "CLIENT_IDS": client_ids.into_iter().collect::<Vec<_>>().join(","),
                    },
                }),
                severity: "CRITICAL",
                reason: "Certificate is used by multiple devices connected at the same time".into(),
                code: "CERTIFICATE_SHARED_BY_MULTIPLE_DEVICES",
                related: Vec::new(),
            })
            .collect();
        Ok(CheckOutcome {
            total: sources.meter.known_certificates() as u64,
            findings,
        })
    }
}
