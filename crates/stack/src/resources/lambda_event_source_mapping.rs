//! `aws_lambda_event_source_mapping`: a Kinesis stream feeding a function
//! (CreateEventSourceMapping / UpdateEventSourceMapping / DeleteEventSourceMapping).

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, block, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct EventSourceMapping;

/// The type.
pub static TYPE: EventSourceMapping = EventSourceMapping;

static ON_FAILURE: Schema = Schema::args(&[Arg::required("destination_arn")]);
static DESTINATION: Schema = Schema {
    args: &[],
    blocks: &[BlockSpec::new("on_failure", &ON_FAILURE)],
    computed: &[],
};
static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("event_source_arn").force_new(),
        Arg::required("function_name"),
        Arg::optional("starting_position").force_new(),
        Arg::optional("starting_position_timestamp").force_new(),
        Arg::optional("batch_size"),
        Arg::optional("enabled"),
        Arg::optional("bisect_batch_on_function_error"),
        Arg::optional("maximum_retry_attempts"),
        Arg::optional("maximum_batching_window_in_seconds"),
    ],
    blocks: &[BlockSpec::new("destination_config", &DESTINATION)],
    computed: &["id", "uuid", "function_arn"],
};

fn body(args: &Value, create: bool) -> Value {
    let mut b = json!({"FunctionName": s(args, "function_name")});
    if create {
        b["EventSourceArn"] = json!(s(args, "event_source_arn"));
        for (from, to) in [
            ("starting_position", "StartingPosition"),
            ("starting_position_timestamp", "StartingPositionTimestamp"),
        ] {
            if let Some(v) = args.get(from) {
                b[to] = v.clone();
            }
        }
    }
    for (from, to) in [
        ("batch_size", "BatchSize"),
        ("enabled", "Enabled"),
        (
            "bisect_batch_on_function_error",
            "BisectBatchOnFunctionError",
        ),
        ("maximum_retry_attempts", "MaximumRetryAttempts"),
        (
            "maximum_batching_window_in_seconds",
            "MaximumBatchingWindowInSeconds",
        ),
    ] {
        if let Some(v) = args.get(from) {
            b[to] = v.clone();
        }
    }
    let on_failure = block(args, "destination_config")
        .and_then(|d| block(d, "on_failure"))
        .and_then(|f| opt_s(f, "destination_arn"));
    if let Some(arn) = on_failure {
        b["DestinationConfig"] = json!({"OnFailure": {"Destination": arn}});
    }
    b
}

#[async_trait::async_trait]
impl ResourceType for EventSourceMapping {
    fn name(&self) -> &'static str {
        "aws_lambda_event_source_mapping"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let out = api
            .rest(
                "lambda",
                "CreateEventSourceMapping",
                Method::POST,
                "/2015-03-31/event-source-mappings",
                Some(&body(args, true)),
            )
            .await?;
        let uuid =
            opt_s(&out, "UUID").ok_or_else(|| unexpected("CreateEventSourceMapping", "no UUID"))?;
        Ok(
            json!({"id": uuid, "uuid": uuid, "function_arn": out.get("FunctionArn").cloned().unwrap_or_default()}),
        )
    }
    async fn read(&self, api: &Api, _: &Value, attrs: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(attrs).get(api).await?;
        Ok(answer.map(|a| pick(&a, &[("batch_size", "/BatchSize")])))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let path = format!(
            "/2015-03-31/event-source-mappings/{}",
            label(s(attrs, "uuid"))
        );
        api.rest(
            "lambda",
            "UpdateEventSourceMapping",
            Method::PUT,
            &path,
            Some(&body(args, false)),
        )
        .await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, _: &Value, attrs: &Value) -> Result<(), ApiError> {
        rest(attrs).remove(api).await
    }
}

fn rest(attrs: &Value) -> Rest<'static> {
    Rest {
        service: "lambda",
        path: format!(
            "/2015-03-31/event-source-mappings/{}",
            label(s(attrs, "uuid"))
        ),
        describe: "GetEventSourceMapping",
        delete: "DeleteEventSourceMapping",
    }
}
