//! From the first byte to CONNACK: reads CONNECT within the connect timeout, authenticates,
//! checks the will, claims the session and answers with CONNACK or a refusal.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{ClientStream, Connection, ConnectionInfo};
use crate::broker::DeviceCounters;
use crate::broker::config::BrokerConfig;
use crate::broker::message::Message;
use crate::broker::router::{Attached, Router};
use crate::broker::session::{NEVER_EXPIRES, PendingWill};
use crate::protocol::{
    self, ConnAck, ConnAckProperties, Connect, DecodeError, LastWill, Packet, ProtocolVersion,
    Utf8, reason,
};
use crate::topic;

/// A client let in: what the connection needs from its CONNECT and from the session.
pub(super) struct Accepted {
    pub version: ProtocolVersion,
    pub client_id: Arc<str>,
    pub principal: Arc<str>,
    pub grant: Arc<dyn ConnectionGrant>,
    pub attached: Attached,
    pub will: Option<Box<PendingWill>>,
    pub keep_alive: u16,
    pub window: usize,
    pub client_max_packet: usize,
    pub client_alias_max: u16,
    pub connack: ConnAck,
    pub meter: Option<Arc<DeviceCounters>>,
}

/// Reads CONNECT (within the connect timeout), authenticates, claims the session and queues
/// CONNACK. `None` when the client is refused or gone.
pub(super) async fn admit(
    router: Arc<Router>,
    authenticator: &dyn Authenticator,
    mut io: Box<dyn ClientStream>,
    info: ConnectionInfo,
    connection_id: u64,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Connection> {
    let metrics = router.metrics();
    let mut rbuf = BytesMut::new();
    let max_packet = router.config().max_packet_size;
    let first = tokio::select! {
        _ = shutdown.changed() => return None,
        first = tokio::time::timeout(
            router.config().connect_timeout,
            read_packet(&mut io, &mut rbuf, ProtocolVersion::V5, max_packet),
        ) => first,
    };
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(c)))) => c,
        Ok(Err(DecodeError::UnsupportedProtocolVersion(level))) => {
            metrics.connections_refused.increment(1);
            tracing::debug!(peer = %info.peer, level, "unsupported protocol level");
            let version = if level < 5 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            refuse(&mut io, version, reason::UNSUPPORTED_PROTOCOL_VERSION).await;
            return None;
        }
        Ok(Err(e)) => {
            metrics.protocol_errors.increment(1);
            tracing::debug!(peer = %info.peer, error = %e, "bad first packet");
            return None;
        }
        Ok(Ok(Some(_))) => {
            metrics.protocol_errors.increment(1);
            tracing::debug!(peer = %info.peer, "first packet was not CONNECT");
            return None;
        }
        Ok(Ok(None)) | Err(_) => {
            tracing::debug!(peer = %info.peer, "no CONNECT before the connect timeout or close");
            return None;
        }
    };
    match accept(
        &router,
        authenticator,
        &mut io,
        &info,
        *connect,
        connection_id,
    )
    .await
    {
        Some(accepted) => Some(Connection::new(
            router,
            io,
            rbuf,
            accepted,
            (connection_id, info.transport),
        )),
        None => {
            metrics.connections_refused.increment(1);
            None
        }
    }
}

/// Reads until one whole packet is decoded. `Ok(None)` on a clean close.
async fn read_packet(
    io: &mut Box<dyn ClientStream>,
    rbuf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet: usize,
) -> Result<Option<Packet>, DecodeError> {
    loop {
        if let Some(p) = protocol::decode(rbuf, version, max_packet)? {
            return Ok(Some(p));
        }
        match io.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Writes one last packet and closes the stream, giving up after a second.
pub(super) async fn write_packet(
    io: &mut Box<dyn ClientStream>,
    packet: &Packet,
    version: ProtocolVersion,
) {
    let mut buf = BytesMut::new();
    protocol::encode(packet, version, &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(&buf).await;
        let _ = io.flush().await;
        let _ = io.shutdown().await;
    })
    .await;
}

async fn refuse(io: &mut Box<dyn ClientStream>, version: ProtocolVersion, code: u8) {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: code,
        properties: ConnAckProperties::default(),
    });
    write_packet(io, &connack, version).await;
}

