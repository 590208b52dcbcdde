//! Detector actions as components: each kind is one module that parses its members (once, when
//! the model is created: expressions compiled, targets checked) into a [`DetectorAction`],
//! registered in [`KINDS`]. Running an action either changes the instance (variables, timers)
//! or yields an [`Effect`]: a future that reaches another service (MQTT, SNS, a function, an
//! input, a delivery stream), run by the engine after the instance's new state is durable.
//!
//! Adding a kind: a module with a `build` function and one line in [`KINDS`]; if it reaches a
//! service of this server, that service's seam in [`Targets`].

mod firehose;
mod iot_events;
mod lambda;
mod payload;
mod publish;
mod sns;
mod timers;
mod variables;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use fleetcore_core::{FunctionInvoker, InputSink, RecipientNotifier, TopicPublisher};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::expr::{Expr, PathStep, Scope, Value};

pub use payload::default_payload;

/// The future of an action that reaches another service.
pub type EffectFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// An action's call to another service, run after the instance's state is durable.
pub struct Effect {
    /// The action kind (for logs and metrics).
    pub action: &'static str,
    /// The call.
    pub call: EffectFuture,
}

/// Publishes MQTT messages from the server (the `iotTopicPublish` action); the binary
/// implements it over the broker.
pub trait MqttPublisher: Send + Sync + 'static {
    /// Publishes `payload` on `topic` with `qos` (0 or 1).
    fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), String>;
}

/// The future a record put returns.
pub type RecordFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Puts records into delivery streams (the `firehose` action); the binary implements it over
/// the archive.
pub trait RecordSink: Send + Sync + 'static {
    /// Puts one record into delivery stream `stream`.
    fn put_record<'a>(&'a self, stream: &'a str, record: Bytes) -> RecordFuture<'a>;
}

/// The services actions reach; a kind whose service is absent is refused at create time.
#[derive(Clone, Default)]
pub struct Targets {
    /// The broker (iotTopicPublish).
    pub mqtt: Option<Arc<dyn MqttPublisher>>,
    /// SNS topics (sns).
    pub topics: Option<Arc<dyn TopicPublisher>>,
    /// Functions (lambda).
    pub functions: Option<Arc<dyn FunctionInvoker>>,
    /// Delivery streams (firehose).
    pub firehose: Option<Arc<dyn RecordSink>>,
    /// People reached by mail and SMS (alarm models' email and SMS notifications).
    pub recipients: Option<Arc<dyn RecipientNotifier>>,
    /// This server's own inputs (iotEvents); set once the engine runs.
    pub inputs: Arc<OnceLock<Arc<dyn InputSink>>>,
}

/// A timer of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// When it fires, epoch milliseconds.
    pub due_ms: u64,
    /// Its duration (resetTimer restarts it with this).
    pub seconds: u64,
}

/// What started an evaluation.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A message of an input.
    Message {
        /// The input's name.
        input: Arc<str>,
        /// The message's id.
        message_id: Arc<str>,
        /// The message body.
        payload: Arc<Json>,
    },
    /// A timer expired.
    Timer(String),
    /// BatchUpdateDetector set the state.
    Update,
}

/// The instance an action runs for.
#[derive(Debug, Clone, Copy)]
pub struct Detector<'a> {
    /// The model's name.
    pub model: &'a str,
    /// The model version.
    pub version: u32,
    /// The key value (`None` for a model without key).
    pub key: Option<&'a str>,
}

/// Everything an action may read and change while it runs.
pub struct Run<'a> {
    /// The instance's variables.
    pub variables: &'a mut BTreeMap<String, Value>,
    /// The instance's timers.
    pub timers: &'a mut BTreeMap<String, Timer>,
    /// What is being evaluated.
    pub trigger: &'a Trigger,
    /// The evaluation's clock, epoch milliseconds.
    pub now_ms: u64,
    /// The instance.
    pub detector: Detector<'a>,
    /// The instance's state while the action runs.
    pub state: &'a str,
    /// The event the action belongs to.
    pub event: &'a str,
    /// Calls to other services, collected.
    pub effects: &'a mut Vec<Effect>,
    /// What an action without `payload` sends instead of the detector's default payload (an
    /// alarm's state change).
    pub default_payload: Option<&'a Json>,
}

