//! CreateAlarmModel, DescribeAlarmModel, ListAlarmModels, ListAlarmModelVersions,
//! UpdateAlarmModel, DeleteAlarmModel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::models::{ListQuery, VersionQuery};
use super::page;
use crate::Events;
use crate::alarm::AlarmModelRecord;
use crate::engine::now_seconds;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct AlarmModelRequest {
    alarm_model_name: String,
    alarm_model_description: Option<String>,
    role_arn: String,
    tags: Vec<Value>,
    key: Option<String>,
    severity: Option<i64>,
    alarm_rule: Option<Value>,
    alarm_notification: Option<Value>,
    alarm_event_actions: Option<Value>,
    alarm_capabilities: Option<Value>,
}

/// The members CreateAlarmModel and UpdateAlarmModel answer with.
fn summary(events: &Events, m: &AlarmModelRecord) -> Value {
    json!({
        "creationTime": m.created,
        "alarmModelArn": events.alarm_model_arn(&m.name),
        "alarmModelVersion": m.version.to_string(),
        "lastUpdateTime": m.updated,
        "status": "ACTIVE",
    })
}

fn put(
    events: &Events,
    name: String,
    request: AlarmModelRequest,
    update: bool,
) -> Result<Response, ApiError> {
    let alarm_rule = request
        .alarm_rule
        .ok_or_else(|| ApiError::invalid_request("alarmRule is required"))?;
    let now = now_seconds();
    let record = AlarmModelRecord {
        name,
        version: 0,
        description: request.alarm_model_description,
        role_arn: request.role_arn,
        key: request.key,
        severity: request.severity,
        alarm_rule,
        alarm_notification: request.alarm_notification,
        alarm_event_actions: request.alarm_event_actions,
        alarm_capabilities: request.alarm_capabilities,
        tags: request.tags,
        created: now,
        updated: now,
    };
    let stored = events.put_alarm_model(record, update)?;
    Ok(axum::Json(summary(events, &stored)).into_response())
}

pub(super) async fn create_alarm_model(
    State(events): State<Arc<Events>>,
    Json(request): Json<AlarmModelRequest>,
) -> Result<Response, ApiError> {
    let name = request.alarm_model_name.clone();
    put(&events, name, request, false)
}

pub(super) async fn update_alarm_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Json(request): Json<AlarmModelRequest>,
) -> Result<Response, ApiError> {
    if request.key.is_some() {
        return Err(ApiError::invalid_request(
            "UpdateAlarmModel does not take a key: the key of an alarm model cannot change",
        ));
    }
    if !request.tags.is_empty() {
        return Err(ApiError::invalid_request(
            "UpdateAlarmModel does not take tags",
        ));
    }
    put(&events, name, request, true)
}

pub(super) async fn describe_alarm_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let m = events.alarm_model(&name, query.number()?)?;
    let mut body = summary(&events, &m);
    for (member, value) in [
        ("alarmModelName", json!(m.name)),
        ("alarmModelDescription", json!(m.description)),
        ("roleArn", json!(m.role_arn)),
        ("key", json!(m.key)),
        ("severity", json!(m.severity)),
        ("alarmRule", m.alarm_rule),
        ("alarmNotification", json!(m.alarm_notification)),
        ("alarmEventActions", json!(m.alarm_event_actions)),
        ("alarmCapabilities", json!(m.alarm_capabilities)),
    ] {
        if !value.is_null() {
            body[member] = value;
        }
    }
    Ok(axum::Json(body).into_response())
}

pub(super) async fn list_alarm_models(
    State(events): State<Arc<Events>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (models, next) = page(
        events.alarm_models(),
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "alarmModelName": m.name,
                "alarmModelDescription": m.description,
                "creationTime": m.created,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "alarmModelSummaries": summaries, "nextToken": next })).into_response())
}

pub(super) async fn list_alarm_model_versions(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (versions, next) = page(
        events.alarm_model_versions(&name)?,
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = versions
        .iter()
        .map(|m| {
            let mut s = summary(&events, m);
            s["alarmModelName"] = json!(m.name);
            s["roleArn"] = json!(m.role_arn);
            s
        })
        .collect();
    Ok(
        axum::Json(json!({ "alarmModelVersionSummaries": summaries, "nextToken": next }))
            .into_response(),
    )
}

pub(super) async fn delete_alarm_model(
    State(events): State<Arc<Events>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    events.delete_alarm_model(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
