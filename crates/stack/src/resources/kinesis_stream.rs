//! `aws_kinesis_stream`: CreateStream; shard count (UpdateShardCount), retention
//! (Increase/DecreaseStreamRetentionPeriod) and tags change in place.

use serde_json::{Value, json};

use super::{ResourceType, found, gone, pick, s, unexpected};
use crate::api::{Api, ApiError};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct KinesisStream;

/// The type.
pub static TYPE: KinesisStream = KinesisStream;

static MODE: Schema = Schema::args(&[Arg::required("stream_mode")]);
static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("shard_count"),
        Arg::optional("retention_period"),
        Arg::optional("encryption_type"),
        Arg::optional("enforce_consumer_deletion"),
        Arg::optional("tags"),
    ],
    blocks: &[BlockSpec::new("stream_mode_details", &MODE).force_new()],
    computed: &["arn", "id"],
};

const TARGET: &str = "Kinesis_20131202";

async fn call(api: &Api, op: &str, body: Value) -> Result<Value, ApiError> {
    api.json_rpc("kinesis", TARGET, "1.1", op, &body).await
}

fn on_demand(args: &Value) -> bool {
    super::block(args, "stream_mode_details")
        .map(|m| s(m, "stream_mode") == "ON_DEMAND")
        .unwrap_or(false)
}

fn retention(args: &Value) -> u64 {
    args.get("retention_period")
        .and_then(Value::as_u64)
        .unwrap_or(24)
}

#[async_trait::async_trait]
impl ResourceType for KinesisStream {
    fn name(&self) -> &'static str {
        "aws_kinesis_stream"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        match super::opt_s(args, "encryption_type") {
            None | Some("NONE") => {}
            Some(other) => {
                return Err(format!(
                    "encryption_type {other:?} is not supported (only NONE)"
                ));
            }
        }
        if !on_demand(args) && args.get("shard_count").is_none() {
            return Err(
                "`shard_count` is required unless stream_mode_details is ON_DEMAND".to_string(),
            );
        }
        Ok(())
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut body = json!({"StreamName": name});
        if on_demand(args) {
            body["StreamModeDetails"] = json!({"StreamMode": "ON_DEMAND"});
        } else {
            body["ShardCount"] = args.get("shard_count").cloned().unwrap_or(json!(1));
        }
        if let Some(tags) = args.get("tags") {
            body["Tags"] = tags.clone();
        }
        call(api, "CreateStream", body).await?;
        if retention(args) > 24 {
            call(
                api,
                "IncreaseStreamRetentionPeriod",
                json!({"StreamName": name, "RetentionPeriodHours": retention(args)}),
            )
            .await?;
        }
        let out = call(api, "DescribeStreamSummary", json!({"StreamName": name})).await?;
        let arn = out
            .pointer("/StreamDescriptionSummary/StreamARN")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("DescribeStreamSummary", "no StreamARN"))?;
        Ok(json!({"arn": arn, "id": arn}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = found(
            call(
                api,
                "DescribeStreamSummary",
                json!({"StreamName": s(args, "name")}),
            )
            .await,
        )?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    ("shard_count", "/StreamDescriptionSummary/OpenShardCount"),
                    (
                        "retention_period",
                        "/StreamDescriptionSummary/RetentionPeriodHours",
                    ),
                ],
            )
        }))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let name = s(args, "name");
        if before.get("shard_count") != args.get("shard_count") && !on_demand(args) {
            call(api, "UpdateShardCount", json!({"StreamName": name, "TargetShardCount": args.get("shard_count"), "ScalingType": "UNIFORM_SCALING"})).await?;
        }
        let (old, new) = (retention(before), retention(args));
        if new > old {
            call(
                api,
                "IncreaseStreamRetentionPeriod",
                json!({"StreamName": name, "RetentionPeriodHours": new}),
            )
            .await?;
        } else if new < old {
            call(
                api,
                "DecreaseStreamRetentionPeriod",
                json!({"StreamName": name, "RetentionPeriodHours": new}),
            )
            .await?;
        }
        if before.get("tags") != args.get("tags") {
            let removed: Vec<&String> = before
                .get("tags")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|k| args.get("tags").and_then(|t| t.get(k.as_str())).is_none())
                .collect();
            if !removed.is_empty() {
                call(
                    api,
                    "RemoveTagsFromStream",
                    json!({"StreamName": name, "TagKeys": removed}),
                )
                .await?;
            }
            if let Some(tags) = args
                .get("tags")
                .filter(|t| t.as_object().is_some_and(|m| !m.is_empty()))
            {
                call(
                    api,
                    "AddTagsToStream",
                    json!({"StreamName": name, "Tags": tags}),
                )
                .await?;
            }
        }
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        let consumers = args.get("enforce_consumer_deletion") == Some(&Value::Bool(true));
        gone(
            call(
                api,
                "DeleteStream",
                json!({"StreamName": s(args, "name"), "EnforceConsumerDeletion": consumers}),
            )
            .await,
        )
    }
}
