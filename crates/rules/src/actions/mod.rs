//! Rule actions: each kind is one module implementing [`Action`], built from the action's
//! stored parameters with its substitution templates compiled once per rule.
//!
//! The runtime expands an action's [`Action::templates`] per message (against the original
//! payload) and hands the action a batch of [`Prepared`] messages; the action answers one
//! outcome per message. Kinds this server cannot run yet (IoT Events, ...) are built
//! as an action that fails every message: every message fails, so the error action fires.

mod firehose;
mod http;
mod kinesis;
mod lambda;
mod republish;
mod unsupported;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_mqtt::broker::Router;
use fleetcore_stream::Stream;
use serde_json::Value;

use crate::sql::{SqlVersion, Template};

pub use firehose::FirehoseSink;
use unsupported::Unsupported;

/// One message as an action receives it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The rule's output for the message (the SELECT result, serialized).
    pub body: Bytes,
    /// The action's templates expanded for this message, in the order of [`Action::templates`].
    pub params: Vec<String>,
}

/// A running rule action.
#[async_trait]
pub trait Action: Send + Sync {
    /// The action's name in AWS's error payload (`failedAction`), e.g. `KinesisAction`.
    fn name(&self) -> &'static str;

    /// The resource the message was for (`failedResource`): a stream, a topic, a URL.
    fn resource(&self, params: &[String]) -> String;

    /// The substitution templates of the action's parameters.
    fn templates(&self) -> &[Template];

    /// Delivers the messages; one outcome per message, in order. Durable destinations return
    /// only once the messages are durable.
    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>>;
}

/// Where actions deliver: the services of this server they write to.
#[derive(Clone)]
pub struct Destinations {
    /// The broker (republish).
    pub router: Arc<Router>,
    /// The user's stream store (the Kinesis action).
    pub streams: Arc<dyn Stream>,
    /// The delivery streams (the Firehose action), if the server runs them.
    pub firehose: Option<Arc<dyn FirehoseSink>>,
    /// The functions (the Lambda action), if the server runs them.
    pub functions: Option<Arc<dyn fleetcore_core::FunctionInvoker>>,
}

/// Builds one action object (`{"kind": {members}}`) of a rule compiled for `version`. A kind
/// this server does not run, or parameters that cannot be built, give an action that fails
/// every message with the reason (so the error action fires).
pub fn build(action: &Value, version: SqlVersion, destinations: &Destinations) -> Arc<dyn Action> {
    let Some((kind, members)) = action.as_object().and_then(|m| m.iter().next()) else {
        return Arc::new(Unsupported::broken(
            "unknown",
            "an action must be an object naming one action kind".into(),
        ));
    };
    let template = |field: &str| -> Result<Option<Template>, String> {
        members
            .get(field)
            .and_then(Value::as_str)
            .map(|text| {
                Template::compile(text, version).map_err(|e| format!("{kind}.{field}: {e}"))
            })
            .transpose()
    };
    let built: Result<Arc<dyn Action>, String> = match kind.as_str() {
        "republish" => republish::Republish::build(members, &template, destinations)
            .map(|a| Arc::new(a) as Arc<dyn Action>),
        "kinesis" => kinesis::Kinesis::build(members, &template, destinations)
            .map(|a| Arc::new(a) as Arc<dyn Action>),
        "firehose" => {
            firehose::Firehose::build(members, destinations).map(|a| Arc::new(a) as Arc<dyn Action>)
        }
        "http" => http::Http::build(members, version).map(|a| Arc::new(a) as Arc<dyn Action>),
        "lambda" => {
            lambda::Lambda::build(members, destinations).map(|a| Arc::new(a) as Arc<dyn Action>)
        }
        other => Ok(Arc::new(Unsupported::kind(other, members))),
    };
    built.unwrap_or_else(|reason| Arc::new(Unsupported::broken(kind, reason)))
}

/// A string member, or an error naming it.
fn required_str<'a>(members: &'a Value, kind: &str, field: &str) -> Result<&'a str, String> {
    members
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{kind}.{field} must be a string"))
}
