//! Metric alarms: PutMetricAlarm, DescribeAlarms, DeleteAlarms, SetAlarmState,
//! DescribeAlarmHistory, and the evaluation the sampler runs after each sample.
//!
//! An alarm looks at its last `EvaluationPeriods` complete periods; `DatapointsToAlarm` of them
//! breaching make it ALARM, else OK; periods without data count as `TreatMissingData` says
//! (`missing`: left out, all missing is INSUFFICIENT_DATA; `ignore`: all missing keeps the
//! state; `breaching`; `notBreaching`). On a state change its actions run: SNS topic ARNs through
//! the [`TopicPublisher`] seam, and MQTT topics named `arn:aws:iot:{region}:{account}:topic/{topic}`
//! (the form of an AWS IoT topic ARN) published by the broker. The message is the JSON SNS
//! carries for CloudWatch alarms.

use std::sync::Arc;

use fleetcore_api::RequestContext;
use fleetcore_api::rpcv2::Timestamp;
use fleetcore_core::notify::{Notification, TopicPublisher};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::metrics::{Metric, check_unit, period_stats};
use super::{Dimension, now_secs};
use crate::error::{ObserveError, invalid};
use crate::series::STATISTICS;
use crate::store::MetricStore;

/// Name to the alarm (JSON).
const ALARMS: TableDefinition<&str, &[u8]> = TableDefinition::new("alarms");
/// `(alarm name, sequence)` to a history item (JSON).
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("alarm_history");

/// History items kept per alarm (older ones are deleted).
const HISTORY_PER_ALARM: u64 = 500;

/// Publishes an MQTT message from the server (implemented by the binary over the broker).
pub trait MqttPublisher: Send + Sync + 'static {
    /// Publishes `payload` on `topic` at QoS 1.
    fn publish(&self, topic: &str, payload: Vec<u8>);
}

/// A stored metric alarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alarm {
    alarm_name: String,
    alarm_arn: String,
    alarm_description: Option<String>,
    actions_enabled: bool,
    #[serde(rename = "OKActions")]
    ok_actions: Vec<String>,
    alarm_actions: Vec<String>,
    insufficient_data_actions: Vec<String>,
    state_value: String,
    state_reason: String,
    state_updated_timestamp: f64,
    alarm_configuration_updated_timestamp: f64,
    metric_name: String,
    namespace: String,
    statistic: String,
    dimensions: Vec<Dimension>,
    period: i64,
    unit: Option<String>,
    evaluation_periods: i64,
    datapoints_to_alarm: i64,
    threshold: f64,
    comparison_operator: String,
    treat_missing_data: String,
    #[serde(default)]
    history_seq: u64,
}

/// PutMetricAlarm's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutInput {
    alarm_name: Option<String>,
    alarm_description: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(rename = "OKActions", default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
    metric_name: Option<String>,
    namespace: Option<String>,
    statistic: Option<String>,
    extended_statistic: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    period: Option<i64>,
    unit: Option<String>,
    evaluation_periods: Option<i64>,
    datapoints_to_alarm: Option<i64>,
    threshold: Option<f64>,
    comparison_operator: Option<String>,
    treat_missing_data: Option<String>,
    #[serde(default)]
    metrics: Vec<Json>,
    threshold_metric_id: Option<String>,
}

/// DescribeAlarms' input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInput {
    #[serde(default)]
    alarm_names: Vec<String>,
    alarm_name_prefix: Option<String>,
    state_value: Option<String>,
    action_prefix: Option<String>,
}

/// DeleteAlarms' input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteInput {
    #[serde(default)]
    alarm_names: Vec<String>,
}

/// SetAlarmState's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetStateInput {
    alarm_name: Option<String>,
    state_value: Option<String>,
    state_reason: Option<String>,
}

/// DescribeAlarmHistory's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryInput {
    alarm_name: Option<String>,
    history_item_type: Option<String>,
    start_date: Option<Timestamp>,
    end_date: Option<Timestamp>,
    max_records: Option<usize>,
    scan_by: Option<String>,
}

