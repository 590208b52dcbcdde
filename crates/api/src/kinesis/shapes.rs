//! The JSON shapes of Kinesis responses built from the stream store's values.

use std::time::{SystemTime, UNIX_EPOCH};

use fleetcore_stream::{ShardInfo, StreamInfo, StreamMode, StreamStatus};
use serde_json::{Value, json};

use super::names::arn;
use crate::context::RequestContext;

/// Epoch seconds as a float: how JSON 1.1 carries timestamps.
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

fn status(status: StreamStatus) -> &'static str {
    match status {
        StreamStatus::Creating => "CREATING",
        StreamStatus::Active => "ACTIVE",
        StreamStatus::Updating => "UPDATING",
        StreamStatus::Deleting => "DELETING",
    }
}

fn mode(mode: StreamMode) -> Value {
    json!({"StreamMode": match mode {
        StreamMode::Provisioned => "PROVISIONED",
        StreamMode::OnDemand => "ON_DEMAND",
    }})
}

/// A `Shard`.
pub fn shard(shard: &ShardInfo) -> Value {
    let mut range = json!({"StartingSequenceNumber": shard.starting_sequence.to_string()});
    if let Some(end) = shard.ending_sequence {
        range["EndingSequenceNumber"] = json!(end.to_string());
    }
    let mut value = json!({
        "ShardId": shard.id.to_string(),
        "HashKeyRange": {
            "StartingHashKey": shard.hash_range.start.to_string(),
            "EndingHashKey": shard.hash_range.end.to_string(),
        },
        "SequenceNumberRange": range,
    });
    if let Some(parent) = shard.parent {
        value["ParentShardId"] = json!(parent.to_string());
    }
    if let Some(parent) = shard.adjacent_parent {
        value["AdjacentParentShardId"] = json!(parent.to_string());
    }
    value
}

/// A `StreamDescription` with the given page of shards.
pub fn description(
    ctx: &RequestContext,
    info: &StreamInfo,
    shards: &[&ShardInfo],
    more: bool,
) -> Value {
    json!({
        "StreamName": info.name,
        "StreamARN": arn(ctx, &info.name),
        "StreamStatus": status(info.status),
        "StreamModeDetails": mode(info.mode),
        "Shards": shards.iter().map(|s| shard(s)).collect::<Vec<_>>(),
        "HasMoreShards": more,
        "RetentionPeriodHours": info.retention_hours,
        "StreamCreationTimestamp": epoch_seconds(info.created_at),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    })
}

/// A `StreamDescriptionSummary`.
pub fn summary(ctx: &RequestContext, info: &StreamInfo) -> Value {
    json!({
        "StreamName": info.name,
        "StreamARN": arn(ctx, &info.name),
        "StreamStatus": status(info.status),
        "StreamModeDetails": mode(info.mode),
        "RetentionPeriodHours": info.retention_hours,
        "StreamCreationTimestamp": epoch_seconds(info.created_at),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
        "OpenShardCount": info.shards.iter().filter(|s| s.is_open()).count(),
        "ConsumerCount": 0,
    })
}

/// A `StreamSummary` (ListStreams).
pub fn stream_summary(ctx: &RequestContext, info: &StreamInfo) -> Value {
    json!({
        "StreamName": info.name,
        "StreamARN": arn(ctx, &info.name),
        "StreamStatus": status(info.status),
        "StreamModeDetails": mode(info.mode),
        "StreamCreationTimestamp": epoch_seconds(info.created_at),
    })
}
