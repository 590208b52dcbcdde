//! The rules engine of fleetcore: the AWS IoT SQL dialect ([`sql`]) compiled once per rule and
//! evaluated per message over `serde_json::Value`, the message context a rule sees
//! ([`message`]), and the durable registry of topic rules behind the `iot` rule API
//! ([`registry`]), the durable ingest log rules read ([`ingest`]), the rule actions
//! ([`actions`]), the topic rule destinations http actions must be confirmed under
//! ([`destinations`]) and the runtime that runs them ([`runtime`]).

pub mod actions;
pub mod destinations;
pub mod ingest;
pub mod ingest_tail;
pub mod message;
pub mod registry;
pub mod runtime;
pub mod sql;
pub mod topic;

pub use message::{MessageContext, MqttProperties, Outcome, Payload, RuleEnv, ShadowReader};
pub use sql::{EvalError, SqlError, SqlVersion, Statement};
