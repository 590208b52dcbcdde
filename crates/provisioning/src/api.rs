//! The provisioning operations of the `iot` service, contributed to it with
//! `ControlPlane::service_routes("iot", provisioning::api::routes(...))`: the template and
//! template-version operations and RegisterThing.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ProvisioningError;
use crate::service::Provisioning;
use crate::store::{self, PreProvisioningHook, TemplateRecord, TemplateType, validate_name};

/// The routes; register with `ControlPlane::service_routes("iot", routes(provisioning))`.
pub fn routes(provisioning: Arc<Provisioning>) -> Router {
    Router::new()
        .route(
            "/provisioning-templates",
            post(create_template).get(list_templates),
        )
        .route(
            "/provisioning-templates/{templateName}",
            get(describe_template)
                .patch(update_template)
                .delete(delete_template),
        )
        .route(
            "/provisioning-templates/{templateName}/versions",
            post(create_version).get(list_versions),
        )
        .route(
            "/provisioning-templates/{templateName}/versions/{versionId}",
            get(describe_version).delete(delete_version),
        )
        .route("/things", post(register_thing))
        .with_state(provisioning)
}

impl From<ProvisioningError> for ApiError {
    fn from(error: ProvisioningError) -> ApiError {
        let message = error.to_string();
        match error {
            ProvisioningError::NotFound(_) => ApiError::not_found(message),
            ProvisioningError::AlreadyExists(_) => ApiError::new(
                "ResourceAlreadyExistsException",
                StatusCode::CONFLICT,
                message,
            ),
            ProvisioningError::Invalid(_)
            | ProvisioningError::Parameters(_)
            | ProvisioningError::Csr(_)
            | ProvisioningError::Token(_)
            | ProvisioningError::Refused(_) => ApiError::invalid_request(message),
            ProvisioningError::VersionsLimit(_) => ApiError::new(
                "VersionsLimitExceededException",
                StatusCode::CONFLICT,
                message,
            ),
            ProvisioningError::Conflict(_) => {
                ApiError::new("DeleteConflictException", StatusCode::CONFLICT, message)
            }
            ProvisioningError::Throttled(_) => {
                ApiError::new("ThrottlingException", StatusCode::BAD_REQUEST, message)
            }
            ProvisioningError::Registry(e) => e.into(),
            ProvisioningError::Policy(e) => e.into(),
            ProvisioningError::Store(_) | ProvisioningError::Internal(_) => {
                tracing::error!(error = %message, "provisioning operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookBody {
    target_arn: String,
    #[serde(default)]
    payload_version: Option<String>,
}

fn hook(body: HookBody) -> Result<PreProvisioningHook, ProvisioningError> {
    let payload_version = body.payload_version.unwrap_or_else(|| "2020-04-01".into());
    if payload_version != "2020-04-01" {
        return Err(ProvisioningError::Invalid(format!(
            "preProvisioningHook.payloadVersion must be 2020-04-01, not {payload_version:?}"
        )));
    }
    if body.target_arn.is_empty() {
        return Err(ProvisioningError::Invalid(
            "preProvisioningHook.targetArn is required".into(),
        ));
    }
    Ok(PreProvisioningHook {
        target_arn: body.target_arn,
        payload_version,
    })
}

fn check_role(role: &str) -> Result<(), ProvisioningError> {
    if role.len() < 20 || !role.starts_with("arn:") {
        return Err(ProvisioningError::Invalid(format!(
            "provisioningRoleArn {role:?} is not a role ARN"
        )));
    }
    Ok(())
}

fn check_description(d: &Option<String>) -> Result<(), ProvisioningError> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ProvisioningError::Invalid(
            "description is longer than 500 characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    template_name: String,
    #[serde(default)]
    description: Option<String>,
    template_body: String,
    #[serde(default)]
    enabled: Option<bool>,
    provisioning_role_arn: String,
    #[serde(default)]
    pre_provisioning_hook: Option<HookBody>,
    #[serde(default, rename = "type")]
    template_type: Option<String>,
    #[serde(default)]
    tags: Option<Vec<Value>>,
}

async fn create_template(
    State(p): State<Arc<Provisioning>>,
    Json(body): Json<CreateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    validate_name(&body.template_name)?;
    if body.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid_request(
            "tags on provisioning templates are not supported by this server",
        ));
    }
    check_description(&body.description)?;
    check_role(&body.provisioning_role_arn)?;
    let template_type = match &body.template_type {
        Some(t) => TemplateType::parse(t)?,
        None => TemplateType::FleetProvisioning,
    };
    p.check_body(&body.template_body, template_type)?;
    let pre_provisioning_hook = body.pre_provisioning_hook.map(hook).transpose()?;
    if template_type == TemplateType::Jitp && pre_provisioning_hook.is_some() {
        return Err(ProvisioningError::Invalid(
            "a JITP template cannot have a preProvisioningHook".into(),
        )
        .into());
    }
    let now = store::now();
    let record = TemplateRecord {
        name: body.template_name.clone(),
        description: body.description,
        enabled: body.enabled.unwrap_or(false),
        provisioning_role_arn: body.provisioning_role_arn,
        template_type,
        pre_provisioning_hook,
        creation_date: now,
        last_modified_date: now,
        default_version_id: 1,
        next_version_id: 2,
    };
    p.templates().create(record, body.template_body)?;
    Ok(axum::Json(json!({
        "templateArn": p.template_arn(&body.template_name),
        "templateName": body.template_name,
        "defaultVersionId": 1,
    })))
}

async fn describe_template(
    State(p): State<Arc<Provisioning>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = p.templates().record(&name)?;
    let body = p
        .templates()
        .version(&name, record.default_version_id)?
        .body;
    let mut out = json!({
        "templateArn": p.template_arn(&name),
        "templateName": record.name,
        "creationDate": record.creation_date,
        "lastModifiedDate": record.last_modified_date,
        "defaultVersionId": record.default_version_id,
        "templateBody": body,
        "enabled": record.enabled,
        "provisioningRoleArn": record.provisioning_role_arn,
        "type": record.template_type.as_str(),
    });
    if let Some(d) = record.description {
        out["description"] = Value::String(d);
    }
    if let Some(h) = record.pre_provisioning_hook {
        out["preProvisioningHook"] =
            json!({"targetArn": h.target_arn, "payloadVersion": h.payload_version});
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// A page of `items` (sorted) after `next_token` (the last key of the previous page).
fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    q: &PageQuery,
) -> Result<(Vec<T>, Option<String>), ProvisioningError> {
    let size = q.max_results.unwrap_or(250);
    if !(1..=250).contains(&size) {
        return Err(ProvisioningError::Invalid(
            "maxResults must be between 1 and 250".into(),
        ));
    }
    let start = match &q.next_token {
        Some(t) => items
            .iter()
            .position(|i| key(i) > *t)
            .unwrap_or(items.len()),
        None => 0,
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > size;
    rest.truncate(size);
    let next = if more { rest.last().map(&key) } else { None };
    Ok((rest, next))
}

async fn list_templates(
    State(p): State<Arc<Provisioning>>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (records, next) = page(p.templates().list()?, |r| r.name.clone(), &q)?;
    let templates: Vec<Value> = records
        .into_iter()
        .map(|r| {
            let mut t = json!({
                "templateArn": p.template_arn(&r.name),
                "templateName": r.name,
                "creationDate": r.creation_date,
                "lastModifiedDate": r.last_modified_date,
                "enabled": r.enabled,
                "type": r.template_type.as_str(),
            });
            if let Some(d) = r.description {
                t["description"] = Value::String(d);
            }
            t
        })
        .collect();
    let mut out = json!({ "templates": templates });
    if let Some(n) = next {
        out["nextToken"] = Value::String(n);
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    description: Option<String>,
    enabled: Option<bool>,
    default_version_id: Option<u32>,
    provisioning_role_arn: Option<String>,
    pre_provisioning_hook: Option<HookBody>,
    #[serde(default)]
    remove_pre_provisioning_hook: bool,
}

async fn update_template(
    State(p): State<Arc<Provisioning>>,
    Path(name): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_description(&body.description)?;
    if let Some(role) = &body.provisioning_role_arn {
        check_role(role)?;
    }
    if body.remove_pre_provisioning_hook && body.pre_provisioning_hook.is_some() {
        return Err(ApiError::invalid_request(
            "preProvisioningHook and removePreProvisioningHook cannot be given together",
        ));
    }
    let new_hook = body.pre_provisioning_hook.map(hook).transpose()?;
    p.templates().update(&name, |r| {
        if let Some(d) = body.description {
            r.description = Some(d);
        }
        if let Some(e) = body.enabled {
            r.enabled = e;
        }
        if let Some(v) = body.default_version_id {
            r.default_version_id = v;
        }
        if let Some(role) = body.provisioning_role_arn {
            r.provisioning_role_arn = role;
        }
        if let Some(h) = new_hook {
            if r.template_type == TemplateType::Jitp {
                return Err(ProvisioningError::Invalid(
                    "a JITP template cannot have a preProvisioningHook".into(),
                ));
            }
            r.pre_provisioning_hook = Some(h);
        }
        if body.remove_pre_provisioning_hook {
            r.pre_provisioning_hook = None;
        }
        Ok(())
    })?;
    Ok(axum::Json(json!({})))
}

async fn delete_template(
    State(p): State<Arc<Provisioning>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    p.templates().delete(&name)?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionBody {
    template_body: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetAsDefault {
    set_as_default: Option<bool>,
}

async fn create_version(
    State(p): State<Arc<Provisioning>>,
    Path(name): Path<String>,
    Query(q): Query<SetAsDefault>,
    Json(body): Json<VersionBody>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let record = p.templates().record(&name)?;
    p.check_body(&body.template_body, record.template_type)?;
    let (record, version) =
        p.templates()
            .add_version(&name, body.template_body, q.set_as_default.unwrap_or(false))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "templateArn": p.template_arn(&name),
            "templateName": name,
            "versionId": version.version_id,
            "isDefaultVersion": record.default_version_id == version.version_id,
        })),
    ))
}

fn version_id(text: &str) -> Result<u32, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_request(format!("versionId {text:?} is not a number")))
}

