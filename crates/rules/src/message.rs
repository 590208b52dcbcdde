//! What a rule sees of a message ([`MessageContext`]), what it produces ([`Outcome`]), and the
//! services a statement may call while it runs ([`RuleEnv`], [`ShadowReader`]).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

/// One message as the rules engine receives it.
#[derive(Debug, Clone, Default)]
pub struct MessageContext<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// The publisher's MQTT client id; `None` for messages published over HTTP (`clientid()`
    /// then answers `n/a`, as AWS does).
    pub client_id: Option<&'a str>,
    /// The publisher's principal (certificate id, or the access key of an HTTP publisher).
    pub principal: Option<&'a str>,
    /// The payload bytes, as published.
    pub payload: &'a [u8],
    /// When the broker received the message, epoch milliseconds (`timestamp()`).
    pub received_at_ms: i64,
    /// The MQTT 5 properties of the PUBLISH, where a function reads them.
    pub properties: MqttProperties<'a>,
}

/// The MQTT 5 properties the SQL functions can read (`traceid()`, `get_mqtt_property(name)`,
/// `get_user_properties(key)`); a property the message did not carry is `None` (empty).
#[derive(Debug, Clone, Default)]
pub struct MqttProperties<'a> {
    /// The trace id of the message (`traceid()`); the broker assigns one per MQTT message.
    pub trace_id: Option<&'a str>,
    /// Content Type.
    pub content_type: Option<&'a str>,
    /// Payload Format Indicator: `Some(true)` for UTF-8 data, `Some(false)` for unspecified bytes.
    pub payload_format_utf8: Option<bool>,
    /// Response Topic.
    pub response_topic: Option<&'a str>,
    /// Correlation Data.
    pub correlation_data: Option<&'a [u8]>,
    /// User Properties, in the order sent (a key may repeat).
    pub user_properties: &'a [(Cow<'a, str>, Cow<'a, str>)],
}

/// The payload, parsed once per message and shared by every rule that sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The payload is a JSON document.
    Json(Value),
    /// The payload is not JSON: only `*` (forwarded whole) and `encode(*, 'base64')` reach it.
    Binary,
}

impl Payload {
    /// Parses `bytes` as JSON; anything else (including an empty payload) is [`Payload::Binary`].
    pub fn parse(bytes: &[u8]) -> Payload {
        match serde_json::from_slice(bytes) {
            Ok(value) => Payload::Json(value),
            Err(_) => Payload::Binary,
        }
    }

    /// The JSON document, if the payload is one.
    pub fn json(&self) -> Option<&Value> {
        match self {
            Payload::Json(v) => Some(v),
            Payload::Binary => None,
        }
    }
}

/// The result of running a statement against one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// The WHERE clause did not hold: the rule's actions do not run.
    NoMatch,
    /// The message the actions receive, as JSON (borrowed when it is the input unchanged).
    Json(Cow<'a, Value>),
    /// The message the actions receive, as bytes (`SELECT *` of a non-JSON payload, or a
    /// `SELECT VALUE` that is Undefined, which AWS serializes as an empty string).
    Bytes(&'a [u8]),
}

impl Outcome<'_> {
    /// The bytes an action would send: JSON serialized, or the raw bytes; `None` for no match.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Outcome::NoMatch => None,
            Outcome::Json(v) => Some(v.to_string().into_bytes()),
            Outcome::Bytes(b) => Some(b.to_vec()),
        }
    }

    /// The bytes the actions receive, as [`Outcome::to_bytes`], sharing `source` instead of
    /// copying when the output is a part of it.
    pub fn into_body(self, source: &Bytes) -> Option<Bytes> {
        match self {
            Outcome::Bytes(b) if within(source, b) => Some(source.slice_ref(b)),
            other => other.to_bytes().map(Bytes::from),
        }
    }
}

/// Reads device shadows for `get_thing_shadow(thingName, [shadowName,] roleArn)`. The shadow
/// service implements it; the binary wires it in.
pub trait ShadowReader: Send + Sync {
    /// The shadow document of `thing` (the classic shadow when `shadow_name` is `None`), or
    /// `None` when there is none.
    fn read_shadow(&self, thing: &str, shadow_name: Option<&str>) -> Option<Value>;
}

/// The services a statement may call while it runs.
#[derive(Clone, Default)]
pub struct RuleEnv {
    /// Where `get_thing_shadow` reads; without one it answers Undefined.
    pub shadows: Option<Arc<dyn ShadowReader>>,
    /// What `aws_lambda` calls; without it every call fails (the rule's error action runs).
    pub functions: Option<Arc<dyn fleetcore_core::FunctionInvoker>>,
}

impl std::fmt::Debug for RuleEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleEnv")
            .field("shadows", &self.shadows.is_some())
            .field("functions", &self.functions.is_some())
            .finish()
    }
}

/// True when `part` lies in `source`'s memory.
fn within(source: &Bytes, part: &[u8]) -> bool {
    let start = source.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    !part.is_empty() && at >= start && at + part.len() <= start + source.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_part_of_the_source_shares_it_and_others_are_copied() {
        let source = Bytes::from_static(b"\x00\x01binary payload");
        let shared = Outcome::Bytes(&source[2..])
            .into_body(&source)
            .expect("body");
        assert_eq!(&shared[..], b"binary payload");
        assert_eq!(shared.as_ptr(), source[2..].as_ptr(), "no copy");
        let elsewhere = Outcome::Bytes(b"other").into_body(&source).expect("body");
        assert_eq!(&elsewhere[..], b"other");
        let json = Outcome::Json(Cow::Owned(serde_json::json!({"a": 1}))).into_body(&source);
        assert_eq!(json.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(Outcome::NoMatch.into_body(&source), None);
    }
}
