//! Data transformation with a Lambda processor (`ProcessingConfiguration` with a processor of
//! type `Lambda`): before delivery, a flushed buffer is sent to the function in invocations of
//! at most `BufferSizeInMBs`, in Firehose's shape
//! (`{"invocationId","deliveryStreamArn","region","records":[{"recordId","approximateArrivalTimestamp","data"}]}`);
//! its answer (`{"records":[{"recordId","result","data"}]}`) decides each record: `Ok` records
//! are delivered with the returned data, `Dropped` ones are not, `ProcessingFailed` ones go to
//! the error output (`processing-failed`). An invocation that fails (the function errs, times
//! out, or answers without every record id exactly once) is retried `NumberOfRetries` times;
//! its records then go to the error output too. The function is called through core's
//! `FunctionInvoker` seam.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use fleetcore_core::FunctionInvoker;
use fleetcore_stream::Record;
use serde::Deserialize;
use serde_json::json;

use crate::error::ArchiveError;
use crate::objects::Rejection;

/// `!{firehose:error-output-type}` of records the function failed or marked `ProcessingFailed`.
pub const PROCESSING_FAILED: &str = "processing-failed";

/// The validated Lambda processor of a delivery stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaProcessor {
    /// The function (ARN, possibly qualified).
    pub function_arn: String,
    /// Most record bytes in one invocation (`BufferSizeInMBs`, 0.2..=3, default 1).
    pub buffer_bytes: usize,
    /// Retries of a failed invocation (`NumberOfRetries`, 0..=300, default 3).
    pub retries: u32,
}

impl LambdaProcessor {
    /// Validates the processor's parameters as Firehose does.
    pub fn from_parameters<'a>(
        parameters: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LambdaProcessor, ArchiveError> {
        let invalid = |m: String| ArchiveError::InvalidArgument(m);
        let mut function_arn = None;
        let mut buffer_mb = 1.0_f64;
        let mut retries = 3;
        for (name, value) in parameters {
            match name {
                "LambdaArn" => {
                    if !value.starts_with("arn:aws:lambda:") || !value.contains(":function:") {
                        return Err(invalid(format!(
                            "LambdaArn {value:?} is not a Lambda function ARN"
                        )));
                    }
                    function_arn = Some(value.to_string());
                }
                "BufferSizeInMBs" => {
                    buffer_mb = value
                        .parse::<f64>()
                        .ok()
                        .filter(|mb| (0.2..=3.0).contains(mb))
                        .ok_or_else(|| {
                            invalid(format!("BufferSizeInMBs must be 0.2..=3, not {value:?}"))
                        })?;
                }
                "BufferIntervalInSeconds" => {
                    // The delivery stream's own buffering decides when a buffer is processed.
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|s| (60..=900).contains(s))
                        .ok_or_else(|| {
                            invalid(format!(
                                "BufferIntervalInSeconds must be 60..=900, not {value:?}"
                            ))
                        })?;
                }
                "NumberOfRetries" => {
                    retries = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 300)
                        .ok_or_else(|| {
                            invalid(format!("NumberOfRetries must be 0..=300, not {value:?}"))
                        })?;
                }
                // Kept as Firehose does; fleetcore's callers are all the admin.
                "RoleArn" => {}
                other => {
                    return Err(invalid(format!(
                        "Lambda processor parameter {other} is not supported (LambdaArn, \
                         BufferSizeInMBs, BufferIntervalInSeconds, NumberOfRetries, RoleArn)"
                    )));
                }
            }
        }
        Ok(LambdaProcessor {
            function_arn: function_arn
                .ok_or_else(|| invalid("the Lambda processor needs a LambdaArn".into()))?,
            buffer_bytes: (buffer_mb * f64::from(1u32 << 20)) as usize,
            retries,
        })
    }
}

/// Where the transformation runs and what it reports to the function.
pub struct TransformContext<'a> {
    /// The function caller.
    pub functions: &'a dyn FunctionInvoker,
    /// `deliveryStreamArn` of the requests.
    pub delivery_stream_arn: &'a str,
    /// `region` of the requests.
    pub region: &'a str,
}

