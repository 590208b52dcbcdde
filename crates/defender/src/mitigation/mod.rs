//! Mitigation actions and mitigation tasks: CreateMitigationAction and its siblings store
//! actions of the kinds in [`actions`]; StartDetectMitigationActionsTask applies them at once to
//! the things of the alarms in force that the task targets, and StartAuditMitigationActionsTask
//! ([`audit_tasks`]) to the findings of an audit.

pub mod actions;
pub mod audit_tasks;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use fleetcore_api::ApiError;
use fleetcore_api::extract::Json;
use fleetcore_core::{KvStore, TopicPublisher, WriteBatch};
use fleetcore_identity::IdentityService;
use fleetcore_identity::certificates::CertificateStatus;
use fleetcore_identity::certificates::{CaCertificateStatus, CaCertificateUpdate};
use fleetcore_identity::policy::Policies;
use fleetcore_identity::registry::PageRequest;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::DefenderError;
use crate::logging::IotLogging;
use crate::service::Defender;
use crate::store::now;

const TABLE: &str = "defender_mitigation";

/// What mitigations do to things (the binary's identity service).
pub trait Mitigator: Send + Sync + 'static {
    /// Adds `thing` to `group`.
    fn add_to_group(&self, thing: &str, group: &str) -> Result<(), String>;
    /// Sets every certificate attached to `thing` INACTIVE; how many.
    fn deactivate_certificates(&self, thing: &str) -> Result<usize, String>;
    /// Whether thing group `name` exists.
    fn group_exists(&self, name: &str) -> bool;
    /// Whether `name` is a thing.
    fn is_thing(&self, name: &str) -> bool;
    /// Sets device certificate `id` INACTIVE.
    fn deactivate_certificate(&self, id: &str) -> Result<(), String>;
    /// Sets registered CA certificate `id` INACTIVE.
    fn deactivate_ca(&self, id: &str) -> Result<(), String>;
    /// The things device certificate `id` is attached to.
    fn things_of_certificate(&self, id: &str) -> Result<Vec<String>, String>;
}

impl Mitigator for IdentityService {
    fn add_to_group(&self, thing: &str, group: &str) -> Result<(), String> {
        self.registry()
            .add_thing_to_thing_group(group, thing)
            .map_err(|e| e.to_string())
    }

    fn deactivate_certificates(&self, thing: &str) -> Result<usize, String> {
        let mut done = 0;
        let mut page = PageRequest::first(250);
        loop {
            let principals = self
                .registry()
                .list_thing_principals(thing, None, &page)
                .map_err(|e| e.to_string())?;
            for p in &principals.items {
                self.certificates()
                    .update_certificate(&p.certificate_id, CertificateStatus::Inactive)
                    .map_err(|e| e.to_string())?;
                done += 1;
            }
            match principals.next_token {
                Some(t) => page = PageRequest::after(t, 250),
                None => return Ok(done),
            }
        }
    }

    fn group_exists(&self, name: &str) -> bool {
        self.registry().describe_thing_group(name).is_ok()
    }

    fn is_thing(&self, name: &str) -> bool {
        matches!(self.thing(name), Ok(Some(_)))
    }

