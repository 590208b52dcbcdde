//! A parked connection: one with nothing to do ends its task and leaves its compact
//! `Connection` in a [`ParkingSpot`], holding no task, no future, no buffer and no timer. The
//! spot's waker is registered with the socket's readiness and the session (deliveries arriving
//! in the mailbox; kicks by a takeover, a re-check of authorization, the server's shutdown, or
//! the shared keep-alive sweep once the client is late: `broker::keep_alive`). The first of
//! these spawns the connection's task again, which goes on where it left off.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fleetcore_core::access::ConnectionGrant;
use fleetcore_core::auth::TransportKind;
use tokio::runtime::Handle;
use tokio::sync::OwnedMutexGuard;

use super::aliases::{InboundAliases, OutboundAliases};
use super::exit::Exit;
use super::{ClientStream, Connection, event_loop};
use crate::broker::DeviceCounters;
use crate::broker::keep_alive::Filed;
use crate::broker::parking::{ParkingSpot, Resume};
use crate::broker::router::Router;
use crate::broker::session::{PendingWill, SessionHandle, SessionState};
use crate::protocol::ProtocolVersion;

/// How parking went.
pub(super) enum Parking<A> {
    /// Parked: the task ends, and the spot's waker brings the connection back.
    Parked,
    /// Something was already waiting (or a wake came while parking): the connection goes on in
    /// its task, or ends with the exit a kick called for.
    Busy(Box<Connection>, A, Option<Exit>),
}

/// A parked connection's state: a `Connection` without what only a busy one holds (read and
/// write buffers, scratch vectors, a fan-out or acknowledgements in progress, the idle and
/// partial-packet clocks), all of which are empty or reset whenever a connection may park.
/// Parking turns the `Connection` into this smaller allocation, waking turns it back.
pub(super) struct Quiet {
    router: Arc<Router>,
    io: Box<dyn ClientStream>,
    version: ProtocolVersion,
    transport: TransportKind,
    connection_id: u64,
    client_id: Arc<str>,
    grant: Arc<dyn ConnectionGrant>,
    revalidations_seen: u64,
    session: Arc<SessionHandle>,
    state: OwnedMutexGuard<SessionState>,
    will: Option<Box<PendingWill>>,
    keep_alive: Option<Duration>,
    last_packet: Instant,
    window: usize,
    client_max_packet: usize,
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    principal: Arc<str>,
    meter: Option<Arc<DeviceCounters>>,
}

impl Connection {
    /// The parked form of a connection that `parkable` said may park (its buffers are empty,
    /// nothing is in progress, and its idle buffers were given back).
    fn into_quiet(self) -> Quiet {
        let Connection {
            router,
            io,
            rbuf: _,
            wbuf: _,
            version,
            transport,
            connection_id,
            client_id,
            grant,
            revalidations_seen,
            session,
            state,
            will,
            keep_alive,
            last_packet,
            read_size: _,
            partial_since: _,
            last_activity: _,
            window,
            client_max_packet,
            inbound_aliases,
            outbound_aliases,
            pending: _,
            held_acks: _,
            principal,
            space: _,
            targets: _,
            popped: _,
            meter,
            connack_unsent: _,
        } = self;
        Quiet {
            router,
            io,
            version,
            transport,
            connection_id,
            client_id,
            grant,
            revalidations_seen,
            session,
            state,
            will,
            keep_alive,
            last_packet,
            window,
            client_max_packet,
            inbound_aliases,
            outbound_aliases,
            principal,
            meter,
        }
    }
}

impl Quiet {
    /// The busy form again, with empty buffers, as the connection was when it parked.
    fn into_busy(self) -> Box<Connection> {
        let Quiet {
            router,
            io,
            version,
            transport,
            connection_id,
            client_id,
            grant,
            revalidations_seen,
            session,
            state,
            will,
            keep_alive,
            last_packet,
            window,
            client_max_packet,
            inbound_aliases,
            outbound_aliases,
            principal,
            meter,
        } = self;
        Box::new(Connection {
            router,
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            version,
            transport,
            connection_id,
            client_id,
            grant,
            revalidations_seen,
            session,
            state,
            will,
            keep_alive,
            last_packet,
            read_size: event_loop::MIN_READ,
            partial_since: None,
            last_activity: Instant::now(),
            window,
            client_max_packet,
            inbound_aliases,
            outbound_aliases,
            pending: None,
            held_acks: None,
            principal,
            space: None,
            targets: Vec::new(),
            popped: Vec::new(),
            meter,
            connack_unsent: 0,
        })
    }
}

/// What a parked connection leaves in its spot.
pub(super) struct ParkedConnection<A> {
    connection: Box<Quiet>,
    /// Held until the connection ends (the broker's shutdown waits for it).
    alive: A,
    /// The keep-alive deadline filed with the sweep.
    filed: Option<Filed>,
}

