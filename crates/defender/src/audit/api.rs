//! The audit operations of the `iot` service: the account audit configuration, on-demand
//! audit tasks and their findings.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, patch, post};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schedule::{self, ScheduledAudit};
use super::suppressions::SuppressionChange;
use super::{AuditConfiguration, AuditTask, Audits};
use crate::error::DefenderError;

type Answer = Result<axum::Json<Value>, ApiError>;

/// The routes; register with `ControlPlane::service_routes("iot", routes(audits))`.
pub fn routes(audits: Arc<Audits>) -> Router {
    Router::new()
        .route(
            "/audit/configuration",
            get(describe_configuration).patch(update_configuration),
        )
        .route("/audit/tasks", post(start_on_demand).get(list_tasks))
        .route("/audit/tasks/{taskId}", get(describe_task))
        .route("/audit/findings", post(list_findings))
        .route("/audit/scheduledaudits", get(list_scheduled))
        .route(
            "/audit/scheduledaudits/{scheduledAuditName}",
            post(create_scheduled)
                .get(describe_scheduled)
                .patch(update_scheduled)
                .delete(delete_scheduled),
        )
        .route("/audit/suppressions/create", post(create_suppression))
        .route("/audit/suppressions/describe", post(describe_suppression))
        .route("/audit/suppressions/update", patch(update_suppression))
        .route("/audit/suppressions/delete", post(delete_suppression))
        .route("/audit/suppressions/list", post(list_suppressions))
        .with_state(audits)
}

async fn describe_configuration(State(a): State<Arc<Audits>>) -> Answer {
    let c = a.configuration()?;
    Ok(axum::Json(json!({
        "roleArn": c.role_arn,
        "auditNotificationTargetConfigurations": c.audit_notification_target_configurations,
        "auditCheckConfigurations": c.audit_check_configurations,
    })))
}

async fn update_configuration(
    State(a): State<Arc<Audits>>,
    Json(body): Json<AuditConfiguration>,
) -> Answer {
    a.update_configuration(body)?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    target_check_names: Vec<String>,
}

async fn start_on_demand(State(a): State<Arc<Audits>>, Json(body): Json<StartBody>) -> Answer {
    let task = a.start_on_demand(&body.target_check_names)?;
    Ok(axum::Json(json!({"taskId": task.task_id})))
}

fn existing(a: &Audits, id: &str) -> Result<AuditTask, ApiError> {
    a.task(id)?
        .ok_or_else(|| DefenderError::NotFound(format!("audit task {id} does not exist")).into())
}