/// A client id for a client that sent none: unique per connection, not guessable.
fn assigned_client_id(connection_id: u64) -> String {
    let salt = RandomState::new().hash_one(connection_id);
    format!("fc-{connection_id:x}-{salt:016x}")
}

/// Validates CONNECT, authenticates, claims the session and sends CONNACK. `None` if refused
/// (the refusal was sent).
async fn accept(
    router: &Arc<Router>,
    authenticator: &dyn Authenticator,
    io: &mut Box<dyn ClientStream>,
    info: &ConnectionInfo,
    connect: Connect,
    connection_id: u64,
) -> Option<Accepted> {
    let version = connect.protocol;
    let config = router.config();
    if connect.properties.authentication_method.is_some() {
        refuse(io, version, reason::BAD_AUTHENTICATION_METHOD).await;
        return None;
    }
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if version == ProtocolVersion::V311 && !connect.clean_start {
            refuse(io, version, reason::CLIENT_IDENTIFIER_NOT_VALID).await;
            return None;
        }
        let id = assigned_client_id(connection_id);
        assigned = Utf8::new(id.clone());
        Arc::from(id)
    } else {
        Arc::from(connect.client_id.as_str())
    };
    let meter = router
        .device_meter()
        .map(|m| m.connecting(&client_id, info.peer.ip()));
    let credentials = ClientCredentials {
        client_id: &client_id,
        username: connect.username.as_deref(),
        peer_certificate: info.peer_certificate.as_deref(),
        transport: info.transport,
    };
    let (principal, grant) = match authenticator.authenticate(&credentials) {
        AuthOutcome::Allowed { principal, grant } => (principal, grant),
        AuthOutcome::Refused(refusal) => {
            let code = match &refusal {
                Refusal::NotAuthorized(why) => {
                    if let Some(m) = &meter {
                        m.denied();
                    }
                    tracing::info!(peer = %info.peer, client_id = %client_id, why, "connection not authorized");
                    reason::NOT_AUTHORIZED
                }
                Refusal::BadCredentials(why) => {
                    tracing::info!(peer = %info.peer, client_id = %client_id, why, "bad credentials");
                    reason::BAD_USERNAME_OR_PASSWORD
                }
            };
            refuse(io, version, code).await;
            return None;
        }
    };
    let will = match connect.will {
        None => None,
        Some(w) => {
            if !topic::valid_topic_name(&w.topic, config.max_topic_length) {
                refuse(io, version, reason::TOPIC_NAME_INVALID).await;
                return None;
            }
            // The will is a publish the client makes later: it needs the same permission now,
            // or any client could publish (and retain) once to any topic by disconnecting.
            let action = if w.retain {
                MqttAction::RetainPublish
            } else {
                MqttAction::Publish
            };
            if !grant.allows(action, &w.topic) {
                router.metrics().denied(action, &client_id, &w.topic);
                if let Some(m) = &meter {
                    m.denied();
                }
                tracing::info!(peer = %info.peer, client_id = %client_id, topic = %w.topic, "will topic not authorized");
                refuse(io, version, reason::NOT_AUTHORIZED).await;
                return None;
            }
            Some(Box::new(pending_will(w, &client_id)))
        }
    };
    let expiry = match version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        ProtocolVersion::V311 if connect.clean_start => 0,
        ProtocolVersion::V311 => NEVER_EXPIRES,
    };
    if let Some(m) = router.device_meter() {
        m.admitted(&client_id, &principal, info.peer.ip());
    }
    let Some(attached) = router
        .attach(
            Arc::clone(&client_id),
            connect.clean_start,
            expiry,
            version,
            connection_id,
        )
        .await
    else {
        refuse(io, version, reason::SERVER_UNAVAILABLE).await;
        return None;
    };
    // A persistent session is promised by CONNACK: its record must be on disk first (the
    // session store's group commit, shared with every connection saved meanwhile).
    if attached.record_ticket != 0 {
        let mut durable = router.session_watermark();
        let wait = durable.wait_for(|d| *d >= attached.record_ticket);
        if !matches!(
            tokio::time::timeout(config.connect_timeout, wait).await,
            Ok(Ok(_))
        ) {
            tracing::warn!(peer = %info.peer, client_id = %client_id, "the session's record was not saved in time; refusing the connection");
            router.detach(attached.session, attached.state, None, false);
            refuse(io, version, reason::SERVER_UNAVAILABLE).await;
            return None;
        }
    }
    tracing::debug!(peer = %info.peer, client_id = %client_id, principal, transport = info.transport.as_str(), "client connected");
    let keep_alive = KeepAlive::negotiate(connect.keep_alive, config.max_keep_alive);
    let mut properties = connack_properties(config, version, assigned);
    if version == ProtocolVersion::V5 {
        properties.server_keep_alive = keep_alive.announced;
    }
    if let Some(m) = &meter {
        m.connected();
    }
    Some(Accepted {
        version,
        client_id,
        principal: Arc::from(principal),
        grant,
        connack: ConnAck {
            session_present: attached.session_present,
            reason: reason::SUCCESS,
            properties,
        },
        attached,
        will,
        keep_alive: keep_alive.seconds,
        window: outbound_window(config.max_inflight, connect.properties.receive_maximum),
        client_max_packet: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        client_alias_max: match version {
            ProtocolVersion::V5 => connect.properties.topic_alias_maximum.unwrap_or(0),
            ProtocolVersion::V311 => 0,
        },
        meter,
    })
}

