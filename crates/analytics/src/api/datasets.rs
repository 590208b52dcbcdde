//! CreateDataset, DescribeDataset, ListDatasets, UpdateDataset, DeleteDataset;
//! CreateDatasetContent, GetDatasetContent, ListDatasetContents, DeleteDatasetContent; and the
//! unsigned download of a content's CSV.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ListQuery, created, no_content, page, retention};
use crate::Analytics;
use crate::model::{ContentRecord, DatasetRecord};
use crate::resources::{NewDataset, tag_list};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct DatasetRequest {
    dataset_name: String,
    actions: Vec<Value>,
    triggers: Vec<Value>,
    content_delivery_rules: Value,
    retention_period: Value,
    versioning_configuration: Value,
    late_data_rules: Value,
    tags: Value,
}

impl DatasetRequest {
    fn into_new(self, name: String) -> NewDataset {
        NewDataset {
            name,
            actions: self.actions,
            triggers: self.triggers,
            delivery_rules: self.content_delivery_rules,
            retention: self.retention_period,
            versioning: self.versioning_configuration,
            late_data_rules: self.late_data_rules,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct VersionQuery {
    version_id: Option<String>,
}

/// `versioningConfiguration` as given (absent: AWS's default, the latest and latest succeeded).
fn versioning(record: &DatasetRecord) -> Option<&Value> {
    Some(&record.versioning).filter(|v| !v.is_null())
}

pub(super) async fn create(
    State(analytics): State<Arc<Analytics>>,
    Json(mut request): Json<DatasetRequest>,
) -> Result<Response, ApiError> {
    let tags = tag_list(&request.tags)?;
    let name = std::mem::take(&mut request.dataset_name);
    let record = analytics.create_dataset(request.into_new(name), tags)?;
    Ok(created(json!({
        "datasetName": record.name,
        "datasetArn": analytics.resource_arn("dataset", &record.name),
        "retentionPeriod": retention(&record.retention),
    })))
}

pub(super) async fn describe(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = analytics.dataset(&name)?;
    Ok(axum::Json(json!({
        "dataset": {
            "name": record.name,
            "arn": analytics.resource_arn("dataset", &record.name),
            "actions": record.actions,
            "triggers": record.triggers,
            "contentDeliveryRules": [],
            "status": "ACTIVE",
            "creationTime": record.created,
            "lastUpdateTime": record.updated,
            "retentionPeriod": retention(&record.retention),
            "versioningConfiguration": versioning(&record),
        }
    }))
    .into_response())
}

pub(super) async fn list(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (datasets, next) = page(analytics.datasets()?, &query)?;
    let summaries: Vec<Value> = datasets
        .iter()
        .map(|d| {
            let actions: Vec<Value> = d
                .actions
                .iter()
                .map(|a| json!({"actionName": a.get("actionName"), "actionType": "QUERY"}))
                .collect();
            json!({
                "datasetName": d.name,
                "status": "ACTIVE",
                "creationTime": d.created,
                "lastUpdateTime": d.updated,
                "triggers": d.triggers,
                "actions": actions,
            })
        })
        .collect();
    Ok(axum::Json(json!({"datasetSummaries": summaries, "nextToken": next})).into_response())
}

pub(super) async fn update(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<DatasetRequest>,
) -> Result<Response, ApiError> {
    analytics.update_dataset(request.into_new(name))?;
    Ok(axum::Json(json!({})).into_response())
}

pub(super) async fn delete(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    analytics.delete_dataset(&name)?;
    Ok(no_content())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct CreateContentRequest {
    version_id: Option<String>,
}

pub(super) async fn create_content(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<CreateContentRequest>,
) -> Result<Response, ApiError> {
    if request.version_id.is_some() {
        return Err(ApiError::invalid_request(
            "versionId (re-running a container dataset's version) is not supported: this server runs SQL datasets only",
        ));
    }
    let version = analytics.create_content(&name)?;
    Ok(axum::Json(json!({"versionId": version})).into_response())
}

fn status(content: &ContentRecord) -> Value {
    json!({"state": content.state, "reason": content.reason})
}

pub(super) async fn get_content(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let content = analytics.content(&name, query.version_id.as_deref())?;
    let entries: Vec<Value> = if content.state == crate::model::ContentState::Succeeded {
        vec![json!({
            "entryName": format!("{}.csv", content.version),
            "dataURI": analytics.content_uri(&content),
        })]
    } else {
        Vec::new()
    };
    Ok(axum::Json(json!({
        "entries": entries,
        "timestamp": content.created,
        "status": status(&content),
    }))
    .into_response())
}

pub(super) async fn list_contents(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (contents, next) = page(analytics.contents(&name)?, &query)?;
    let summaries: Vec<Value> = contents
        .iter()
        .map(|c| {
            json!({
                "version": c.version,
                "status": status(c),
                "creationTime": c.created,
                "scheduleTime": c.created,
                "completionTime": c.completed,
            })
        })
        .collect();
    Ok(
        axum::Json(json!({"datasetContentSummaries": summaries, "nextToken": next}))
            .into_response(),
    )
}

pub(super) async fn delete_content(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    analytics.delete_content(&name, query.version_id.as_deref())?;
    Ok(no_content())
}

/// GET of a `dataURI`: the CSV, or 404 when the token names no finished content.
pub(super) async fn download(
    State(analytics): State<Arc<Analytics>>,
    Path(token): Path<String>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such dataset content\n").into_response();
    let Ok(Some(path)) = analytics.content_file(&token) else {
        return not_found();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv")], bytes).into_response(),
        Err(_) => not_found(),
    }
}