async fn describe_task(State(a): State<Arc<Audits>>, Path(id): Path<String>) -> Answer {
    let t = existing(&a, &id)?;
    let count = |status: &str| {
        t.details
            .values()
            .filter(|d| d["checkRunStatus"] == status)
            .count()
    };
    Ok(axum::Json(json!({
        "taskStatus": t.status,
        "taskType": t.task_type,
        "taskStartTime": t.start_time,
        "taskStatistics": {
            "totalChecks": t.details.len(),
            "inProgressChecks": 0,
            "waitingForDataCollectionChecks": 0,
            "compliantChecks": count("COMPLETED_COMPLIANT"),
            "nonCompliantChecks": count("COMPLETED_NON_COMPLIANT"),
            "failedChecks": count("FAILED"),
            "canceledChecks": 0,
        },
        "auditDetails": t.details,
        "scheduledAuditName": t.scheduled_audit_name,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasksQuery {
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    task_status: Option<String>,
}

async fn list_tasks(State(a): State<Arc<Audits>>, Query(q): Query<ListTasksQuery>) -> Answer {
    let start = crate::api::parse_time("startTime", q.start_time.as_deref())?;
    let end = crate::api::parse_time("endTime", q.end_time.as_deref())?;
    let tasks: Vec<Value> = a
        .tasks()?
        .into_iter()
        .filter(|t| {
            t.start_time >= start
                && t.start_time <= end
                && q.task_type.as_deref().is_none_or(|k| k == t.task_type)
                && q.task_status.as_deref().is_none_or(|s| s == t.status)
        })
        .map(|t| json!({"taskId": t.task_id, "taskStatus": t.status, "taskType": t.task_type}))
        .collect();
    Ok(axum::Json(json!({"tasks": tasks})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FindingsBody {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    check_name: Option<String>,
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(default)]
    end_time: Option<f64>,
    #[serde(default)]
    list_suppressed_findings: Option<bool>,
}

async fn list_findings(State(a): State<Arc<Audits>>, Json(body): Json<FindingsBody>) -> Answer {
    let tasks = match &body.task_id {
        Some(id) => vec![existing(&a, id)?],
        None => {
            if body.start_time.is_none() || body.end_time.is_none() {
                return Err(ApiError::invalid_request(
                    "either taskId or startTime and endTime are required",
                ));
            }
            a.tasks()?
        }
    };
    let findings: Vec<Value> = tasks
        .into_iter()
        .filter(|t| {
            body.start_time.is_none_or(|s| t.start_time >= s)
                && body.end_time.is_none_or(|e| t.start_time <= e)
        })
        .flat_map(|t| t.findings)
        .filter(|f| {
            body.check_name
                .as_deref()
                .is_none_or(|c| f["checkName"] == c)
                && body
                    .list_suppressed_findings
                    .is_none_or(|s| f["isSuppressed"] == s)
        })
        .collect();
    Ok(axum::Json(json!({"findings": findings})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SuppressionBody {
    check_name: String,
    resource_identifier: BTreeMap<String, Value>,
    #[serde(flatten)]
    change: SuppressionChange,
}

async fn create_suppression(
    State(a): State<Arc<Audits>>,
    Json(body): Json<SuppressionBody>,
) -> Answer {
    a.create_suppression(body.check_name, body.resource_identifier, body.change)?;
    Ok(axum::Json(json!({})))
}

async fn describe_suppression(
    State(a): State<Arc<Audits>>,
    Json(body): Json<SuppressionBody>,
) -> Answer {
    let s = a.existing_suppression(&body.check_name, &body.resource_identifier)?;
    Ok(axum::Json(json!(s)))
}

async fn update_suppression(
    State(a): State<Arc<Audits>>,
    Json(body): Json<SuppressionBody>,
) -> Answer {
    a.update_suppression(&body.check_name, &body.resource_identifier, body.change)?;
    Ok(axum::Json(json!({})))
}

async fn delete_suppression(
    State(a): State<Arc<Audits>>,
    Json(body): Json<SuppressionBody>,
) -> Answer {
    a.delete_suppression(&body.check_name, &body.resource_identifier)?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListSuppressionsBody {
    #[serde(default)]
    check_name: Option<String>,
    #[serde(default)]
    resource_identifier: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    ascending_order: Option<bool>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn list_suppressions(
    State(a): State<Arc<Audits>>,
    Json(body): Json<ListSuppressionsBody>,
) -> Answer {
    let mut items: Vec<Value> = a
        .suppressions()?
        .into_iter()
        .filter(|s| {
            body.check_name.as_deref().is_none_or(|c| c == s.check_name)
                && body
                    .resource_identifier
                    .as_ref()
                    .is_none_or(|r| *r == s.resource_identifier)
        })
        .map(|s| json!(s))
        .collect();
    if body.ascending_order == Some(false) {
        items.reverse();
    }
    let (items, next) = crate::api::page(items, body.next_token.as_deref(), body.max_results)?;
    let mut out = json!({"suppressions": items});
    if let Some(next) = next {
        out["nextToken"] = json!(next);
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleBody {
    #[serde(default)]
    frequency: Option<String>,
    #[serde(default)]
    day_of_month: Option<String>,
    #[serde(default)]
    day_of_week: Option<String>,
    #[serde(default)]
    target_check_names: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<Value>>,
}

fn scheduled_arn(a: &Audits, name: &str) -> String {
    a.account
        .iot_arn(format!("scheduledaudit/{name}"))
        .to_string()
}

fn existing_schedule(a: &Audits, name: &str) -> Result<ScheduledAudit, ApiError> {
    a.scheduled_audit(name)?.ok_or_else(|| {
        DefenderError::NotFound(format!("scheduled audit {name} does not exist")).into()
    })
}

async fn create_scheduled(
    State(a): State<Arc<Audits>>,
    Path(name): Path<String>,
    Json(body): Json<ScheduleBody>,
) -> Answer {
    crate::profile::validate_name("scheduledAuditName", &name)?;
    if body.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_request(
            "tags are not supported by this server",
        ));
    }
    let frequency = body
        .frequency
        .ok_or_else(|| ApiError::invalid_request("frequency is required"))?;
    schedule::validate(
        &frequency,
        body.day_of_month.as_deref(),
        body.day_of_week.as_deref(),
    )?;
    let checks = body.target_check_names.unwrap_or_default();
    a.check_runnable(&checks)?;
    let _writing = a.writing.lock();
    if a.scheduled_audit(&name)?.is_some() {
        return Err(
            DefenderError::AlreadyExists(format!("scheduled audit {name} already exists")).into(),
        );
    }
    let mut s = ScheduledAudit {
        name: name.clone(),
        frequency,
        day_of_month: body.day_of_month,
        day_of_week: body.day_of_week,
        target_check_names: checks,
        next_run: 0.0,
        last_run: None,
    };
    s.next_run = a.clock.next_run(&s, crate::store::now());
    a.put_scheduled_audit(&s)?;
    Ok(axum::Json(
        json!({"scheduledAuditArn": scheduled_arn(&a, &name)}),
    ))
}

fn schedule_json(a: &Audits, s: &ScheduledAudit) -> Value {
    json!({
        "scheduledAuditName": s.name,
        "scheduledAuditArn": scheduled_arn(a, &s.name),
        "frequency": s.frequency,
        "dayOfMonth": s.day_of_month,
        "dayOfWeek": s.day_of_week,
        "targetCheckNames": s.target_check_names,
    })
}

async fn describe_scheduled(State(a): State<Arc<Audits>>, Path(name): Path<String>) -> Answer {
    Ok(axum::Json(schedule_json(
        &a,
        &existing_schedule(&a, &name)?,
    )))
}

async fn update_scheduled(
    State(a): State<Arc<Audits>>,
    Path(name): Path<String>,
    Json(body): Json<ScheduleBody>,
) -> Answer {
    if let Some(checks) = &body.target_check_names {
        a.check_runnable(checks)?;
    }
    let _writing = a.writing.lock();
    let mut s = existing_schedule(&a, &name)?;
    if let Some(f) = body.frequency {
        // A new frequency takes only its own day.
        if body.day_of_month.is_none() {
            s.day_of_month = None;
        }
        if body.day_of_week.is_none() {
            s.day_of_week = None;
        }
        s.frequency = f;
    }
    if body.day_of_month.is_some() {
        s.day_of_month = body.day_of_month;
    }
    if body.day_of_week.is_some() {
        s.day_of_week = body.day_of_week;
    }
    if let Some(checks) = body.target_check_names {
        s.target_check_names = checks;
    }
    schedule::validate(
        &s.frequency,
        s.day_of_month.as_deref(),
        s.day_of_week.as_deref(),
    )?;
    s.next_run = a.clock.next_run(&s, crate::store::now());
    a.put_scheduled_audit(&s)?;
    Ok(axum::Json(
        json!({"scheduledAuditArn": scheduled_arn(&a, &name)}),
    ))
}

async fn delete_scheduled(State(a): State<Arc<Audits>>, Path(name): Path<String>) -> Answer {
    if !a.delete_scheduled_audit(&name)? {
        return Err(
            DefenderError::NotFound(format!("scheduled audit {name} does not exist")).into(),
        );
    }
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn list_scheduled(State(a): State<Arc<Audits>>, Query(q): Query<PageQuery>) -> Answer {
    let items: Vec<Value> = a
        .scheduled_audits()?
        .iter()
        .map(|s| {
            let mut v = schedule_json(&a, s);
            if let Some(o) = v.as_object_mut() {
                o.remove("targetCheckNames");
            }
            v
        })
        .collect();
    let (items, next) = crate::api::page(items, q.next_token.as_deref(), q.max_results)?;
    let mut out = json!({"scheduledAudits": items});
    if let Some(next) = next {
        out["nextToken"] = json!(next);
    }
    Ok(axum::Json(out))
}
