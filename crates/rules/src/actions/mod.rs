//! Rule actions as components: each kind is one module with a spec (its members, parsed and
//! checked, templates compiled) and the running [`Action`] the spec starts, registered once in
//! [`KINDS`]. CreateTopicRule validates an action with the same parser that later builds it, so
//! a rule is accepted only if every action of it can run here.
//!
//! The runtime expands an action's [`Action::templates`] per message (against the original
//! payload) and hands the action a batch of [`Prepared`] messages; the action answers one
//! outcome per message. Kinds AWS has whose capability this server lacks (IoT SiteWise,
//! ...) are refused at CreateTopicRule, naming the capability ([`validate`]). A rule stored
//! before such a refusal existed still loads: its action is built as one that fails every
//! message with the reason, so the error action fires.
//!
//! Adding a kind: a module with a type implementing [`ActionSpec`], one line in [`KINDS`], and,
//! if it writes to a service of this server, that service's handle in [`Destinations`].

mod cloudwatch_alarm;
mod cloudwatch_logs;
mod cloudwatch_metric;
mod firehose;
mod http;
mod https;
mod iot_analytics;
mod iot_events;
mod kinesis;
mod lambda;
mod members;
mod opensearch;
mod republish;
mod sigv4_auth;
mod sns;
mod unsupported;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_mqtt::broker::Router;
use fleetcore_stream::Stream;
use serde_json::Value;

use crate::destinations::TopicRuleDestinations;
use crate::sql::{SqlVersion, Template};

pub use firehose::FirehoseSink;
pub(crate) use https::check_https as https_url;
pub use https::{HttpsClient, HttpsConfig, HttpsError};
pub use members::Members;
use unsupported::Unsupported;

/// One message as an action receives it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The rule's output for the message (the SELECT result, serialized).
    pub body: Bytes,
    /// The action's templates expanded for this message, in the order of [`Action::templates`].
    pub params: Vec<String>,
}

/// How an action's lane feeds it: at most `batch` messages per [`Action::deliver`] call and at
/// most `in_flight` calls at once. Calls complete in any order; a lane refills its window as
/// each one completes, so a destination with latency is kept busy without waiting for a whole
/// batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelining {
    /// Most messages in one `deliver` call (also capped by the runtime's batch limit).
    pub batch: usize,
    /// Most `deliver` calls running at once.
    pub in_flight: usize,
}

impl Pipelining {
    /// One batch at a time, as large as the runtime allows: destinations that are in this
    /// process and keep the order of a lane (a stream, the broker).
    pub const SEQUENTIAL: Pipelining = Pipelining {
        batch: usize::MAX,
        in_flight: 1,
    };
}

/// A running rule action.
#[async_trait]
pub trait Action: Send + Sync {
    /// The action's name in AWS's error payload (`failedAction`), e.g. `KinesisAction`.
    fn name(&self) -> &'static str;

    /// The resource the message was for (`failedResource`): a stream, a topic, a URL; by
    /// default the first substituted parameter.
    fn resource(&self, params: &[String]) -> String {
        params.first().cloned().unwrap_or_default()
    }

    /// The substitution templates of the action's parameters.
    fn templates(&self) -> &[Template];

    /// How the action's lane feeds it; by default one batch at a time.
    fn pipelining(&self) -> Pipelining {
        Pipelining::SEQUENTIAL
    }

    /// Delivers the messages; one outcome per message, in order. Durable destinations return
    /// only once the messages are durable.
    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>>;
}

/// Where actions deliver: the services of this server they write to, and the HTTPS client of
/// the actions that call out.
#[derive(Clone)]
pub struct Destinations {
    /// The broker (republish).
    pub router: Arc<Router>,
    /// The user's stream store (the Kinesis action).
    pub streams: Arc<dyn Stream>,
    /// The delivery streams (the Firehose action), if the server runs them.
    pub firehose: Option<Arc<dyn FirehoseSink>>,
    /// The pooled HTTPS client (http, openSearch).
    pub https: HttpsClient,
    /// The topic rule destinations an http action's URL must be confirmed under.
    pub topic_rule_destinations: Arc<TopicRuleDestinations>,
    /// The functions (the lambda action), if the server runs them.
    pub functions: Option<Arc<dyn fleetcore_core::FunctionInvoker>>,
    /// The IoT Events inputs (the iotEvents action), if the server runs them.
    pub events: Option<Arc<dyn fleetcore_core::InputSink>>,
    /// The analytics channels (the iotAnalytics action), if the server runs them.
    pub analytics: Option<Arc<dyn fleetcore_core::ChannelSink>>,
    /// The SNS topics (the sns action), if the server runs them.
    pub notifications: Option<Arc<dyn fleetcore_core::TopicPublisher>>,
    /// CloudWatch (the cloudwatchMetric, cloudwatchLogs and cloudwatchAlarm actions), if the
    /// server runs it.
    pub cloudwatch: Option<Arc<dyn fleetcore_core::CloudWatchSink>>,
}

