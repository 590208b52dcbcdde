//! `UPDATE_DEVICE_CERTIFICATE` (`DEACTIVATE`): the thing's certificates (Detect), or the
//! finding's device certificate (Audit), become INACTIVE; their live connections are cut as for
//! any certificate update.

use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;

/// `updateDeviceCertificateParams`.
pub struct UpdateDeviceCertificate;

impl ActionKind for UpdateDeviceCertificate {
    fn params_key(&self) -> &'static str {
        "updateDeviceCertificateParams"
    }

    fn action_type(&self) -> &'static str {
        "UPDATE_DEVICE_CERTIFICATE"
    }

    fn check(&self, params: &Value, _reach: &Reach) -> Result<(), DefenderError> {
        match params["action"].as_str() {
            Some("DEACTIVATE") => Ok(()),
            other => Err(DefenderError::Invalid(format!(
                "updateDeviceCertificateParams.action must be DEACTIVATE, not {other:?}"
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
            match &subject {
                Subject::Thing { name, .. } => {
                    reach.mitigator.deactivate_certificates(name)?;
                    Ok(Applied::Done)
                }
                Subject::Finding(_) => match subject.resource_id("deviceCertificateId") {
                    Some(id) => {
                        reach.mitigator.deactivate_certificate(id)?;
                        Ok(Applied::Done)
                    }
                    None => Ok(Applied::Skipped(
                        "the finding is not about a device certificate".into(),
                    )),
                },
            }
        })
    }
}
