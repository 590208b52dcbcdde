//! Parsing of request payloads (untrusted bytes): the update document
//! `{"state":{"desired"?,"reported"?},"clientToken"?,"version"?}` and the optional
//! `{"clientToken"?,"version"?}` of get and delete.

use serde_json::Value;

use crate::ShadowError;
use crate::document::{Limits, Object, depth};

/// Longest client token, in bytes.
pub const MAX_CLIENT_TOKEN: usize = 64;

/// Largest request payload, in bytes (the broker's message size limit on AWS: 128 KB).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;

/// What an update does to one section.
#[derive(Debug, Clone, PartialEq)]
pub enum SectionPatch {
    /// The section is not named: unchanged.
    Absent,
    /// `null`: the section is removed.
    Clear,
    /// An object merged into the section.
    Merge(Object),
}

/// A parsed update request.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRequest {
    /// The `state` node as sent (echoed in `/update/accepted`).
    pub state: Value,
    /// The change to `desired`.
    pub desired: SectionPatch,
    /// The change to `reported`.
    pub reported: SectionPatch,
    /// Echoed in every response.
    pub client_token: Option<String>,
    /// When present, the update applies only if it is the shadow's current version.
    pub version: Option<u64>,
}

/// The options of a get or delete request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlainRequest {
    /// Echoed in every response.
    pub client_token: Option<String>,
    /// For delete: applies only at this version.
    pub version: Option<u64>,
}

/// A request that failed to parse, with the client token if one could be read (rejections
/// echo it).
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: ShadowError,
    /// The request's client token, if readable.
    pub client_token: Option<String>,
}

fn parse_object(payload: &[u8]) -> Result<serde_json::Map<String, Value>, ShadowError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(ShadowError::TooLarge);
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ShadowError::invalid(
            "Payload contains invalid json: not an object",
        )),
        Err(_) => Err(ShadowError::invalid("Payload contains invalid json")),
    }
}

fn client_token(map: &serde_json::Map<String, Value>) -> Result<Option<String>, ShadowError> {
    match map.get("clientToken") {
        None => Ok(None),
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN => Ok(Some(t.clone())),
        Some(Value::String(_)) => Err(ShadowError::invalid(format!(
            "clientToken is longer than {MAX_CLIENT_TOKEN} bytes"
        ))),
        Some(_) => Err(ShadowError::invalid("clientToken must be a string")),
    }
}

fn version(map: &serde_json::Map<String, Value>) -> Result<Option<u64>, ShadowError> {
    match map.get("version") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ShadowError::invalid("Invalid version: must be a non-negative integer")),
    }
}

fn section(
    name: &str,
    value: Option<&Value>,
    limits: &Limits,
) -> Result<SectionPatch, ShadowError> {
    match value {
        None => Ok(SectionPatch::Absent),
        Some(Value::Null) => Ok(SectionPatch::Clear),
        Some(v @ Value::Object(map)) => {
            if depth(v) > limits.max_depth {
                return Err(ShadowError::invalid(format!(
                    "JSON contains too many levels of nesting; maximum is {} (in {name})",
                    limits.max_depth
                )));
            }
            Ok(SectionPatch::Merge(map.clone()))
        }
        Some(_) => Err(ShadowError::invalid(format!(
            "Invalid {name} node: must be an object or null"
        ))),
    }
}

