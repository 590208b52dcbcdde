//! Records: PutRecord, PutRecords, GetShardIterator, GetRecords.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use fleetcore_stream::{
    MAX_PARTITION_KEY_CHARS, MAX_PUT_BYTES, MAX_PUT_RECORDS, MAX_READ_RECORDS, MAX_RECORD_BYTES,
    NewRecord, Position, PutOutcome, RecordFailure, SequenceNumber, ShardId, StartingPosition,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::KinesisState;
use super::errors::{bad_iterator, from_stream, invalid_argument, not_found};
use super::shapes::epoch_seconds;
use super::streams::{StreamRef, bounded};
use super::token::{Token, TokenKind, millis};
use crate::context::RequestContext;
use crate::error::ApiError;
use axum::http::StatusCode;

/// A record as sent: base64 data, partition key, optional explicit hash key.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct RecordInput {
    data: Option<String>,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
}

impl RecordInput {
    /// The record to append, checked against Kinesis' limits.
    fn into_record(self) -> Result<NewRecord, ApiError> {
        let data = self
            .data
            .ok_or_else(|| invalid_argument("Data is required."))?;
        let data = STANDARD
            .decode(data.as_bytes())
            .map_err(|e| invalid_argument(format!("Data is not valid base64: {e}")))?;
        if data.len() > MAX_RECORD_BYTES {
            return Err(invalid_argument(format!(
                "Record data of {} bytes is larger than the limit of {MAX_RECORD_BYTES} bytes.",
                data.len()
            )));
        }
        let partition_key = self
            .partition_key
            .ok_or_else(|| invalid_argument("PartitionKey is required."))?;
        let chars = partition_key.chars().count();
        if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
            return Err(invalid_argument(format!(
                "PartitionKey must be 1 to {MAX_PARTITION_KEY_CHARS} characters long, not {chars}."
            )));
        }
        let explicit_hash_key = self
            .explicit_hash_key
            .map(|text| {
                let valid = !text.is_empty()
                    && text.len() <= 39
                    && text.bytes().all(|b| b.is_ascii_digit());
                valid
                    .then(|| text.parse::<u128>().ok())
                    .flatten()
                    .ok_or_else(|| {
                        invalid_argument(format!(
                            "ExplicitHashKey {text:?} is not a decimal number in 0..2^128."
                        ))
                    })
            })
            .transpose()?;
        Ok(NewRecord {
            partition_key,
            explicit_hash_key,
            data: Bytes::from(data),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct PutRecordInput {
    #[serde(flatten)]
    stream: StreamRef,
    #[serde(flatten)]
    record: RecordInput,
}

fn error_code(failure: &RecordFailure) -> (&'static str, &str) {
    match failure {
        RecordFailure::ThroughputExceeded(m) => ("ProvisionedThroughputExceededException", m),
        RecordFailure::Internal(m) => ("InternalFailure", m),
    }
}

pub(super) async fn put_record(
    state: &KinesisState,
    ctx: &RequestContext,
    input: PutRecordInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    let record = input.record.into_record()?;
    let mut outcomes = state
        .streams
        .put_records(&name, vec![record])
        .await
        .map_err(from_stream)?;
    match outcomes.pop() {
        Some(Ok(appended)) => Ok(json!({
            "ShardId": appended.shard.to_string(),
            "SequenceNumber": appended.sequence.to_string(),
            "EncryptionType": "NONE",
        })),
        Some(Err(RecordFailure::ThroughputExceeded(message))) => Err(ApiError::new(
            "ProvisionedThroughputExceededException",
            StatusCode::BAD_REQUEST,
            message,
        )
        .json11()),
        Some(Err(RecordFailure::Internal(message))) => Err(ApiError::new(
            "InternalFailureException",
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
        .json11()),
        None => Err(ApiError::internal("the store returned no outcome").json11()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct PutRecordsInput {
    #[serde(flatten)]
    stream: StreamRef,
    records: Option<Vec<RecordInput>>,
}

pub(super) async fn put_records(
    state: &KinesisState,
    ctx: &RequestContext,
    input: PutRecordsInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    let entries = input.records.unwrap_or_default();
    if entries.is_empty() || entries.len() > MAX_PUT_RECORDS {
        return Err(invalid_argument(format!(
            "Records must hold 1 to {MAX_PUT_RECORDS} records, not {}.",
            entries.len()
        )));
    }
    let records = entries
        .into_iter()
        .map(RecordInput::into_record)
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum();
    if total > MAX_PUT_BYTES {
        return Err(invalid_argument(format!(
            "The records total {total} bytes, more than the limit of {MAX_PUT_BYTES} bytes per PutRecords."
        )));
    }
    let outcomes: Vec<PutOutcome> = state
        .streams
        .put_records(&name, records)
        .await
        .map_err(from_stream)?;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    let results: Vec<Value> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(appended) => json!({
                "ShardId": appended.shard.to_string(),
                "SequenceNumber": appended.sequence.to_string(),
            }),
            Err(failure) => {
                let (code, message) = error_code(failure);
                json!({"ErrorCode": code, "ErrorMessage": message})
            }
        })
        .collect();
    Ok(json!({
        "FailedRecordCount": failed,
        "Records": results,
        "EncryptionType": "NONE",
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct GetShardIteratorInput {
    #[serde(flatten)]
    stream: StreamRef,
    shard_id: Option<String>,
    shard_iterator_type: Option<String>,
    starting_sequence_number: Option<String>,
    timestamp: Option<f64>,
}

pub(super) async fn get_shard_iterator(
    state: &KinesisState,
    ctx: &RequestContext,
    input: GetShardIteratorInput,
) -> Result<Value, ApiError> {
    let name = input.stream.name(ctx)?;
    let shard_text = input
        .shard_id
        .ok_or_else(|| invalid_argument("ShardId is required."))?;
    let shard: ShardId = shard_text.parse().map_err(|_| {
        not_found(format!(
            "Shard {shard_text} in stream {name} under account {} does not exist.",
            ctx.account_id
        ))
    })?;
    let sequence = || -> Result<SequenceNumber, ApiError> {
        input
            .starting_sequence_number
            .as_deref()
            .ok_or_else(|| {
                invalid_argument("StartingSequenceNumber is required for this ShardIteratorType.")
            })?
            .parse()
            .map_err(from_stream)
    };
    let start = match input.shard_iterator_type.as_deref() {
        Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
        Some("LATEST") => StartingPosition::Latest,
        Some("AT_SEQUENCE_NUMBER") => StartingPosition::AtSequence(sequence()?),
        Some("AFTER_SEQUENCE_NUMBER") => StartingPosition::AfterSequence(sequence()?),
        Some("AT_TIMESTAMP") => {
            let seconds = input
                .timestamp
                .ok_or_else(|| invalid_argument("Timestamp is required for AT_TIMESTAMP."))?;
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(invalid_argument(format!(
                    "Timestamp {seconds} is not valid."
                )));
            }
            StartingPosition::AtTimestamp(UNIX_EPOCH + Duration::from_secs_f64(seconds))
        }
        other => {
            return Err(invalid_argument(format!(
                "ShardIteratorType {:?} is not one of TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP.",
                other.unwrap_or_default()
            )));
        }
    };
    if let StartingPosition::AtSequence(seq) | StartingPosition::AfterSequence(seq) = start {
        check_in_shard(state, &name, shard, seq).await?;
    }
    let position = state
        .streams
        .resolve(&name, shard, start)
        .await
        .map_err(from_stream)?;
    Ok(json!({"ShardIterator": iterator(state, &name, shard, position)}))
}

/// Refuses a sequence number outside the shard's range (before its first number, or after the
/// last one of a closed shard), whatever the backend's numbering.
async fn check_in_shard(
    state: &KinesisState,
    name: &str,
    shard: ShardId,
    seq: SequenceNumber,
) -> Result<(), ApiError> {
    let info = state
        .streams
        .describe_stream(name)
        .await
        .map_err(from_stream)?;
    let Some(found) = info.shards.iter().find(|s| s.id == shard) else {
        return Ok(()); // resolve answers ResourceNotFoundException
    };
    if seq < found.starting_sequence || found.ending_sequence.is_some_and(|end| seq > end) {
        return Err(invalid_argument(format!(
            "StartingSequenceNumber {seq} used in GetShardIterator on shard {shard} in stream {name} is invalid because it did not come from this shard."
        )));
    }
    Ok(())
}

fn iterator(state: &KinesisState, name: &str, shard: ShardId, position: Position) -> String {
    state.tokens.seal(&Token {
        kind: TokenKind::Iterator,
        stream: name.to_string(),
        shard: shard.0,
        position: position.0,
        issued_ms: millis(SystemTime::now()),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct GetRecordsInput {
    shard_iterator: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn get_records(
    state: &KinesisState,
    _ctx: &RequestContext,
    input: GetRecordsInput,
) -> Result<Value, ApiError> {
    let text = input
        .shard_iterator
        .ok_or_else(|| invalid_argument("ShardIterator is required."))?;
    let max = MAX_READ_RECORDS as i64;
    let limit = bounded("Limit", input.limit, 1, max, max)?;
    let token = state
        .tokens
        .open(&text, TokenKind::Iterator, SystemTime::now())
        .map_err(bad_iterator)?;
    let shard = ShardId(token.shard);
    let batch = state
        .streams
        .read(&token.stream, shard, Position(token.position), limit)
        .await
        .map_err(from_stream)?;
    let records: Vec<Value> = batch
        .records
        .iter()
        .map(|r| {
            json!({
                "SequenceNumber": r.sequence.to_string(),
                "ApproximateArrivalTimestamp": epoch_seconds(r.arrival),
                "Data": STANDARD.encode(&r.data),
                "PartitionKey": r.partition_key,
            })
        })
        .collect();
    let mut out = json!({
        "Records": records,
        "MillisBehindLatest": batch.millis_behind_latest,
    });
    if batch.end_of_shard {
        let info = state
            .streams
            .describe_stream(&token.stream)
            .await
            .map_err(from_stream)?;
        let children: Vec<Value> = info
            .shards
            .iter()
            .filter(|s| s.parent == Some(shard) || s.adjacent_parent == Some(shard))
            .map(|s| {
                json!({
                    "ShardId": s.id.to_string(),
                    "ParentShards": s.parent.into_iter().chain(s.adjacent_parent).map(|p| p.to_string()).collect::<Vec<_>>(),
                    "HashKeyRange": {
                        "StartingHashKey": s.hash_range.start.to_string(),
                        "EndingHashKey": s.hash_range.end.to_string(),
                    },
                })
            })
            .collect();
        out["ChildShards"] = json!(children);
    } else {
        out["NextShardIterator"] = json!(iterator(state, &token.stream, shard, batch.next));
    }
    Ok(out)
}
