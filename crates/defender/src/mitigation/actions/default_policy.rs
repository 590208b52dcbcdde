//! `REPLACE_DEFAULT_POLICY_VERSION` (`BLANK_POLICY`): the finding's policy gets a new default
//! version that denies every IoT action, so the devices it served lose their grants (the
//! policy engine re-checks live connections on a policy change). The old versions stay, so an
//! operator can set one back as default. Audit findings on policies only.

use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;

/// The document of the blank version: deny everything.
pub const BLANK_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:*","Resource":"*"}]}"#;

/// `replaceDefaultPolicyVersionParams`.
pub struct ReplaceDefaultPolicyVersion;

impl ActionKind for ReplaceDefaultPolicyVersion {
    fn params_key(&self) -> &'static str {
        "replaceDefaultPolicyVersionParams"
    }

    fn action_type(&self) -> &'static str {
        "REPLACE_DEFAULT_POLICY_VERSION"
    }

    fn check(&self, params: &Value, _reach: &Reach) -> Result<(), DefenderError> {
        match params["templateName"].as_str() {
            Some("BLANK_POLICY") => Ok(()),
            other => Err(DefenderError::Invalid(format!(
                "replaceDefaultPolicyVersionParams.templateName must be BLANK_POLICY, not {other:?}"
            ))),
        }
    }

    fn apply<'a>(
        &'a self,
        _params: &'a Value,
        subject: Subject<'a>,
        reach: &'a Reach,
    ) -> Applying<'a> {
        Box::pin(async move {
            let policy = match &subject {
                Subject::Finding(f) => f["nonCompliantResource"]["resourceIdentifier"]
                    ["policyVersionIdentifier"]["policyName"]
                    .as_str(),
                Subject::Thing { .. } => None,
            };
            let Some(policy) = policy else {
                return Ok(Applied::Skipped(
                    "only an audit finding on a policy can be mitigated this way".into(),
                ));
            };
            reach
                .policies
                .create_version(policy, BLANK_POLICY, true)
                .map_err(|e| e.to_string())?;
            Ok(Applied::Done)
        })
    }
}
