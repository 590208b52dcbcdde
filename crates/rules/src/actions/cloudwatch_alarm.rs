//! `cloudwatchAlarm`: sets an alarm's state through the `CloudWatchSink` seam, as
//! SetAlarmState does (its actions run on a change). `stateValue` and `stateReason` are
//! templates; an unknown alarm or state fails the message (errorAction).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::CloudWatchSink;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of a cloudwatchAlarm action: `[alarmName, stateValue, stateReason]` templates.
pub(super) struct CloudWatchAlarmSpec {
    templates: Vec<Template>,
}

impl ActionSpec for CloudWatchAlarmSpec {
    const KIND: &'static str = "cloudwatchAlarm";

    fn parse(members: &Members<'_>) -> Result<CloudWatchAlarmSpec, String> {
        Ok(CloudWatchAlarmSpec {
            templates: vec![
                members.required_template("alarmName")?,
                members.required_template("stateValue")?,
                members.required_template("stateReason")?,
            ],
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let sink = destinations
            .cloudwatch
            .clone()
            .ok_or_else(|| "this server runs no CloudWatch alarms".to_string())?;
        Ok(Arc::new(CloudWatchAlarm { sink, spec: self }))
    }
}

/// The cloudwatchAlarm action.
struct CloudWatchAlarm {
    sink: Arc<dyn CloudWatchSink>,
    spec: CloudWatchAlarmSpec,
}

#[async_trait]
impl Action for CloudWatchAlarm {
    fn name(&self) -> &'static str {
        "CloudwatchAlarmAction"
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match item.params.as_slice() {
                [alarm, state, reason] => self
                    .sink
                    .set_alarm_state(alarm, state, reason)
                    .await
                    .map_err(|e| e.to_string()),
                _ => Err("the action's parameters are incomplete".into()),
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
