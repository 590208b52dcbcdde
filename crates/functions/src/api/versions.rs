//! PublishVersion, ListVersionsByFunction, aliases, AddPermission / GetPolicy /
//! RemovePermission, and reserved concurrency.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::LambdaState;
use super::shapes::{alias, configuration};
use crate::FunctionsError;
use crate::model::FunctionRef;

fn name_of(text: &str) -> Result<String, ApiError> {
    Ok(FunctionRef::parse(text, None)?.name)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct PublishRequest {
    description: Option<String>,
}

pub(super) async fn publish(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    let config = state
        .functions
        .publish_version(&name_of(&name)?, request.description)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(configuration(&state.functions, &config)),
    )
        .into_response())
}

pub(super) async fn list(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let versions: Vec<Value> = state
        .functions
        .versions(&name_of(&name)?)?
        .iter()
        .map(|c| configuration(&state.functions, c))
        .collect();
    Ok(axum::Json(json!({ "Versions": versions })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct AliasRequest {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
}

pub(super) async fn create_alias(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<AliasRequest>,
) -> Result<Response, ApiError> {
    let function = name_of(&name)?;
    let alias_name = request
        .name
        .ok_or_else(|| FunctionsError::InvalidParameter("Name is required.".into()))?;
    let record = state
        .functions
        .put_alias(
            &function,
            &alias_name,
            request.function_version,
            request.description,
            true,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(alias(&state.functions, &function, &record)),
    )
        .into_response())
}

pub(super) async fn update_alias(
    State(state): State<LambdaState>,
    Path((name, alias_name)): Path<(String, String)>,
    Json(request): Json<AliasRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let function = name_of(&name)?;
    let record = state
        .functions
        .put_alias(
            &function,
            &alias_name,
            request.function_version,
            request.description,
            false,
        )
        .await?;
    Ok(axum::Json(alias(&state.functions, &function, &record)))
}

pub(super) async fn get_alias(
    State(state): State<LambdaState>,
    Path((name, alias_name)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let function = name_of(&name)?;
    let record = state.functions.alias(&function, &alias_name)?;
    Ok(axum::Json(alias(&state.functions, &function, &record)))
}

pub(super) async fn list_aliases(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let function = name_of(&name)?;
    let aliases: Vec<Value> = state
        .functions
        .get_record(&function)?
        .aliases
        .values()
        .map(|a| alias(&state.functions, &function, a))
        .collect();
    Ok(axum::Json(json!({ "Aliases": aliases })))
}

pub(super) async fn delete_alias(
    State(state): State<LambdaState>,
    Path((name, alias_name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .functions
        .delete_alias(&name_of(&name)?, &alias_name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct PermissionRequest {
    statement_id: String,
    action: String,
    principal: String,
    source_arn: Option<String>,
    source_account: Option<String>,
}

pub(super) async fn add_permission(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<PermissionRequest>,
) -> Result<Response, ApiError> {
    let function = name_of(&name)?;
    if request.statement_id.is_empty() || request.action.is_empty() || request.principal.is_empty()
    {
        return Err(FunctionsError::InvalidParameter(
            "StatementId, Action and Principal are required.".into(),
        )
        .into());
    }
    let principal = if request.principal.contains(".amazonaws.com") {
        json!({ "Service": request.principal })
    } else {
        json!({ "AWS": request.principal })
    };
    let mut statement = json!({
        "Sid": request.statement_id,
        "Effect": "Allow",
        "Principal": principal,
        "Action": request.action,
        "Resource": state.functions.arn(&function, None),
    });
    let mut condition = serde_json::Map::new();
    if let Some(arn) = request.source_arn {
        condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": arn }));
    }
    if let Some(account) = request.source_account {
        condition.insert(
            "StringEquals".into(),
            json!({ "AWS:SourceAccount": account }),
        );
    }
    if !condition.is_empty() {
        statement["Condition"] = Value::Object(condition);
    }
    let text = statement.to_string();
    state
        .functions
        .add_permission(&function, &request.statement_id, text.clone())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "Statement": text })),
    )
        .into_response())
}

pub(super) async fn get_policy(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let function = name_of(&name)?;
    let record = state.functions.get_record(&function)?;
    if record.policy.is_empty() {
        return Err(
            FunctionsError::NotFound("The resource you requested does not exist.".into()).into(),
        );
    }
    let statements: Vec<Value> = record
        .policy
        .values()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let policy = json!({"Version": "2012-10-17", "Id": "default", "Statement": statements});
    Ok(axum::Json(json!({
        "Policy": policy.to_string(),
        "RevisionId": record.latest.revision_id,
    })))
}

pub(super) async fn remove_permission(
    State(state): State<LambdaState>,
    Path((name, sid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .functions
        .remove_permission(&name_of(&name)?, &sid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct ConcurrencyRequest {
    reserved_concurrent_executions: Option<u32>,
}

pub(super) async fn put_concurrency(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<ConcurrencyRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let n = request.reserved_concurrent_executions.ok_or_else(|| {
        FunctionsError::InvalidParameter("ReservedConcurrentExecutions is required.".into())
    })?;
    if n > 1000 {
        return Err(FunctionsError::InvalidParameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's \
             UnreservedConcurrentExecution below its minimum value of [100]: {n}"
        ))
        .into());
    }
    state
        .functions
        .set_concurrency(&name_of(&name)?, Some(n))
        .await?;
    Ok(axum::Json(json!({ "ReservedConcurrentExecutions": n })))
}

pub(super) async fn delete_concurrency(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .functions
        .set_concurrency(&name_of(&name)?, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_concurrency(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = state.functions.get_record(&name_of(&name)?)?;
    Ok(axum::Json(match record.reserved_concurrency {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    }))
}