    fn deactivate_certificate(&self, id: &str) -> Result<(), String> {
        self.certificates()
            .update_certificate(id, CertificateStatus::Inactive)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn deactivate_ca(&self, id: &str) -> Result<(), String> {
        self.certificates()
            .update_ca_certificate(
                id,
                CaCertificateUpdate {
                    new_status: Some(CaCertificateStatus::Inactive),
                    ..CaCertificateUpdate::default()
                },
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn things_of_certificate(&self, id: &str) -> Result<Vec<String>, String> {
        let arn = self.registry().certificate_arn(id);
        let mut out = Vec::new();
        let mut page = PageRequest::first(250);
        loop {
            let things = self
                .registry()
                .list_principal_things(&arn, None, &page)
                .map_err(|e| e.to_string())?;
            out.extend(things.items.into_iter().map(|t| t.thing_name));
            match things.next_token {
                Some(t) => page = PageRequest::after(t, 250),
                None => return Ok(out),
            }
        }
    }
}

/// A stored mitigation action.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActionRecord {
    name: String,
    id: String,
    role_arn: String,
    params: Value,
    creation_date: f64,
    last_modified_date: f64,
}

/// Mitigation actions and tasks.
pub struct Mitigations {
    store: Arc<dyn KvStore>,
    defender: Arc<Defender>,
    reach: actions::Reach,
    writing: Mutex<()>,
}

impl Mitigations {
    /// Actions stored in `store`, applied to `defender`'s alarms and to audit findings through
    /// `mitigator` (things, certificates), `policies`, `sns` and the `logging` options.
    pub fn new(
        store: Arc<dyn KvStore>,
        defender: Arc<Defender>,
        mitigator: Arc<dyn Mitigator>,
        policies: Arc<Policies>,
        sns: Arc<dyn TopicPublisher>,
        logging: Arc<IotLogging>,
    ) -> Mitigations {
        Mitigations {
            store,
            defender,
            reach: actions::Reach {
                mitigator,
                policies,
                sns,
                logging,
            },
            writing: Mutex::new(()),
        }
    }

    fn action(&self, name: &str) -> Result<Option<ActionRecord>, DefenderError> {
        self.store
            .get(TABLE, format!("action/{name}").as_bytes())?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    DefenderError::Store(fleetcore_core::StoreError::Backend {
                        operation: "decode",
                        message: format!("a stored mitigation action does not parse: {e}"),
                    })
                })
            })
            .transpose()
    }

    fn arn(&self, name: &str) -> String {
        self.defender
            .account()
            .iot_arn(format!("mitigationaction/{name}"))
            .to_string()
    }

    /// Claims task key `key` (TaskAlreadyExistsException when taken) with an IN_PROGRESS
    /// record, which the task's end replaces.
    fn reserve_task(&self, key: &str, task_id: &str) -> Result<(), ApiError> {
        let _writing = self.writing.lock();
        if self
            .store
            .get(TABLE, key.as_bytes())
            .map_err(DefenderError::from)?
            .is_some()
        {
            return Err(ApiError::new(
                "TaskAlreadyExistsException",
                axum::http::StatusCode::BAD_REQUEST,
                format!("task {task_id} already exists"),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            key.as_bytes().to_vec(),
            serde_json::to_vec(
                &json!({"taskId": task_id, "taskStatus": "IN_PROGRESS", "taskStartTime": now()}),
            )
            .unwrap_or_default(),
        );
        self.store.apply(batch).map_err(DefenderError::from)?;
        Ok(())
    }

    /// Applies `action` to `subject`.
    async fn apply(
        &self,
        action: &ActionRecord,
        subject: actions::Subject<'_>,
    ) -> Result<actions::Applied, String> {
        let kind = actions::kind_of(&action.params).map_err(|e| e.to_string())?;
        kind.apply(
            actions::params_of(&action.params, kind),
            subject,
            &self.reach,
        )
        .await
    }
}

type Answer = Result<axum::Json<Value>, ApiError>;

/// The routes; register with `ControlPlane::service_routes("iot", routes(mitigations))`.
pub fn routes(m: Arc<Mitigations>) -> Router {
    Router::new()
        .route("/mitigationactions/actions", get(list_actions))
        .route(
            "/mitigationactions/actions/{actionName}",
            axum::routing::post(create_action)
                .get(describe_action)
                .delete(delete_action),
        )
        .route(
            "/detect/mitigationactions/tasks/{taskId}",
            put(start_detect_task).get(describe_detect_task),
        )
        .with_state(m)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    role_arn: String,
    action_params: Value,
    #[serde(default)]
    tags: Option<Vec<Value>>,
}

async fn create_action(
    State(m): State<Arc<Mitigations>>,
    Path(name): Path<String>,
    Json(body): Json<CreateBody>,
) -> Answer {
    crate::profile::validate_name("actionName", &name)?;
    if body.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_request(
            "tags are not supported by this server",
        ));
    }
    if !body.role_arn.starts_with("arn:") {
        return Err(ApiError::invalid_request(format!(
            "roleArn {:?} is not a role ARN",
            body.role_arn
        )));
    }
    let kind = actions::kind_of(&body.action_params)?;
    kind.check(actions::params_of(&body.action_params, kind), &m.reach)?;
    let _writing = m.writing.lock();
    if m.action(&name)?.is_some() {
        return Err(DefenderError::AlreadyExists(format!(
            "mitigation action {name} already exists"
        ))
        .into());
    }
    let at = now();
    let record = ActionRecord {
        name: name.clone(),
        id: uuid::Uuid::new_v4().to_string(),
        role_arn: body.role_arn,
        params: body.action_params,
        creation_date: at,
        last_modified_date: at,
    };
    let mut batch = WriteBatch::new();
    batch.put(
        TABLE,
        format!("action/{name}").into_bytes(),
        serde_json::to_vec(&record).unwrap_or_default(),
    );
    m.store.apply(batch).map_err(DefenderError::from)?;
    Ok(axum::Json(
        json!({"actionArn": m.arn(&name), "actionId": record.id}),
    ))
}

