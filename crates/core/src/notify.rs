//! The seam through which capabilities publish notifications to topics (SNS): detector and alarm
//! actions, the rules `sns` action, CloudWatch alarm actions and Defender alerts call it;
//! `fleetcore-notify` implements it and the binary wires it, so no capability depends on the
//! notification crate. [`RecipientNotifier`] is the same kind of seam for messages sent straight
//! to people (alarm email and SMS notifications).

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

/// A person notified directly (alarm models' email and SMS notifications), named as AWS names
/// an IAM Identity Center user; the server's recipient directory gives the address and number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recipient {
    /// `ssoIdentity.identityStoreId`.
    pub identity_store_id: String,
    /// `ssoIdentity.userId`.
    pub user_id: String,
}

/// How a direct notification reaches a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A mail through the configured SMTP server.
    Email,
    /// A text message through the configured SMS gateway.
    Sms,
}

/// A message sent straight to people, not through a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectMessage {
    /// The mail's subject (unused by SMS).
    pub subject: String,
    /// The text.
    pub body: String,
    /// Who it says it is from: the mail's `Reply-To`, the SMS sender id.
    pub sender: Option<String>,
}

/// The future of a direct notification: done once every recipient got it or it was given up.
pub type DirectFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// Sends notifications straight to the people of the server's recipient directory.
pub trait RecipientNotifier: Send + Sync + 'static {
    /// Whether `recipient` can be reached over `channel`; `Err` says why not (not in the
    /// directory, no address, channel not configured).
    fn check(&self, channel: Channel, recipient: &Recipient) -> Result<(), String>;
    /// Sends `message` to every recipient over `channel`.
    fn send<'a>(
        &'a self,
        channel: Channel,
        recipients: &'a [Recipient],
        message: DirectMessage,
    ) -> DirectFuture<'a>;
}
