//! `aws_cloudwatch_metric_alarm`: PutMetricAlarm (an upsert: create and update alike),
//! DeleteAlarms. Alarms on metric math (`metric_query` blocks) are not accepted yet.

use serde_json::{Map, Value, json};

use super::{ResourceType, gone, pick, s, unexpected};
use crate::api::{Api, ApiError};
use crate::schema::{Arg, Schema};

pub struct MetricAlarm;

/// The type.
pub static TYPE: MetricAlarm = MetricAlarm;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("alarm_name").force_new(),
        Arg::required("comparison_operator"),
        Arg::required("evaluation_periods"),
        Arg::optional("metric_name"),
        Arg::optional("namespace"),
        Arg::optional("period"),
        Arg::optional("statistic"),
        Arg::optional("extended_statistic"),
        Arg::optional("threshold"),
        Arg::optional("datapoints_to_alarm"),
        Arg::optional("treat_missing_data"),
        Arg::optional("alarm_description"),
        Arg::optional("actions_enabled"),
        Arg::optional("alarm_actions"),
        Arg::optional("ok_actions"),
        Arg::optional("insufficient_data_actions"),
        Arg::optional("dimensions"),
        Arg::optional("unit"),
        Arg::optional("evaluate_low_sample_count_percentiles"),
        Arg::optional("tags"),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

/// Provider argument -> PutMetricAlarm member, for the ones passed as they are.
const MEMBERS: &[(&str, &str)] = &[
    ("alarm_name", "AlarmName"),
    ("comparison_operator", "ComparisonOperator"),
    ("evaluation_periods", "EvaluationPeriods"),
    ("metric_name", "MetricName"),
    ("namespace", "Namespace"),
    ("period", "Period"),
    ("statistic", "Statistic"),
    ("extended_statistic", "ExtendedStatistic"),
    ("threshold", "Threshold"),
    ("datapoints_to_alarm", "DatapointsToAlarm"),
    ("treat_missing_data", "TreatMissingData"),
    ("alarm_description", "AlarmDescription"),
    ("actions_enabled", "ActionsEnabled"),
    ("alarm_actions", "AlarmActions"),
    ("ok_actions", "OKActions"),
    ("insufficient_data_actions", "InsufficientDataActions"),
    ("unit", "Unit"),
    (
        "evaluate_low_sample_count_percentiles",
        "EvaluateLowSampleCountPercentile",
    ),
];

async fn call(api: &Api, op: &str, body: Value) -> Result<Value, ApiError> {
    api.json_rpc(
        "monitoring",
        "GraniteServiceVersion20100801",
        "1.0",
        op,
        &body,
    )
    .await
}

fn put_body(args: &Value) -> Value {
    let mut body = Map::new();
    for (from, to) in MEMBERS {
        if let Some(v) = args.get(*from) {
            body.insert(to.to_string(), v.clone());
        }
    }
    if let Some(dims) = args.get("dimensions").and_then(Value::as_object) {
        let dims: Vec<Value> = dims
            .iter()
            .map(|(k, v)| json!({"Name": k, "Value": v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())}))
            .collect();
        body.insert("Dimensions".into(), Value::Array(dims));
    }
    if args.get("tags").is_some() {
        body.insert("Tags".into(), super::tag_list(args));
    }
    Value::Object(body)
}

async fn put(api: &Api, args: &Value) -> Result<Value, ApiError> {
    call(api, "PutMetricAlarm", put_body(args)).await?;
    let out = call(
        api,
        "DescribeAlarms",
        json!({"AlarmNames": [s(args, "alarm_name")]}),
    )
    .await?;
    let arn = out
        .pointer("/MetricAlarms/0/AlarmArn")
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected("DescribeAlarms", "the alarm just put is not listed"))?;
    Ok(json!({"arn": arn, "id": s(args, "alarm_name")}))
}

#[async_trait::async_trait]
impl ResourceType for MetricAlarm {
    fn name(&self) -> &'static str {
        "aws_cloudwatch_metric_alarm"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        put(api, args).await
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let out = call(
            api,
            "DescribeAlarms",
            json!({"AlarmNames": [s(args, "alarm_name")]}),
        )
        .await?;
        let alarm = out.pointer("/MetricAlarms/0");
        Ok(alarm.map(|a| {
            pick(
                a,
                &[
                    ("comparison_operator", "/ComparisonOperator"),
                    ("evaluation_periods", "/EvaluationPeriods"),
                    ("period", "/Period"),
                    ("threshold", "/Threshold"),
                    ("alarm_description", "/AlarmDescription"),
                ],
            )
        }))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        _: &Value,
    ) -> Result<Value, ApiError> {
        put(api, args).await
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        gone(
            call(
                api,
                "DeleteAlarms",
                json!({"AlarmNames": [s(args, "alarm_name")]}),
            )
            .await,
        )
    }
}