const OPERATORS: &[&str] = &[
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];
const MISSING: &[&str] = &["missing", "ignore", "breaching", "notBreaching"];
const STATES: &[&str] = &["OK", "ALARM", "INSUFFICIENT_DATA"];

/// The alarms and where their actions go.
pub struct Alarms {
    db: Arc<Database>,
    store: Arc<MetricStore>,
    topics: Option<Arc<dyn TopicPublisher>>,
    mqtt: Option<Arc<dyn MqttPublisher>>,
    region: String,
    account_id: String,
    /// Serializes read-modify-write of alarms (API calls and the evaluator).
    lock: Mutex<()>,
}

impl Alarms {
    /// The alarms stored in `db`, evaluated over `store`.
    pub fn open(
        db: Arc<Database>,
        store: Arc<MetricStore>,
        topics: Option<Arc<dyn TopicPublisher>>,
        mqtt: Option<Arc<dyn MqttPublisher>>,
        region: &str,
        account_id: &str,
    ) -> Result<Alarms, ObserveError> {
        let txn = db.begin_write()?;
        txn.open_table(ALARMS)?;
        txn.open_table(HISTORY)?;
        txn.commit()?;
        Ok(Alarms {
            db,
            store,
            topics,
            mqtt,
            region: region.to_string(),
            account_id: account_id.to_string(),
            lock: Mutex::new(()),
        })
    }

    fn check_action(&self, arn: &str) -> Result<(), ObserveError> {
        if arn.starts_with("arn:aws:sns:") {
            if self.topics.is_none() {
                return Err(invalid(format!(
                    "The action {arn} needs the notification (SNS) capability, which this server does not run."
                )));
            }
            return Ok(());
        }
        if mqtt_topic(arn).is_some() {
            if self.mqtt.is_none() {
                return Err(invalid(format!(
                    "The action {arn} needs the broker, which this server does not run."
                )));
            }
            return Ok(());
        }
        Err(invalid(format!(
            "The action {arn} is not supported: use an SNS topic ARN or an MQTT topic as arn:aws:iot:{}:{}:topic/<topic>.",
            self.region, self.account_id
        )))
    }

