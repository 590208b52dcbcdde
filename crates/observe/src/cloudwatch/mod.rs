//! The `monitoring` service (CloudWatch): metrics, alarms and dashboards, on both wires the
//! SDKs use: JSON 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>` on `/`, what botocore
//! 1.42.50 picks: its protocol priority puts `json` before `smithy-rpc-v2-cbor`) and Smithy RPC
//! v2 CBOR (`/service/GraniteServiceVersion20100801/operation/<Op>`, newer SDKs). Handlers work
//! on JSON values; the wire only changes the encoding (timestamps: numbers in JSON, CBOR tag 1).

pub mod alarms;
pub mod dashboards;
pub mod expr;
pub mod metrics;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetcore_api::extract::content_decoded;
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
    let json = Arc::clone(&observe);
    Router::new()
        .route(
            "/service/GraniteServiceVersion20100801/operation/{op}",
            post(
                move |ctx: RequestContext,
                      Path(op): Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let observe = Arc::clone(&observe);
                    async move { serve(&observe, &ctx, &op, &headers, body, Wire::Cbor).await }
                },
            ),
        )
        .route(
            "/",
            post(
                move |ctx: RequestContext, headers: HeaderMap, body: Bytes| {
                    let observe = Arc::clone(&json);
                    async move {
                        let op = headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|t| t.split_once('.'))
                            .map(|(_, op)| op.to_string())
                            .unwrap_or_default();
                        serve(&observe, &ctx, &op, &headers, body, Wire::Json).await
                    }
                },
            ),
        )
}

/// The encoding of a request and its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    /// JSON 1.0.
    Json,
    /// RPC v2 CBOR.
    Cbor,
}

impl Wire {
    fn decode<T: serde::de::DeserializeOwned>(self, body: &[u8]) -> Result<T, ObserveError> {
        match self {
            Wire::Cbor => decode(body).map_err(|e| ObserveError::InvalidParameter(e.message)),
            Wire::Json => {
                let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                    b"{}"
                } else {
                    body
                };
                serde_json::from_slice(body).map_err(|e| {
                    ObserveError::InvalidParameter(format!("The request is not valid: {e}"))
                })
            }
        }
    }

    fn answer(self, value: Json) -> Response {
        match self {
            Wire::Cbor => Cbor(to_cbor(value, false)).into_response(),
            Wire::Json => (
                [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
                value.to_string(),
            )
                .into_response(),
        }
    }

    fn error(self, error: ApiError) -> Response {
        let error = match self {
            Wire::Cbor => error.rpc_v2_cbor(),
            Wire::Json => error.json11(),
        };
        // CloudWatch is query-compatible: SDKs take the error code from this header.
        let fault = if error.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let query_error = format!("{};{fault}", error.code);
        let mut response = error.into_response();
        if let Ok(value) = HeaderValue::from_str(&query_error) {
            response.headers_mut().insert("x-amzn-query-error", value);
        }
        response
    }
}

async fn serve(
    observe: &Observe,
    ctx: &RequestContext,
    op: &str,
    headers: &HeaderMap,
    body: Bytes,
    wire: Wire,
) -> Response {
    let body = match content_decoded(headers, body) {
        Ok(body) => body,
        Err(e) => return wire.error(e),
    };
    match handle(observe, ctx, op, &body, wire).await {
        Ok(value) => wire.answer(value),
        Err(error) => wire.error(error),
    }
}

/// The operations the web console may call: the ones that only read.
pub(crate) const READ_ONLY: &[&str] = &[
    "GetMetricData",
    "GetMetricStatistics",
    "ListMetrics",
    "DescribeAlarms",
    "DescribeAlarmHistory",
    "GetDashboard",
    "ListDashboards",
];

/// Runs a [`READ_ONLY`] operation on a JSON 1.0 body (the web console's reads); any other
/// operation is refused.
pub(crate) async fn read_only(
    observe: &Observe,
    ctx: &RequestContext,
    op: &str,
    body: &[u8],
) -> Result<Json, ApiError> {
    if !READ_ONLY.contains(&op) {
        return Err(ApiError::new(
            "AccessDeniedException",
            axum::http::StatusCode::FORBIDDEN,
            format!("The console only reads; {op} is not one of {READ_ONLY:?}."),
        ));
    }
    handle(observe, ctx, op, body, Wire::Json).await
}

async fn handle(
    observe: &Observe,
    ctx: &RequestContext,
    op: &str,
    body: &[u8],
    wire: Wire,
) -> Result<Json, ApiError> {
    let api = |e: ObserveError| e.to_api();
    let empty = || Json::Object(Default::default());
    match op {
        "PutMetricData" => {
            let points =
                metrics::points(wire.decode(body).map_err(api)?, now_secs()).map_err(api)?;
            observe.store.write(points).await.map(|()| empty())
        }
        "GetMetricData" => metrics::get_data(&observe.store, wire.decode(body).map_err(api)?),
        "GetMetricStatistics" => {
            metrics::get_statistics(&observe.store, wire.decode(body).map_err(api)?)
        }
        "ListMetrics" => metrics::list(&observe.store, wire.decode(body).map_err(api)?),
        "PutMetricAlarm" => observe.alarms.put(ctx, wire.decode(body).map_err(api)?),
        "DescribeAlarms" => observe.alarms.describe(wire.decode(body).map_err(api)?),
        "DeleteAlarms" => observe.alarms.delete(wire.decode(body).map_err(api)?),
        "DescribeAlarmHistory" => observe.alarms.history(wire.decode(body).map_err(api)?),
        "SetAlarmState" => {
            observe
                .alarms
                .set_state(wire.decode(body).map_err(api)?)
                .await
        }
        "PutDashboard" => observe.dashboards.put(wire.decode(body).map_err(api)?),
        "GetDashboard" => observe.dashboards.get(ctx, wire.decode(body).map_err(api)?),
        "ListDashboards" => observe
            .dashboards
            .list(ctx, wire.decode(body).map_err(api)?),
        "DeleteDashboards" => observe.dashboards.delete(wire.decode(body).map_err(api)?),
        other => {
            return Err(ApiError::new(
                "UnknownOperationException",
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    "Operation {other} of service 'monitoring' is not implemented by this server."
                ),
            ));
        }
    }
    .map_err(api)
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
