//! Stream management: CreateStream, DeleteStream, DescribeStream, DescribeStreamSummary,
//! ListStreams, ListShards, Increase/DecreaseStreamRetentionPeriod, UpdateShardCount.

use std::time::SystemTime;

use fleetcore_stream::{ShardId, ShardInfo, StreamMode, StreamSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use super::KinesisState;
use super::errors::{bad_next_token, from_stream, invalid_argument};
use super::names::{arn, stream_name};
use super::shapes;
use super::token::{Token, TokenKind, millis};
use crate::context::RequestContext;
use crate::error::ApiError;

/// Retention of a new stream, in hours (Kinesis' default).
const DEFAULT_RETENTION_HOURS: u32 = 24;

/// `StreamName` / `StreamARN`, which most requests carry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct StreamRef {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
}

impl StreamRef {
    pub fn name(&self, ctx: &RequestContext) -> Result<String, ApiError> {
        stream_name(ctx, self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

/// An optional count in `min..=max`, or `default`.
pub(super) fn bounded(
    field: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
    default: i64,
) -> Result<usize, ApiError> {
    let value = value.unwrap_or(default);
    if value < min || value > max {
        return Err(invalid_argument(format!(
            "{field} {value} is outside {min}..={max}."
        )));
    }
    Ok(value as usize)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct StreamModeDetails {
    stream_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct CreateStreamInput {
    stream_name: Option<String>,
    shard_count: Option<i64>,
    stream_mode_details: Option<StreamModeDetails>,
}

pub(super) async fn create(
    state: &KinesisState,
    _ctx: &RequestContext,
    input: CreateStreamInput,
) -> Result<Value, ApiError> {
    let name = input
        .stream_name
        .ok_or_else(|| invalid_argument("StreamName is required."))?;
    if fleetcore_stream::is_internal_stream(&name) {
        return Err(invalid_argument(format!(
            "StreamName {name:?}: names starting with {:?} are reserved.",
            fleetcore_stream::INTERNAL_STREAM_PREFIX
        )));
    }
    let mode = match input
        .stream_mode_details
        .and_then(|d| d.stream_mode)
        .as_deref()
    {
        None | Some("PROVISIONED") => StreamMode::Provisioned,
        Some("ON_DEMAND") => StreamMode::OnDemand,
        Some(other) => {
            return Err(invalid_argument(format!(
                "StreamMode {other:?} is not PROVISIONED or ON_DEMAND."
            )));
        }
    };
    let shard_count = match (mode, input.shard_count) {
        (StreamMode::Provisioned, None) => {
            return Err(invalid_argument(
                "ShardCount is required for a PROVISIONED stream.",
            ));
        }
        (_, Some(n)) if n < 1 => {
            return Err(invalid_argument(format!(
                "ShardCount {n} must be at least 1."
            )));
        }
        (_, n) => u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX),
    };
    state
        .streams
        .create_stream(StreamSpec {
            name,
            mode,
            shard_count,
            retention_hours: DEFAULT_RETENTION_HOURS,
        })
        .await
        .map_err(from_stream)?;
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct DeleteStreamInput {
    #[serde(flatten)]
    stream: StreamRef,
}

pub(super) async fn delete(
    state: &KinesisState,
    ctx: &RequestContext,
    input: DeleteStreamInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    state
        .streams
        .delete_stream(&name)
        .await
        .map_err(from_stream)?;
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct DescribeStreamInput {
    #[serde(flatten)]
    stream: StreamRef,
    limit: Option<i64>,
    exclusive_start_shard_id: Option<String>,
}

/// Shards strictly after `after` (shard ids sort like their numbers).
fn after<'a>(shards: &'a [ShardInfo], after: Option<&str>) -> Vec<&'a ShardInfo> {
    shards
        .iter()
        .filter(|s| after.is_none_or(|a| s.id.to_string().as_str() > a))
        .collect()
}

pub(super) async fn describe(
    state: &KinesisState,
    ctx: &RequestContext,
    input: DescribeStreamInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    let limit = bounded("Limit", input.limit, 1, 10_000, 100)?;
    let info = state
        .streams
        .describe_stream(&name)
        .await
        .map_err(from_stream)?;
    let rest = after(&info.shards, input.exclusive_start_shard_id.as_deref());
    let page = &rest[..rest.len().min(limit)];
    Ok(json!({
        "StreamDescription": shapes::description(ctx, &info, page, rest.len() > page.len()),
    }))
}

pub(super) async fn describe_summary(
    state: &KinesisState,
    ctx: &RequestContext,
    input: StreamRef,
) -> Result<Value, ApiError> {
    let name = input.name(ctx)?;
    let info = state
        .streams
        .describe_stream(&name)
        .await
        .map_err(from_stream)?;
    Ok(json!({"StreamDescriptionSummary": shapes::summary(ctx, &info)}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct ListStreamsInput {
    limit: Option<i64>,
    exclusive_start_stream_name: Option<String>,
    next_token: Option<String>,
}

pub(super) async fn list(
    state: &KinesisState,
    ctx: &RequestContext,
    input: ListStreamsInput,
) -> Result<Value, ApiError> {
    let limit = bounded("Limit", input.limit, 1, 10_000, 100)?;
    let start = match input.next_token {
        Some(text) => {
            if input.exclusive_start_stream_name.is_some() {
                return Err(invalid_argument(
                    "NextToken and ExclusiveStartStreamName cannot be given together.",
                ));
            }
            let token = state
                .tokens
                .open(&text, TokenKind::StreamPage, SystemTime::now())
                .map_err(bad_next_token)?;
            Some(token.stream)
        }
        None => input.exclusive_start_stream_name,
    };
    let names = state.streams.list_streams().await.map_err(from_stream)?;
    let rest: Vec<&String> = names
        .iter()
        .filter(|n| !fleetcore_stream::is_internal_stream(n))
        .filter(|n| start.as_ref().is_none_or(|s| n.as_str() > s.as_str()))
        .collect();
    let page = &rest[..rest.len().min(limit)];
    let mut summaries = Vec::with_capacity(page.len());
    for name in page {
        // A stream deleted since the listing is left out.
        if let Ok(info) = state.streams.describe_stream(name).await {
            summaries.push(shapes::stream_summary(ctx, &info));
        }
    }
    let more = rest.len() > page.len();
    let mut out = json!({
        "StreamNames": page,
        "HasMoreStreams": more,
        "StreamSummaries": summaries,
    });
    if let (true, Some(last)) = (more, page.last()) {
        out["NextToken"] = json!(state.tokens.seal(&Token {
            kind: TokenKind::StreamPage,
            stream: (*last).clone(),
            shard: 0,
            position: 0,
            issued_ms: millis(SystemTime::now()),
        }));
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct ShardFilter {
    r#type: Option<String>,
    shard_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct ListShardsInput {
    #[serde(flatten)]
    stream: StreamRef,
    next_token: Option<String>,
    exclusive_start_shard_id: Option<String>,
    max_results: Option<i64>,
    shard_filter: Option<ShardFilter>,
}

pub(super) async fn list_shards(
    state: &KinesisState,
    ctx: &RequestContext,
    input: ListShardsInput,
) -> Result<Value, ApiError> {
    let limit = bounded("MaxResults", input.max_results, 1, 10_000, 1000)?;
    let (name, start, filter) = match input.next_token {
        Some(text) => {
            if input.stream.stream_name.is_some()
                || input.stream.stream_arn.is_some()
                || input.exclusive_start_shard_id.is_some()
                || input.shard_filter.is_some()
            {
                return Err(invalid_argument(
                    "NextToken cannot be given with StreamName, StreamARN, ExclusiveStartShardId or ShardFilter.",
                ));
            }
            let token = state
                .tokens
                .open(&text, TokenKind::ShardPage, SystemTime::now())
                .map_err(bad_next_token)?;
            let open_only = token.position == 1;
            (
                token.stream,
                Some(ShardId(token.shard).to_string()),
                open_only,
            )
        }
        None => {
            let name = input.stream.name(ctx)?;
            let (mut start, mut open_only) = (input.exclusive_start_shard_id, false);
            if let Some(filter) = input.shard_filter {
                match filter.r#type.as_deref() {
                    Some("AT_LATEST") => open_only = true,
                    Some("AFTER_SHARD_ID") => {
                        start = Some(filter.shard_id.ok_or_else(|| {
                            invalid_argument("ShardFilter AFTER_SHARD_ID needs a ShardId.")
                        })?);
                    }
                    Some(
                        "AT_TRIM_HORIZON" | "FROM_TRIM_HORIZON" | "AT_TIMESTAMP" | "FROM_TIMESTAMP",
                    ) => {}
                    other => {
                        return Err(invalid_argument(format!(
                            "ShardFilter type {other:?} is not valid."
                        )));
                    }
                }
            }
            (name, start, open_only)
        }
    };
    let info = state
        .streams
        .describe_stream(&name)
        .await
        .map_err(from_stream)?;
    let rest: Vec<&ShardInfo> = after(&info.shards, start.as_deref())
        .into_iter()
        .filter(|s| !filter || s.is_open())
        .collect();
    let page = &rest[..rest.len().min(limit)];
    let mut out = json!({"Shards": page.iter().map(|s| shapes::shard(s)).collect::<Vec<_>>()});
    if let (true, Some(last)) = (rest.len() > page.len(), page.last()) {
        out["NextToken"] = json!(state.tokens.seal(&Token {
            kind: TokenKind::ShardPage,
            stream: name,
            shard: last.id.0,
            position: u128::from(filter),
            issued_ms: millis(SystemTime::now()),
        }));
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct RetentionInput {
    #[serde(flatten)]
    stream: StreamRef,
    retention_period_hours: Option<i64>,
}

pub(super) async fn change_retention(
    state: &KinesisState,
    ctx: &RequestContext,
    input: RetentionInput,
    increase: bool,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    let hours = input
        .retention_period_hours
        .ok_or_else(|| invalid_argument("RetentionPeriodHours is required."))?;
    if !(24..=8760).contains(&hours) {
        return Err(invalid_argument(format!(
            "Minimum allowed retention period is 24 hours and maximum is 8760 hours; {hours} was requested."
        )));
    }
    let info = state
        .streams
        .describe_stream(&name)
        .await
        .map_err(from_stream)?;
    let current = i64::from(info.retention_hours);
    if increase && hours < current {
        return Err(invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {name} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API."
        )));
    }
    if !increase && hours > current {
        return Err(invalid_argument(format!(
            "Requested retention period ({hours} hours) for stream {name} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API."
        )));
    }
    state
        .streams
        .set_retention(&name, hours as u32)
        .await
        .map_err(from_stream)?;
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct UpdateShardCountInput {
    #[serde(flatten)]
    stream: StreamRef,
    target_shard_count: Option<i64>,
    scaling_type: Option<String>,
}

pub(super) async fn update_shard_count(
    state: &KinesisState,
    ctx: &RequestContext,
    input: UpdateShardCountInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    if input.scaling_type.as_deref() != Some("UNIFORM_SCALING") {
        return Err(invalid_argument(format!(
            "ScalingType {:?} is not UNIFORM_SCALING.",
            input.scaling_type.unwrap_or_default()
        )));
    }
    let target = bounded("TargetShardCount", input.target_shard_count, 1, 100_000, 0)?;
    let before = state
        .streams
        .describe_stream(&name)
        .await
        .map_err(from_stream)?;
    if before.mode == StreamMode::OnDemand {
        return Err(invalid_argument(format!(
            "Stream {name} is ON_DEMAND: its capacity is managed by the server."
        )));
    }
    let current = before.shards.iter().filter(|s| s.is_open()).count();
    state
        .streams
        .update_shard_count(&name, target as u32)
        .await
        .map_err(from_stream)?;
    Ok(json!({
        "StreamName": name,
        "StreamARN": arn(ctx, &name),
        "CurrentShardCount": current,
        "TargetShardCount": target,
    }))
}
