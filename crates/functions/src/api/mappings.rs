//! CreateEventSourceMapping, ListEventSourceMappings, GetEventSourceMapping,
//! UpdateEventSourceMapping, DeleteEventSourceMapping (Kinesis sources).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::LambdaState;
use crate::esm::{MappingChange, Mappings};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct OnFailure {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct DestinationConfig {
    on_failure: Option<OnFailure>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct MappingRequest {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<u32>,
    starting_position: Option<String>,
    starting_position_timestamp: Option<f64>,
    bisect_batch_on_function_error: Option<bool>,
    maximum_retry_attempts: Option<i64>,
    maximum_batching_window_in_seconds: Option<u32>,
    destination_config: Option<DestinationConfig>,
}

impl From<MappingRequest> for MappingChange {
    fn from(r: MappingRequest) -> MappingChange {
        MappingChange {
            event_source_arn: r.event_source_arn,
            function: r.function_name,
            batch_size: r.batch_size,
            starting_position: r.starting_position,
            starting_position_timestamp: r.starting_position_timestamp,
            enabled: r.enabled,
            bisect: r.bisect_batch_on_function_error,
            maximum_retry_attempts: r.maximum_retry_attempts,
            maximum_batching_window: r.maximum_batching_window_in_seconds,
            on_failure: r
                .destination_config
                .map(|d| d.on_failure.and_then(|f| f.destination).unwrap_or_default()),
        }
    }
}

pub(super) async fn create(
    State(state): State<LambdaState>,
    Json(request): Json<MappingRequest>,
) -> Result<Response, ApiError> {
    let record = state.mappings.create(request.into()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(state.mappings.describe(&record, "Creating")),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ListQuery {
    #[serde(rename = "FunctionName")]
    function_name: Option<String>,
    #[serde(rename = "EventSourceArn")]
    event_source_arn: Option<String>,
}

pub(super) async fn list(
    State(state): State<LambdaState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let mappings: Vec<Value> = state
        .mappings
        .list(
            query.function_name.as_deref(),
            query.event_source_arn.as_deref(),
        )
        .iter()
        .map(|r| state.mappings.describe(r, Mappings::state_of(r)))
        .collect();
    Ok(axum::Json(json!({ "EventSourceMappings": mappings })))
}

pub(super) async fn get(
    State(state): State<LambdaState>,
    Path(uuid): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = state.mappings.get(&uuid)?;
    Ok(axum::Json(
        state
            .mappings
            .describe(&record, Mappings::state_of(&record)),
    ))
}

pub(super) async fn update(
    State(state): State<LambdaState>,
    Path(uuid): Path<String>,
    Json(request): Json<MappingRequest>,
) -> Result<Response, ApiError> {
    let record = state.mappings.update(&uuid, request.into()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(
            state
                .mappings
                .describe(&record, Mappings::state_of(&record)),
        ),
    )
        .into_response())
}

pub(super) async fn delete(
    State(state): State<LambdaState>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.mappings.delete(&uuid).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(state.mappings.describe(&record, "Deleting")),
    )
        .into_response())
}
