//! `aws_iot_topic_rule`: CreateTopicRule / ReplaceTopicRule / DeleteTopicRule. Actions are the
//! provider's nested blocks (`kinesis {}`, `firehose {}`, `lambda {}`, ...; `error_action {}`
//! holds one more); their arguments map to the API's members by snake_case -> camelCase
//! (`http_header` blocks become `headers`). An action the rules engine lacks is refused by the
//! server at create, with its name.

use http::Method;
use serde_json::{Map, Value, json};

use super::{ResourceType, Rest, camel, opt_s, pick, s};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct TopicRule;

/// The type.
pub static TYPE: TopicRule = TopicRule;

static KINESIS: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("stream_name"),
    Arg::optional("partition_key"),
]);
static FIREHOSE: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("delivery_stream_name"),
    Arg::optional("separator"),
    Arg::optional("batch_mode"),
]);
static LAMBDA: Schema = Schema::args(&[Arg::required("function_arn")]);
static REPUBLISH: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("topic"),
    Arg::optional("qos"),
]);
static SNS: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("target_arn"),
    Arg::optional("message_format"),
]);
static IOT_EVENTS: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("input_name"),
    Arg::optional("message_id"),
    Arg::optional("batch_mode"),
]);
static IOT_ANALYTICS: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("channel_name"),
    Arg::optional("batch_mode"),
]);
static CLOUDWATCH_METRIC: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("metric_name"),
    Arg::required("metric_namespace"),
    Arg::required("metric_unit"),
    Arg::required("metric_value"),
    Arg::optional("metric_timestamp"),
]);
static CLOUDWATCH_ALARM: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("alarm_name"),
    Arg::required("state_reason"),
    Arg::required("state_value"),
]);
static CLOUDWATCH_LOGS: Schema = Schema::args(&[
    Arg::required("role_arn"),
    Arg::required("log_group_name"),
    Arg::optional("batch_mode"),
]);
static HTTP_HEADER: Schema = Schema::args(&[Arg::required("key"), Arg::required("value")]);
static HTTP: Schema = Schema {
    args: &[Arg::required("url"), Arg::optional("confirmation_url")],
    blocks: &[BlockSpec::new("http_header", &HTTP_HEADER)],
    computed: &[],
};

macro_rules! actions {
    ($($name:literal => $schema:ident),* $(,)?) => {
        &[$(BlockSpec::new($name, &$schema)),*]
    };
}

const ACTIONS: &[BlockSpec] = actions! {
    "kinesis" => KINESIS,
    "firehose" => FIREHOSE,
    "lambda" => LAMBDA,
    "republish" => REPUBLISH,
    "sns" => SNS,
    "iot_events" => IOT_EVENTS,
    "iot_analytics" => IOT_ANALYTICS,
    "cloudwatch_metric" => CLOUDWATCH_METRIC,
    "cloudwatch_alarm" => CLOUDWATCH_ALARM,
    "cloudwatch_logs" => CLOUDWATCH_LOGS,
    "http" => HTTP,
};

static ERROR_ACTION: Schema = Schema {
    args: &[],
    blocks: ACTIONS,
    computed: &[],
};

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::required("enabled"),
        Arg::required("sql"),
        Arg::required("sql_version"),
        Arg::optional("description"),
        Arg::optional("tags"),
    ],
    blocks: &[
        BlockSpec::new("kinesis", &KINESIS),
        BlockSpec::new("firehose", &FIREHOSE),
        BlockSpec::new("lambda", &LAMBDA),
        BlockSpec::new("republish", &REPUBLISH),
        BlockSpec::new("sns", &SNS),
        BlockSpec::new("iot_events", &IOT_EVENTS),
        BlockSpec::new("iot_analytics", &IOT_ANALYTICS),
        BlockSpec::new("cloudwatch_metric", &CLOUDWATCH_METRIC),
        BlockSpec::new("cloudwatch_alarm", &CLOUDWATCH_ALARM),
        BlockSpec::new("cloudwatch_logs", &CLOUDWATCH_LOGS),
        BlockSpec::new("http", &HTTP),
        BlockSpec::new("error_action", &ERROR_ACTION),
    ],
    computed: &["arn", "id"],
};

