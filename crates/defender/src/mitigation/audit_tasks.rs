//! Audit mitigation tasks: StartAuditMitigationActionsTask applies the actions mapped to each
//! check (`auditCheckToActionsMapping`) to the findings of an audit task (optionally only those
//! with given reason codes) or to findings named by id, at once, and stores the task with one
//! execution per finding and action; Describe/ListAuditMitigationActionsTasks and
//! ListAuditMitigationActionsExecutions read it back. A task has ended by the time it is
//! started, so CancelAuditMitigationActionsTask finds nothing in progress to cancel.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use fleetcore_core::WriteBatch;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ActionRecord, Mitigations, TABLE, actions, existing};
use crate::audit::Audits;
use crate::error::DefenderError;
use crate::store::now;

const PREFIX: &str = "audittask/";

type Answer = Result<axum::Json<Value>, ApiError>;

/// The routes; register with `ControlPlane::service_routes("iot", routes(m, audits))`.
pub fn routes(m: Arc<Mitigations>, audits: Arc<Audits>) -> Router {
    Router::new()
        .route("/audit/mitigationactions/tasks", get(list_tasks))
        .route(
            "/audit/mitigationactions/tasks/{taskId}",
            post(start_task).get(describe_task),
        )
        .route(
            "/audit/mitigationactions/tasks/{taskId}/cancel",
            put(cancel_task),
        )
        .route("/audit/mitigationactions/executions", get(list_executions))
        .with_state((m, audits))
}

type Shared = State<(Arc<Mitigations>, Arc<Audits>)>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    audit_task_id: Option<String>,
    #[serde(default)]
    finding_ids: Option<Vec<String>>,
    #[serde(default)]
    audit_check_to_reason_code_filter: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    target: Target,
    audit_check_to_actions_mapping: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    client_request_token: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    DefenderError::Invalid(message.into()).into()
}

/// The findings the target names.
fn target_findings(audits: &Audits, t: &Target) -> Result<Vec<Value>, ApiError> {
    match (&t.audit_task_id, &t.finding_ids) {
        (Some(task), None) => {
            let task = audits.task(task)?.ok_or_else(|| {
                ApiError::from(DefenderError::NotFound(format!(
                    "audit task {task} does not exist"
                )))
            })?;
            Ok(task
                .findings
                .into_iter()
                .filter(|f| {
                    t.audit_check_to_reason_code_filter
                        .as_ref()
                        .is_none_or(|filter| {
                            f["checkName"].as_str().is_some_and(|c| {
                                filter.get(c).is_some_and(|codes| {
                                    codes
                                        .iter()
                                        .any(|code| f["reasonForNonComplianceCode"] == **code)
                                })
                            })
                        })
                })
                .collect())
        }
        (None, Some(ids)) if !ids.is_empty() => {
            if t.audit_check_to_reason_code_filter.is_some() {
                return Err(invalid(
                    "auditCheckToReasonCodeFilter goes with auditTaskId, not findingIds",
                ));
            }
            let all: Vec<Value> = audits
                .tasks()?
                .into_iter()
                .flat_map(|t| t.findings)
                .collect();
            ids.iter()
                .map(|id| {
                    all.iter()
                        .find(|f| f["findingId"] == id.as_str())
                        .cloned()
                        .ok_or_else(|| {
                            DefenderError::NotFound(format!("finding {id} does not exist")).into()
                        })
                })
                .collect()
        }
        _ => Err(invalid("target takes either auditTaskId or findingIds")),
    }
}

async fn start_task(
    State((m, audits)): Shared,
    Path(task_id): Path<String>,
    Json(body): Json<StartBody>,
) -> Answer {
    if body
        .client_request_token
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(invalid("clientRequestToken is required"));
    }
    if body.audit_check_to_actions_mapping.is_empty() {
        return Err(invalid("auditCheckToActionsMapping is empty"));
    }
    let mut mapping: BTreeMap<String, Vec<ActionRecord>> = BTreeMap::new();
    for (check, names) in &body.audit_check_to_actions_mapping {
        if names.is_empty() {
            return Err(invalid(format!("no action is mapped to {check}")));
        }
        let records = names
            .iter()
            .map(|n| existing(&m, n))
            .collect::<Result<Vec<_>, _>>()?;
        mapping.insert(check.clone(), records);
    }
    let findings = target_findings(&audits, &body.target)?;
    let key = format!("{PREFIX}{task_id}");
    m.reserve_task(&key, &task_id)?;
    let started = now();
    let mut statistics: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let mut executions = Vec::new();
    for f in &findings {
        let check = f["checkName"].as_str().unwrap_or_default();
        let Some(actions_of_check) = mapping.get(check) else {
            continue;
        };
        // total, failed, succeeded, skipped findings of the check
        let stats = statistics.entry(check.to_string()).or_default();
        stats[0] += 1;
        let (mut failed, mut done) = (false, false);
        for a in actions_of_check {
            let begun = now();
            let outcome = m.apply(a, actions::Subject::Finding(f)).await;
            let (status, message) = match &outcome {
                Ok(actions::Applied::Done) => {
                    done = true;
                    ("COMPLETED", None)
                }
                Ok(actions::Applied::Skipped(why)) => ("SKIPPED", Some(why.clone())),
                Err(e) => {
                    failed = true;
                    tracing::warn!(finding = %f["findingId"], action = %a.name, error = %e, "an audit mitigation failed");
                    ("FAILED", Some(e.clone()))
                }
            };
            executions.push(json!({
                "taskId": task_id,
                "findingId": f["findingId"],
                "actionName": a.name,
                "actionId": a.id,
                "status": status,
                "startTime": begun,
                "endTime": now(),
                "errorCode": outcome.as_ref().err().map(|_| "INTERNAL_FAILURE"),
                "message": message,
            }));
        }
        if failed {
            stats[1] += 1;
        } else if done {
            stats[2] += 1;
        } else {
            stats[3] += 1;
        }
    }
    let any_failed = statistics.values().any(|s| s[1] > 0);
    let task = json!({
        "taskId": task_id,
        "taskStatus": if any_failed { "FAILED" } else { "COMPLETED" },
        "startTime": started,
        "endTime": now(),
        "auditTaskId": body.target.audit_task_id,
        "findingIds": findings.iter().map(|f| f["findingId"].clone()).collect::<Vec<_>>(),
        "taskStatistics": statistics.iter().map(|(c, s)| (c.clone(), json!({
            "totalFindingsCount": s[0], "failedFindingsCount": s[1],
            "succeededFindingsCount": s[2], "skippedFindingsCount": s[3],
            "canceledFindingsCount": 0,
        }))).collect::<BTreeMap<_, _>>(),
        "target": {
            "auditTaskId": body.target.audit_task_id,
            "findingIds": body.target.finding_ids,
            "auditCheckToReasonCodeFilter": body.target.audit_check_to_reason_code_filter,
        },
        "auditCheckToActionsMapping": body.audit_check_to_actions_mapping,
        "actionsDefinition": mapping.values().flatten().map(|a| json!({
            "name": a.name, "id": a.id, "roleArn": a.role_arn, "actionParams": a.params})).collect::<Vec<_>>(),
        "executions": executions,
    });
    let mut batch = WriteBatch::new();
    batch.put(
        TABLE,
        key.into_bytes(),
        serde_json::to_vec(&task).unwrap_or_default(),
    );
    m.store.apply(batch).map_err(DefenderError::from)?;
    Ok(axum::Json(json!({"taskId": task_id})))
}

