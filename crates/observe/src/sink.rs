//! The observability capability behind core's `CloudWatchSink` seam (the rules' cloudwatch
//! actions): the same validation and storage as PutMetricData, PutLogEvents and SetAlarmState.

use fleetcore_core::{CloudWatchError, CloudWatchFuture, CloudWatchSink, MetricValue};

use crate::Observe;
use crate::cloudwatch::alarms::SetStateInput;
use crate::cloudwatch::metrics::{self, PutMetricDataInput};
use crate::cloudwatch::now_secs;
use crate::error::ObserveError;
use crate::logs::{InputEvent, LogsError};

fn refused(e: ObserveError) -> CloudWatchError {
    match e {
        ObserveError::Store(_) | ObserveError::Stopped => CloudWatchError::Service(e.to_string()),
        other => CloudWatchError::Invalid(other.to_string()),
    }
}

impl CloudWatchSink for Observe {
    fn put_metric(&self, metric: MetricValue) -> CloudWatchFuture<'_> {
        Box::pin(async move {
            let input: PutMetricDataInput = serde_json::from_value(serde_json::json!({
                "Namespace": metric.namespace,
                "MetricData": [{
                    "MetricName": metric.name,
                    "Value": metric.value,
                    "Unit": metric.unit,
                    "Timestamp": metric.timestamp,
                }],
            }))
            .map_err(|e| CloudWatchError::Invalid(e.to_string()))?;
            let points = metrics::points(input, now_secs()).map_err(refused)?;
            self.store.write(points).await.map_err(refused)
        })
    }

    fn put_log_events<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        messages: Vec<(i64, String)>,
    ) -> CloudWatchFuture<'a> {
        Box::pin(async move {
            let events: Vec<InputEvent> = messages
                .into_iter()
                .map(|(timestamp, message)| InputEvent { timestamp, message })
                .collect();
            let logs = std::sync::Arc::clone(&self.logs);
            let (group, stream) = (group.to_string(), stream.to_string());
            tokio::task::spawn_blocking(move || logs.append(&group, &stream, &events))
                .await
                .map_err(|e| CloudWatchError::Service(e.to_string()))?
                .map_err(|e| match e {
                    LogsError::Store(_) => CloudWatchError::Service(e.to_string()),
                    other => CloudWatchError::Invalid(other.to_string()),
                })
        })
    }

    fn set_alarm_state<'a>(
        &'a self,
        alarm: &'a str,
        state: &'a str,
        reason: &'a str,
    ) -> CloudWatchFuture<'a> {
        Box::pin(async move {
            let input: SetStateInput = serde_json::from_value(serde_json::json!({
                "AlarmName": alarm, "StateValue": state, "StateReason": reason,
            }))
            .map_err(|e| CloudWatchError::Invalid(e.to_string()))?;
            self.alarms
                .set_state(input)
                .await
                .map(drop)
                .map_err(refused)
        })
    }
}
