//! Smithy RPC v2 CBOR, the protocol newer AWS SDKs use for CloudWatch (`monitoring`; botocore
//! 1.42.50 lists it but picks JSON 1.0, which `crates/observe` serves too): every call is
//! `POST /service/{ServiceShape}/operation/{Operation}` with the header
//! `smithy-protocol: rpc-v2-cbor` and a CBOR body; answers and errors are CBOR too, errors
//! carrying `__type`. Timestamps travel as CBOR tag 1 (epoch seconds, integer or float).
//!
//! A service handler takes [`Cbor<T>`] for any `T: Deserialize` (the body is decoded into a
//! JSON-like value first, tags dropped, byte strings as base64, so request types are plain serde
//! types) and answers [`Cbor<T>`]; [`Timestamp`] serializes as tag 1.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::error::{ApiError, Protocol};

/// The header that names the protocol.
pub const PROTOCOL_HEADER: &str = "smithy-protocol";

/// Its value for this protocol.
pub const PROTOCOL: &str = "rpc-v2-cbor";

/// The content type of bodies.
pub const CONTENT_TYPE: &str = "application/cbor";

/// True when the request speaks this protocol.
pub fn is_rpc_v2_cbor(headers: &HeaderMap) -> bool {
    headers
        .get(PROTOCOL_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()))
}

/// The operation a path names: `/service/{Service}/operation/{Operation}`.
pub fn operation_name(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("service"), Some(_), Some("operation"), Some(op)) if !op.is_empty() => {
            parts.next().is_none().then_some(op)
        }
        _ => None,
    }
}

/// A CBOR request body (extractor) or response body (responder).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cbor<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Cbor<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| serialization(e.body_text()))?;
        let bytes = crate::extract::content_decoded(&headers, bytes)
            .map_err(|e| e.in_protocol(Protocol::RpcV2Cbor))?;
        decode(&bytes).map(Cbor)
    }
}

impl<T: Serialize> IntoResponse for Cbor<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(256);
        if let Err(e) = ciborium::into_writer(&self.0, &mut body) {
            return ApiError::internal(format!("the response could not be encoded: {e}"))
                .rpc_v2_cbor()
                .into_response();
        }
        let mut response = (StatusCode::OK, body).into_response();
        response_headers(response.headers_mut());
        response
    }
}

/// Sets the content type and protocol headers of a response.
pub(crate) fn response_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(PROTOCOL));
}

/// Decodes a CBOR body into `T`; an empty body is an empty structure.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = if bytes.is_empty() {
        Value::Object(Map::new())
    } else {
        let cbor: ciborium::Value = ciborium::from_reader(bytes)
            .map_err(|e| serialization(format!("The request body is not valid CBOR: {e}")))?;
        to_json(cbor)?
    };
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            "InvalidParameterValue",
            StatusCode::BAD_REQUEST,
            format!("The request is not valid: {e}"),
        )
        .rpc_v2_cbor()
    })
}

/// Encodes `value` as CBOR (for errors and tests).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut body = Vec::new();
    // Writing into a Vec fails only for values serde cannot represent, which ours are not.
    if ciborium::into_writer(value, &mut body).is_err() {
        body.clear();
    }
    body
}

fn serialization(message: impl Into<String>) -> ApiError {
    ApiError::new("SerializationException", StatusCode::BAD_REQUEST, message).rpc_v2_cbor()
}

/// CBOR to the JSON data model: tags dropped (tag 1 timestamps become their number), byte
/// strings as base64 text, non-text map keys refused.
fn to_json(value: ciborium::Value) -> Result<Value, ApiError> {
    use ciborium::Value as C;
    Ok(match value {
        C::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                Value::from(s)
            } else {
                return Err(serialization("an integer is out of range"));
            }
        }
        C::Float(f) => Value::Number(
            Number::from_f64(f)
                .ok_or_else(|| serialization("NaN and infinite numbers are not supported"))?,
        ),
        C::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        C::Text(t) => Value::String(t),
        C::Bool(b) => Value::Bool(b),
        C::Null => Value::Null,
        C::Tag(_, inner) => to_json(*inner)?,
        C::Array(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        C::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let C::Text(k) = k else {
                    return Err(serialization("a map key is not a text string"));
                };
                // botocore leaves absent members out; a null member is absent too.
                let v = to_json(v)?;
                if !v.is_null() {
                    map.insert(k, v);
                }
            }
            Value::Object(map)
        }
        _ => return Err(serialization("an unsupported CBOR value")),
    })
}

/// A point in time as epoch seconds: CBOR tag 1 on the wire. Deserializes from a number.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Timestamp(pub f64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            ciborium::tag::Required::<i64, 1>(self.0 as i64).serialize(serializer)
        } else {
            ciborium::tag::Required::<f64, 1>(self.0).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        f64::deserialize(deserializer).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Input {
        name: String,
        at: Timestamp,
        values: Vec<f64>,
        blob: Option<String>,
    }

    #[test]
    fn tagged_timestamps_and_blobs_decode() {
        let cbor = ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("Name".into()),
                ciborium::Value::Text("n".into()),
            ),
            (
                ciborium::Value::Text("At".into()),
                ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(1_700_000_000.into()))),
            ),
            (
                ciborium::Value::Text("Values".into()),
                ciborium::Value::Array(vec![
                    ciborium::Value::Float(1.5),
                    ciborium::Value::Integer(2.into()),
                ]),
            ),
            (
                ciborium::Value::Text("Blob".into()),
                ciborium::Value::Bytes(b"hi".to_vec()),
            ),
        ]);
        let input: Input = decode(&encode(&cbor)).expect("decodes");
        assert_eq!(
            input,
            Input {
                name: "n".into(),
                at: Timestamp(1_700_000_000.0),
                values: vec![1.5, 2.0],
                blob: Some("aGk=".into()),
            }
        );
    }

    #[test]
    fn timestamps_encode_as_tag_1() {
        let bytes = encode(&Timestamp(1_700_000_000.0));
        // 0xc1 = major type 6 (tag), value 1
        assert_eq!(bytes[0], 0xc1);
        let back: ciborium::Value = ciborium::from_reader(bytes.as_slice()).expect("cbor");
        assert_eq!(
            back,
            ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(1_700_000_000.into())))
        );
        let bytes = encode(&Timestamp(1.5));
        assert_eq!(bytes[0], 0xc1);
    }

    #[test]
    fn bad_bodies_are_serialization_errors() {
        let e = decode::<Input>(b"\xff\x00").expect_err("garbage");
        assert_eq!(e.code, "SerializationException");
        let e = decode::<Input>(&encode(&serde_json::json!({"Name": 1}))).expect_err("shape");
        assert_eq!(e.code, "InvalidParameterValue");
    }

    #[test]
    fn operation_names_come_from_the_path() {
        assert_eq!(
            operation_name("/service/GraniteServiceVersion20100801/operation/PutMetricData"),
            Some("PutMetricData")
        );
        assert_eq!(operation_name("/service/X/operation/"), None);
        assert_eq!(operation_name("/"), None);
        assert_eq!(operation_name("/service/X/operation/A/b"), None);
    }
}