/// Parses an update request.
pub fn parse_update(payload: &[u8], limits: &Limits) -> Result<UpdateRequest, Rejected> {
    let map = parse_object(payload).map_err(|error| Rejected {
        error,
        client_token: None,
    })?;
    let token = client_token(&map).ok().flatten();
    let reject = |error| Rejected {
        error,
        client_token: token.clone(),
    };
    let client_token = client_token(&map).map_err(reject)?;
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "state" | "clientToken" | "version"))
    {
        return Err(reject(ShadowError::invalid(format!(
            "Payload contains an invalid node: '{unknown}'"
        ))));
    }
    let version = version(&map).map_err(reject)?;
    let (desired, reported) = match map.get("state") {
        None => {
            return Err(reject(ShadowError::invalid("Missing required node: state")));
        }
        Some(Value::Null) => (SectionPatch::Clear, SectionPatch::Clear),
        Some(Value::Object(state)) => {
            if let Some(unknown) = state
                .keys()
                .find(|k| !matches!(k.as_str(), "desired" | "reported"))
            {
                return Err(reject(ShadowError::invalid(format!(
                    "State contains an invalid node: '{unknown}'"
                ))));
            }
            (
                section("desired", state.get("desired"), limits).map_err(reject)?,
                section("reported", state.get("reported"), limits).map_err(reject)?,
            )
        }
        Some(_) => {
            return Err(reject(ShadowError::invalid(
                "Invalid state node: must be an object or null",
            )));
        }
    };
    Ok(UpdateRequest {
        state: map.get("state").cloned().unwrap_or(Value::Null),
        desired,
        reported,
        client_token,
        version,
    })
}

/// Parses the payload of a get or delete: empty, or an object with optional `clientToken` and
/// `version`.
pub fn parse_plain(payload: &[u8]) -> Result<PlainRequest, Rejected> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(PlainRequest::default());
    }
    let map = parse_object(payload).map_err(|error| Rejected {
        error,
        client_token: None,
    })?;
    let token = client_token(&map).ok().flatten();
    let reject = |error| Rejected {
        error,
        client_token: token.clone(),
    };
    Ok(PlainRequest {
        client_token: client_token(&map).map_err(reject)?,
        version: version(&map).map_err(reject)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(payload: &str) -> u16 {
        parse_update(payload.as_bytes(), &Limits::default())
            .expect_err(payload)
            .error
            .code()
    }

    #[test]
    fn rejections() {
        assert_eq!(code("{nope"), 400);
        assert_eq!(code("[1]"), 400);
        assert_eq!(code(r#"{"clientToken":"a"}"#), 400);
        assert_eq!(code(r#"{"state":{},"extra":1}"#), 400);
        assert_eq!(code(r#"{"state":{"delta":{}}}"#), 400);
        assert_eq!(code(r#"{"state":{"desired":5}}"#), 400);
        assert_eq!(code(r#"{"state":{},"version":"3"}"#), 400);
        assert_eq!(code(r#"{"state":{},"version":-1}"#), 400);
        assert_eq!(
            code(r#"{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}}"#),
            400
        );
        let long = format!(r#"{{"state":{{}},"clientToken":"{}"}}"#, "x".repeat(65));
        assert_eq!(code(&long), 400);
    }

    #[test]
    fn rejections_keep_the_client_token() {
        let r = parse_update(br#"{"clientToken":"tok","bogus":1}"#, &Limits::default())
            .expect_err("unknown key");
        assert_eq!(r.client_token.as_deref(), Some("tok"));
    }

    #[test]
    fn accepts_sections_and_nulls() {
        let u = parse_update(
            br#"{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}},"reported":null},"clientToken":"t","version":4}"#,
            &Limits::default(),
        )
        .expect("six levels are allowed");
        assert!(matches!(u.desired, SectionPatch::Merge(_)));
        assert_eq!(u.reported, SectionPatch::Clear);
        assert_eq!((u.client_token.as_deref(), u.version), (Some("t"), Some(4)));
        let u = parse_update(br#"{"state":null}"#, &Limits::default()).expect("state null");
        assert_eq!(
            (u.desired, u.reported),
            (SectionPatch::Clear, SectionPatch::Clear)
        );
    }

    #[test]
    fn plain_requests() {
        assert_eq!(parse_plain(b"").expect("empty"), PlainRequest::default());
        let p = parse_plain(br#"{"clientToken":"c","version":2}"#).expect("object");
        assert_eq!((p.client_token.as_deref(), p.version), (Some("c"), Some(2)));
        assert_eq!(parse_plain(b"{x").expect_err("bad").error.code(), 400);
    }
}
