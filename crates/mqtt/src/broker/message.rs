//! The application message as it travels through the router, shared by every subscriber.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{PublishProperties, QoS, Utf8};

/// An application message after it was accepted from a publisher. Shared (`Arc`) between the
/// subscribers it is routed to, so fan-out copies a pointer, not the payload.
#[derive(Debug)]
pub struct Message {
    /// The topic it was published to (aliases already resolved).
    pub topic: Utf8,
    /// The payload, a slice of the publisher's receive buffer.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// Properties to forward: the publisher's topic alias and subscription identifiers are
    /// removed, the message expiry interval is recomputed per delivery from `expires_at`.
    pub properties: PublishProperties,
    /// When the message expires (MQTT 5 Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
    /// The client id of the publisher, for No Local; `None` for server-originated messages.
    pub origin: Option<Arc<str>>,
}

impl Message {
    /// True once the message expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Seconds left of the message expiry interval, rounded up (a message with 0.4 s left still
    /// has 1 s to live, so a subscriber never sees 0 for a live message).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// The absolute expiry for an interval given in seconds, starting now.
    pub fn expiry_from_interval(interval: Option<u32>, now: Instant) -> Option<Instant> {
        interval.map(|secs| now + Duration::from_secs(u64::from(secs)))
    }
}

/// One message on its way to one session: the shared message plus what the matching
/// subscription decided for this receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub message: Arc<Message>,
    /// The QoS it is delivered with: the minimum of the publish and the subscription QoS.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Its sequence number in the session's durable queue, once written there.
    pub stored: Option<u64>,
}
