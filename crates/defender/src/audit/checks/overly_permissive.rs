//! `IOT_POLICY_OVERLY_PERMISSIVE_CHECK`: a policy whose default version allows data-plane
//! actions (`iot:*`, `iot:Connect`, `iot:Publish`, `iot:Subscribe`, `iot:Receive`, the shadow
//! actions) on every resource (`*`, or a whole resource type such as `…:topic/*`) without a
//! condition.

use serde_json::{Value, json};

use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;

const DATA_PLANE: [&str; 9] = [
    "*",
    "iot:*",
    "iot:connect",
    "iot:publish",
    "iot:subscribe",
    "iot:receive",
    "iot:retainpublish",
    "iot:updatethingshadow",
    "iot:getthingshadow",
];

/// The check.
pub struct OverlyPermissivePolicies;

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// A resource pattern that covers every resource of a type (or of all types).
fn covers_everything(resource: &str) -> bool {
    resource == "*"
        || resource.ends_with(":*")
        || resource.ends_with("/*")
        || resource.ends_with("/#")
}

/// The broad (action, resource) pairs `document` allows, if any.
pub fn broad_grants(document: &Value) -> Vec<(String, String)> {
    let statements = match document.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for s in statements {
        if s.get("Effect").and_then(Value::as_str) != Some("Allow") || s.get("Condition").is_some()
        {
            continue;
        }
        let actions = strings(s.get("Action"));
        let resources = strings(s.get("Resource"));
        for a in actions
            .iter()
            .filter(|a| DATA_PLANE.contains(&a.to_ascii_lowercase().as_str()))
        {
            for r in resources.iter().filter(|r| covers_everything(r)) {
                out.push((a.clone(), r.clone()));
            }
        }
    }
    out
}

impl AuditCheck for OverlyPermissivePolicies {
    fn name(&self) -> &'static str {
        "IOT_POLICY_OVERLY_PERMISSIVE_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let policies = sources.policies().map_err(|e| e.to_string())?;
        let mut findings = Vec::new();
        for (name, version, document) in &policies {
            let Ok(doc) = serde_json::from_str::<Value>(document) else {
                continue;
            };
            let grants = broad_grants(&doc);
            if grants.is_empty() {
                continue;
            }
            let shown: Vec<String> = grants.iter().map(|(a, r)| format!("{a} on {r}")).collect();
            findings.push(NonCompliance {
                resource: json!({
                    "resourceType": "IOT_POLICY",
                    "resourceIdentifier": {"policyVersionIdentifier": {
                        "policyName": name, "policyVersionId": version}},
                }),
                severity: "CRITICAL",
                reason: format!(
                    "Policy allows broad access to IoT data plane actions: {}",
                    shown.join(", ")
                ),
                code: "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS",
                related: Vec::new(),
            });
        }
        Ok(CheckOutcome {
            total: policies.len() as u64,
            findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_broad_data_plane_grants_only() {
        let broad = json!({"Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]});
        assert_eq!(
            broad_grants(&broad),
            [("iot:*".to_string(), "*".to_string())]
        );
        let topics = json!({"Statement": {"Effect": "Allow", "Action": ["iot:Publish"],
            "Resource": ["arn:aws:iot:us-east-1:000000000000:topic/*"]}});
        assert_eq!(broad_grants(&topics).len(), 1);
        let narrow = json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "arn:aws:iot:us-east-1:000000000000:topic/dev/1"},
            {"Effect": "Allow", "Action": "iot:*", "Resource": "*", "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
            {"Effect": "Deny", "Action": "iot:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:DescribeThing", "Resource": "*"}]});
        assert!(broad_grants(&narrow).is_empty());
    }
}
