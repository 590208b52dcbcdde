//! `cloudwatchLogs`: appends the rule's output to a log group through the `CloudWatchSink`
//! seam, into the stream `iot-rules` (created with the group if missing). A batch is one write;
//! with `batchMode` the output must be a JSON array whose items become one event each.

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::CloudWatchSink;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The stream rule actions write to.
const STREAM: &str = "iot-rules";

/// The members of a cloudwatchLogs action: `[logGroupName]` as a template, and batchMode.
pub(super) struct CloudWatchLogsSpec {
    templates: Vec<Template>,
    batch_mode: bool,
}

impl ActionSpec for CloudWatchLogsSpec {
    const KIND: &'static str = "cloudwatchLogs";

    fn parse(members: &Members<'_>) -> Result<CloudWatchLogsSpec, String> {
        Ok(CloudWatchLogsSpec {
            templates: vec![members.required_template("logGroupName")?],
            batch_mode: members.bool("batchMode", false)?,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let sink = destinations
            .cloudwatch
            .clone()
            .ok_or_else(|| "this server runs no CloudWatch Logs".to_string())?;
        Ok(Arc::new(CloudWatchLogs { sink, spec: self }))
    }
}

/// The cloudwatchLogs action.
struct CloudWatchLogs {
    sink: Arc<dyn CloudWatchSink>,
    spec: CloudWatchLogsSpec,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl CloudWatchLogs {
    fn events(&self, item: &Prepared) -> Result<Vec<(i64, String)>, String> {
        let now = now_ms();
        if !self.spec.batch_mode {
            return Ok(vec![(
                now,
                String::from_utf8_lossy(&item.body).into_owned(),
            )]);
        }
        let batch: Vec<serde_json::Value> = serde_json::from_slice(&item.body)
            .map_err(|_| "batchMode needs the rule's output to be a JSON array".to_string())?;
        Ok(batch
            .into_iter()
            .map(|v| {
                // An item with a "timestamp" (epoch ms) and "message" is taken as such.
                match (
                    v.get("timestamp").and_then(|t| t.as_i64()),
                    v.get("message"),
                ) {
                    (Some(t), Some(serde_json::Value::String(m))) => (t, m.clone()),
                    _ => (now, v.to_string()),
                }
            })
            .collect())
    }
}

#[async_trait]
impl Action for CloudWatchLogs {
    fn name(&self) -> &'static str {
        "CloudwatchLogsAction"
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match (self.events(item), item.params.first()) {
                (Ok(events), Some(group)) => self
                    .sink
                    .put_log_events(group, STREAM, events)
                    .await
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(e),
                (_, None) => Err("the log group name is missing".into()),
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
