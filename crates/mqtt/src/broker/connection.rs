//! One client connection: reads and decodes packets, applies them to its session through the
//! router, and writes acknowledgements and deliveries back, batching writes.
//!
//! The connection is a single task that owns its session state. It never blocks on another
//! session: when a receiver's queue is full it stops reading its own socket (backpressure on the
//! publisher) but keeps draining its own mailbox, so two clients publishing to each other cannot
//! deadlock.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials, Refusal, TransportKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

use super::ingest::{Ingested, Publisher};
use super::message::{Delivery, Message};
use super::metrics::DropReason;
use super::router::{Blocked, Router};
use super::session::{
    Inflight, InflightStage, NEVER_EXPIRES, PendingWill, SessionHandle, SessionState,
};
use crate::protocol::{
    self, AckProperties, ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect,
    DisconnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS, SubAck, Subscribe,
    UnsubAck, Unsubscribe, Utf8, reason,
};
use crate::topic;

/// A byte stream a client is connected over (TCP, TLS, WebSocket).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// What the transport knows about a new connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// How the client connected.
    pub transport: TransportKind,
    /// The client's address.
    pub peer: SocketAddr,
    /// DER of the verified client certificate (TLS transports).
    pub peer_certificate: Option<Vec<u8>>,
}

/// Flush the write buffer once it holds this much, even if more deliveries are waiting.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Deliveries taken from the mailbox per lock.
const POP_BATCH: usize = 64;
/// Largest read buffer of a busy connection.
const READ_CHUNK: usize = 8 * 1024;
/// Read buffer of a quiet connection: a PINGREQ, an acknowledgement, a small PUBLISH.
const MIN_READ: usize = 256;
/// A connection quiet for this long gives its buffers back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Why a connection ends.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT; `keep_will` for MQTT 5 reason 0x04.
    Disconnected { keep_will: bool },
    /// The client broke the protocol or a limit: the reason code goes in our DISCONNECT.
    Violation { code: u8, why: &'static str },
    /// The socket closed or failed.
    Closed,
    /// Another connection took the session.
    TakenOver,
    /// The server is shutting down.
    Shutdown,
}

fn violation(code: u8, why: &'static str) -> Exit {
    Exit::Violation { code, why }
}

/// A publish waiting for room in full receivers before it is acknowledged.
struct PendingFanout {
    blocked: Vec<Blocked>,
    ack: Option<Packet>,
    /// The ingest ticket the acknowledgement also waits for.
    ticket: Option<u64>,
    deadline: Instant,
}

/// Acknowledgements held back until the ingest log made their messages durable, in the order
/// of their PUBLISH packets (ticket 0: nothing to wait for, only order to keep).
struct HeldAcks {
    queue: VecDeque<(u64, Packet)>,
    watermark: watch::Receiver<u64>,
}

struct Connection {
    router: Arc<Router>,
    io: Box<dyn ClientStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    connection_id: u64,
    client_id: Arc<str>,
    /// What the client's identity may do; asked on every publish, subscribe and delivery.
    grant: Arc<dyn ConnectionGrant>,
    /// Re-checks of the grant already done (see `SessionHandle::request_revalidation`). Starts
    /// at 0, so a resumed session that saw re-checks before re-checks once, never misses one.
    revalidations_seen: u64,
    session: Arc<SessionHandle>,
    state: OwnedMutexGuard<SessionState>,
    /// Boxed: rarely present, and large (a whole message).
    will: Option<Box<PendingWill>>,
    keep_alive: Option<Duration>,
    last_packet: Instant,
    /// Size of the next read buffer: grows while reads fill it, back to the minimum when idle.
    read_size: usize,
    /// When the bytes of an incomplete packet started arriving.
    partial_since: Option<Instant>,
    /// Last read or write, for releasing buffers of idle connections.
    last_activity: Instant,
    /// Outbound QoS 1/2 window: our maximum lowered to the client's Receive Maximum.
    window: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    inbound_aliases: HashMap<u16, Utf8>,
    outbound_aliases: HashMap<Utf8, u16>,
    pending: Option<Box<PendingFanout>>,
    /// Boxed: only present while acknowledgements wait for the ingest log.
    held_acks: Option<Box<HeldAcks>>,
    principal: Arc<str>,
    space: Arc<Notify>,
    targets: Vec<Blocked>,
    popped: Vec<Delivery>,
}