impl<A: Send + 'static> Resume for ParkedConnection<A> {
    fn resume(self, runtime: &Handle) {
        let ParkedConnection {
            connection,
            alive,
            filed,
        } = self;
        let mut connection = connection.into_busy();
        // The socket rejoins tokio's reactor, which needs the runtime's context.
        let _runtime = runtime.enter();
        connection.unparked(filed);
        runtime.spawn(connection.live(alive));
    }
}

/// What woke the connection before it could park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    Kicked,
    Delivery,
    Readable,
}

/// True if `notify` holds a notification (a permit), which this takes.
fn take_permit(notify: &tokio::sync::Notify) -> bool {
    let notified = pin!(notify.notified());
    notified
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

impl Connection {
    /// True when the connection holds nothing in progress: no bytes to write or of a packet
    /// begun, no publish waiting for full receivers or for the ingest log, and a transport
    /// whose readiness tells the whole truth (TLS with decrypted bytes waiting does not).
    pub(super) fn parkable(&mut self) -> bool {
        self.wbuf.is_empty()
            && self.rbuf.is_empty()
            && self.pending.is_none()
            && self.held_acks.is_none()
            && self.io.parkable()
    }

    /// Parks the connection (see the module docs), unless something is waiting already.
    pub(super) fn park<A: Send + 'static>(mut self: Box<Self>, alive: A) -> Parking<A> {
        let spot = ParkingSpot::new(Handle::current());
        let waker = spot.waker();
        // Registered first, then what is already pending is looked at: a wake or kick either
        // comes before (and is seen here) or after (and wakes the spot).
        self.session.register_parked(&waker);
        let woke = if take_permit(self.session.kicked()) {
            Some(Woke::Kicked)
        } else if take_permit(self.session.wake()) {
            Some(Woke::Delivery)
        } else if self
            .io
            .poll_readable(&mut Context::from_waker(&waker))
            .is_ready()
        {
            Some(Woke::Readable)
        } else {
            None
        };
        if let Some(woke) = woke {
            self.session.unregister_parked();
            let exit = self.woken(woke);
            return Parking::Busy(self, alive, exit);
        }
        // Out of tokio's reactor while parked (it wakes the spot when readable).
        self.io.park_socket(&waker);
        let filed = self.keep_alive.map(|k| {
            self.router.keep_alive_sweep().file(
                self.last_packet + k,
                self.connection_id,
                &self.session,
            )
        });
        self.router.metrics().connections_parked.increment(1.0);
        let parked = ParkedConnection {
            connection: Box::new(self.into_quiet()),
            alive,
            filed,
        };
        match spot.park(parked) {
            Ok(()) => Parking::Parked,
            Err(ParkedConnection {
                connection,
                alive,
                filed,
            }) => {
                // Woken while parking: nobody else will resume it, so it goes on here.
                let mut connection = connection.into_busy();
                connection.unparked(filed);
                Parking::Busy(connection, alive, None)
            }
        }
    }

    /// Takes back what parking filed: the socket (back into tokio's reactor), the keep-alive
    /// deadline, the session's waker (its task waits on the session again) and the parked count.
    fn unparked(&mut self, filed: Option<Filed>) {
        self.io.unpark_socket();
        self.router.metrics().connections_parked.decrement(1.0);
        self.session.unregister_parked();
        if let Some(filed) = filed {
            self.router.keep_alive_sweep().withdraw(filed);
        }
        self.last_activity = Instant::now();
    }

    /// What a wake found before parking means: `Some(exit)` when a kick ends the connection;
    /// otherwise the busy loop takes over (and sees a passed keep-alive deadline itself).
    fn woken(&mut self, woke: Woke) -> Option<Exit> {
        match woke {
            Woke::Kicked => self.dispossessed(),
            Woke::Delivery => {
                self.last_activity = Instant::now();
                None
            }
            Woke::Readable => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::{Connection, ParkedConnection, ParkingSpot, Quiet};

    /// The size of the future `make` returns, without making one.
    fn future_size<A, F: Future>(_make: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_parked_connection_holds_a_small_spot_and_a_compact_state() {
        // What a parked connection holds: its spot (no task, no future) and the boxed
        // `Connection`. The busy loop's future exists only while the connection is busy.
        let spot =
            std::mem::size_of::<ParkingSpot<ParkedConnection<tokio::sync::mpsc::Sender<()>>>>();
        let busy = future_size(|c: &'static mut Connection| c.serve_packets());
        let connection = std::mem::size_of::<Connection>();
        let quiet = std::mem::size_of::<Quiet>();
        eprintln!(
            "parking spot {spot} B, busy loop future {busy} B, Connection {connection} B, parked as {quiet} B"
        );
        assert!(spot <= 96, "the parking spot grew to {spot} B");
        assert!(connection <= 400, "Connection grew to {connection} B");
        assert!(
            quiet <= 224,
            "a parked connection's state grew to {quiet} B"
        );
    }
}
