//! Broker limits. Every limit is configurable because the right value depends on the fleet: a
//! plant of sensors sending 200-byte readings wants small limits; a gateway relaying camera
//! stills wants large packets.

use std::time::Duration;

/// Limits and protocol settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes (advertised as Maximum Packet Size).
    pub max_packet_size: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// QoS 1/2 messages in flight per direction per client: advertised as Receive Maximum, and
    /// the cap on unacknowledged deliveries to a client (lowered to the client's own maximum).
    pub max_inflight: u16,
    /// Messages queued per session beyond the inflight window, online or offline.
    pub max_queued_messages: usize,
    /// Bytes (payloads and topics) queued for an online session before publishers to it wait
    /// (backpressure). Small, so that a saturated subscriber's messages wait in its publishers'
    /// sockets, not in a deep queue: latency stays low and publishers slow down at once. At
    /// least one message is always queued, whatever its size. A publisher's own messages
    /// waiting for full receivers (their other receivers already have them) are bounded by the
    /// same bytes, and 32 messages, before its socket is no longer read.
    pub max_queued_bytes: usize,
    /// Bytes of deliveries and acknowledgements a connection encodes before it writes them to
    /// its socket: one write call per batch.
    pub write_buffer_bytes: usize,
    /// New connections accepted per second per listener; 0 means no limit.
    pub max_connections_per_second: u32,
    /// Time a new connection has to complete its CONNECT.
    pub connect_timeout: Duration,
    /// Topic aliases a client may use towards the broker (advertised as Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// How long a publisher waits for an online subscriber's full queue before the message is
    /// dropped for that subscriber (counted in `fleetcore_mqtt_messages_dropped_total`); once a
    /// subscriber has made no progress (taken nothing from its full queue, written nothing to
    /// its socket) for this long, every message that finds it full is dropped at once.
    pub slow_subscriber_timeout: Duration,
    /// How long an online subscriber with a full queue, waiting for its socket to take bytes,
    /// may make no progress before it counts as stuck: publishers stop waiting for it, its QoS 0 messages are dropped (counted as
    /// `reason="stuck"`) and its QoS 1/2 messages, if its session is persistent, go to its
    /// durable queue up to `max_queued_messages`. A clean session's QoS 1/2 messages are
    /// still waited for, up to `slow_subscriber_timeout`: nothing promised is dropped early.
    pub stuck_subscriber_timeout: Duration,
    /// How long the writer of sessions and retained messages gathers changes before it commits
    /// them in one transaction (0: as soon as it is free). A persistent session's CONNACK,
    /// SUBACK and UNSUBACK wait for that commit.
    pub session_commit_delay: Duration,
    /// Longest keep alive a client may have, in seconds (0: no maximum). A client asking for
    /// more, or for none (0), gets this one, announced as Server Keep Alive in an MQTT 5
    /// CONNACK; AWS IoT allows 30-1200 s.
    pub max_keep_alive: u16,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            max_topic_length: 256,
            max_inflight: 128,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024,
            write_buffer_bytes: 64 * 1024,
            max_connections_per_second: 0,
            connect_timeout: Duration::from_secs(10),
            topic_alias_maximum: 64,
            slow_subscriber_timeout: Duration::from_secs(2),
            stuck_subscriber_timeout: Duration::from_millis(200),
            session_commit_delay: Duration::ZERO,
            max_keep_alive: 1200,
        }
    }
}
