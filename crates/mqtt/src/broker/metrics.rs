//! The broker's metrics, registered once so the message path increments a cached handle instead
//! of looking a name up per message. Names follow Prometheus conventions (`_total` counters).

use fleetcore_core::access::MqttAction;
use metrics::{Counter, Gauge, counter, gauge};

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// The session's queue was full (offline, or online past the slow-subscriber timeout).
    QueueFull,
    /// A QoS 0 message for an online session whose full queue made no progress for the
    /// stuck-subscriber timeout.
    Stuck,
    /// QoS 0 message for an offline session.
    Offline,
    /// The message expired before it could be sent.
    Expired,
    /// The encoded packet exceeded the client's Maximum Packet Size.
    TooLarge,
}

/// Cached metric handles of the broker.
#[derive(Clone)]
pub struct BrokerMetrics {
    /// Live MQTT connections.
    pub connections: Gauge,
    /// Connections parked: idle, holding no buffer, timer or busy-loop state.
    pub connections_parked: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused at CONNECT (bad protocol, not authorized, ...).
    pub connections_refused: Counter,
    /// PUBLISH packets received from clients.
    pub messages_received: Counter,
    /// PUBLISH packets sent to clients.
    pub messages_sent: Counter,
    /// Bytes read from client sockets.
    pub bytes_received: Counter,
    /// Bytes written to client sockets.
    pub bytes_sent: Counter,
    /// Connections closed because of a protocol violation or malformed packet.
    pub protocol_errors: Counter,
    /// Sessions (online or offline).
    pub sessions: Gauge,
    /// Retained topics.
    pub retained: Gauge,
    denied: [Counter; 4],
    /// Subscriptions.
    pub subscriptions: Gauge,
    dropped_queue_full: Counter,
    dropped_stuck: Counter,
    dropped_offline: Counter,
    dropped_expired: Counter,
    dropped_too_large: Counter,
}

impl BrokerMetrics {
    /// Registers the broker's metrics with the global recorder.
    pub fn register() -> BrokerMetrics {
        let dropped = |reason: &'static str| counter!("fleetcore_mqtt_messages_dropped_total", "reason" => reason);
        BrokerMetrics {
            connections: gauge!("fleetcore_mqtt_connections"),
            connections_parked: gauge!("fleetcore_mqtt_connections_parked"),
            connections_total: counter!("fleetcore_mqtt_connections_accepted_total"),
            connections_refused: counter!("fleetcore_mqtt_connections_refused_total"),
            messages_received: counter!("fleetcore_mqtt_messages_received_total"),
            messages_sent: counter!("fleetcore_mqtt_messages_sent_total"),
            bytes_received: counter!("fleetcore_mqtt_bytes_received_total"),
            bytes_sent: counter!("fleetcore_mqtt_bytes_sent_total"),
            protocol_errors: counter!("fleetcore_mqtt_protocol_errors_total"),
            sessions: gauge!("fleetcore_mqtt_sessions"),
            retained: gauge!("fleetcore_mqtt_retained_messages"),
            subscriptions: gauge!("fleetcore_mqtt_subscriptions"),
            dropped_queue_full: dropped("queue_full"),
            dropped_stuck: dropped("stuck"),
            dropped_offline: dropped("offline"),
            dropped_expired: dropped("expired"),
            dropped_too_large: dropped("too_large"),
            denied: MqttAction::ALL.map(|action| {
                counter!("fleetcore_mqtt_authorization_denied_total", "action" => action.as_str())
            }),
        }
    }

    /// Counts (and logs) an action a client's policy did not allow.
    pub fn denied(&self, action: MqttAction, client_id: &str, resource: &str) {
        tracing::info!(
            client_id,
            action = action.as_str(),
            resource,
            "not authorized"
        );
        self.denied[action.index()].increment(1);
    }

    /// Counts (and, at debug level, logs) a message not delivered to `client_id`.
    pub fn dropped(&self, reason: DropReason, client_id: &str) {
        tracing::debug!(client_id, ?reason, "message dropped for subscriber");
        match reason {
            DropReason::QueueFull => self.dropped_queue_full.increment(1),
            DropReason::Stuck => self.dropped_stuck.increment(1),
            DropReason::Offline => self.dropped_offline.increment(1),
            DropReason::Expired => self.dropped_expired.increment(1),
            DropReason::TooLarge => self.dropped_too_large.increment(1),
        }
    }
}
