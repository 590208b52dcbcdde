//! Service taps: in-process services (device shadows, later the rules engine) that see the
//! messages published on the topics they claim, as well as the subscribers do.
//!
//! A tap is called on the publisher's task after the publish was authorized and before it is
//! routed, so it must not block: it looks at the message (a shared pointer, no copy) and
//! enqueues what it needs. It answers, if at all, with [`super::Router::publish`].

use std::sync::Arc;

use super::message::Message;
use crate::topic;

/// An in-process service that receives the messages published on its claimed topics.
pub trait ServiceTap: Send + Sync + 'static {
    /// A message was published on a topic matching one of the tap's filters. `message.origin`
    /// is the publisher's client id (`None` for server-originated messages). Must not block.
    fn on_message(&self, message: &Arc<Message>);
}

/// A tap with the topic filters it claims.
pub(super) struct TapEntry {
    filters: Vec<String>,
    tap: Arc<dyn ServiceTap>,
}

impl TapEntry {
    pub(super) fn new(filters: Vec<String>, tap: Arc<dyn ServiceTap>) -> TapEntry {
        TapEntry { filters, tap }
    }

    /// Hands `message` to the tap when one of its filters matches the topic.
    pub(super) fn offer(&self, message: &Arc<Message>) {
        if self
            .filters
            .iter()
            .any(|f| topic::matches(f, &message.topic))
        {
            self.tap.on_message(message);
        }
    }
}