/// The will of CONNECT as the message the session publishes when the connection ends badly.
fn pending_will(w: LastWill, client_id: &Arc<str>) -> PendingWill {
    PendingWill {
        message: Message {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            properties: protocol::PublishProperties {
                payload_format_indicator: w.properties.payload_format_indicator,
                message_expiry_interval: w.properties.message_expiry_interval,
                topic_alias: None,
                response_topic: w.properties.response_topic,
                correlation_data: w.properties.correlation_data,
                user_properties: w.properties.user_properties,
                subscription_identifiers: Vec::new(),
                content_type: w.properties.content_type,
            },
            expires_at: None,
            origin: Some(Arc::clone(client_id)),
        },
        delay: w.properties.will_delay_interval.unwrap_or(0),
    }
}

/// What the server announces in an MQTT 5 CONNACK (3.1.1 has no properties).
fn connack_properties(
    config: &BrokerConfig,
    version: ProtocolVersion,
    assigned_client_identifier: Option<Utf8>,
) -> ConnAckProperties {
    match version {
        ProtocolVersion::V311 => ConnAckProperties::default(),
        ProtocolVersion::V5 => ConnAckProperties {
            receive_maximum: Some(config.max_inflight),
            maximum_packet_size: u32::try_from(config.max_packet_size).ok(),
            topic_alias_maximum: Some(config.topic_alias_maximum),
            assigned_client_identifier,
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            subscription_identifiers_available: Some(1),
            shared_subscription_available: Some(1),
            ..ConnAckProperties::default()
        },
    }
}

/// The keep alive a connection runs with.
#[derive(Debug, PartialEq, Eq)]
struct KeepAlive {
    /// Seconds (0: none).
    seconds: u16,
    /// Server Keep Alive to announce in CONNACK: set when it differs from the client's.
    announced: Option<u16>,
}

