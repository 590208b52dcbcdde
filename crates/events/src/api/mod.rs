//! The `iotevents` (signing name `iotevents`) and `iotevents-data` (signing name
//! `ioteventsdata`) services over the control plane, REST-JSON. Operations not routed here are
//! answered UnknownOperationException 501 by the dispatcher's route tables.

mod data;
mod models;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::Events;

/// The `iotevents` router, for `ControlPlane::service("iotevents", ...)`.
pub fn control_routes(events: Arc<Events>) -> Router {
    Router::new()
        .route(
            "/inputs",
            post(models::create_input).get(models::list_inputs),
        )
        .route(
            "/inputs/{name}",
            get(models::describe_input)
                .put(models::update_input)
                .delete(models::delete_input),
        )
        .route(
            "/detector-models",
            post(models::create_detector_model).get(models::list_detector_models),
        )
        .route(
            "/detector-models/{name}",
            get(models::describe_detector_model)
                .post(models::update_detector_model)
                .delete(models::delete_detector_model),
        )
        .route(
            "/detector-models/{name}/versions",
            get(models::list_detector_model_versions),
        )
        .with_state(events)
}

/// The `iotevents-data` router, for `ControlPlane::service("ioteventsdata", ...)`.
pub fn data_routes(events: Arc<Events>) -> Router {
    Router::new()
        .route("/inputs/messages", post(data::batch_put_message))
        .route("/detectors", post(data::batch_update_detector))
        .route("/detectors/delete", post(data::batch_delete_detector))
        .route("/detectors/{model}", get(data::list_detectors))
        .route(
            "/detectors/{model}/keyValues/",
            get(data::describe_detector),
        )
        .route("/detectors/{model}/keyValues", get(data::describe_detector))
        .with_state(events)
}

/// A page of a list: `maxResults` items after the `nextToken` (the index to start at).
fn page<T>(
    items: Vec<T>,
    next_token: Option<&str>,
    max_results: Option<usize>,
) -> Result<(Vec<T>, Option<String>), fleetcore_api::ApiError> {
    let start = match next_token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| fleetcore_api::ApiError::invalid_request("nextToken is not valid"))?,
    };
    let max = max_results.unwrap_or(250).clamp(1, 250);
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + max < total).then(|| (start + max).to_string());
    Ok((page, next))
}
