//! One client connection: reads and decodes packets, applies them to its session through the
//! router, and writes acknowledgements and deliveries back, batching writes.
//!
//! The connection is a single task that owns its session state. It never blocks on another
//! session: a delivery to a full receiver waits with the publisher's acknowledgement while its
//! other receivers get the message, and when too many wait it stops reading its own socket
//! (backpressure on the publisher) but keeps draining its own mailbox, so two clients publishing
//! to each other cannot deadlock.
//!
//! By concern: `handshake` (CONNECT to CONNACK), `event_loop` (socket, mailbox and timers),
//! `packets` (one handler per inbound packet), `publish` (an inbound PUBLISH through aliases,
//! authorization, QoS 2 receipt, ingest, retain and fan-out), `fanout` (waiting for full
//! receivers), `held_acks` (acknowledgements waiting for the ingest log), `outbound` (deliveries
//! to the client and their acknowledgements), `subscribe`, `aliases`, `exactly_once` and `exit`.

mod aliases;
mod event_loop;
mod exactly_once;
mod exit;
mod fanout;
mod handshake;
mod held_acks;
mod outbound;
mod packets;
mod park;
mod publish;
mod subscribe;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fleetcore_core::access::ConnectionGrant;
use fleetcore_core::auth::{Authenticator, TransportKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

use super::DeviceCounters;
use super::message::Delivery;
use super::router::{Blocked, Router};
use super::session::{PendingWill, SessionHandle, SessionState};
use crate::protocol::{self, Disconnect, DisconnectProperties, Packet, ProtocolVersion, Utf8};
use aliases::{InboundAliases, OutboundAliases};
use event_loop::Served;
use exit::Exit;
use fanout::PendingFanouts;
use handshake::Accepted;
use held_acks::HeldAcks;
use park::Parking;

/// A byte stream a client is connected over (TCP, TLS, WebSocket).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// True when [`ClientStream::poll_readable`] tells the whole truth now: nothing the client
    /// sent is already buffered inside the stream. Only then may an idle connection park.
    fn parkable(&mut self) -> bool {
        false
    }

    /// Ready once the client has sent something (or closed), without reading it: how a parked
    /// connection waits without a read buffer. Only called after `parkable` said true.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }

    /// Takes the socket out of tokio's reactor while the connection is parked, to wake `waker`
    /// once it is readable (`idle_watch`). False if it stays in tokio's reactor.
    fn park_socket(&mut self, waker: &Waker) -> bool {
        let _ = waker;
        false
    }

    /// Brings a parked socket back into tokio's reactor (called in the runtime's context).
    fn unpark_socket(&mut self) {}
}

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

struct Connection {
    router: Arc<Router>,
    io: Box<dyn ClientStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    /// The transport the client came in on (a drain sends it to another node's listener of
    /// that transport).
    transport: TransportKind,
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
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    /// Messages waiting for full receivers, in order; boxed: rarely present.
    pending: Option<Box<PendingFanouts>>,
    /// Boxed: only present while acknowledgements wait for the ingest log.
    held_acks: Option<Box<HeldAcks>>,
    principal: Arc<str>,
    /// Notified when a full receiver has room again; made when a fan-out first meets a full
    /// receiver, given back when the connection is quiet.
    space: Option<Arc<Notify>>,
    targets: Vec<Blocked>,
    popped: Vec<Delivery>,
    /// Device Defender's counters for this client id, when a device meter is installed.
    meter: Option<Arc<DeviceCounters>>,
    /// Bytes of the CONNACK at the front of `wbuf` not written yet: a connection sent away
    /// before they went out still sends them first (no DISCONNECT before CONNACK, MQTT 5
    /// §3.14.0-1; a takeover from another node can come that early).
    connack_unsent: usize,
}

/// Serves one client from its first byte to the end of the connection. The handshake runs on
/// the caller's task; once the client is in, the connection lives on in a task of its own that
/// holds nothing but the boxed `Connection` (none of the accept-time state), ends that task
/// whenever it parks (`park`) and drops `alive` when the connection ends.
pub async fn serve(
    router: Arc<Router>,
    authenticator: Arc<dyn Authenticator>,
    io: Box<dyn ClientStream>,
    info: ConnectionInfo,
    shutdown: watch::Receiver<bool>,
    alive: impl Send + 'static,
) {
    let connections = router.metrics().connections.clone();
    connections.increment(1.0);
    router.metrics().connections_total.increment(1);
    let connection_id = router.next_connection_id();
    // Everything up to CONNACK runs in a boxed future: its state (the CONNECT packet, the
    // handshake with the session) is freed once the client is in.
    let admitted = Box::pin(handshake::admit(
        router,
        authenticator.as_ref(),
        io,
        info,
        connection_id,
        shutdown,
    ))
    .await;
    match admitted {
        Some(connection) => {
            let mut connection = Box::new(connection);
            connection.resend_inflight();
            tokio::spawn(connection.live(alive));
        }
        None => connections.decrement(1.0),
    }
}