impl Run<'_> {
    /// Evaluates `e` against the message and the variables.
    pub fn eval(&self, e: &Expr) -> Value {
        e.eval(&View {
            variables: self.variables,
            trigger: self.trigger,
        })
    }

    /// The scope expressions read.
    pub fn scope(&self) -> View<'_> {
        View {
            variables: self.variables,
            trigger: self.trigger,
        }
    }
}

/// A read-only view of an instance for expressions.
pub struct View<'a> {
    /// The variables.
    pub variables: &'a BTreeMap<String, Value>,
    /// What is being evaluated.
    pub trigger: &'a Trigger,
}

impl Scope for View<'_> {
    fn input(&self, input: &str, path: &[PathStep]) -> Value {
        let Trigger::Message {
            input: current,
            payload,
            ..
        } = self.trigger
        else {
            return Value::Undefined;
        };
        if &**current != input {
            return Value::Undefined;
        }
        lookup(payload, path).map_or(Value::Undefined, Value::from_json)
    }

    fn variable(&self, name: &str) -> Value {
        self.variables
            .get(name)
            .cloned()
            .unwrap_or(Value::Undefined)
    }

    fn timed_out(&self, timer: &str) -> bool {
        matches!(self.trigger, Trigger::Timer(t) if t == timer)
    }

    fn current_input(&self, input: &str) -> bool {
        matches!(self.trigger, Trigger::Message { input: i, .. } if &**i == input)
    }
}

/// The member of `json` at `path`.
pub fn lookup<'j>(json: &'j Json, path: &[PathStep]) -> Option<&'j Json> {
    let mut at = json;
    for step in path {
        at = match step {
            PathStep::Field(f) => at.get(f)?,
            PathStep::Index(i) => at.get(i)?,
        };
    }
    Some(at)
}

/// A compiled action.
pub trait DetectorAction: Send + Sync {
    /// The expressions the action evaluates (checked against the inputs at create time).
    fn expressions(&self) -> Vec<&Expr>;
    /// Runs the action.
    fn run(&self, run: &mut Run<'_>);
}

/// A kind's builder: its members, the targets, to a compiled action.
type Build = fn(&Json, &Targets) -> Result<Box<dyn DetectorAction>, String>;

/// The action kinds this server runs.
const KINDS: &[(&str, Build)] = &[
    ("setVariable", variables::build),
    ("setTimer", timers::build_set),
    ("resetTimer", timers::build_reset),
    ("clearTimer", timers::build_clear),
    ("iotTopicPublish", publish::build),
    ("sns", sns::build),
    ("lambda", lambda::build),
    ("iotEvents", iot_events::build),
    ("firehose", firehose::build),
];

/// Kinds AWS has whose service this server does not run.
const MISSING: &[(&str, &str)] = &[
    ("sqs", "SQS queues"),
    ("dynamoDB", "DynamoDB"),
    ("dynamoDBv2", "DynamoDB"),
    ("iotSiteWise", "AWS IoT SiteWise"),
];

/// Builds one action object (`{"kind": {members}}`); `Err` says what is wrong.
pub fn build(action: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    let Some(object) = action.as_object() else {
        return Err("an action must be an object naming one action kind".into());
    };
    let mut kinds = object.iter().filter(|(_, v)| !v.is_null());
    let (Some((kind, members)), None) = (kinds.next(), kinds.next()) else {
        return Err("an action must name exactly one action kind".into());
    };
    if let Some((_, build)) = KINDS.iter().find(|(k, _)| k == kind) {
        return build(members, targets).map_err(|e| format!("{kind}: {e}"));
    }
    match MISSING.iter().find(|(k, _)| k == kind) {
        Some((_, service)) => Err(format!(
            "the {kind} action needs {service}, which this server does not run"
        )),
        None => Err(format!("{kind:?} is not an action kind")),
    }
}

/// A required string member.
fn required_str<'j>(members: &'j Json, name: &str) -> Result<&'j str, String> {
    match members.get(name) {
        Some(Json::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("{name} must be a non-empty string")),
        None => Err(format!("{name} is required")),
    }
}

/// The target a kind needs, or the create-time refusal naming it.
fn needs<T: ?Sized>(target: &Option<Arc<T>>, what: &str) -> Result<Arc<T>, String> {
    target
        .clone()
        .ok_or_else(|| format!("this server does not run {what}"))
}