/// Resolves when the ingest watermark moves; never, when nothing is held or the log is gone
/// (held acknowledgements then stay unsent: they were never made durable).
async fn watermark_moved(held: &mut Option<Box<HeldAcks>>) {
    match held {
        Some(h) => {
            if h.watermark.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Serves one client from its first byte to the end of the connection.
pub async fn serve(
    router: Arc<Router>,
    authenticator: Arc<dyn Authenticator>,
    io: Box<dyn ClientStream>,
    info: ConnectionInfo,
    shutdown: watch::Receiver<bool>,
) {
    let connections = router.metrics().connections.clone();
    connections.increment(1.0);
    router.metrics().connections_total.increment(1);
    let connection_id = router.next_connection_id();
    // Everything up to CONNACK runs in a boxed future: its state (the CONNECT packet, the
    // handshake with the session) is freed once the client is in, instead of staying in the
    // task of every idle connection.
    let admitted = Box::pin(admit(
        router,
        authenticator.as_ref(),
        io,
        info,
        connection_id,
        shutdown,
    ))
    .await;
    if let Some(connection) = admitted {
        connection.run().await;
    }
    connections.decrement(1.0);
}

/// Reads CONNECT (within the connect timeout), authenticates, claims the session and queues
/// CONNACK. `None` when the client is refused or gone.
async fn admit(
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
        Some(accepted) => Some(Connection::new(router, io, rbuf, accepted, connection_id)),
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

async fn write_packet(io: &mut Box<dyn ClientStream>, packet: &Packet, version: ProtocolVersion) {
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

struct Accepted {
    version: ProtocolVersion,
    client_id: Arc<str>,
    principal: Arc<str>,
    grant: Arc<dyn ConnectionGrant>,
    attached: super::router::Attached,
    will: Option<Box<PendingWill>>,
    keep_alive: u16,
    window: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    connack: ConnAck,
}

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
                tracing::info!(peer = %info.peer, client_id = %client_id, topic = %w.topic, "will topic not authorized");
                refuse(io, version, reason::NOT_AUTHORIZED).await;
                return None;
            }
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            Some(Box::new(PendingWill {
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
                    origin: Some(Arc::clone(&client_id)),
                },
                delay,
            }))
        }
    };
    let expiry = match version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        ProtocolVersion::V311 if connect.clean_start => 0,
        ProtocolVersion::V311 => NEVER_EXPIRES,
    };
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
    tracing::debug!(peer = %info.peer, client_id = %client_id, principal, transport = info.transport.as_str(), "client connected");
    let properties = match version {
        ProtocolVersion::V311 => ConnAckProperties::default(),
        ProtocolVersion::V5 => ConnAckProperties {
            receive_maximum: Some(config.max_inflight),
            maximum_packet_size: u32::try_from(config.max_packet_size).ok(),
            topic_alias_maximum: Some(config.topic_alias_maximum),
            assigned_client_identifier: assigned,
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            subscription_identifiers_available: Some(1),
            shared_subscription_available: Some(1),
            ..ConnAckProperties::default()
        },
    };
    let window = usize::from(
        config
            .max_inflight
            .min(connect.properties.receive_maximum.unwrap_or(u16::MAX)),
    );
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
        keep_alive: connect.keep_alive,
        window: window.max(1),
        client_max_packet: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        client_alias_max: match version {
            ProtocolVersion::V5 => connect.properties.topic_alias_maximum.unwrap_or(0),
            ProtocolVersion::V311 => 0,
        },
    })
}

