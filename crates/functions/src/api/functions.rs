//! CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions, UpdateFunctionCode,
//! UpdateFunctionConfiguration, DeleteFunction.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::LambdaState;
use super::shapes::configuration;
use crate::FunctionsError;
use crate::model::FunctionRef;
use crate::service::{ConfigurationChange, NewFunction};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct Code {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct Environment {
    variables: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct CreateRequest {
    function_name: String,
    runtime: Option<String>,
    role: String,
    handler: Option<String>,
    code: Code,
    description: String,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    publish: bool,
    environment: Option<Environment>,
    package_type: Option<String>,
}

/// The zip of a `Code` / UpdateFunctionCode body: inline only (there is no S3 to fetch from).
fn zip_of(zip_file: Option<&str>, s3: bool, image: bool) -> Result<Vec<u8>, FunctionsError> {
    if image {
        return Err(FunctionsError::InvalidParameter(
            "Container images are not supported by this server: upload a .zip (ZipFile)".into(),
        ));
    }
    if s3 {
        return Err(FunctionsError::InvalidParameter(
            "Code from S3 is not supported by this server: upload the .zip inline (ZipFile)".into(),
        ));
    }
    let text = zip_file.ok_or_else(|| {
        FunctionsError::InvalidParameter("Please provide a source for function code.".into())
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| FunctionsError::InvalidParameter(format!("ZipFile is not base64: {e}")))
}

fn reference(name: &str, qualifier: Option<&str>) -> Result<FunctionRef, ApiError> {
    FunctionRef::parse(name, qualifier).map_err(ApiError::from)
}

pub(super) async fn create(
    State(state): State<LambdaState>,
    Json(request): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    if request.package_type.as_deref().is_some_and(|t| t != "Zip") {
        return Err(FunctionsError::InvalidParameter(
            "Only PackageType Zip is supported by this server".into(),
        )
        .into());
    }
    let zip = zip_of(
        request.code.zip_file.as_deref(),
        request.code.s3_bucket.is_some(),
        request.code.image_uri.is_some(),
    )?;
    let runtime = request.runtime.ok_or_else(|| {
        FunctionsError::InvalidParameter("Runtime is required for .zip deployment packages.".into())
    })?;
    let config = state
        .functions
        .create(NewFunction {
            name: request.function_name,
            settings: ConfigurationChange {
                runtime: Some(runtime),
                handler: request.handler,
                role: Some(request.role),
                description: Some(request.description),
                timeout: request.timeout,
                memory_size: request.memory_size,
                environment: request.environment.map(|e| e.variables),
                revision_id: None,
            },
            zip,
            publish: request.publish,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(configuration(&state.functions, &config)),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

impl QualifierQuery {
    /// The `Qualifier` query parameter, if given.
    pub(super) fn qualifier(&self) -> Option<&str> {
        self.qualifier.as_deref()
    }
}

pub(super) async fn get(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let reference = reference(&name, query.qualifier())?;
    let config = state.functions.resolve(&reference)?;
    let record = state.functions.get_record(&reference.name)?;
    let location = state.functions.code_location(&config)?;
    let mut body = json!({
        "Configuration": configuration(&state.functions, &config),
        "Code": {
            "RepositoryType": "S3",
            "Location": format!("file://{}", location.display()),
        },
        "Tags": {},
    });
    if let Some(n) = record.reserved_concurrency {
        body["Concurrency"] = json!({"ReservedConcurrentExecutions": n});
    }
    Ok(axum::Json(body))
}

pub(super) async fn get_configuration(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let reference = reference(&name, query.qualifier())?;
    let config = state.functions.resolve(&reference)?;
    Ok(axum::Json(configuration(&state.functions, &config)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<usize>,
}

pub(super) async fn list(
    State(state): State<LambdaState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = query.max_items.unwrap_or(50).clamp(1, 10_000);
    let all = state.functions.list();
    let page: Vec<_> = all
        .iter()
        .filter(|c| query.marker.as_deref().is_none_or(|m| c.name.as_str() > m))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let shown: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|c| configuration(&state.functions, c))
        .collect();
    let mut body = json!({ "Functions": shown });
    if more && let Some(last) = page.get(limit - 1) {
        body["NextMarker"] = json!(last.name);
    }
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct UpdateCodeRequest {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    publish: bool,
    revision_id: Option<String>,
}

pub(super) async fn update_code(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<UpdateCodeRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let reference = reference(&name, None)?;
    let zip = zip_of(
        request.zip_file.as_deref(),
        request.s3_bucket.is_some(),
        request.image_uri.is_some(),
    )?;
    let config = state
        .functions
        .update_code(&reference.name, zip, request.publish, request.revision_id)
        .await?;
    Ok(axum::Json(configuration(&state.functions, &config)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct UpdateConfigurationRequest {
    runtime: Option<String>,
    handler: Option<String>,
    role: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    revision_id: Option<String>,
}

pub(super) async fn update_configuration(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Json(request): Json<UpdateConfigurationRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let reference = reference(&name, None)?;
    let config = state
        .functions
        .update_configuration(
            &reference.name,
            ConfigurationChange {
                runtime: request.runtime,
                handler: request.handler,
                role: request.role,
                description: request.description,
                timeout: request.timeout,
                memory_size: request.memory_size,
                environment: request.environment.map(|e| e.variables),
                revision_id: request.revision_id,
            },
        )
        .await?;
    Ok(axum::Json(configuration(&state.functions, &config)))
}

pub(super) async fn delete(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<StatusCode, ApiError> {
    let reference = reference(&name, query.qualifier())?;
    state
        .functions
        .delete(&reference.name, reference.qualifier.as_deref())
        .await?;
    if reference.qualifier.is_none() {
        state.mappings.function_deleted(&reference.name).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