    /// PutMetricAlarm: creates or replaces the alarm (state INSUFFICIENT_DATA on creation).
    pub fn put(&self, ctx: &RequestContext, input: PutInput) -> Result<Json, ObserveError> {
        let missing = |what: &str| ObserveError::MissingParameter(format!("{what} is required."));
        let name = input.alarm_name.ok_or_else(|| missing("AlarmName"))?;
        if name.is_empty() || name.len() > 255 {
            return Err(invalid("The alarm name must be 1 to 255 characters."));
        }
        if !input.metrics.is_empty() || input.threshold_metric_id.is_some() {
            return Err(invalid(
                "Alarms on metric math (Metrics, ThresholdMetricId) are not supported by this server; alarm on one metric.",
            ));
        }
        if input.extended_statistic.is_some() {
            return Err(invalid(
                "ExtendedStatistic (percentiles) is not supported by this server: it stores statistic sets. Use Statistic.",
            ));
        }
        let statistic = input.statistic.ok_or_else(|| missing("Statistic"))?;
        if !STATISTICS.contains(&statistic.as_str()) {
            return Err(invalid(format!("Unknown statistic {statistic}.")));
        }
        let metric = Metric {
            namespace: input.namespace,
            metric_name: input.metric_name,
            dimensions: input.dimensions.clone(),
        };
        let key = metric.key()?;
        let period = input.period.ok_or_else(|| missing("Period"))?;
        if period < 10
            || (period >= 60 && period % 60 != 0)
            || (period < 60 && ![10, 30].contains(&period))
        {
            return Err(invalid(
                "The period must be 10, 30 or a multiple of 60 seconds.",
            ));
        }
        let evaluation_periods = input
            .evaluation_periods
            .ok_or_else(|| missing("EvaluationPeriods"))?;
        if evaluation_periods < 1 {
            return Err(invalid("EvaluationPeriods must be at least 1."));
        }
        let datapoints_to_alarm = input.datapoints_to_alarm.unwrap_or(evaluation_periods);
        if datapoints_to_alarm < 1 || datapoints_to_alarm > evaluation_periods {
            return Err(invalid(
                "DatapointsToAlarm must be between 1 and EvaluationPeriods.",
            ));
        }
        let threshold = input.threshold.ok_or_else(|| missing("Threshold"))?;
        let operator = input
            .comparison_operator
            .ok_or_else(|| missing("ComparisonOperator"))?;
        if !OPERATORS.contains(&operator.as_str()) {
            return Err(invalid(format!(
                "ComparisonOperator must be one of {}.",
                OPERATORS.join(", ")
            )));
        }
        let treat_missing_data = input.treat_missing_data.unwrap_or_else(|| "missing".into());
        if !MISSING.contains(&treat_missing_data.as_str()) {
            return Err(invalid(format!(
                "TreatMissingData must be one of {}.",
                MISSING.join(", ")
            )));
        }
        check_unit(input.unit.as_deref())?;
        for arn in input
            .ok_actions
            .iter()
            .chain(&input.alarm_actions)
            .chain(&input.insufficient_data_actions)
        {
            self.check_action(arn)?;
        }
        let now = now_secs();
        let _guard = self.lock.lock();
        let existing = self.get(&name)?;
        let alarm = Alarm {
            alarm_arn: format!(
                "arn:aws:cloudwatch:{}:{}:alarm:{name}",
                ctx.region, ctx.account_id
            ),
            alarm_name: name,
            alarm_description: input.alarm_description,
            actions_enabled: input.actions_enabled.unwrap_or(true),
            ok_actions: input.ok_actions,
            alarm_actions: input.alarm_actions,
            insufficient_data_actions: input.insufficient_data_actions,
            state_value: existing
                .as_ref()
                .map_or("INSUFFICIENT_DATA".into(), |a| a.state_value.clone()),
            state_reason: existing
                .as_ref()
                .map_or("Unchecked: Initial alarm creation".into(), |a| {
                    a.state_reason.clone()
                }),
            state_updated_timestamp: existing.as_ref().map_or(now, |a| a.state_updated_timestamp),
            alarm_configuration_updated_timestamp: now,
            metric_name: key.name,
            namespace: key.namespace,
            statistic,
            dimensions: input.dimensions,
            period,
            unit: input.unit,
            evaluation_periods,
            datapoints_to_alarm,
            threshold,
            comparison_operator: operator,
            treat_missing_data,
            history_seq: existing.as_ref().map_or(0, |a| a.history_seq),
        };
        let summary = if existing.is_some() {
            format!("Alarm \"{}\" updated", alarm.alarm_name)
        } else {
            format!("Alarm \"{}\" created", alarm.alarm_name)
        };
        self.save(alarm, Some(("ConfigurationUpdate", summary, json!({}))))?;
        Ok(json!({}))
    }

