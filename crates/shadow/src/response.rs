//! The JSON documents the service answers with, as AWS shapes them.

use serde_json::{Map, Value, json};

use crate::ShadowError;
use crate::document::ShadowDocument;

fn with_token(mut object: Map<String, Value>, token: Option<&str>) -> Value {
    if let Some(token) = token {
        object.insert("clientToken".into(), Value::String(token.to_string()));
    }
    Value::Object(object)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `/rejected`: `{"code","message","timestamp","clientToken"?}`.
pub fn rejected(error: &ShadowError, timestamp: u64, token: Option<&str>) -> Value {
    with_token(
        object(json!({
            "code": error.code(),
            "message": error.to_string(),
            "timestamp": timestamp,
        })),
        token,
    )
}

/// `/update/accepted` (and the HTTP UpdateThingShadow body): the request's state, the metadata
/// of the touched leaves, the new version.
pub fn update_accepted(
    state: &Value,
    touched: Value,
    version: u64,
    timestamp: u64,
    token: Option<&str>,
) -> Value {
    with_token(
        object(json!({
            "state": state,
            "metadata": touched,
            "version": version,
            "timestamp": timestamp,
        })),
        token,
    )
}

/// `/update/delta`, or `None` when desired and reported agree.
pub fn delta(document: &ShadowDocument, timestamp: u64, token: Option<&str>) -> Option<Value> {
    let delta = document.delta();
    if delta.is_empty() {
        return None;
    }
    let metadata = document.delta_metadata(&delta);
    Some(with_token(
        object(json!({
            "version": document.version,
            "timestamp": timestamp,
            "state": delta,
            "metadata": metadata,
        })),
        token,
    ))
}

fn snapshot(document: &ShadowDocument) -> Value {
    json!({
        "state": document.state_json(false),
        "metadata": document.metadata_json(),
        "version": document.version,
    })
}

/// `/update/documents`: the document before (absent on creation) and after.
pub fn documents(
    previous: Option<&ShadowDocument>,
    current: &ShadowDocument,
    timestamp: u64,
    token: Option<&str>,
) -> Value {
    let mut out = Map::new();
    if let Some(previous) = previous {
        out.insert("previous".into(), snapshot(previous));
    }
    out.insert("current".into(), snapshot(current));
    out.insert("timestamp".into(), json!(timestamp));
    with_token(out, token)
}

/// `/get/accepted` and GetThingShadow: state with delta, metadata, version.
pub fn get_accepted(document: &ShadowDocument, timestamp: u64, token: Option<&str>) -> Value {
    with_token(
        object(json!({
            "state": document.state_json(true),
            "metadata": document.metadata_json(),
            "version": document.version,
            "timestamp": timestamp,
        })),
        token,
    )
}

/// `/delete/accepted` and DeleteThingShadow: the deleted version.
pub fn delete_accepted(version: u64, timestamp: u64, token: Option<&str>) -> Value {
    with_token(
        object(json!({ "version": version, "timestamp": timestamp })),
        token,
    )
}