/// One action kind: its members parsed and checked (at CreateTopicRule and when the rule
/// starts), and the running action it becomes.
pub trait ActionSpec: Sized {
    /// The kind's key in an action object, e.g. `kinesis`.
    const KIND: &'static str;

    /// Parses and checks the members; `Err` says what is wrong, for InvalidRequestException.
    fn parse(members: &Members<'_>) -> Result<Self, String>;

    /// Starts the action against this server's services.
    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String>;
}

/// A kind's builder: its members against this server's services, to a running action.
type Build = fn(&Members<'_>, &Destinations) -> Result<Arc<dyn Action>, String>;

/// A registered action kind: what [`validate`] and [`build`] look up by name.
pub struct ActionKind {
    /// The kind's key in an action object.
    pub kind: &'static str,
    validate: fn(&Members<'_>) -> Result<(), String>,
    build: Build,
}

impl ActionKind {
    /// The registration of spec `S`.
    pub const fn of<S: ActionSpec>() -> ActionKind {
        ActionKind {
            kind: S::KIND,
            validate: validate_spec::<S>,
            build: build_spec::<S>,
        }
    }
}

fn validate_spec<S: ActionSpec>(members: &Members<'_>) -> Result<(), String> {
    S::parse(members).map(drop)
}

fn build_spec<S: ActionSpec>(
    members: &Members<'_>,
    destinations: &Destinations,
) -> Result<Arc<dyn Action>, String> {
    S::parse(members)?.start(destinations)
}

/// The action kinds this server runs.
pub const KINDS: &[ActionKind] = &[
    ActionKind::of::<republish::RepublishSpec>(),
    ActionKind::of::<kinesis::KinesisSpec>(),
    ActionKind::of::<firehose::FirehoseSpec>(),
    ActionKind::of::<http::HttpSpec>(),
    ActionKind::of::<opensearch::OpenSearchSpec>(),
    ActionKind::of::<lambda::LambdaSpec>(),
    ActionKind::of::<iot_events::IotEventsSpec>(),
    ActionKind::of::<iot_analytics::IotAnalyticsSpec>(),
    ActionKind::of::<sns::SnsSpec>(),
    ActionKind::of::<cloudwatch_metric::CloudWatchMetricSpec>(),
    ActionKind::of::<cloudwatch_logs::CloudWatchLogsSpec>(),
    ActionKind::of::<cloudwatch_alarm::CloudWatchAlarmSpec>(),
];

/// AWS action kinds whose capability this server does not have, with that capability's name.
/// A kind moves from here to [`KINDS`] when its capability lands.
const MISSING_CAPABILITY: &[(&str, &str)] = &[
    ("iotSiteWise", "AWS IoT SiteWise"),
    ("dynamoDB", "DynamoDB"),
    ("dynamoDBv2", "DynamoDB"),
    ("s3", "S3 buckets"),
    ("sqs", "SQS queues"),
    ("stepFunctions", "Step Functions"),
    ("timestream", "Timestream"),
    ("kafka", "Kafka clusters"),
    ("location", "Amazon Location"),
    ("salesforce", "Salesforce IoT"),
    (
        "elasticsearch",
        "Elasticsearch Service (use the openSearch action)",
    ),
];

fn registered(kind: &str) -> Option<&'static ActionKind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Checks that action `kind` with `members` can run here, with the parser that builds it.
/// `Err` names what is wrong, or the capability this server lacks for the kind.
pub fn validate(kind: &str, members: &Value, version: SqlVersion) -> Result<(), String> {
    match registered(kind) {
        Some(registration) => (registration.validate)(&Members::new(kind, members, version)),
        None => Err(missing(kind)),
    }
}

/// Why `kind` cannot run here.
fn missing(kind: &str) -> String {
    match MISSING_CAPABILITY.iter().find(|(k, _)| *k == kind) {
        Some((_, capability)) => format!(
            "the {kind} action needs the {capability} capability, which this server does not have"
        ),
        None => format!("the {kind} action is not supported by this server"),
    }
}

/// Builds one action object (`{"kind": {members}}`) of a rule compiled for `version`. A kind
/// this server does not run, or parameters that cannot be built (a rule stored before they
/// were refused), give an action that fails every message with the reason (so the error
/// action fires).
pub fn build(action: &Value, version: SqlVersion, destinations: &Destinations) -> Arc<dyn Action> {
    let Some((kind, members)) = action.as_object().and_then(|m| m.iter().next()) else {
        return Arc::new(Unsupported::broken(
            "unknown",
            "an action must be an object naming one action kind".into(),
        ));
    };
    let built = match registered(kind) {
        Some(registration) => {
            (registration.build)(&Members::new(kind, members, version), destinations)
        }
        None => return Arc::new(Unsupported::kind(kind, members, missing(kind))),
    };
    built.unwrap_or_else(|reason| Arc::new(Unsupported::broken(kind, reason)))
}
