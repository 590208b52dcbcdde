//! BatchPutMessage, BatchUpdateDetector, BatchDeleteDetector, DescribeDetector, ListDetectors.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::page;
use crate::Events;
use crate::engine::Instance;
use crate::expr::Value as ExprValue;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Message {
    message_id: String,
    input_name: String,
    payload: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PutRequest {
    messages: Vec<Message>,
}

pub(super) async fn batch_put_message(
    State(events): State<Arc<Events>>,
    Json(request): Json<PutRequest>,
) -> Result<Response, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid_request(
            "messages must hold at least one message",
        ));
    }
    let mut errors = Vec::new();
    for m in request.messages {
        let outcome = match base64::engine::general_purpose::STANDARD.decode(&m.payload) {
            Ok(payload) => {
                events
                    .put_message(&m.input_name, &m.message_id, &payload)
                    .await
            }
            Err(e) => Err((
                "InvalidRequestException",
                format!("payload is not base64: {e}"),
            )),
        };
        if let Err((code, text)) = outcome {
            errors.push(
                json!({ "messageId": m.message_id, "errorCode": code, "errorMessage": text }),
            );
        }
    }
    Ok(axum::Json(json!({ "BatchPutMessageErrorEntries": errors })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Variable {
    name: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TimerDefinition {
    name: String,
    seconds: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct StateDefinition {
    state_name: String,
    variables: Vec<Variable>,
    timers: Vec<TimerDefinition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct UpdateEntry {
    message_id: String,
    detector_model_name: String,
    key_value: Option<String>,
    state: StateDefinition,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct UpdateRequest {
    detectors: Vec<UpdateEntry>,
}

pub(super) async fn batch_update_detector(
    State(events): State<Arc<Events>>,
    Json(request): Json<UpdateRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    for d in request.detectors {
        let variables: BTreeMap<String, ExprValue> = d
            .state
            .variables
            .into_iter()
            .map(|v| (v.name, ExprValue::from_api_text(&v.value)))
            .collect();
        let timers: BTreeMap<String, u64> = d
            .state
            .timers
            .into_iter()
            .map(|t| (t.name, t.seconds.max(1)))
            .collect();
        if let Err(e) = events
            .update_detector(
                &d.detector_model_name,
                d.key_value,
                &d.state.state_name,
                variables,
                timers,
            )
            .await
        {
            let api = ApiError::from(e);
            errors.push(json!({ "messageId": d.message_id, "errorCode": api.code, "errorMessage": api.message }));
        }
    }
    Ok(axum::Json(json!({ "batchUpdateDetectorErrorEntries": errors })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct DeleteEntry {
    message_id: String,
    detector_model_name: String,
    key_value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DeleteRequest {
    detectors: Vec<DeleteEntry>,
}

pub(super) async fn batch_delete_detector(
    State(events): State<Arc<Events>>,
    Json(request): Json<DeleteRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    for d in request.detectors {
        match events.delete_detector(&d.detector_model_name, d.key_value).await {
            Ok(true) => {}
            Ok(false) => errors.push(json!({ "messageId": d.message_id, "errorCode": "ResourceNotFoundException", "errorMessage": "no such detector" })),
            Err(e) => {
                let api = ApiError::from(e);
                errors.push(json!({ "messageId": d.message_id, "errorCode": api.code, "errorMessage": api.message }));
            }
        }
    }
    Ok(axum::Json(json!({ "batchDeleteDetectorErrorEntries": errors })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct KeyQuery {
    pub(super) key_value: Option<String>,
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

pub(super) async fn describe_detector(
    State(events): State<Arc<Events>>,
    Path(model): Path<String>,
    Query(query): Query<KeyQuery>,
) -> Result<Response, ApiError> {
    let d = events.detector(&model, query.key_value).await?;
    let variables: Vec<Value> = d
        .variables
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value.api_text() }))
        .collect();
    let timers: Vec<Value> = d
        .timers
        .iter()
        .map(|(name, t)| json!({ "name": name, "timestamp": seconds(t.due_ms) }))
        .collect();
    Ok(axum::Json(json!({
        "detector": {
            "detectorModelName": d.model,
            "keyValue": d.key,
            "detectorModelVersion": d.version.to_string(),
            "state": { "stateName": d.state, "variables": variables, "timers": timers },
            "creationTime": seconds(d.created_ms),
            "lastUpdateTime": seconds(d.updated_ms),
        }
    }))
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ListQuery {
    state_name: Option<String>,
    next_token: Option<String>,
    max_results: Option<usize>,
}

pub(super) async fn list_detectors(
    State(events): State<Arc<Events>>,
    Path(model): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let all: Vec<Instance> = events
        .detectors(&model)
        .await?
        .into_iter()
        .filter(|d| query.state_name.as_ref().is_none_or(|s| *s == d.state))
        .collect();
    let (detectors, next) = page(all, query.next_token.as_deref(), query.max_results)?;
    let summaries: Vec<Value> = detectors
        .iter()
        .map(|d| {
            json!({
                "detectorModelName": d.model,
                "keyValue": d.key,
                "detectorModelVersion": d.version.to_string(),
                "state": { "stateName": d.state },
                "creationTime": seconds(d.created_ms),
                "lastUpdateTime": seconds(d.updated_ms),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "detectorSummaries": summaries, "nextToken": next })).into_response())
}