fn existing(m: &Mitigations, name: &str) -> Result<ActionRecord, ApiError> {
    m.action(name)?.ok_or_else(|| {
        DefenderError::NotFound(format!("mitigation action {name} does not exist")).into()
    })
}

async fn describe_action(State(m): State<Arc<Mitigations>>, Path(name): Path<String>) -> Answer {
    let a = existing(&m, &name)?;
    Ok(axum::Json(json!({
        "actionName": a.name,
        "actionType": actions::kind_of(&a.params).map(|k| k.action_type()).unwrap_or_default(),
        "actionArn": m.arn(&a.name),
        "actionId": a.id,
        "roleArn": a.role_arn,
        "actionParams": a.params,
        "creationDate": a.creation_date,
        "lastModifiedDate": a.last_modified_date,
    })))
}

async fn delete_action(State(m): State<Arc<Mitigations>>, Path(name): Path<String>) -> Answer {
    let mut batch = WriteBatch::new();
    batch.delete(TABLE, format!("action/{name}").into_bytes());
    m.store.apply(batch).map_err(DefenderError::from)?;
    Ok(axum::Json(json!({})))
}

async fn list_actions(State(m): State<Arc<Mitigations>>) -> Answer {
    let items: Vec<Value> = m
        .store
        .scan_prefix(TABLE, b"action/")
        .map_err(DefenderError::from)?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice::<ActionRecord>(v).ok())
        .map(|a| json!({"actionName": a.name, "actionArn": m.arn(&a.name), "creationDate": a.creation_date}))
        .collect();
    Ok(axum::Json(json!({"actionIdentifiers": items})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskTarget {
    #[serde(default)]
    violation_ids: Option<Vec<String>>,
    #[serde(default)]
    security_profile_name: Option<String>,
    #[serde(default)]
    behavior_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartTaskBody {
    target: TaskTarget,
    actions: Vec<String>,
    #[serde(default)]
    violation_event_occurrence_range: Option<Value>,
    #[serde(default)]
    include_only_active_violations: Option<bool>,
    #[serde(default)]
    client_request_token: Option<String>,
}

async fn start_detect_task(
    State(m): State<Arc<Mitigations>>,
    Path(task_id): Path<String>,
    Json(body): Json<StartTaskBody>,
) -> Answer {
    if body
        .client_request_token
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::invalid_request("clientRequestToken is required"));
    }
    if body.violation_event_occurrence_range.is_some()
        || body.include_only_active_violations == Some(false)
    {
        return Err(ApiError::invalid_request(
            "this server applies Detect mitigations to the alarms in force only (violationEventOccurrenceRange and includeOnlyActiveViolations=false are not supported)",
        ));
    }
    if body.actions.is_empty() {
        return Err(ApiError::invalid_request("actions is empty"));
    }
    let t = &body.target;
    if t.violation_ids.is_none() && t.security_profile_name.is_none() {
        return Err(ApiError::invalid_request(
            "target needs violationIds or securityProfileName",
        ));
    }
    let actions = body
        .actions
        .iter()
        .map(|a| existing(&m, a))
        .collect::<Result<Vec<_>, _>>()?;
    let key = format!("task/{task_id}");
    m.reserve_task(&key, &task_id)?;
    let violations = m.defender.violations().active_where(|v| {
        t.violation_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&v.violation_id))
            && t.security_profile_name
                .as_deref()
                .is_none_or(|p| p == v.security_profile_name)
            && t.behavior_name
                .as_deref()
                .is_none_or(|b| b == v.behavior.name)
    });
    let (mut succeeded, mut failed) = (0u64, 0u64);
    let mut executions = Vec::new();
    let started = now();
    let mut skipped = 0u64;
    for v in &violations {
        let violation = v.to_json();
        for a in &actions {
            let subject = actions::Subject::Thing {
                name: &v.thing_name,
                violation: &violation,
            };
            let outcome = m.apply(a, subject).await;
            let (status, message) = match &outcome {
                Ok(actions::Applied::Done) => {
                    succeeded += 1;
                    ("SUCCESSFUL", None)
                }
                Ok(actions::Applied::Skipped(why)) => {
                    skipped += 1;
                    ("SKIPPED", Some(why.clone()))
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(thing = %v.thing_name, action = %a.name, error = %e, "a Defender mitigation failed");
                    ("FAILED", Some(e.clone()))
                }
            };
            executions.push(json!({
                "taskId": task_id, "violationId": v.violation_id, "actionName": a.name,
                "thingName": v.thing_name, "status": status,
                "executionStartDate": started, "executionEndDate": now(),
                "errorCode": outcome.as_ref().err().map(|_| "INTERNAL_FAILURE"),
                "message": message,
            }));
        }
    }
    let summary = json!({
        "taskId": task_id,
        "taskStatus": if failed == 0 { "SUCCESSFUL" } else { "FAILED" },
        "taskStartTime": started,
        "taskEndTime": now(),
        "target": {"violationIds": t.violation_ids, "securityProfileName": t.security_profile_name,
                   "behaviorName": t.behavior_name},
        "actionsDefinition": actions.iter().map(|a| json!({
            "name": a.name, "id": a.id, "roleArn": a.role_arn, "actionParams": a.params})).collect::<Vec<_>>(),
        "onlyActiveViolationsIncluded": true,
        "suppressedAlertsIncluded": false,
        "taskStatistics": {"actionsExecuted": succeeded + failed, "actionsSkipped": skipped, "actionsFailed": failed},
        "executions": executions,
    });
    let mut batch = WriteBatch::new();
    batch.put(
        TABLE,
        key.into_bytes(),
        serde_json::to_vec(&summary).unwrap_or_default(),
    );
    m.store.apply(batch).map_err(DefenderError::from)?;
    Ok(axum::Json(json!({"taskId": task_id})))
}

async fn describe_detect_task(
    State(m): State<Arc<Mitigations>>,
    Path(task_id): Path<String>,
) -> Answer {
    let bytes = m
        .store
        .get(TABLE, format!("task/{task_id}").as_bytes())
        .map_err(DefenderError::from)?
        .ok_or_else(|| {
            ApiError::from(DefenderError::NotFound(format!(
                "task {task_id} does not exist"
            )))
        })?;
    let mut summary: BTreeMap<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("a stored task does not parse: {e}")))?;
    summary.remove("executions");
    Ok(axum::Json(json!({"taskSummary": summary})))
}
