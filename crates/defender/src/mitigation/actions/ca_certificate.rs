//! `UPDATE_CA_CERTIFICATE` (`DEACTIVATE`): the finding's CA certificate becomes INACTIVE, so
//! devices with certificates from it can no longer connect (Audit findings on CA certificates
//! only).

use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;

/// `updateCACertificateParams`.
pub struct UpdateCaCertificate;

impl ActionKind for UpdateCaCertificate {
    fn params_key(&self) -> &'static str {
        "updateCACertificateParams"
    }

    fn action_type(&self) -> &'static str {
        "UPDATE_CA_CERTIFICATE"
    }

    fn check(&self, params: &Value, _reach: &Reach) -> Result<(), DefenderError> {
        match params["action"].as_str() {
            Some("DEACTIVATE") => Ok(()),
            other => Err(DefenderError::Invalid(format!(
                "updateCACertificateParams.action must be DEACTIVATE, not {other:?}"
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
            match subject.resource_id("caCertificateId") {
                Some(id) => {
                    reach.mitigator.deactivate_ca(id)?;
                    Ok(Applied::Done)
                }
                None => Ok(Applied::Skipped(
                    "only an audit finding on a CA certificate can be mitigated this way".into(),
                )),
            }
        })
    }
}
