//! GetThingShadow, UpdateThingShadow, DeleteThingShadow and ListNamedShadowsForThing.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetcore_identity::policy::IotAction;
use fleetcore_shadow::{Operation, ShadowId, now_secs};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, IotDataState};
use crate::error::ApiError;
use crate::extract::Query;

/// Largest page of ListNamedShadowsForThing (the model's `PageSize` maximum).
const MAX_PAGE_SIZE: usize = 100;

pub(super) fn routes() -> Router<IotDataState> {
    Router::new()
        .route(
            "/things/{thing_name}/shadow",
            get(get_shadow).post(update_shadow).delete(delete_shadow),
        )
        .route(
            "/api/things/shadow/ListNamedShadowsForThing/{thing_name}",
            get(list_named_shadows),
        )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ShadowQuery {
    name: Option<String>,
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn run(
    state: IotDataState,
    caller: Caller,
    thing: String,
    name: Option<String>,
    operation: Operation,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let id = ShadowId::new(&thing, name.as_deref())?;
    let action = match operation {
        Operation::Get => IotAction::GetThingShadow,
        Operation::Update => IotAction::UpdateThingShadow,
        Operation::Delete => IotAction::DeleteThingShadow,
    };
    caller.authorize(action, &state.arns.thing(&id.thing))?;
    let answer = state.shadows.request(id, operation, payload).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

async fn get_shadow(
    State(state): State<IotDataState>,
    caller: Caller,
    Path(thing): Path<String>,
    Query(q): Query<ShadowQuery>,
) -> Result<Response, ApiError> {
    run(state, caller, thing, q.name, Operation::Get, Bytes::new()).await
}

async fn update_shadow(
    State(state): State<IotDataState>,
    caller: Caller,
    Path(thing): Path<String>,
    Query(q): Query<ShadowQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    run(state, caller, thing, q.name, Operation::Update, body).await
}

async fn delete_shadow(
    State(state): State<IotDataState>,
    caller: Caller,
    Path(thing): Path<String>,
    Query(q): Query<ShadowQuery>,
) -> Result<Response, ApiError> {
    run(
        state,
        caller,
        thing,
        q.name,
        Operation::Delete,
        Bytes::new(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ListQuery {
    next_token: Option<String>,
    page_size: Option<usize>,
}

async fn list_named_shadows(
    State(state): State<IotDataState>,
    caller: Caller,
    Path(thing): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let page_size = q.page_size.unwrap_or(MAX_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::invalid_request(format!(
            "pageSize must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    fleetcore_shadow::topic::validate_thing_name(&thing)?;
    caller.authorize(
        IotAction::ListNamedShadowsForThing,
        &state.arns.thing(&thing),
    )?;
    let shadows = state.shadows.clone();
    let token = q.next_token.filter(|t| !t.is_empty());
    let (results, next) = tokio::task::spawn_blocking(move || {
        shadows.list_named(&thing, token.as_deref(), page_size)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let mut body = json!({ "results": results, "timestamp": now_secs() });
    if let Some(next) = next {
        body["nextToken"] = Value::String(next);
    }
    Ok(json_response(&body))
}
