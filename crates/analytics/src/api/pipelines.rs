//! CreatePipeline, DescribePipeline, ListPipelines, UpdatePipeline, DeletePipeline;
//! StartPipelineReprocessing and CancelPipelineReprocessing.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ListQuery, created, no_content, page};
use crate::Analytics;
use crate::reprocess::Input;
use crate::resources::tag_list;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct PipelineRequest {
    pipeline_name: String,
    pipeline_activities: Vec<Value>,
    tags: Value,
}

pub(super) async fn create(
    State(analytics): State<Arc<Analytics>>,
    Json(request): Json<PipelineRequest>,
) -> Result<Response, ApiError> {
    let tags = tag_list(&request.tags)?;
    let record = analytics
        .create_pipeline(&request.pipeline_name, request.pipeline_activities, tags)
        .await?;
    Ok(created(json!({
        "pipelineName": record.name,
        "pipelineArn": analytics.resource_arn("pipeline", &record.name),
    })))
}

pub(super) async fn describe(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = analytics.pipeline(&name)?;
    Ok(axum::Json(json!({
        "pipeline": {
            "name": record.name,
            "arn": analytics.resource_arn("pipeline", &record.name),
            "activities": record.activities,
            "reprocessingSummaries": summaries(&analytics, &record.name)?,
            "creationTime": record.created,
            "lastUpdateTime": record.updated,
        }
    }))
    .into_response())
}

pub(super) async fn list(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (pipelines, next) = page(analytics.pipelines()?, &query)?;
    let summaries = pipelines
        .iter()
        .map(|p| {
            Ok(json!({
                "pipelineName": p.name,
                "reprocessingSummaries": summaries(&analytics, &p.name)?,
                "creationTime": p.created,
                "lastUpdateTime": p.updated,
            }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(axum::Json(json!({"pipelineSummaries": summaries, "nextToken": next})).into_response())
}

pub(super) async fn update(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<PipelineRequest>,
) -> Result<Response, ApiError> {
    analytics
        .update_pipeline(&name, request.pipeline_activities)
        .await?;
    Ok(axum::Json(json!({})).into_response())
}

pub(super) async fn delete(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    analytics.delete_pipeline(&name)?;
    Ok(no_content())
}

/// `reprocessingSummaries` of a pipeline, newest first.
fn summaries(analytics: &Analytics, pipeline: &str) -> Result<Vec<Value>, ApiError> {
    Ok(analytics
        .reprocessings(pipeline)?
        .iter()
        .map(|r| json!({"id": r.id, "status": r.status, "creationTime": r.created}))
        .collect())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ReprocessingRequest {
    start_time: Option<f64>,
    end_time: Option<f64>,
    channel_messages: Option<Value>,
}

pub(super) async fn start_reprocessing(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<ReprocessingRequest>,
) -> Result<Response, ApiError> {
    let input = match request.channel_messages {
        None => Input::Window {
            start: request.start_time,
            end: request.end_time,
        },
        Some(_) if request.start_time.is_some() || request.end_time.is_some() => {
            return Err(ApiError::invalid_request(
                "channelMessages cannot be used with startTime or endTime",
            ));
        }
        Some(messages) => Input::Paths(s3_paths(&messages).map_err(ApiError::invalid_request)?),
    };
    let id = analytics.start_reprocessing(&name, input).await?;
    Ok(axum::Json(json!({"reprocessingId": id})).into_response())
}

/// `channelMessages.s3Paths`, checked against AWS's limits: 1 to 100 keys of 1 to 1024
/// characters.
fn s3_paths(messages: &Value) -> Result<Vec<String>, String> {
    let paths = messages
        .get("s3Paths")
        .and_then(Value::as_array)
        .ok_or("channelMessages.s3Paths must be a list of object keys")?;
    if !(1..=100).contains(&paths.len()) {
        return Err("channelMessages.s3Paths must hold 1 to 100 object keys".into());
    }
    paths
        .iter()
        .map(|path| match path.as_str() {
            Some(key) if (1..=1024).contains(&key.len()) => Ok(key.to_string()),
            _ => Err(format!(
                "channelMessages.s3Paths: {path} is not an object key of 1 to 1024 characters"
            )),
        })
        .collect()
}

pub(super) async fn cancel_reprocessing(
    State(analytics): State<Arc<Analytics>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    analytics.cancel_reprocessing(&name, &id)?;
    Ok(axum::Json(json!({})).into_response())
}
