//! The `iotanalytics` service (signing name `iotanalytics`, REST-JSON) over the control plane.
//! Operations not routed here (logging options) are answered
//! UnknownOperationException 501 by the dispatcher's route tables.

mod channels;
mod datasets;
mod datastores;
mod messages;
mod pipelines;
mod tags;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use fleetcore_api::ApiError;
use serde::Deserialize;

use crate::Analytics;

/// The `iotanalytics` router, for `ControlPlane::service("iotanalytics", ...)`.
pub fn routes(analytics: Arc<Analytics>) -> Router {
    Router::new()
        .route("/channels", post(channels::create).get(channels::list))
        .route(
            "/channels/{name}",
            get(channels::describe)
                .put(channels::update)
                .delete(channels::delete),
        )
        .route("/channels/{name}/sample", get(messages::sample))
        .route("/messages/batch", post(messages::batch_put))
        .route("/pipelineactivities/run", post(messages::run_activity))
        .route(
            "/datastores",
            post(datastores::create).get(datastores::list),
        )
        .route(
            "/datastores/{name}",
            get(datastores::describe)
                .put(datastores::update)
                .delete(datastores::delete),
        )
        .route("/pipelines", post(pipelines::create).get(pipelines::list))
        .route(
            "/pipelines/{name}",
            get(pipelines::describe)
                .put(pipelines::update)
                .delete(pipelines::delete),
        )
        .route(
            "/pipelines/{name}/reprocessing",
            post(pipelines::start_reprocessing),
        )
        .route(
            "/pipelines/{name}/reprocessing/{id}",
            axum::routing::delete(pipelines::cancel_reprocessing),
        )
        .route("/datasets", post(datasets::create).get(datasets::list))
        .route(
            "/datasets/{name}",
            get(datasets::describe)
                .put(datasets::update)
                .delete(datasets::delete),
        )
        .route(
            "/datasets/{name}/content",
            post(datasets::create_content)
                .get(datasets::get_content)
                .delete(datasets::delete_content),
        )
        .route("/datasets/{name}/contents", get(datasets::list_contents))
        .route("/tags", get(tags::list).post(tags::tag).delete(tags::untag))
        .with_state(analytics)
}

/// The unsigned download of dataset contents (`dataURI`), for `ControlPlane::public`.
pub fn public_routes(analytics: Arc<Analytics>) -> Router {
    Router::new()
        .route(
            &format!("{}/{{token}}", crate::dataset::CONTENT_PATH),
            get(datasets::download),
        )
        .with_state(analytics)
}

/// `nextToken` and `maxResults` of the List operations.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListQuery {
    next_token: Option<String>,
    max_results: Option<usize>,
}

/// A page of a list: `maxResults` items after the `nextToken` (the index to start at).
fn page<T>(items: Vec<T>, query: &ListQuery) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match query.next_token.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_request("nextToken is not valid"))?,
    };
    let max = query.max_results.unwrap_or(250).clamp(1, 250);
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + max < total).then(|| (start + max).to_string());
    Ok((page, next))
}

/// `{}` with 204, as the Delete operations answer.
fn no_content() -> axum::response::Response {
    axum::response::IntoResponse::into_response(axum::http::StatusCode::NO_CONTENT)
}

/// The status of a created resource, 201 with `body`.
fn created(body: serde_json::Value) -> axum::response::Response {
    axum::response::IntoResponse::into_response((axum::http::StatusCode::CREATED, axum::Json(body)))
}

/// `retentionPeriod` as Describe shows it (unlimited when none was given).
fn retention(value: &serde_json::Value) -> serde_json::Value {
    if value.is_null() || value.as_object().is_some_and(|o| o.is_empty()) {
        serde_json::json!({"unlimited": true})
    } else {
        value.clone()
    }
}

/// Storage as Describe shows it (service-managed when none was given).
fn storage(value: &serde_json::Value) -> serde_json::Value {
    if value.is_null() || value.as_object().is_some_and(|o| o.is_empty()) {
        serde_json::json!({"serviceManagedS3": {}})
    } else {
        value.clone()
    }
}

/// Whether `?includeStatistics=true` was given.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StatisticsQuery {
    include_statistics: Option<bool>,
}