impl Connection {
    fn new(
        router: Arc<Router>,
        io: Box<dyn ClientStream>,
        rbuf: BytesMut,
        accepted: Accepted,
        connection_id: u64,
    ) -> Connection {
        let mut wbuf = BytesMut::new();
        protocol::encode(
            &Packet::ConnAck(accepted.connack),
            accepted.version,
            &mut wbuf,
        );
        Connection {
            router,
            io,
            rbuf,
            wbuf,
            version: accepted.version,
            connection_id,
            client_id: accepted.client_id,
            grant: accepted.grant,
            revalidations_seen: 0,
            session: accepted.attached.session,
            state: accepted.attached.state,
            will: accepted.will,
            keep_alive: (accepted.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(accepted.keep_alive) * 1500)),
            last_packet: Instant::now(),
            last_activity: Instant::now(),
            partial_since: None,
            read_size: MIN_READ,
            window: accepted.window,
            client_max_packet: accepted.client_max_packet,
            client_alias_max: accepted.client_alias_max,
            inbound_aliases: HashMap::new(),
            outbound_aliases: HashMap::new(),
            pending: None,
            held_acks: None,
            principal: accepted.principal,
            space: Arc::new(Notify::new()),
            targets: Vec::new(),
            popped: Vec::new(),
        }
    }

    async fn run(mut self) {
        self.resend_inflight();
        let exit = self.serve_packets().await;
        let metrics = self.router.metrics().clone();
        let (keep_will, taken_over, goodbye) = match &exit {
            Exit::Disconnected { keep_will } => (*keep_will, false, None),
            Exit::Violation { code, why } => {
                metrics.protocol_errors.increment(1);
                tracing::info!(client_id = %self.client_id, code, why, "closing connection");
                (true, false, Some(*code))
            }
            Exit::Closed => (true, false, None),
            Exit::TakenOver => (true, true, Some(reason::SESSION_TAKEN_OVER)),
            Exit::Shutdown => (false, false, Some(reason::SERVER_SHUTTING_DOWN)),
        };
        if let (Some(code), ProtocolVersion::V5) = (goodbye, self.version) {
            let why = match &exit {
                Exit::Violation { why, .. } => Utf8::new(*why),
                _ => None,
            };
            let packet = Packet::Disconnect(Disconnect {
                reason: code,
                properties: DisconnectProperties {
                    reason_string: why,
                    ..DisconnectProperties::default()
                },
            });
            self.wbuf.clear();
            Box::pin(write_packet(&mut self.io, &packet, self.version)).await;
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
        }
        // Deliveries taken from the mailbox but not yet written go back for the next connection.
        let Connection {
            router,
            session,
            state,
            will,
            ..
        } = self;
        let will = if keep_will { will.map(|w| *w) } else { None };
        tracing::debug!(client_id = %session.client_id(), ?exit, "client disconnected");
        router.detach(session, state, will, taken_over);
    }

    /// Sends again, with DUP, every message in flight when the session was last connected.
    fn resend_inflight(&mut self) {
        let inflight: Vec<Inflight> = self.state.inflight.iter().cloned().collect();
        for i in inflight {
            match i.stage {
                InflightStage::AwaitingAck(d) => {
                    let publish = self.build_publish(&d, i.packet_id, true, Instant::now());
                    publish.encode(self.version, &mut self.wbuf);
                }
                InflightStage::AwaitingComp => {
                    let rel = Packet::PubRel(PubAck {
                        packet_id: i.packet_id,
                        ..PubAck::default()
                    });
                    protocol::encode(&rel, self.version, &mut self.wbuf);
                }
            }
        }
    }

    async fn serve_packets(&mut self) -> Exit {
        loop {
            let more_to_send = self.drain_mailbox();
            if !self.wbuf.is_empty()
                && let Err(exit) = self.flush().await
            {
                return exit;
            }
            if !self.reading_paused() {
                match protocol::decode(
                    &mut self.rbuf,
                    self.version,
                    self.router.config().max_packet_size,
                ) {
                    Ok(Some(packet)) => {
                        self.last_packet = Instant::now();
                        self.partial_since = None;
                        if let Err(exit) = self.handle(packet) {
                            return exit;
                        }
                        continue;
                    }
                    Ok(None) if self.rbuf.is_empty() => self.partial_since = None,
                    Ok(None) => {
                        self.partial_since.get_or_insert_with(Instant::now);
                    }
                    Err(e) => return violation(e.reason_code(), decode_error_text(&e)),
                }
            }
            let keep_alive_deadline = self.keep_alive.map(|k| self.last_packet + k);
            let pending_deadline = self.pending.as_ref().map(|p| p.deadline);
            let holds_buffers = self.rbuf.capacity() > 0 || self.wbuf.capacity() > 0;
            let idle_deadline = holds_buffers.then(|| self.last_activity + IDLE_RELEASE);
            // A packet started must be finished within the connect timeout, keep-alive or not:
            // a client trickling one byte at a time does not hold a buffer forever.
            let partial_deadline = self
                .partial_since
                .map(|t| t + self.router.config().connect_timeout);
            // One timer for all deadlines keeps the connection's future small.
            let next_deadline = [
                keep_alive_deadline,
                pending_deadline,
                idle_deadline,
                partial_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            // Read buffers grow with the traffic: a quiet client reads into a few hundred bytes,
            // a busy one into READ_CHUNK (doubled each time a read fills the buffer).
            let spare = self.rbuf.capacity() - self.rbuf.len();
            if spare < self.read_size / 2 {
                self.rbuf.reserve(self.read_size);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            let session = Arc::clone(&self.session);
            let space = Arc::clone(&self.space);
            let blocked = self.pending.is_some();
            let paused = self.reading_paused();
            let holding = self.held_acks.is_some();
            tokio::select! {
                biased;
                _ = session.kicked().notified() => {
                    if let Some(exit) = self.dispossessed() {
                        return exit;
                    }
                }
                read = self.io.read_buf(&mut self.rbuf), if !paused => match read {
                    Ok(0) | Err(_) => return Exit::Closed,
                    Ok(n) => {
                        if n == spare {
                            self.read_size = (self.read_size * 2).min(READ_CHUNK);
                        }
                        self.last_activity = Instant::now();
                        self.router.metrics().bytes_received.increment(n as u64);
                    }
                },
                // More deliveries wait: poll the socket once (above), then go on sending.
                _ = std::future::ready(()), if more_to_send => {}
                _ = space.notified(), if blocked => self.retry_pending(false),
                _ = watermark_moved(&mut self.held_acks), if holding => self.release_acks(),
                _ = session.wake().notified() => self.last_activity = Instant::now(),
                _ = sleep_until(next_deadline), if next_deadline.is_some() => {
                    let now = Instant::now();
                    if partial_deadline.is_some_and(|d| now >= d) {
                        return violation(reason::MALFORMED_PACKET, "packet not completed in time");
                    }
                    if keep_alive_deadline.is_some_and(|d| now >= d) {
                        return violation(reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout");
                    }
                    if pending_deadline.is_some_and(|d| now >= d) {
                        self.retry_pending(true);
                    }
                    if idle_deadline.is_some_and(|d| now >= d) {
                        self.release_idle_buffers();
                    }
                }
            }
        }
    }

    /// Frees the read and write buffers of a connection that has been quiet for a while: an
    /// idle connection then costs its task and session, not 8+ KiB of buffers.
    fn release_idle_buffers(&mut self) {
        // Restart the idle clock so a buffer that cannot be released (it holds part of a
        // packet) is looked at again in a second, not in a busy loop.
        self.last_activity = Instant::now();
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        self.targets = Vec::new();
        self.popped = Vec::new();
        self.read_size = MIN_READ;
    }

    /// Why the connection must end after a kick: another connection claimed the session, the
    /// server is shutting down, or the client's identity may no longer be connected (its
    /// certificate was revoked, its policy detached).
    fn dispossessed(&mut self) -> Option<Exit> {
        if self.session.is_owned_by(self.connection_id) {
            // Only a requested re-check re-resolves the grant: the kick may be the permit our
            // own claim left, or meant for a previous owner.
            let requested = self.session.revalidations();
            if requested == self.revalidations_seen {
                return None;
            }
            self.revalidations_seen = requested;
            match self.grant.revalidate() {
                Ok(()) => None,
                Err(why) => {
                    tracing::info!(client_id = %self.client_id, why, "connection no longer authorized");
                    Some(violation(reason::NOT_AUTHORIZED, "no longer authorized"))
                }
            }
        } else if self.router.is_shutting_down() {
            Some(Exit::Shutdown)
        } else {
            Some(Exit::TakenOver)
        }
    }

    /// Writes the whole write buffer, giving up only if the session is taken from this
    /// connection. Uses `write` (cancel-safe: bytes are either written and counted, or not
    /// written) so that a kick arriving mid-buffer never makes a byte go out twice.
    async fn flush(&mut self) -> Result<(), Exit> {
        let n = self.wbuf.len();
        let session = Arc::clone(&self.session);
        while !self.wbuf.is_empty() {
            tokio::select! {
                biased;
                _ = session.kicked().notified() => {
                    // A stale kick (a permit left by our own claim) changes nothing.
                    if let Some(exit) = self.dispossessed() {
                        return Err(exit);
                    }
                }
                written = self.io.write(&self.wbuf) => match written {
                    Ok(0) | Err(_) => return Err(Exit::Closed),
                    Ok(k) => self.wbuf.advance(k),
                },
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = session.kicked().notified() => {
                    if let Some(exit) = self.dispossessed() {
                        return Err(exit);
                    }
                }
                flushed = self.io.flush() => match flushed {
                    Ok(()) => break,
                    Err(_) => return Err(Exit::Closed),
                },
            }
        }
        self.wbuf.clear();
        self.last_activity = Instant::now();
        self.router.metrics().bytes_sent.increment(n as u64);
        Ok(())
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(ack) => {
                if let Some(i) = self.state.inflight_position(ack.packet_id)
                    && matches!(&self.state.inflight[i].stage, InflightStage::AwaitingAck(d) if d.qos == QoS::AtLeastOnce)
                {
                    self.state.inflight.remove(i);
                }
                Ok(())
            }
            Packet::PubRec(rec) => {
                let position = self.state.inflight_position(rec.packet_id);
                let mut reply = PubAck {
                    packet_id: rec.packet_id,
                    ..PubAck::default()
                };
                match position {
                    Some(i) if rec.reason >= 0x80 => {
                        // The receiver refused the message: it is done with.
                        self.state.inflight.remove(i);
                        return Ok(());
                    }
                    Some(i) => self.state.inflight[i].stage = InflightStage::AwaitingComp,
                    None => reply.reason = reason::PACKET_IDENTIFIER_NOT_FOUND,
                }
                self.send(&Packet::PubRel(reply));
                Ok(())
            }
            Packet::PubComp(comp) => {
                if let Some(i) = self.state.inflight_position(comp.packet_id) {
                    self.state.inflight.remove(i);
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                let known = self.state.awaiting_release.remove(&rel.packet_id);
                let comp = PubAck {
                    packet_id: rel.packet_id,
                    reason: if known {
                        reason::SUCCESS
                    } else {
                        reason::PACKET_IDENTIFIER_NOT_FOUND
                    },
                    ..PubAck::default()
                };
                self.send(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Auth(_) => Err(violation(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method in CONNECT",
            )),
            Packet::Connect(_) => Err(violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(violation(
                    reason::PROTOCOL_ERROR,
                    "server-to-client packet sent by the client",
                ))
            }
        }
    }

    fn send(&mut self, packet: &Packet) {
        protocol::encode(packet, self.version, &mut self.wbuf);
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Exit> {
        let config = self.router.config();
        self.router.metrics().messages_received.increment(1);
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > config.topic_alias_maximum {
                return Err(violation(
                    reason::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                ));
            }
            if p.topic.is_empty() {
                match self.inbound_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(violation(reason::PROTOCOL_ERROR, "unknown topic alias"));
                    }
                }
            } else {
                self.inbound_aliases.insert(alias, p.topic.clone());
            }
        }
        if p.topic.is_empty() {
            return Err(violation(reason::PROTOCOL_ERROR, "empty topic name"));
        }
        if !topic::valid_topic_name(&p.topic, config.max_topic_length) {
            return Err(violation(reason::TOPIC_NAME_INVALID, "invalid topic name"));
        }
        let action = if p.retain {
            MqttAction::RetainPublish
        } else {
            MqttAction::Publish
        };
        if !self.grant.allows(action, &p.topic) {
            self.router
                .metrics()
                .denied(action, &self.client_id, &p.topic);
            // MQTT 5 answers with reason 0x87 and keeps the connection; 3.1.1 has no way to say
            // no to a PUBLISH, so the connection ends, as AWS IoT does.
            let refusal = PubAck {
                packet_id: p.packet_id,
                reason: reason::NOT_AUTHORIZED,
                ..PubAck::default()
            };
            return match (self.version, p.qos) {
                (ProtocolVersion::V311, _) => {
                    Err(violation(reason::NOT_AUTHORIZED, "publish not authorized"))
                }
                (ProtocolVersion::V5, QoS::AtMostOnce) => Ok(()),
                (ProtocolVersion::V5, QoS::AtLeastOnce) => {
                    self.send(&Packet::PubAck(refusal));
                    Ok(())
                }
                (ProtocolVersion::V5, QoS::ExactlyOnce) => {
                    self.send(&Packet::PubRec(refusal));
                    Ok(())
                }
            };
        }
        let ack = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubAck {
                packet_id: p.packet_id,
                ..PubAck::default()
            })),
            QoS::ExactlyOnce => {
                let rec = Packet::PubRec(PubAck {
                    packet_id: p.packet_id,
                    ..PubAck::default()
                });
                if self.state.awaiting_release.contains(&p.packet_id) {
                    // A resend of a message we already have: acknowledge (behind any held
                    // acknowledgement, to keep their order), do not route again.
                    self.acknowledge(rec, None);
                    return Ok(());
                }
                if self.state.awaiting_release.len() >= usize::from(config.max_inflight) {
                    return Err(violation(
                        reason::RECEIVE_MAXIMUM_EXCEEDED,
                        "more QoS 2 messages in flight than Receive Maximum",
                    ));
                }
                self.state.awaiting_release.insert(p.packet_id);
                Some(rec)
            }
        };
        let now = Instant::now();
        p.properties.subscription_identifiers.clear();
        let message = Arc::new(Message {
            expires_at: Message::expiry_from_interval(p.properties.message_expiry_interval, now),
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            origin: Some(Arc::clone(&self.client_id)),
        });
        self.router.tap(&message);
        let publisher = Publisher {
            client_id: Some(&self.client_id),
            principal: Some(&self.principal),
        };
        let ticket = match self.router.ingest(&message, publisher) {
            Ingested::Accepted(ticket) => Some(ticket),
            Ingested::NotWanted | Ingested::Shed => None,
        };
        if message.retain {
            self.router.retain(&message);
        }
        let mut targets = std::mem::take(&mut self.targets);
        self.router.targets(&message, &mut targets);
        let mut blocked = Vec::new();
        for (session, delivery) in targets.drain(..) {
            if let Some(d) = self.router.offer(&session, delivery, Some(&self.space)) {
                blocked.push((session, d));
            }
        }
        self.targets = targets;
        if blocked.is_empty() {
            if let Some(ack) = ack {
                self.acknowledge(ack, ticket);
            }
        } else {
            self.pending = Some(Box::new(PendingFanout {
                blocked,
                ack,
                ticket,
                deadline: now + config.slow_subscriber_timeout,
            }));
        }
        Ok(())
    }

    /// Sends `ack` now, or holds it until the ingest log made ticket `ticket` durable; an
    /// acknowledgement never overtakes one held before it.
    fn acknowledge(&mut self, ack: Packet, ticket: Option<u64>) {
        if self.held_acks.is_none() {
            let Some(ticket) = ticket else {
                self.send(&ack);
                return;
            };
            let publisher = Publisher {
                client_id: Some(&self.client_id),
                principal: Some(&self.principal),
            };
            let Some(watermark) = self.router.ingest_watermark(publisher) else {
                self.send(&ack);
                return;
            };
            self.held_acks = Some(Box::new(HeldAcks {
                queue: VecDeque::with_capacity(4),
                watermark,
            }));
            if let Some(held) = self.held_acks.as_mut() {
                held.queue.push_back((ticket, ack));
            }
        } else if let Some(held) = self.held_acks.as_mut() {
            held.queue.push_back((ticket.unwrap_or(0), ack));
        }
        self.release_acks();
    }

    /// Sends the held acknowledgements whose messages are durable now, in order.
    fn release_acks(&mut self) {
        let Some(held) = self.held_acks.as_mut() else {
            return;
        };
        let durable = *held.watermark.borrow_and_update();
        let mut ready = Vec::new();
        while let Some((ticket, _)) = held.queue.front() {
            if *ticket > durable {
                break;
            }
            if let Some((_, ack)) = held.queue.pop_front() {
                ready.push(ack);
            }
        }
        if held.queue.is_empty() {
            self.held_acks = None;
        }
        for ack in &ready {
            self.send(ack);
        }
    }

    /// True while the socket is not read: a fan-out waits for room, or as many
    /// acknowledgements wait for the ingest log as the client may have in flight.
    fn reading_paused(&self) -> bool {
        self.pending.is_some()
            || self
                .held_acks
                .as_ref()
                .is_some_and(|h| h.queue.len() >= usize::from(self.router.config().max_inflight))
    }

    /// Offers the blocked deliveries again; at the deadline, drops what still does not fit.
    fn retry_pending(&mut self, deadline_passed: bool) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let mut still = Vec::new();
        for (session, delivery) in pending.blocked.drain(..) {
            if deadline_passed {
                self.router
                    .metrics()
                    .dropped(DropReason::QueueFull, session.client_id());
                continue;
            }
            if let Some(d) = self.router.offer(&session, delivery, Some(&self.space)) {
                still.push((session, d));
            }
        }
        if still.is_empty() {
            if let Some(ack) = pending.ack.take() {
                self.acknowledge(ack, pending.ticket);
            }
        } else {
            pending.blocked = still;
            self.pending = Some(pending);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Exit> {
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            if f.options.no_local && f.filter.starts_with("$share/") {
                return Err(violation(
                    reason::PROTOCOL_ERROR,
                    "No Local on a shared subscription",
                ));
            }
            if !self.grant.allows(MqttAction::Subscribe, &f.filter) {
                self.router
                    .metrics()
                    .denied(MqttAction::Subscribe, &self.client_id, &f.filter);
                // The 3.1.1 encoder writes 0x80 (failure) for any code from 0x80 up.
                reasons.push(reason::NOT_AUTHORIZED);
                continue;
            }
            let router = Arc::clone(&self.router);
            match router.subscribe(
                &self.session,
                &mut self.state,
                &f.filter,
                f.options,
                s.properties.subscription_identifier,
            ) {
                Ok(subscribed) => {
                    reasons.push(f.options.qos as u8);
                    retained.extend(subscribed.retained);
                }
                Err(code) => reasons.push(code),
            }
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
        // Retained messages follow the SUBACK, behind what is already queued.
        for d in retained {
            self.session.restore(d);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let router = Arc::clone(&self.router);
            let existed = router.unsubscribe(&self.session, &mut self.state, f);
            reasons.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Exit> {
        if self.version == ProtocolVersion::V5 {
            if let Some(expiry) = d.properties.session_expiry_interval {
                if self.state.expiry_interval == 0 && expiry != 0 {
                    return Err(violation(
                        reason::PROTOCOL_ERROR,
                        "session expiry set at DISCONNECT after CONNECT set 0",
                    ));
                }
                self.state.expiry_interval = expiry;
            }
            return Err(Exit::Disconnected {
                keep_will: d.reason == reason::DISCONNECT_WITH_WILL,
            });
        }
        Err(Exit::Disconnected { keep_will: false })
    }

    /// Moves queued deliveries into the write buffer, as far as the inflight window and the
    /// write batch size allow. Returns true when it stopped only because the batch is full, so
    /// the caller must come back without waiting for a wake-up (the mailbox signals only its
    /// empty-to-non-empty transition).
    fn drain_mailbox(&mut self) -> bool {
        let now = Instant::now();
        loop {
            if self.wbuf.len() >= WRITE_BATCH_BYTES {
                return self.session.queued() > 0;
            }
            if self.state.inflight.len() >= self.window
                && self
                    .session
                    .front_qos()
                    .is_some_and(|q| q != QoS::AtMostOnce)
            {
                // Nothing can go before an acknowledgement; not popping also keeps the
                // mailbox's progress clock honest, so a receiver that stopped acknowledging is
                // recognised as stuck.
                return false;
            }
            let mut popped = std::mem::take(&mut self.popped);
            self.session.pop_into(&mut popped, POP_BATCH);
            if popped.is_empty() {
                self.popped = popped;
                return false;
            }
            let mut rest = popped.drain(..);
            let mut window_full = false;
            while let Some(d) = rest.next() {
                if d.qos != QoS::AtMostOnce && self.state.inflight.len() >= self.window {
                    self.session.unpop(std::iter::once(d).chain(rest.by_ref()));
                    window_full = true;
                    break;
                }
                self.deliver(d, now);
            }
            drop(rest);
            self.popped = popped;
            if window_full {
                // Acknowledgements will free the window; reading them drives the next drain.
                return false;
            }
        }
    }

    fn deliver(&mut self, d: Delivery, now: Instant) {
        let metrics = self.router.metrics();
        if d.message.is_expired(now) {
            metrics.dropped(DropReason::Expired, &self.client_id);
            return;
        }
        if !self.grant.allows(MqttAction::Receive, &d.message.topic) {
            metrics.denied(MqttAction::Receive, &self.client_id, &d.message.topic);
            return;
        }
        let packet_id = match d.qos {
            QoS::AtMostOnce => 0,
            _ => match self.state.allocate_packet_id() {
                Some(id) => id,
                None => {
                    metrics.dropped(DropReason::QueueFull, &self.client_id);
                    return;
                }
            },
        };
        let mut publish = self.build_publish(&d, packet_id, false, now);
        if self.version == ProtocolVersion::V5 {
            // The full topic is the larger form, so a packet that fits now fits with an alias.
            if publish.encoded_len(self.version) > self.client_max_packet {
                metrics.dropped(DropReason::TooLarge, &self.client_id);
                return;
            }
            apply_outbound_alias(
                &mut self.outbound_aliases,
                self.client_alias_max,
                &mut publish,
            );
        }
        publish.encode(self.version, &mut self.wbuf);
        metrics.messages_sent.increment(1);
        if d.qos != QoS::AtMostOnce {
            self.state.inflight.push_back(Inflight {
                packet_id,
                stage: InflightStage::AwaitingAck(d),
            });
        }
    }

    fn build_publish(&self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let mut properties = protocol::PublishProperties::default();
        if self.version == ProtocolVersion::V5 {
            properties = d.message.properties.clone();
            properties.message_expiry_interval = d.message.remaining_expiry(now);
            properties.subscription_identifiers = d.subscription_ids.clone();
        }
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.message.topic.clone(),
            packet_id,
            properties,
            payload: d.message.payload.clone(),
        }
    }
}

/// Replaces the topic by an alias the client already knows, or teaches it a new one while the
/// client's Topic Alias Maximum allows.
fn apply_outbound_alias(aliases: &mut HashMap<Utf8, u16>, max: u16, publish: &mut Publish) {
    if max == 0 {
        return;
    }
    if let Some(alias) = aliases.get(&publish.topic) {
        publish.properties.topic_alias = Some(*alias);
        publish.topic = Utf8::default();
    } else if aliases.len() < usize::from(max) {
        let alias = aliases.len() as u16 + 1;
        aliases.insert(publish.topic.clone(), alias);
        publish.properties.topic_alias = Some(alias);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn decode_error_text(e: &DecodeError) -> &'static str {
    match e.reason_code() {
        reason::PACKET_TOO_LARGE => "packet too large",
        reason::PROTOCOL_ERROR => "protocol error",
        _ => "malformed packet",
    }
}