#[derive(Deserialize)]
struct Response {
    records: Vec<ResponseRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseRecord {
    record_id: String,
    result: String,
    #[serde(default)]
    data: Option<String>,
}

/// What the function decided for one record.
enum Decision {
    Ok(Bytes),
    Dropped,
    Failed(&'static str, String),
}

/// Runs `records` through the processor: the records to deliver (data replaced, arrival kept)
/// followed by the originals of the failed ones, and the failed ones' indices and reasons.
pub async fn transform(
    processor: &LambdaProcessor,
    context: &TransformContext<'_>,
    records: Vec<Record>,
) -> (Vec<Record>, Vec<Rejection>) {
    let mut decisions: Vec<Decision> = Vec::with_capacity(records.len());
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len()
            && (end == start || bytes + records[end].data.len() <= processor.buffer_bytes)
        {
            bytes += records[end].data.len();
            end += 1;
        }
        decisions.extend(invoke_with_retries(processor, context, &records[start..end]).await);
        start = end;
    }
    let mut delivered = Vec::with_capacity(records.len());
    let mut failed = Vec::new();
    for (record, decision) in records.into_iter().zip(decisions) {
        match decision {
            Decision::Ok(data) => delivered.push(Record { data, ..record }),
            Decision::Dropped => {}
            Decision::Failed(code, message) => failed.push((record, code, message)),
        }
    }
    let mut rejected = Vec::with_capacity(failed.len());
    for (record, code, message) in failed {
        rejected.push(Rejection {
            index: delivered.len(),
            kind: PROCESSING_FAILED,
            code,
            message,
        });
        delivered.push(record);
    }
    (delivered, rejected)
}

/// One invocation for `records`, retried while it fails; one decision per record.
async fn invoke_with_retries(
    processor: &LambdaProcessor,
    context: &TransformContext<'_>,
    records: &[Record],
) -> Vec<Decision> {
    let ids: Vec<String> = (0..records.len())
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let request = json!({
        "invocationId": uuid::Uuid::new_v4().to_string(),
        "deliveryStreamArn": context.delivery_stream_arn,
        "region": context.region,
        "records": records.iter().zip(&ids).map(|(r, id)| json!({
            "recordId": id,
            "approximateArrivalTimestamp": millis(r.arrival),
            "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    let mut backoff = Duration::from_millis(200);
    let mut last: (&'static str, String) = ("Lambda.InvokeError", String::new());
    for attempt in 0..=processor.retries {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        match invoke_once(processor, context, &request, &ids).await {
            Ok(decisions) => return decisions,
            Err((code, message)) => {
                tracing::warn!(function = %processor.function_arn, attempt, %code, %message, "the Firehose Lambda processor failed");
                last = (code, message);
            }
        }
    }
    let (code, message) = last;
    records
        .iter()
        .map(|_| Decision::Failed(code, message.clone()))
        .collect()
}

async fn invoke_once(
    processor: &LambdaProcessor,
    context: &TransformContext<'_>,
    request: &[u8],
    ids: &[String],
) -> Result<Vec<Decision>, (&'static str, String)> {
    let output = context
        .functions
        .invoke(&processor.function_arn, request.to_vec())
        .await
        .map_err(|e| ("Lambda.InvokeError", e.to_string()))?;
    if let Some(kind) = output.function_error {
        return Err((
            "Lambda.FunctionError",
            format!(
                "The Lambda function failed ({kind}): {}",
                String::from_utf8_lossy(&output.payload)
            ),
        ));
    }
    let response: Response = serde_json::from_slice(&output.payload).map_err(|e| {
        (
            "Lambda.JsonProcessingException",
            format!("The Lambda function's response is not the expected JSON: {e}"),
        )
    })?;
    let mut by_id: HashMap<&str, &ResponseRecord> = HashMap::with_capacity(ids.len());
    for record in &response.records {
        if by_id.insert(record.record_id.as_str(), record).is_some() {
            return Err((
                "Lambda.DuplicatedRecordId",
                format!("record id {} is returned more than once", record.record_id),
            ));
        }
    }
    if by_id.len() != ids.len() {
        return Err((
            "Lambda.MissingRecordId",
            format!(
                "{} records were sent and {} returned",
                ids.len(),
                by_id.len()
            ),
        ));
    }
    ids.iter()
        .map(|id| {
            let record = by_id.get(id.as_str()).ok_or_else(|| {
                (
                    "Lambda.MissingRecordId",
                    format!("record id {id} is not in the response"),
                )
            })?;
            Ok(match record.result.as_str() {
                "Ok" => match record
                    .data
                    .as_deref()
                    .map(|d| base64::engine::general_purpose::STANDARD.decode(d))
                {
                    Some(Ok(data)) => Decision::Ok(Bytes::from(data)),
                    _ => Decision::Failed(
                        "Lambda.InvalidData",
                        "the record's data is missing or not base64".into(),
                    ),
                },
                "Dropped" => Decision::Dropped,
                "ProcessingFailed" => Decision::Failed(
                    "Lambda.ProcessingFailedStatus",
                    "The Lambda function marked the record ProcessingFailed".into(),
                ),
                other => Decision::Failed(
                    "Lambda.InvalidResult",
                    format!("unknown result {other:?} (Ok, Dropped, ProcessingFailed)"),
                ),
            })
        })
        .collect()
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
