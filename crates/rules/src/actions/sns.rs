//! `sns`: publishes the rule's output to an SNS topic through the `TopicPublisher` seam
//! (implemented by the notify capability, wired by the binary). `messageFormat` RAW (the
//! default) sends the output as the message; JSON sends it as SNS's `MessageStructure=json`
//! (an object with a `default` message and optional per-protocol ones). A message counts as
//! delivered once the topic accepted it; a missing topic or a refused message fails it (the
//! errorAction fires). `roleArn` is required, as on AWS, and not used.

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{Arn, Notification, TopicPublisher};

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of an sns action.
pub(super) struct SnsSpec {
    target_arn: String,
    json: bool,
}

impl ActionSpec for SnsSpec {
    const KIND: &'static str = "sns";

    fn parse(members: &Members<'_>) -> Result<SnsSpec, String> {
        let target_arn = members.required_str("targetArn")?;
        match Arn::parse(target_arn) {
            Ok(arn) if arn.service == "sns" => {}
            _ => {
                return Err(format!(
                    "sns.targetArn {target_arn:?} is not an SNS topic ARN"
                ));
            }
        }
        members.required_str("roleArn")?;
        let json = match members.str("messageFormat")? {
            None | Some("RAW") => false,
            Some("JSON") => true,
            Some(other) => {
                return Err(format!(
                    "sns.messageFormat must be RAW or JSON, not {other:?}"
                ));
            }
        };
        Ok(SnsSpec {
            target_arn: target_arn.to_string(),
            json,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let topics = destinations
            .notifications
            .clone()
            .ok_or_else(|| "this server runs no SNS topics".to_string())?;
        Ok(Arc::new(Sns { topics, spec: self }))
    }
}

/// The sns action.
struct Sns {
    topics: Arc<dyn TopicPublisher>,
    spec: SnsSpec,
}

#[async_trait]
impl Action for Sns {
    fn name(&self) -> &'static str {
        "SnsAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.spec.target_arn.clone()
    }

    fn templates(&self) -> &[Template] {
        &[]
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let Ok(message) = std::str::from_utf8(&item.body) else {
                outcomes.push(Err("the rule output is not UTF-8 text".to_string()));
                continue;
            };
            let notification = Notification {
                message: message.to_string(),
                message_structure: self.spec.json.then(|| "json".to_string()),
                ..Notification::default()
            };
            let outcome = self
                .topics
                .publish(&self.spec.target_arn, notification)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
            outcomes.push(outcome);
        }
        outcomes
    }
}
