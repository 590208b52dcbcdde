//! CreateInput, DescribeInput, ListInputs, UpdateInput, DeleteInput; CreateDetectorModel,
//! DescribeDetectorModel, ListDetectorModels, ListDetectorModelVersions, UpdateDetectorModel,
//! DeleteDetectorModel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::page;
use crate::Events;
use crate::engine::now_seconds;
use crate::model::{DetectorModelRecord, Input};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Attribute {
    json_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct InputDefinition {
    attributes: Vec<Attribute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct InputRequest {
    input_name: String,
    input_description: Option<String>,
    input_definition: Option<InputDefinition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ListQuery {
    pub(super) next_token: Option<String>,
    pub(super) max_results: Option<usize>,
}

fn attributes(definition: Option<InputDefinition>) -> Result<Vec<String>, ApiError> {
    let definition =
        definition.ok_or_else(|| ApiError::invalid_request("inputDefinition is required"))?;
    Ok(definition
        .attributes
        .into_iter()
        .map(|a| a.json_path)
        .collect())
}

fn input_configuration(events: &Events, input: &Input) -> Value {
    json!({
        "inputName": input.name,
        "inputDescription": input.description,
        "inputArn": events.input_arn(&input.name),
        "creationTime": input.created,
        "lastUpdateTime": input.updated,
        "status": "ACTIVE",
    })
}

pub(super) async fn create_input(
    State(events): State<Arc<Events>>,
    Json(request): Json<InputRequest>,
) -> Result<Response, ApiError> {
    let attributes = attributes(request.input_definition)?;
    let input = events.create_input(&request.input_name, request.input_description, attributes)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "inputConfiguration": input_configuration(&events, &input) })),
    )
        .into_response())
}

pub(super) async fn update_input(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Json(request): Json<InputRequest>,
) -> Result<Response, ApiError> {
    let attributes = attributes(request.input_definition)?;
    let input = events.update_input(&name, request.input_description, attributes)?;
    Ok(
        axum::Json(json!({ "inputConfiguration": input_configuration(&events, &input) }))
            .into_response(),
    )
}

pub(super) async fn describe_input(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let input = events.input(&name)?;
    let attributes: Vec<Value> = input
        .attributes
        .iter()
        .map(|a| json!({ "jsonPath": a }))
        .collect();
    Ok(axum::Json(json!({
        "input": {
            "inputConfiguration": input_configuration(&events, &input),
            "inputDefinition": { "attributes": attributes },
        }
    }))
    .into_response())
}

pub(super) async fn list_inputs(
    State(events): State<Arc<Events>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (inputs, next) = page(
        events.inputs(),
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = inputs
        .iter()
        .map(|i| input_configuration(&events, i))
        .collect();
    Ok(axum::Json(json!({ "inputSummaries": summaries, "nextToken": next })).into_response())
}

pub(super) async fn delete_input(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    events.delete_input(&name)?;
    Ok(axum::Json(json!({})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct DetectorModelRequest {
    detector_model_name: String,
    detector_model_definition: Option<Value>,
    detector_model_description: Option<String>,
    key: Option<String>,
    role_arn: String,
    evaluation_method: Option<String>,
}

fn configuration(events: &Events, m: &DetectorModelRecord) -> Value {
    json!({
        "detectorModelName": m.name,
        "detectorModelVersion": m.version.to_string(),
        "detectorModelDescription": m.description,
        "detectorModelArn": events.model_arn(&m.name),
        "roleArn": m.role_arn,
        "creationTime": m.created,
        "lastUpdateTime": m.updated,
        "status": "ACTIVE",
        "key": m.key,
        "evaluationMethod": m.evaluation_method,
    })
}

async fn put_model(
    events: &Events,
    name: String,
    request: DetectorModelRequest,
    update: bool,
) -> Result<Response, ApiError> {
    let definition = request
        .detector_model_definition
        .ok_or_else(|| ApiError::invalid_request("detectorModelDefinition is required"))?;
    let now = now_seconds();
    let record = DetectorModelRecord {
        name,
        version: 0,
        description: request.detector_model_description,
        key: request.key,
        role_arn: request.role_arn,
        evaluation_method: request.evaluation_method.unwrap_or_else(|| "BATCH".into()),
        definition,
        created: now,
        updated: now,
    };
    let stored = events.put_detector_model(record, update).await?;
    Ok(
        axum::Json(json!({ "detectorModelConfiguration": configuration(events, &stored) }))
            .into_response(),
    )
}

pub(super) async fn create_detector_model(
    State(events): State<Arc<Events>>,
    Json(request): Json<DetectorModelRequest>,
) -> Result<Response, ApiError> {
    let name = request.detector_model_name.clone();
    put_model(&events, name, request, false).await
}

pub(super) async fn update_detector_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Json(request): Json<DetectorModelRequest>,
) -> Result<Response, ApiError> {
    if request.key.is_some() {
        return Err(ApiError::invalid_request(
            "UpdateDetectorModel does not take a key: the key of a detector model cannot change",
        ));
    }
    put_model(&events, name, request, true).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    /// The `version` query parameter as a number, if given.
    pub(super) fn number(&self) -> Result<Option<u32>, ApiError> {
        self.version
            .as_deref()
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    ApiError::invalid_request(format!("version {v:?} is not a version number"))
                })
            })
            .transpose()
    }
}

pub(super) async fn describe_detector_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let m = events.detector_model(&name, query.number()?)?;
    Ok(axum::Json(json!({
        "detectorModel": {
            "detectorModelDefinition": m.definition,
            "detectorModelConfiguration": configuration(&events, &m),
        }
    }))
    .into_response())
}

pub(super) async fn list_detector_models(
    State(events): State<Arc<Events>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (models, next) = page(
        events.detector_models(),
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "detectorModelName": m.name,
                "detectorModelDescription": m.description,
                "creationTime": m.created,
            })
        })
        .collect();
    Ok(
        axum::Json(json!({ "detectorModelSummaries": summaries, "nextToken": next }))
            .into_response(),
    )
}

pub(super) async fn list_detector_model_versions(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (versions, next) = page(
        events.detector_model_versions(&name)?,
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = versions
        .iter()
        .map(|m| {
            json!({
                "detectorModelName": m.name,
                "detectorModelVersion": m.version.to_string(),
                "detectorModelArn": events.model_arn(&m.name),
                "roleArn": m.role_arn,
                "creationTime": m.created,
                "lastUpdateTime": m.updated,
                "status": "ACTIVE",
                "evaluationMethod": m.evaluation_method,
            })
        })
        .collect();
    Ok(
        axum::Json(json!({ "detectorModelVersionSummaries": summaries, "nextToken": next }))
            .into_response(),
    )
}

pub(super) async fn delete_detector_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    events.delete_detector_model(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
