//! CreateChannel, DescribeChannel, ListChannels, UpdateChannel, DeleteChannel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ListQuery, StatisticsQuery, created, no_content, page, retention, storage};
use crate::Analytics;
use crate::model::now_seconds;
use crate::resources::tag_list;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ChannelRequest {
    channel_name: String,
    channel_storage: Value,
    retention_period: Value,
    tags: Value,
}

pub(super) async fn create(
    State(analytics): State<Arc<Analytics>>,
    Json(request): Json<ChannelRequest>,
) -> Result<Response, ApiError> {
    let tags = tag_list(&request.tags)?;
    let record = analytics
        .create_channel(
            &request.channel_name,
            request.channel_storage,
            request.retention_period,
            tags,
        )
        .await?;
    Ok(created(json!({
        "channelName": record.name,
        "channelArn": analytics.resource_arn("channel", &record.name),
        "retentionPeriod": retention(&record.retention),
    })))
}

pub(super) async fn describe(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Query(query): Query<StatisticsQuery>,
) -> Result<Response, ApiError> {
    let record = analytics.channel(&name)?;
    let mut body = json!({
        "channel": {
            "name": record.name,
            "storage": storage(&record.storage),
            "arn": analytics.resource_arn("channel", &record.name),
            "status": "ACTIVE",
            "retentionPeriod": retention(&record.retention),
            "creationTime": record.created,
            "lastUpdateTime": record.updated,
        }
    });
    if query.include_statistics == Some(true) {
        body["statistics"] = json!({"size": {
            "estimatedSizeInBytes": analytics.channel_size(&name).await? as f64,
            "estimatedOn": now_seconds(),
        }});
    }
    Ok(axum::Json(body).into_response())
}

pub(super) async fn list(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (channels, next) = page(analytics.channels()?, &query)?;
    let summaries: Vec<Value> = channels
        .iter()
        .map(|c| {
            json!({
                "channelName": c.name,
                "channelStorage": storage(&c.storage),
                "status": "ACTIVE",
                "creationTime": c.created,
                "lastUpdateTime": c.updated,
            })
        })
        .collect();
    Ok(axum::Json(json!({"channelSummaries": summaries, "nextToken": next})).into_response())
}

pub(super) async fn update(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
    Json(request): Json<ChannelRequest>,
) -> Result<Response, ApiError> {
    analytics.update_channel(&name, request.channel_storage, request.retention_period)?;
    Ok(axum::Json(json!({})).into_response())
}

pub(super) async fn delete(
    State(analytics): State<Arc<Analytics>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    analytics.delete_channel(&name)?;
    Ok(no_content())
}
