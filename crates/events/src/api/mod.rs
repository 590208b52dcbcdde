//! The `iotevents` (signing name `iotevents`) and `iotevents-data` (signing name
//! `ioteventsdata`) services over the control plane, REST-JSON: inputs, detector models and
//! alarm models; detectors and alarms. Operations not routed here are
//! answered UnknownOperationException 501 by the dispatcher's route tables.

mod alarm_models;
mod alarms;
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
        .route(
            "/alarm-models",
            post(alarm_models::create_alarm_model).get(alarm_models::list_alarm_models),
        )
        .route(
            "/alarm-models/{name}",
            get(alarm_models::describe_alarm_model)
                .post(alarm_models::update_alarm_model)
                .delete(alarm_models::delete_alarm_model),
        )
        .route(
            "/alarm-models/{name}/versions",
            get(alarm_models::list_alarm_model_versions),
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
        .route("/alarms/acknowledge", post(alarms::acknowledge))
        .route("/alarms/disable", post(alarms::disable))
        .route("/alarms/enable", post(alarms::enable))
        .route("/alarms/reset", post(alarms::reset))
        .route("/alarms/snooze", post(alarms::snooze))
        .route("/alarms/{model}", get(alarms::list_alarms))
        .route("/alarms/{model}/keyValues/", get(alarms::describe_alarm))
        .route("/alarms/{model}/keyValues", get(alarms::describe_alarm))
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
