//! `sns{targetArn, payload}`: publishes a notification to an SNS topic through the
//! `TopicPublisher` seam (the notify capability).

use std::sync::Arc;

use fleetcore_core::{Notification, TopicPublisher};
use serde_json::Value as Json;

use super::payload::Payload;
use super::{DetectorAction, Effect, Run, Targets, needs, required_str};
use crate::expr::Expr;

struct Sns {
    topics: Arc<dyn TopicPublisher>,
    target_arn: String,
    payload: Payload,
}

pub(super) fn build(members: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    let target_arn = required_str(members, "targetArn")?;
    if !target_arn.starts_with("arn:") || !target_arn.contains(":sns:") {
        return Err(format!("targetArn {target_arn:?} is not an SNS topic ARN"));
    }
    Ok(Box::new(Sns {
        topics: needs(&targets.topics, "SNS topics (the notify capability)")?,
        target_arn: target_arn.to_string(),
        payload: Payload::parse(members)?,
    }))
}

impl DetectorAction for Sns {
    fn expressions(&self) -> Vec<&Expr> {
        self.payload.expressions()
    }

    fn run(&self, run: &mut Run<'_>) {
        let notification = Notification {
            message: self.payload.render(run),
            ..Notification::default()
        };
        let topics = Arc::clone(&self.topics);
        let arn = self.target_arn.clone();
        run.effects.push(Effect {
            action: "sns",
            call: Box::pin(async move {
                topics
                    .publish(&arn, notification)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        });
    }
}
