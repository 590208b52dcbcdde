//! The seam through which capabilities publish notifications to topics (SNS): detector and alarm
//! actions, the rules `sns` action, CloudWatch alarm actions and Defender alerts call it;
//! `fleetcore-notify` implements it and the binary wires it, so no capability depends on the
//! notification crate.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// One message for a topic, as SNS `Publish` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    /// The message body (UTF-8; SNS's `Message`).
    pub message: String,
    /// SNS's `Subject` (email subject line, the JSON envelope's `Subject`).
    pub subject: Option<String>,
    /// String message attributes (SNS `MessageAttributes` of type `String`), which
    /// subscription filter policies match against.
    pub attributes: BTreeMap<String, String>,
    /// SNS's `MessageStructure`: `Some("json")` when `message` is a JSON object with a
    /// `default` message and optional per-protocol ones (`email`, `http`, ...).
    pub message_structure: Option<String>,
}

/// Why a notification was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// No topic with that ARN.
    #[error("topic not found: {0}")]
    NotFound(String),
    /// The message is malformed (empty, too large, bad attribute).
    #[error("invalid notification: {0}")]
    Invalid(String),
    /// The service failed (store, queue full).
    #[error("notification failed: {0}")]
    Service(String),
}

/// The future a publish returns: the SNS `MessageId` once the message is accepted for delivery.
pub type NotifyFuture<'a> = Pin<Box<dyn Future<Output = Result<String, NotifyError>> + Send + 'a>>;

/// Publishes notifications to topics by ARN; delivery to subscribers happens afterwards.
pub trait TopicPublisher: Send + Sync + 'static {
    /// Accepts `notification` for every subscriber of `topic_arn`.
    fn publish<'a>(&'a self, topic_arn: &'a str, notification: Notification) -> NotifyFuture<'a>;
}