    fn get(&self, name: &str) -> Result<Option<Alarm>, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALARMS)?;
        Ok(match table.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    fn all(&self) -> Result<Vec<Alarm>, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALARMS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Stores `alarm`, with a history item `(type, summary, data)` if given.
    fn save(
        &self,
        mut alarm: Alarm,
        item: Option<(&str, String, Json)>,
    ) -> Result<(), ObserveError> {
        let txn = self.db.begin_write()?;
        {
            let mut history = txn.open_table(HISTORY)?;
            if let Some((kind, summary, data)) = item {
                alarm.history_seq += 1;
                let record = json!({
                    "AlarmName": alarm.alarm_name,
                    "AlarmType": "MetricAlarm",
                    "Timestamp": now_secs(),
                    "HistoryItemType": kind,
                    "HistorySummary": summary,
                    "HistoryData": data.to_string(),
                });
                history.insert(
                    (alarm.alarm_name.as_str(), alarm.history_seq),
                    serde_json::to_vec(&record)?.as_slice(),
                )?;
                if alarm.history_seq > HISTORY_PER_ALARM {
                    history.remove((
                        alarm.alarm_name.as_str(),
                        alarm.history_seq - HISTORY_PER_ALARM,
                    ))?;
                }
            }
            txn.open_table(ALARMS)?.insert(
                alarm.alarm_name.as_str(),
                serde_json::to_vec(&alarm)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// DescribeAlarms (metric alarms; composite alarms are not supported, so none).
    pub fn describe(&self, input: DescribeInput) -> Result<Json, ObserveError> {
        let alarms: Vec<Json> = self
            .all()?
            .into_iter()
            .filter(|a| input.alarm_names.is_empty() || input.alarm_names.contains(&a.alarm_name))
            .filter(|a| {
                input
                    .alarm_name_prefix
                    .as_deref()
                    .is_none_or(|p| a.alarm_name.starts_with(p))
            })
            .filter(|a| {
                input
                    .state_value
                    .as_deref()
                    .is_none_or(|s| a.state_value == s)
            })
            .filter(|a| {
                input.action_prefix.as_deref().is_none_or(|p| {
                    a.alarm_actions
                        .iter()
                        .chain(&a.ok_actions)
                        .chain(&a.insufficient_data_actions)
                        .any(|arn| arn.starts_with(p))
                })
            })
            .map(|a| describe_one(&a))
            .collect();
        Ok(json!({"MetricAlarms": alarms, "CompositeAlarms": []}))
    }

    /// DeleteAlarms: all or none.
    pub fn delete(&self, input: DeleteInput) -> Result<Json, ObserveError> {
        let _guard = self.lock.lock();
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ALARMS)?;
            let mut history = txn.open_table(HISTORY)?;
            for name in &input.alarm_names {
                if table.remove(name.as_str())?.is_none() {
                    return Err(ObserveError::NotFound(format!(
                        "Alarm {name} does not exist"
                    )));
                }
                let keys: Vec<u64> = history
                    .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))?
                    .map(|e| e.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for seq in keys {
                    history.remove((name.as_str(), seq))?;
                }
            }
        }
        txn.commit()?;
        Ok(json!({}))
    }

    /// SetAlarmState: sets the state until the next evaluation; actions run on a change.
    pub async fn set_state(&self, input: SetStateInput) -> Result<Json, ObserveError> {
        let name = input
            .alarm_name
            .ok_or_else(|| ObserveError::MissingParameter("AlarmName is required.".into()))?;
        let state = input
            .state_value
            .ok_or_else(|| ObserveError::MissingParameter("StateValue is required.".into()))?;
        if !STATES.contains(&state.as_str()) {
            return Err(invalid(format!(
                "StateValue must be one of {}.",
                STATES.join(", ")
            )));
        }
        let reason = input
            .state_reason
            .ok_or_else(|| ObserveError::MissingParameter("StateReason is required.".into()))?;
        let change = {
            let _guard = self.lock.lock();
            let alarm = self
                .get(&name)?
                .ok_or_else(|| ObserveError::NotFound(format!("Alarm {name} does not exist")))?;
            self.transition(alarm, &state, &reason)?
        };
        if let Some((alarm, old)) = change {
            self.notify(&alarm, &old).await;
        }
        Ok(json!({}))
    }

    /// Moves `alarm` to `state`; returns it and the old state if that is a change.
    fn transition(
        &self,
        mut alarm: Alarm,
        state: &str,
        reason: &str,
    ) -> Result<Option<(Alarm, String)>, ObserveError> {
        if alarm.state_value == state {
            return Ok(None);
        }
        let old = std::mem::replace(&mut alarm.state_value, state.to_string());
        alarm.state_reason = reason.to_string();
        alarm.state_updated_timestamp = now_secs();
        let summary = format!("Alarm updated from {old} to {state}");
        let data = json!({
            "version": "1.0",
            "oldState": {"stateValue": old},
            "newState": {"stateValue": state, "stateReason": reason},
        });
        self.save(alarm.clone(), Some(("StateUpdate", summary, data)))?;
        Ok(Some((alarm, old)))
    }

    /// DescribeAlarmHistory.
    pub fn history(&self, input: HistoryInput) -> Result<Json, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut items: Vec<Json> = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            if input
                .alarm_name
                .as_deref()
                .is_some_and(|n| n != key.value().0)
            {
                continue;
            }
            let item: Json = serde_json::from_slice(value.value())?;
            let at = item["Timestamp"].as_f64().unwrap_or(0.0);
            if input.start_date.is_some_and(|s| at < s.0)
                || input.end_date.is_some_and(|e| at > e.0)
                || input
                    .history_item_type
                    .as_deref()
                    .is_some_and(|t| item["HistoryItemType"] != t)
            {
                continue;
            }
            items.push(item);
        }
        items.sort_by(|a, b| {
            let (x, y) = (
                a["Timestamp"].as_f64().unwrap_or(0.0),
                b["Timestamp"].as_f64().unwrap_or(0.0),
            );
            y.total_cmp(&x)
        });
        if input.scan_by.as_deref() == Some("TimestampAscending") {
            items.reverse();
        }
        items.truncate(input.max_records.unwrap_or(100).clamp(1, 100));
        Ok(json!({ "AlarmHistoryItems": items }))
    }

    /// Evaluates every alarm against the store as of `now`; runs the actions of those whose
    /// state changed.
    pub async fn evaluate(&self, now: f64) -> Result<(), ObserveError> {
        let mut changes = Vec::new();
        {
            let _guard = self.lock.lock();
            for alarm in self.all()? {
                let (state, reason) = self.judge(&alarm, now)?;
                let Some(state) = state else { continue };
                if let Some(change) = self.transition(alarm, state, &reason)? {
                    changes.push(change);
                }
            }
        }
        for (alarm, old) in changes {
            self.notify(&alarm, &old).await;
        }
        Ok(())
    }

    /// The state `alarm` should be in at `now` and why (`None`: keep it).
    fn judge(
        &self,
        alarm: &Alarm,
        now: f64,
    ) -> Result<(Option<&'static str>, String), ObserveError> {
        let period = alarm.period;
        let end = (now as i64).div_euclid(period) * period;
        let start = end - period * alarm.evaluation_periods;
        let metric = Metric {
            namespace: Some(alarm.namespace.clone()),
            metric_name: Some(alarm.metric_name.clone()),
            dimensions: alarm.dimensions.clone(),
        };
        let stats = period_stats(&self.store, &metric.key()?, start, end, period)?;
        let values: Vec<Option<f64>> = (0..alarm.evaluation_periods)
            .map(|i| {
                stats
                    .get(&(start + i * period))
                    .and_then(|s| s.statistic(&alarm.statistic))
            })
            .collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let missing = values.len() - present.len();
        if present.is_empty() {
            return Ok(match alarm.treat_missing_data.as_str() {
                "breaching" => (
                    Some("ALARM"),
                    self.reason(alarm, &present, "missing data treated as breaching"),
                ),
                "notBreaching" => (
                    Some("OK"),
                    self.reason(alarm, &present, "missing data treated as not breaching"),
                ),
                "ignore" => (None, String::new()),
                _ => (
                    Some("INSUFFICIENT_DATA"),
                    format!(
                        "Insufficient Data: {} datapoints were unknown.",
                        values.len()
                    ),
                ),
            });
        }
        let mut breaching = present.iter().filter(|v| breaches(alarm, **v)).count();
        if alarm.treat_missing_data == "breaching" {
            breaching += missing;
        }
        let state = if breaching as i64 >= alarm.datapoints_to_alarm {
            "ALARM"
        } else {
            "OK"
        };
        let what = if state == "ALARM" {
            format!("{breaching} out of the last {} datapoints", values.len())
        } else {
            format!("not enough of the last {} datapoints", values.len())
        };
        Ok((Some(state), self.reason(alarm, &present, &what)))
    }

    fn reason(&self, alarm: &Alarm, present: &[f64], what: &str) -> String {
        format!(
            "Threshold Crossed: {what} [{}] {} the threshold ({}).",
            present
                .iter()
                .map(|v| format!("{v}"))
                .collect::<Vec<_>>()
                .join(", "),
            alarm.comparison_operator,
            alarm.threshold
        )
    }

    async fn notify(&self, alarm: &Alarm, old: &str) {
        if !alarm.actions_enabled {
            return;
        }
        let actions = match alarm.state_value.as_str() {
            "ALARM" => &alarm.alarm_actions,
            "OK" => &alarm.ok_actions,
            _ => &alarm.insufficient_data_actions,
        };
        if actions.is_empty() {
            return;
        }
        let message = json!({
            "AlarmName": alarm.alarm_name,
            "AlarmDescription": alarm.alarm_description,
            "AWSAccountId": self.account_id,
            "NewStateValue": alarm.state_value,
            "NewStateReason": alarm.state_reason,
            "StateChangeTime": alarm.state_updated_timestamp,
            "Region": self.region,
            "AlarmArn": alarm.alarm_arn,
            "OldStateValue": old,
            "Trigger": {
                "MetricName": alarm.metric_name,
                "Namespace": alarm.namespace,
                "Statistic": alarm.statistic,
                "Dimensions": alarm.dimensions.iter().map(|d| json!({"name": d.name, "value": d.value})).collect::<Vec<_>>(),
                "Period": alarm.period,
                "EvaluationPeriods": alarm.evaluation_periods,
                "DatapointsToAlarm": alarm.datapoints_to_alarm,
                "ComparisonOperator": alarm.comparison_operator,
                "Threshold": alarm.threshold,
                "TreatMissingData": alarm.treat_missing_data,
            },
        });
        for arn in actions {
            if let Some(topic) = mqtt_topic(arn) {
                match &self.mqtt {
                    Some(mqtt) => mqtt.publish(topic, message.to_string().into_bytes()),
                    None => {
                        tracing::warn!(alarm = %alarm.alarm_name, %arn, "no broker for the alarm action")
                    }
                }
            } else if let Some(topics) = &self.topics {
                let notification = Notification {
                    message: message.to_string(),
                    subject: Some(format!(
                        "ALARM: \"{}\" in {}",
                        alarm.alarm_name, self.region
                    )),
                    ..Notification::default()
                };
                if let Err(e) = topics.publish(arn, notification).await {
                    tracing::warn!(alarm = %alarm.alarm_name, %arn, error = %e, "alarm notification failed");
                }
            }
        }
    }
}

