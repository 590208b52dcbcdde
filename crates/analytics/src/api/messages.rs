//! BatchPutMessage, SampleChannelData, RunPipelineActivity.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use fleetcore_core::{ChannelError, ChannelMessage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Analytics;

/// Most messages in one BatchPutMessage (AWS's limit).
const MAX_BATCH: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Message {
    message_id: String,
    payload: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct BatchPutRequest {
    channel_name: String,
    messages: Vec<Message>,
}

pub(super) async fn batch_put(
    State(analytics): State<Arc<Analytics>>,
    Json(request): Json<BatchPutRequest>,
) -> Result<Response, ApiError> {
    if request.messages.is_empty() || request.messages.len() > MAX_BATCH {
        return Err(ApiError::invalid_request(format!(
            "messages must hold 1 to {MAX_BATCH} messages"
        )));
    }
    let mut errors = Vec::new();
    let mut accepted = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        if m.message_id.is_empty()
            || request.messages[..i]
                .iter()
                .any(|o| o.message_id == m.message_id)
        {
            errors.push(
                json!({"messageId": m.message_id, "errorCode": "InvalidRequestException",
                "errorMessage": "messageId must be non-empty and unique in the batch"}),
            );
            continue;
        }
        match STANDARD.decode(&m.payload) {
            Ok(payload) => accepted.push(ChannelMessage {
                message_id: m.message_id.clone(),
                payload,
            }),
            Err(e) => errors.push(
                json!({"messageId": m.message_id, "errorCode": "InvalidRequestException",
                "errorMessage": format!("payload is not base64: {e}")}),
            ),
        }
    }
    let ids: Vec<String> = accepted.iter().map(|m| m.message_id.clone()).collect();
    let outcomes = analytics
        .put_messages(&request.channel_name, accepted)
        .await?;
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        if let Err(e) = outcome {
            let code = match e {
                ChannelError::Invalid(_) | ChannelError::NotFound(_) => "InvalidRequestException",
                ChannelError::Storage(_) => "InternalFailureException",
            };
            errors.push(json!({"messageId": id, "errorCode": code, "errorMessage": e.to_string()}));
        }
    }
    Ok(axum::Json(json!({"batchPutMessageErrorEntries": errors})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct SampleQuery {
    max_messages: Option<usize>,
    start_time: Option<String>,
    end_time: Option<String>,
}

/// A timestamp query parameter (ISO 8601 as botocore sends it, or epoch seconds) in ms.
fn time_ms(text: &str) -> Result<i64, ApiError> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok((seconds * 1000.0) as i64);
    }
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .map(|nanos| nanos.div_euclid(1_000_000))
        .map_err(|_| ApiError::invalid_request(format!("{text} is not a timestamp")))
}

pub(super) async fn sample(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<SampleQuery>,
) -> Result<Response, ApiError> {
    let max = query.max_messages.unwrap_or(10);
    if !(1..=10).contains(&max) {
        return Err(ApiError::invalid_request("maxMessages must be 1 to 10"));
    }
    let start = query.start_time.as_deref().map(time_ms).transpose()?;
    let end = query.end_time.as_deref().map(time_ms).transpose()?;
    let payloads = analytics.sample(&name, max, start, end).await?;
    let payloads: Vec<String> = payloads.iter().map(|p| STANDARD.encode(p)).collect();
    Ok(axum::Json(json!({"payloads": payloads})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RunActivityRequest {
    pipeline_activity: Value,
    payloads: Vec<String>,
}

pub(super) async fn run_activity(
    State(analytics): State<Arc<Analytics>>,
    Json(request): Json<RunActivityRequest>,
) -> Result<Response, ApiError> {
    if request.payloads.is_empty() || request.payloads.len() > 10 {
        return Err(ApiError::invalid_request(
            "payloads must hold 1 to 10 messages",
        ));
    }
    let payloads = request
        .payloads
        .iter()
        .map(|p| STANDARD.decode(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid_request(format!("a payload is not base64: {e}")))?;
    let out = analytics
        .run_activity(&request.pipeline_activity, payloads)
        .await?;
    let out: Vec<String> = out.iter().map(|p| STANDARD.encode(p)).collect();
    Ok(axum::Json(json!({"payloads": out, "logResult": ""})).into_response())
}
