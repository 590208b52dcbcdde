//! Publish: an HTTP POST becomes an MQTT message in the broker (subscribers, retained store,
//! and the service taps such as the shadow service), with the MQTT 5 properties AWS carries in
//! the query string and `x-amz-mqtt5-*` headers.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleetcore_identity::policy::IotAction;
use fleetcore_mqtt::broker::Message;
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_mqtt::topic;
use serde::Deserialize;
use serde_json::Value;

use super::{Caller, IotDataState};
use crate::error::ApiError;
use crate::extract::Query;

/// Largest payload of an HTTP publish: AWS IoT's message size limit.
pub const MAX_PUBLISH_PAYLOAD: usize = 128 * 1024;

pub(super) fn routes() -> Router<IotDataState> {
    Router::new().route("/topics/{*topic}", post(publish))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PublishQuery {
    qos: Option<u8>,
    retain: Option<bool>,
    content_type: Option<String>,
    response_topic: Option<String>,
    message_expiry: Option<u64>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid_request(format!("header {name} is not text")))
        })
        .transpose()
}

/// `x-amz-mqtt5-user-properties`: base64 of a JSON array of objects of strings,
/// `[{"deviceName": "alpha"}, {"deviceCnt": "45"}]` (or of that array as a JSON string, which
/// is what botocore sends).
fn user_properties(encoded: &str) -> Result<Vec<(Utf8, Utf8)>, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid_request(format!(
            "x-amz-mqtt5-user-properties must be base64 of a JSON array of objects of strings: {why}"
        ))
    };
    let json = BASE64
        .decode(encoded.trim())
        .map_err(|_| bad("not base64"))?;
    // botocore JSON-encodes the (already JSON) string it is given, so the array may arrive as
    // a JSON string holding it.
    let items = match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Array(items)) => items,
        Ok(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            _ => return Err(bad("not a JSON array")),
        },
        _ => return Err(bad("not a JSON array")),
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(pairs) = item else {
            return Err(bad("an element is not an object"));
        };
        for (key, value) in pairs {
            let Value::String(value) = value else {
                return Err(bad("a value is not a string"));
            };
            let (Some(k), Some(v)) = (Utf8::new(key), Utf8::new(value)) else {
                return Err(bad("a key or value is not valid MQTT UTF-8"));
            };
            out.push((k, v));
        }
    }
    Ok(out)
}

async fn publish(
    State(state): State<IotDataState>,
    caller: Caller,
    Path(topic_name): Path<String>,
    Query(q): Query<PublishQuery>,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let max_topic = state.broker.config().max_topic_length;
    if !topic::valid_topic_name(&topic_name, max_topic) {
        return Err(ApiError::invalid_request(format!(
            "'{topic_name}' is not a valid topic name (no wildcards, at most {max_topic} bytes)"
        )));
    }
    let qos = match q.qos.unwrap_or(0) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        other => {
            return Err(ApiError::invalid_request(format!(
                "qos must be 0 or 1, not {other}"
            )));
        }
    };
    if payload.len() > MAX_PUBLISH_PAYLOAD {
        return Err(ApiError::new(
            "RequestEntityTooLargeException",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The payload is larger than {MAX_PUBLISH_PAYLOAD} bytes"),
        ));
    }
    let retain = q.retain.unwrap_or(false);
    let arn = state.arns.topic(&topic_name);
    caller.authorize(IotAction::Publish, &arn)?;
    if retain {
        caller.authorize(IotAction::RetainPublish, &arn)?;
    }

    let mut properties = PublishProperties::default();
    if let Some(content_type) = q.content_type {
        properties.content_type = Some(
            Utf8::new(content_type)
                .ok_or_else(|| ApiError::invalid_request("contentType is not valid UTF-8"))?,
        );
    }
    if let Some(response_topic) = q.response_topic {
        if !topic::valid_topic_name(&response_topic, max_topic) {
            return Err(ApiError::invalid_request(
                "responseTopic must be a topic name without wildcards",
            ));
        }
        properties.response_topic = Utf8::new(response_topic);
    }
    if let Some(expiry) = q.message_expiry {
        properties.message_expiry_interval = Some(u32::try_from(expiry).map_err(|_| {
            ApiError::invalid_request("messageExpiry must be at most 4294967295 seconds")
        })?);
    }
    if let Some(encoded) = header(&headers, "x-amz-mqtt5-user-properties")? {
        properties.user_properties = user_properties(encoded)?;
    }
    if let Some(encoded) = header(&headers, "x-amz-mqtt5-correlation-data")? {
        properties.correlation_data = Some(Bytes::from(BASE64.decode(encoded.trim()).map_err(
            |_| ApiError::invalid_request("x-amz-mqtt5-correlation-data is not base64"),
        )?));
    }
    if let Some(indicator) = header(&headers, "x-amz-mqtt5-payload-format-indicator")? {
        let utf8 = match indicator {
            "UNSPECIFIED_BYTES" => false,
            "UTF8_DATA" => true,
            other => {
                return Err(ApiError::invalid_request(format!(
                    "x-amz-mqtt5-payload-format-indicator must be UNSPECIFIED_BYTES or UTF8_DATA, not {other}"
                )));
            }
        };
        if utf8 && std::str::from_utf8(&payload).is_err() {
            return Err(ApiError::invalid_request(
                "the payload is marked UTF8_DATA but is not valid UTF-8",
            ));
        }
        properties.payload_format_indicator = Some(u8::from(utf8));
    }
    let topic = Utf8::new(topic_name)
        .ok_or_else(|| ApiError::invalid_request("the topic is not valid UTF-8"))?;
    let now = Instant::now();
    state.broker.publish(Arc::new(Message {
        expires_at: Message::expiry_from_interval(properties.message_expiry_interval, now),
        topic,
        payload,
        qos,
        retain,
        properties,
        origin: None,
    }));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_decode_the_aws_header() {
        let header = BASE64.encode(r#"[{"deviceName":"alpha"},{"deviceCnt":"45"}]"#);
        let props = user_properties(&header).expect("valid");
        let pairs: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("deviceName", "alpha"), ("deviceCnt", "45")]);
        let as_string = BASE64.encode(r#""[{\"k\":\"v\"}]""#);
        assert_eq!(user_properties(&as_string).expect("string form").len(), 1);
        for bad in [
            "%%%",
            &BASE64.encode("{}"),
            &BASE64.encode(r#"[{"n":1}]"#),
            &BASE64.encode("[1]"),
        ] {
            assert_eq!(
                user_properties(bad).expect_err(bad).code,
                "InvalidRequestException"
            );
        }
    }
}