fn stored_task(m: &Mitigations, task_id: &str) -> Result<Value, ApiError> {
    let bytes = m
        .store
        .get(TABLE, format!("{PREFIX}{task_id}").as_bytes())
        .map_err(DefenderError::from)?
        .ok_or_else(|| {
            ApiError::from(DefenderError::NotFound(format!(
                "audit mitigation task {task_id} does not exist"
            )))
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("a stored task does not parse: {e}")))
}

fn stored_tasks(m: &Mitigations) -> Result<Vec<Value>, ApiError> {
    Ok(m.store
        .scan_prefix(TABLE, PREFIX.as_bytes())
        .map_err(DefenderError::from)?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

async fn describe_task(State((m, _)): Shared, Path(task_id): Path<String>) -> Answer {
    let t = stored_task(&m, &task_id)?;
    Ok(axum::Json(json!({
        "taskStatus": t["taskStatus"],
        "startTime": t["startTime"],
        "endTime": t["endTime"],
        "taskStatistics": t["taskStatistics"],
        "target": t["target"],
        "auditCheckToActionsMapping": t["auditCheckToActionsMapping"],
        "actionsDefinition": t["actionsDefinition"],
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasksQuery {
    #[serde(default)]
    audit_task_id: Option<String>,
    #[serde(default)]
    finding_id: Option<String>,
    #[serde(default)]
    task_status: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn list_tasks(State((m, _)): Shared, Query(q): Query<ListTasksQuery>) -> Answer {
    let start = crate::api::parse_time("startTime", q.start_time.as_deref())?;
    let end = crate::api::parse_time("endTime", q.end_time.as_deref())?;
    let mut tasks: Vec<Value> = stored_tasks(&m)?
        .into_iter()
        .filter(|t| {
            t["startTime"].as_f64().is_some_and(|s| s >= start && s <= end)
                && q.audit_task_id
                    .as_deref()
                    .is_none_or(|id| t["auditTaskId"] == id)
                && q.finding_id.as_deref().is_none_or(|id| {
                    t["findingIds"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|f| f == id))
                })
                && q.task_status
                    .as_deref()
                    .is_none_or(|s| t["taskStatus"] == s)
        })
        .map(|t| json!({"taskId": t["taskId"], "startTime": t["startTime"], "taskStatus": t["taskStatus"]}))
        .collect();
    tasks.sort_by(|a, b| {
        a["startTime"]
            .as_f64()
            .unwrap_or_default()
            .total_cmp(&b["startTime"].as_f64().unwrap_or_default())
    });
    let (items, next) = crate::api::page(tasks, q.next_token.as_deref(), q.max_results)?;
    let mut out = json!({"tasks": items});
    if let Some(next) = next {
        out["nextToken"] = json!(next);
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionsQuery {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    action_status: Option<String>,
    #[serde(default)]
    finding_id: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn list_executions(State((m, _)): Shared, Query(q): Query<ExecutionsQuery>) -> Answer {
    let task_id = q
        .task_id
        .as_deref()
        .ok_or_else(|| invalid("taskId is required"))?;
    let t = stored_task(&m, task_id)?;
    let executions: Vec<Value> = t["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            q.action_status.as_deref().is_none_or(|s| e["status"] == s)
                && q.finding_id.as_deref().is_none_or(|f| e["findingId"] == f)
        })
        .collect();
    let (items, next) = crate::api::page(executions, q.next_token.as_deref(), q.max_results)?;
    let mut out = json!({"actionsExecutions": items});
    if let Some(next) = next {
        out["nextToken"] = json!(next);
    }
    Ok(axum::Json(out))
}

async fn cancel_task(State((m, _)): Shared, Path(task_id): Path<String>) -> Answer {
    let t = stored_task(&m, &task_id)?;
    Err(invalid(format!(
        "audit mitigation task {task_id} is {}; only a task in progress can be canceled, and this server runs a task to its end when it starts",
        t["taskStatus"].as_str().unwrap_or("ended")
    )))
}