async fn describe_version(
    State(p): State<Arc<Provisioning>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = p.templates().record(&name)?;
    let v = p.templates().version(&name, version_id(&version)?)?;
    Ok(axum::Json(json!({
        "versionId": v.version_id,
        "creationDate": v.creation_date,
        "templateBody": v.body,
        "isDefaultVersion": record.default_version_id == v.version_id,
    })))
}

async fn list_versions(
    State(p): State<Arc<Provisioning>>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = p.templates().record(&name)?;
    let (versions, next) = page(
        p.templates().versions(&name)?,
        |v| format!("{:010}", v.version_id),
        &q,
    )?;
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|v| {
            json!({
                "versionId": v.version_id,
                "creationDate": v.creation_date,
                "isDefaultVersion": record.default_version_id == v.version_id,
            })
        })
        .collect();
    let mut out = json!({ "versions": versions });
    if let Some(n) = next {
        out["nextToken"] = Value::String(n);
    }
    Ok(axum::Json(out))
}

async fn delete_version(
    State(p): State<Arc<Provisioning>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    p.templates().delete_version(&name, version_id(&version)?)?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterThingBody {
    template_body: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn register_thing(
    State(p): State<Arc<Provisioning>>,
    Json(body): Json<RegisterThingBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (applied, arns) = p.register_thing(&body.template_body, &body.parameters)?;
    let mut out = json!({ "resourceArns": arns });
    if let Some(pem) = applied.certificate_pem {
        out["certificatePem"] = Value::String(pem);
    }
    Ok(axum::Json(out))
}
