//! `UNAUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK`, over what unauthenticated devices get
//! on this server. AWS audits the role its Cognito identity pools give unauthenticated
//! identities; fleetcore has no identity pools, and its unauthenticated clients are the
//! anonymous ones a plain listener admits with `--allow-anonymous`. So the check looks at that
//! access (one resource when anonymous clients are admitted, none otherwise): non-compliant when
//! no `--anonymous-policy` governs them (they may do everything) or when that policy allows
//! data-plane actions on every resource (the same test as `IOT_POLICY_OVERLY_PERMISSIVE_CHECK`).

use serde_json::json;

use super::overly_permissive::broad_grants;
use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;

/// The identifier a finding names the server's anonymous access by, in AWS's
/// `cognitoIdentityPoolId` slot.
pub const ANONYMOUS_ACCESS_ID: &str = "fleetcore:anonymous-clients";

/// The check.
pub struct AnonymousAccessOverlyPermissive;

impl AuditCheck for AnonymousAccessOverlyPermissive {
    fn name(&self) -> &'static str {
        "UNAUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let Some(access) = sources.anonymous_access() else {
            return Ok(CheckOutcome {
                total: 0,
                findings: Vec::new(),
            });
        };
        let finding = |reason: String, info: serde_json::Value| NonCompliance {
            resource: json!({
                "resourceType": "COGNITO_IDENTITY_POOL",
                "resourceIdentifier": {"cognitoIdentityPoolId": ANONYMOUS_ACCESS_ID},
                "additionalInfo": info,
            }),
            severity: "CRITICAL",
            reason,
            code: "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS",
            related: Vec::new(),
        };
        let findings = match &access.policy {
            None => vec![finding(
                "Clients without a certificate are admitted (--allow-anonymous) with no \
                 --anonymous-policy: they may connect, publish and subscribe to everything."
                    .to_string(),
                json!({"ANONYMOUS_POLICY": ""}),
            )],
            Some(name) => match sources.policy(name)? {
                // A policy that does not exist grants nothing: anonymous clients are refused.
                None => Vec::new(),
                Some((version, document)) => {
                    let document = serde_json::from_str(&document).unwrap_or_default();
                    let grants = broad_grants(&document);
                    if grants.is_empty() {
                        Vec::new()
                    } else {
                        let listed: Vec<String> =
                            grants.iter().map(|(a, r)| format!("{a} on {r}")).collect();
                        vec![finding(
                            format!(
                                "The anonymous policy {name} (version {version}) allows {}.",
                                listed.join(", ")
                            ),
                            json!({"ANONYMOUS_POLICY": name, "POLICY_VERSION_ID": version}),
                        )]
                    }
                }
            },
        };
        Ok(CheckOutcome { total: 1, findings })
    }
}
