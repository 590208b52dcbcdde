//! CreateDatastore, DescribeDatastore, ListDatastores, UpdateDatastore, DeleteDatastore.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ListQuery, StatisticsQuery, created, no_content, page, retention, storage};
use crate::Analytics;
use crate::model::{DatastoreRecord, now_seconds};
use crate::query::FileFormat;
use crate::resources::{NewDatastore, tag_list};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct DatastoreRequest {
    datastore_name: String,
    datastore_storage: Value,
    retention_period: Value,
    file_format_configuration: Value,
    datastore_partitions: Value,
    tags: Value,
}

/// The file format as Describe shows it (JSON, or Parquet with the table's columns).
fn file_format(record: &DatastoreRecord) -> Value {
    if record.format() == FileFormat::Json {
        return json!({"jsonConfiguration": {}});
    }
    let columns: Vec<Value> = record
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": serde_json::to_value(c.kind).unwrap_or_default()}))
        .collect();
    json!({"parquetConfiguration": {"schemaDefinition": {"columns": columns}}})
}

pub(super) async fn create(
    State(analytics): State<Arc<Analytics>>,
    Json(request): Json<DatastoreRequest>,
) -> Result<Response, ApiError> {
    let tags = tag_list(&request.tags)?;
    let record = analytics
        .create_datastore(
            NewDatastore {
                name: request.datastore_name,
                storage: request.datastore_storage,
                retention: request.retention_period,
                file_format: request.file_format_configuration,
                partitions: request.datastore_partitions,
            },
            tags,
        )
        .await?;
    Ok(created(json!({
        "datastoreName": record.name,
        "datastoreArn": analytics.resource_arn("datastore", &record.name),
        "retentionPeriod": retention(&record.retention),
    })))
}

pub(super) async fn describe(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<StatisticsQuery>,
) -> Result<Response, ApiError> {
    let record = analytics.datastore(&name)?;
    let mut body = json!({
        "datastore": {
            "name": record.name,
            "storage": storage(&record.storage),
            "arn": analytics.resource_arn("datastore", &record.name),
            "status": "ACTIVE",
            "retentionPeriod": retention(&record.retention),
            "creationTime": record.created,
            "lastUpdateTime": record.updated,
            "lastMessageArrivalTime": record.last_message,
            "fileFormatConfiguration": file_format(&record),
            "datastorePartitions": if record.partitions.is_null() { json!({"partitions": []}) } else { record.partitions.clone() },
        }
    });
    if query.include_statistics == Some(true) {
        body["statistics"] = json!({"size": {
            "estimatedSizeInBytes": analytics.datastore_size(&name).await? as f64,
            "estimatedOn": now_seconds(),
        }});
    }
    Ok(axum::Json(body).into_response())
}

pub(super) async fn list(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (datastores, next) = page(analytics.datastores()?, &query)?;
    let summaries: Vec<Value> = datastores
        .iter()
        .map(|d| {
            json!({
                "datastoreName": d.name,
                "datastoreStorage": storage(&d.storage),
                "status": "ACTIVE",
                "creationTime": d.created,
                "lastUpdateTime": d.updated,
                "lastMessageArrivalTime": d.last_message,
                "fileFormatType": match d.format() {
                    FileFormat::Parquet => "PARQUET",
                    FileFormat::Json => "JSON",
                },
            })
        })
        .collect();
    Ok(axum::Json(json!({"datastoreSummaries": summaries, "nextToken": next})).into_response())
}

pub(super) async fn update(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<DatastoreRequest>,
) -> Result<Response, ApiError> {
    if !request.file_format_configuration.is_null() {
        return Err(ApiError::invalid_request(
            "the file format of an existing datastore cannot change here",
        ));
    }
    analytics.update_datastore(&name, request.datastore_storage, request.retention_period)?;
    Ok(axum::Json(json!({})).into_response())
}

pub(super) async fn delete(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    analytics.delete_datastore(&name)?;
    Ok(no_content())
}