/// One action block's arguments as the API's action member.
fn action(block: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in block.as_object().into_iter().flatten() {
        if k == "http_header" {
            let headers = v.as_array().cloned().unwrap_or_default();
            out.insert("headers".to_string(), Value::Array(headers));
        } else {
            out.insert(camel(k), v.clone());
        }
    }
    Value::Object(out)
}

/// The actions given as blocks of `args`, each `{camelName: {...}}`, in the schema's order.
fn actions(args: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for spec in ACTIONS {
        for block in super::blocks(args, spec.name) {
            out.push(json!({ camel(spec.name): action(block) }));
        }
    }
    out
}

fn payload(args: &Value) -> Value {
    let mut payload = json!({
        "sql": s(args, "sql"),
        "awsIotSqlVersion": s(args, "sql_version"),
        "ruleDisabled": args.get("enabled") != Some(&Value::Bool(true)),
        "actions": actions(args),
    });
    if let Some(d) = opt_s(args, "description") {
        payload["description"] = json!(d);
    }
    if let Some(first) =
        super::block(args, "error_action").and_then(|e| actions(e).into_iter().next())
    {
        payload["errorAction"] = first;
    }
    payload
}

#[async_trait::async_trait]
impl ResourceType for TopicRule {
    fn name(&self) -> &'static str {
        "aws_iot_topic_rule"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        if super::block(args, "error_action").is_some_and(|e| actions(e).len() != 1) {
            return Err("`error_action` takes exactly one action block".to_string());
        }
        if super::blocks(args, "error_action").len() > 1 {
            return Err("only one `error_action` block is allowed".to_string());
        }
        Ok(())
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let path = format!("/rules/{}", label(name));
        api.rest(
            "iot",
            "CreateTopicRule",
            Method::POST,
            &path,
            Some(&payload(args)),
        )
        .await?;
        let out = api
            .rest("iot", "GetTopicRule", Method::GET, &path, None)
            .await?;
        let arn = opt_s(&out, "ruleArn").unwrap_or_default();
        Ok(json!({"arn": arn, "id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let Some(answer) = rest(args).get(api).await? else {
            return Ok(None);
        };
        let mut live = pick(
            &answer,
            &[("sql", "/rule/sql"), ("description", "/rule/description")],
        );
        if let Some(disabled) = answer
            .pointer("/rule/ruleDisabled")
            .and_then(Value::as_bool)
        {
            live["enabled"] = Value::Bool(!disabled);
        }
        Ok(Some(live))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let path = format!("/rules/{}", label(s(args, "name")));
        api.rest(
            "iot",
            "ReplaceTopicRule",
            Method::PATCH,
            &path,
            Some(&payload(args)),
        )
        .await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!("/rules/{}", label(s(args, "name"))),
        describe: "GetTopicRule",
        delete: "DeleteTopicRule",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_the_api_payload() {
        let args = json!({
            "name": "r", "enabled": true, "sql": "SELECT * FROM 'a'", "sql_version": "2016-03-23",
            "kinesis": [{"role_arn": "arn:r", "stream_name": "raw", "partition_key": "${topic()}"}],
            "http": [{"url": "https://x", "http_header": [{"key": "k", "value": "v"}]}],
            "error_action": [{"republish": [{"role_arn": "arn:r", "topic": "errors", "qos": 1}]}],
        });
        let p = payload(&args);
        assert_eq!(p["ruleDisabled"], false);
        assert_eq!(
            p["actions"],
            json!([
                {"kinesis": {"roleArn": "arn:r", "streamName": "raw", "partitionKey": "${topic()}"}},
                {"http": {"url": "https://x", "headers": [{"key": "k", "value": "v"}]}},
            ])
        );
        assert_eq!(
            p["errorAction"],
            json!({"republish": {"roleArn": "arn:r", "topic": "errors", "qos": 1}})
        );
    }
}
