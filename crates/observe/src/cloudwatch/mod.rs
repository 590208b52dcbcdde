//! The `monitoring` service (CloudWatch) over Smithy RPC v2 CBOR: metrics, alarms and
//! dashboards. One route, `/service/GraniteServiceVersion20100801/operation/{op}`; the
//! operation name picks the handler.

pub mod alarms;
pub mod dashboards;
pub mod expr;
pub mod metrics;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetcore_api::rpcv2::{Cbor, decode};
use fleetcore_api::{ApiError, RequestContext};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::Observe;
use crate::error::ObserveError;

/// A dimension as the API carries it (the value is optional in ListMetrics filters).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dimension {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: Option<String>,
}

/// Now, epoch seconds.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Response members that hold timestamps (CBOR tag 1 on the wire).
const TIMESTAMP_KEYS: &[&str] = &[
    "Timestamp",
    "Timestamps",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
    "AlarmConfigurationUpdatedTimestamp",
    "LastModified",
];

/// The service's router, for `ControlPlane::service("monitoring", ...)`.
pub fn routes(observe: Arc<Observe>) -> Router {
    Router::new().route(
        "/service/GraniteServiceVersion20100801/operation/{op}",
        post(
            move |ctx: RequestContext, Path(op): Path<String>, body: Bytes| {
                let observe = Arc::clone(&observe);
                async move { handle(&observe, &ctx, &op, body).await }
            },
        ),
    )
}

async fn handle(observe: &Observe, ctx: &RequestContext, op: &str, body: Bytes) -> Response {
    let result = match op {
        "PutMetricData" => match decode(&body) {
            Ok(input) => match metrics::points(input, now_secs()) {
                Ok(points) => observe
                    .store
                    .write(points)
                    .await
                    .map(|()| Json::Object(Default::default())),
                Err(e) => Err(e),
            },
            Err(e) => return e.into_response(),
        },
        "GetMetricData" => read(&body, |i| metrics::get_data(&observe.store, i)),
        "GetMetricStatistics" => read(&body, |i| metrics::get_statistics(&observe.store, i)),
        "ListMetrics" => read(&body, |i| metrics::list(&observe.store, i)),
        "PutMetricAlarm" => read(&body, |i| observe.alarms.put(ctx, i)),
        "DescribeAlarms" => read(&body, |i| observe.alarms.describe(i)),
        "DeleteAlarms" => read(&body, |i| observe.alarms.delete(i)),
        "DescribeAlarmHistory" => read(&body, |i| observe.alarms.history(i)),
        "SetAlarmState" => match decode(&body) {
            Ok(input) => observe.alarms.set_state(input).await,
            Err(e) => return e.into_response(),
        },
        "PutDashboard" => read(&body, |i| observe.dashboards.put(i)),
        "GetDashboard" => read(&body, |i| observe.dashboards.get(ctx, i)),
        "ListDashboards" => read(&body, |i| observe.dashboards.list(ctx, i)),
        "DeleteDashboards" => read(&body, |i| observe.dashboards.delete(i)),
        other => {
            return ApiError::new(
                "UnknownOperationException",
                axum::http::StatusCode::BAD_REQUEST,
                format!("Operation {other} of service 'monitoring' is not implemented by this server."),
            )
            .rpc_v2_cbor()
            .into_response();
        }
    };
    match result {
        Ok(value) => Cbor(to_cbor(value, false)).into_response(),
        Err(error) => error.to_api().into_response(),
    }
}

fn read<T: serde::de::DeserializeOwned>(
    body: &[u8],
    op: impl FnOnce(T) -> Result<Json, ObserveError>,
) -> Result<Json, ObserveError> {
    match decode::<T>(body) {
        Ok(input) => op(input),
        Err(e) => Err(ObserveError::InvalidParameter(e.message)),
    }
}

/// JSON to CBOR, numbers under [`TIMESTAMP_KEYS`] tagged as timestamps.
fn to_cbor(value: Json, timestamp: bool) -> ciborium::Value {
    use ciborium::Value as C;
    match value {
        Json::Null => C::Null,
        Json::Bool(b) => C::Bool(b),
        Json::Number(n) => {
            let plain = if let Some(i) = n.as_i64() {
                C::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                C::Integer(u.into())
            } else {
                C::Float(n.as_f64().unwrap_or(0.0))
            };
            if timestamp {
                C::Tag(1, Box::new(plain))
            } else {
                plain
            }
        }
        Json::String(s) => C::Text(s),
        Json::Array(items) => C::Array(items.into_iter().map(|v| to_cbor(v, timestamp)).collect()),
        Json::Object(map) => C::Map(
            map.into_iter()
                .map(|(k, v)| {
                    let ts = TIMESTAMP_KEYS.contains(&k.as_str());
                    (C::Text(k), to_cbor(v, ts))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_members_are_tagged() {
        let v = to_cbor(
            serde_json::json!({"Timestamps": [60, 120], "Values": [1.5], "Label": "x"}),
            false,
        );
        let ciborium::Value::Map(entries) = v else {
            panic!("map")
        };
        let get = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| *k == ciborium::Value::Text(name.into()))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("Timestamps"),
            Some(ciborium::Value::Array(vec![
                ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(60.into()))),
                ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(120.into()))),
            ]))
        );
        assert_eq!(
            get("Values"),
            Some(ciborium::Value::Array(vec![ciborium::Value::Float(1.5)]))
        );
    }
}