impl KeepAlive {
    /// The client's keep alive lowered to `maximum`; a client asking for none (0) gets the
    /// maximum too. `maximum` 0: no maximum.
    fn negotiate(requested: u16, maximum: u16) -> KeepAlive {
        if maximum == 0 || (requested != 0 && requested <= maximum) {
            KeepAlive {
                seconds: requested,
                announced: None,
            }
        } else {
            KeepAlive {
                seconds: maximum,
                announced: Some(maximum),
            }
        }
    }
}

/// Unacknowledged deliveries allowed to the client: our maximum lowered to its Receive
/// Maximum, at least one.
fn outbound_window(max_inflight: u16, client_receive_maximum: Option<u16>) -> usize {
    usize::from(max_inflight.min(client_receive_maximum.unwrap_or(u16::MAX))).max(1)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{QoS, WillProperties};

    #[test]
    fn assigned_client_ids_differ_between_connections_and_servers() {
        let a = assigned_client_id(7);
        assert!(a.starts_with("fc-7-"), "{a}");
        assert_ne!(a, assigned_client_id(8));
        // Salted per call: a restarted server reusing connection ids does not repeat them.
        assert_ne!(a, assigned_client_id(7));
    }

    #[test]
    fn the_window_is_the_smaller_receive_maximum_and_never_zero() {
        assert_eq!(outbound_window(128, None), 128);
        assert_eq!(outbound_window(128, Some(10)), 10);
        assert_eq!(outbound_window(5, Some(10)), 5);
        assert_eq!(outbound_window(0, Some(0)), 1);
    }

    #[test]
    fn keep_alive_is_lowered_to_the_maximum_and_announced() {
        let kept = |seconds| KeepAlive {
            seconds,
            announced: None,
        };
        let lowered = |seconds| KeepAlive {
            seconds,
            announced: Some(seconds),
        };
        assert_eq!(KeepAlive::negotiate(60, 1200), kept(60));
        assert_eq!(KeepAlive::negotiate(1200, 1200), kept(1200));
        assert_eq!(KeepAlive::negotiate(1201, 1200), lowered(1200));
        assert_eq!(KeepAlive::negotiate(0, 1200), lowered(1200), "none asked");
        assert_eq!(KeepAlive::negotiate(0, 0), kept(0), "no maximum");
        assert_eq!(KeepAlive::negotiate(u16::MAX, 0), kept(u16::MAX));
    }

    #[test]
    fn mqtt5_connack_announces_the_limits_and_the_assigned_id() {
        let config = BrokerConfig::default();
        let id = Utf8::new("fc-1-2");
        let p = connack_properties(&config, ProtocolVersion::V5, id.clone());
        assert_eq!(p.receive_maximum, Some(config.max_inflight));
        assert_eq!(
            p.maximum_packet_size,
            u32::try_from(config.max_packet_size).ok()
        );
        assert_eq!(p.topic_alias_maximum, Some(config.topic_alias_maximum));
        assert_eq!(p.assigned_client_identifier, id);
        assert_eq!(p.retain_available, Some(1));
        assert_eq!(
            connack_properties(&config, ProtocolVersion::V311, None),
            ConnAckProperties::default()
        );
    }

    #[test]
    fn the_will_keeps_its_properties_and_its_delay() {
        let will = LastWill {
            topic: Utf8::new("dead/1").unwrap_or_default(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                message_expiry_interval: Some(60),
                content_type: Utf8::new("text/plain"),
                ..WillProperties::default()
            },
        };
        let pending = pending_will(will, &Arc::from("dev-1"));
        assert_eq!(pending.delay, 30);
        let m = &pending.message;
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("dead/1", &b"gone"[..]));
        assert_eq!((m.qos, m.retain), (QoS::AtLeastOnce, true));
        assert_eq!(m.properties.message_expiry_interval, Some(60));
        assert_eq!(m.properties.content_type, Utf8::new("text/plain"));
        assert_eq!(m.expires_at, None, "expiry counts from the publication");
        assert_eq!(m.origin.as_deref(), Some("dev-1"));
    }
}