/// The MQTT topic of an action ARN `arn:aws:iot:{region}:{account}:topic/{topic}`.
fn mqtt_topic(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:aws:iot:")?;
    let mut parts = rest.splitn(3, ':');
    let (_region, _account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    resource.strip_prefix("topic/").filter(|t| !t.is_empty())
}

fn breaches(alarm: &Alarm, value: f64) -> bool {
    match alarm.comparison_operator.as_str() {
        "GreaterThanOrEqualToThreshold" => value >= alarm.threshold,
        "GreaterThanThreshold" => value > alarm.threshold,
        "LessThanThreshold" => value < alarm.threshold,
        _ => value <= alarm.threshold,
    }
}

fn describe_one(a: &Alarm) -> Json {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("HistorySeq");
        map.insert(
            "StateTransitionedTimestamp".into(),
            json!(a.state_updated_timestamp),
        );
        map.retain(|_, v| !v.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_actions_are_iot_topic_arns() {
        assert_eq!(
            mqtt_topic("arn:aws:iot:us-east-1:000000000000:topic/alarms/high"),
            Some("alarms/high")
        );
        assert_eq!(mqtt_topic("arn:aws:iot:us-east-1:0:thing/x"), None);
        assert_eq!(mqtt_topic("arn:aws:sns:us-east-1:0:t"), None);
    }
}