impl Connection {
    fn new(
        router: Arc<Router>,
        io: Box<dyn ClientStream>,
        rbuf: BytesMut,
        accepted: Accepted,
        (connection_id, transport): (u64, TransportKind),
    ) -> Connection {
        let mut wbuf = BytesMut::new();
        protocol::encode(
            &Packet::ConnAck(accepted.connack),
            accepted.version,
            &mut wbuf,
        );
        let connack_unsent = wbuf.len();
        Connection {
            router,
            io,
            rbuf,
            wbuf,
            version: accepted.version,
            transport,
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
            read_size: event_loop::MIN_READ,
            window: accepted.window,
            client_max_packet: accepted.client_max_packet,
            inbound_aliases: InboundAliases::default(),
            outbound_aliases: OutboundAliases::new(accepted.client_alias_max),
            pending: None,
            held_acks: None,
            principal: accepted.principal,
            space: None,
            targets: Vec::new(),
            popped: Vec::new(),
            meter: accepted.meter,
            connack_unsent,
        }
    }

    /// Serves the connection until it parks (the task ends; its spot's waker calls this again)
    /// or ends: then says goodbye as the exit requires, hands the session back to the router
    /// and drops `alive`.
    async fn live<A: Send + 'static>(mut self: Box<Self>, mut alive: A) {
        let exit = loop {
            // The busy loop's future (its select over socket, mailbox, kicks and a timer) is
            // boxed, so that this task's future stays small.
            match Box::pin(self.serve_packets()).await {
                Served::Exit(exit) => break exit,
                Served::Idle => match self.park(alive) {
                    Parking::Parked => return,
                    Parking::Busy(connection, a, exit) => {
                        (self, alive) = (connection, a);
                        if let Some(exit) = exit {
                            break exit;
                        }
                    }
                },
            }
        };
        let metrics = self.router.metrics().clone();
        if let Exit::Violation { code, why } = &exit {
            metrics.protocol_errors.increment(1);
            tracing::info!(client_id = %self.client_id, code, why, "closing connection");
        }
        let farewell = exit.farewell();
        // Boxed, like the busy loop: the goodbye's state must not size the task's future.
        Box::pin(self.say_goodbye(farewell.goodbye, &exit)).await;
        // Deliveries taken from the mailbox but not yet written go back for the next connection.
        let Connection {
            router,
            session,
            state,
            will,
            meter,
            ..
        } = *self;
        let will = if farewell.keep_will {
            will.map(|w| *w)
        } else {
            None
        };
        tracing::debug!(client_id = %session.client_id(), ?exit, "client disconnected");
        if let Some(m) = meter {
            m.disconnected();
        }
        router.detach(session, state, will, farewell.taken_over);
        metrics.connections.decrement(1.0);
        drop(alive);
    }

    /// Sends DISCONNECT with `goodbye` (MQTT 5) or just closes the socket.
    async fn say_goodbye(&mut self, goodbye: Option<u8>, exit: &Exit) {
        // Deliveries not written are dropped; a CONNACK not written goes first.
        self.wbuf.truncate(self.connack_unsent);
        if matches!(exit, Exit::Moved(_)) {
            // A client sent to another node gets the acknowledgements of what it published
            // here, so it does not publish those messages again there.
            self.settle_held_acks().await;
        }
        if let (Some(code), ProtocolVersion::V5) = (goodbye, self.version) {
            let packet = Packet::Disconnect(Disconnect {
                reason: code,
                properties: DisconnectProperties {
                    reason_string: exit.reason_string().and_then(Utf8::new),
                    server_reference: exit.server_reference(),
                    ..DisconnectProperties::default()
                },
            });
            protocol::encode(&packet, self.version, &mut self.wbuf);
        }
        let (io, out) = (&mut self.io, &self.wbuf);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = io.write_all(out).await;
            let _ = io.flush().await;
            let _ = io.shutdown().await;
        })
        .await;
    }
}
