//! BatchAcknowledgeAlarm, BatchDisableAlarm, BatchEnableAlarm, BatchResetAlarm,
//! BatchSnoozeAlarm (202, one error entry per request that could not be applied), DescribeAlarm,
//! ListAlarms.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::data::KeyQuery;
use super::models::ListQuery;
use super::page;
use crate::Events;
use crate::alarm::CustomerAction;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ActionRequest {
    request_id: String,
    alarm_model_name: String,
    key_value: Option<String>,
    note: Option<String>,
    snooze_duration: Option<i64>,
}

type MakeAction = fn(Option<String>, Option<i64>) -> Result<CustomerAction, String>;

fn check_request(r: &ActionRequest) -> Result<(), String> {
    let id_ok = (1..=64).contains(&r.request_id.len())
        && r.request_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !id_ok {
        return Err(format!(
            "requestId {:?} must be 1 to 64 letters, digits, _ or -",
            r.request_id
        ));
    }
    if r.note.as_ref().is_some_and(|n| n.chars().count() > 256) {
        return Err("note must be at most 256 characters".into());
    }
    Ok(())
}

/// Applies one kind of operator action to every request under `member`.
async fn batch(
    events: &Events,
    body: Value,
    member: &str,
    make: MakeAction,
) -> Result<Response, ApiError> {
    let requests: Vec<ActionRequest> = match body.get(member) {
        Some(list @ Value::Array(_)) => serde_json::from_value(list.clone())
            .map_err(|e| ApiError::invalid_request(format!("{member} is not valid: {e}")))?,
        _ => return Err(ApiError::invalid_request(format!("{member} is required"))),
    };
    if requests.is_empty() {
        return Err(ApiError::invalid_request(format!(
            "{member} must hold at least one request"
        )));
    }
    for r in &requests {
        check_request(r).map_err(ApiError::invalid_request)?;
    }
    let mut errors = Vec::new();
    for r in requests {
        let outcome = match make(r.note, r.snooze_duration) {
            Err(message) => Err(ApiError::invalid_request(message)),
            Ok(action) => events
                .act_on_alarm(&r.alarm_model_name, r.key_value, action)
                .await
                .map_err(ApiError::from),
        };
        if let Err(e) = outcome {
            errors.push(
                json!({ "requestId": r.request_id, "errorCode": e.code, "errorMessage": e.message }),
            );
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "errorEntries": errors })),
    )
        .into_response())
}

pub(super) async fn acknowledge(
    State(events): State<Arc<Events>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    batch(&events, body, "acknowledgeActionRequests", |note, _| {
        Ok(CustomerAction::Acknowledge { note })
    })
    .await
}

pub(super) async fn disable(
    State(events): State<Arc<Events>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    batch(&events, body, "disableActionRequests", |note, _| {
        Ok(CustomerAction::Disable { note })
    })
    .await
}

pub(super) async fn enable(
    State(events): State<Arc<Events>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    batch(&events, body, "enableActionRequests", |note, _| {
        Ok(CustomerAction::Enable { note })
    })
    .await
}

pub(super) async fn reset(
    State(events): State<Arc<Events>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    batch(&events, body, "resetActionRequests", |note, _| {
        Ok(CustomerAction::Reset { note })
    })
    .await
}

pub(super) async fn snooze(
    State(events): State<Arc<Events>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    batch(
        &events,
        body,
        "snoozeActionRequests",
        |note, seconds| match seconds {
            Some(s) if (1..=i64::from(i32::MAX)).contains(&s) => Ok(CustomerAction::Snooze {
                note,
                seconds: s.unsigned_abs(),
            }),
            Some(s) => Err(format!(
                "snoozeDuration must be 1 to 2147483647 seconds, not {s}"
            )),
            None => Err("snoozeDuration is required".into()),
        },
    )
    .await
}

pub(super) async fn describe_alarm(
    State(events): State<Arc<Events>>,
    Path(model): Path<String>,
    Query(query): Query<KeyQuery>,
) -> Result<Response, ApiError> {
    let alarm = events.alarm(&model, query.key_value).await?;
    let severity = events.alarm_severity(&model);
    Ok(axum::Json(json!({ "alarm": alarm.to_api(severity) })).into_response())
}

pub(super) async fn list_alarms(
    State(events): State<Arc<Events>>,
    Path(model): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (alarms, next) = page(
        events.alarms(&model).await?,
        query.next_token.as_deref(),
        query.max_results,
    )?;
    let summaries: Vec<Value> = alarms
        .iter()
        .map(|a| {
            json!({
                "alarmModelName": a.model,
                "alarmModelVersion": a.version.to_string(),
                "keyValue": a.key,
                "stateName": a.state.name(),
                "creationTime": a.created_ms as f64 / 1000.0,
                "lastUpdateTime": a.updated_ms as f64 / 1000.0,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "alarmSummaries": summaries, "nextToken": next })).into_response())
}
