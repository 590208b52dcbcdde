//! `PUBLISH_FINDING_TO_SNS`: the finding (Audit) or the violation (Detect) is published as
//! JSON to the SNS topic, through core's `TopicPublisher`.

use fleetcore_core::Notification;
use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;

/// `publishFindingToSnsParams`.
pub struct PublishFindingToSns;

impl ActionKind for PublishFindingToSns {
    fn params_key(&self) -> &'static str {
        "publishFindingToSnsParams"
    }

    fn action_type(&self) -> &'static str {
        "PUBLISH_FINDING_TO_SNS"
    }

    fn check(&self, params: &Value, _reach: &Reach) -> Result<(), DefenderError> {
        match params["topicArn"].as_str() {
            Some(arn) if arn.starts_with("arn:") && arn.contains(":sns:") => Ok(()),
            other => Err(DefenderError::Invalid(format!(
                "publishFindingToSnsParams.topicArn {other:?} is not an SNS topic ARN"
            ))),
        }
    }

    fn apply<'a>(
        &'a self,
        params: &'a Value,
        subject: Subject<'a>,
        reach: &'a Reach,
    ) -> Applying<'a> {
        Box::pin(async move {
            let topic = params["topicArn"].as_str().unwrap_or_default();
            let (message, subject_line) = match subject {
                Subject::Finding(f) => (f.to_string(), "Device Defender audit finding"),
                Subject::Thing { violation, .. } => {
                    (violation.to_string(), "Device Defender violation")
                }
            };
            let notification = Notification {
                message,
                subject: Some(subject_line.into()),
                ..Notification::default()
            };
            reach
                .sns
                .publish(topic, notification)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Applied::Done)
        })
    }
}
