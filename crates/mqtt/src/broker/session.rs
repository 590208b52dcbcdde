//! A session: the mailbox publishers push deliveries into, and the state that the live
//! connection owns (subscriptions, inflight messages, pending QoS 2 receipts, the will).
//!
//! The mailbox is the only part other tasks touch on the message path: a short
//! `parking_lot` lock per push. Everything else is held by the connection through an owned
//! async lock for its whole life, so a takeover simply waits for the old connection to let go.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedMutexGuard};

use super::message::{Delivery, Message};
use super::metrics::DropReason;
use super::persist::{self, Clock};
use super::queue_store::{QueueStore, STAGE_AWAITING_ACK};
use crate::protocol::{ProtocolVersion, QoS, SubscriptionOptions};

/// Session expiry interval meaning "never expires" (MQTT 5 §3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// Bytes a delivery holds in a queue and will take on the wire, near enough: its payload and
/// topic.
fn queued_size(d: &Delivery) -> usize {
    d.message.payload.len() + d.message.topic.len()
}

/// Result of offering a delivery to a session's mailbox.
#[derive(Debug)]
pub enum PushOutcome {
    /// Queued; the connection (if any) was woken. A message to a persistent session was also
    /// handed to the durable queue: it is on disk once the queue's watermark reaches `ticket`
    /// (0: nothing to wait for).
    Queued {
        /// The durable queue's ticket, or 0.
        ticket: u64,
    },
    /// The session is online and its queue is full: the delivery is handed back, and the
    /// publisher's waker is registered to be notified when room frees up.
    Full(Delivery),
    /// Dropped: QoS 0 for an offline session, QoS 0 for a stuck one, or the queue is full
    /// (offline, or online and given up on).
    Dropped(DropReason),
}

/// How long publishers wait for an online subscriber whose queue is full and which makes no
/// progress (takes nothing from its queue, writes nothing to its socket).
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// After this long it is stuck: nobody waits for it any more, except a publisher whose
    /// QoS 1/2 message it would otherwise lose (a clean session's).
    pub stuck: Duration,
    /// After this long a message finding it full is dropped for it, whatever its QoS.
    pub give_up: Duration,
}

struct Mailbox {
    queue: VecDeque<Delivery>,
    /// Payload and topic bytes of the queued deliveries.
    bytes: usize,
    online: bool,
    /// Publishers waiting for room, each woken once when the queue drains below capacity.
    waiting: Vec<Arc<Notify>>,
}

/// What every session of one broker shares (one allocation per broker, not per session): the
/// queue bounds, the patience with stuck receivers, the durable queues and the clock origin of
/// the sessions' progress stamps.
pub struct SessionLimits {
    /// Deliveries a session's queue may hold.
    capacity: usize,
    /// Bytes an online session's queue may hold before publishers wait: a short queue keeps
    /// latency low under saturation (the offline queue is bounded by `capacity` only).
    online_bytes: usize,
    /// How long publishers wait for a full, online receiver that makes no progress.
    patience: Patience,
    /// The durable queues of persistent sessions.
    queues: Arc<QueueStore>,
    /// The origin of the sessions' `progress_ms`.
    origin: Instant,
}

impl SessionLimits {
    /// Limits for the sessions of one broker.
    pub fn new(
        capacity: usize,
        online_bytes: usize,
        patience: Patience,
        queues: Arc<QueueStore>,
    ) -> Arc<SessionLimits> {
        Arc::new(SessionLimits {
            capacity,
            online_bytes,
            patience,
            queues,
            origin: Instant::now(),
        })
    }

    /// Milliseconds since `origin`.
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// The shared handle of a session: identity, mailbox and the lock on its state.
pub struct SessionHandle {
    client_id: Arc<str>,
    /// Bounds, patience and durable queues, shared with the broker's other sessions.
    limits: Arc<SessionLimits>,
    /// Milliseconds after the limits' origin when the connection last took deliveries or
    /// wrote to its socket: a receiver that has done neither for a while is stuck.
    progress_ms: AtomicU64,
    /// True while the connection waits for its socket to take bytes (the client is not
    /// reading them): only then can it be stuck, so a connection that is merely slow to be
    /// scheduled on a busy machine is still waited for.
    awaiting_socket: AtomicBool,
    mailbox: Mutex<Mailbox>,
    /// Wakes the connection when deliveries arrive.
    wake: Notify,
    /// The id of the connection that owns the session (0: none, or the server is shutting
    /// down); changed together with a `kick`, which tells the current owner to look.
    owner: AtomicU64,
    /// When the owner claimed the session (see `takeover.rs`); 0 before the first claim.
    attached_at: AtomicU64,
    kick: Notify,
    /// The waker of the connection while it is parked (no task waits on `wake` or `kick`
    /// then): woken with every wake and kick.
    parked: AtomicWaker,
    /// Bumped (with a kick) when the owner must re-check its authorization; lets a kick that
    /// only announces a takeover skip the re-check.
    revalidations: AtomicU64,
    /// Bumped on every attach and every end, so delayed wills and expiry timers can tell
    /// whether the session they were scheduled for is still the same.
    epoch: AtomicU64,
    state: Arc<tokio::sync::Mutex<SessionState>>,
    /// True while the session outlives its connection (expiry interval > 0): its QoS 1/2
    /// deliveries are written to the limits' durable queues. Clean sessions never touch the
    /// disk.
    persistent: AtomicBool,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// A new, offline session with `state`, bounded by the broker's `limits`.
    pub fn new(
        client_id: Arc<str>,
        limits: &Arc<SessionLimits>,
        state: SessionState,
    ) -> Arc<SessionHandle> {
        let persistent = AtomicBool::new(state.expiry_interval > 0);
        Arc::new(SessionHandle {
            client_id,
            limits: Arc::clone(limits),
            // Counted as progress: a new session is not stuck before it had a chance.
            progress_ms: AtomicU64::new(limits.now_ms()),
            awaiting_socket: AtomicBool::new(false),
            mailbox: Mutex::new(Mailbox {
                queue: VecDeque::new(),
                bytes: 0,
                online: false,
                waiting: Vec::new(),
            }),
            wake: Notify::new(),
            owner: AtomicU64::new(0),
            attached_at: AtomicU64::new(0),
            kick: Notify::new(),
            parked: AtomicWaker::new(),
            revalidations: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            state: Arc::new(tokio::sync::Mutex::new(state)),
            persistent,
        })
    }

    /// Says whether the session outlives its connection (its queue is then written to disk).
    pub fn set_persistent(&self, persistent: bool) {
        self.persistent.store(persistent, Ordering::Release);
    }

    fn wants_durable(&self, d: &Delivery) -> bool {
        d.qos != QoS::AtMostOnce && d.stored.is_none() && self.persistent.load(Ordering::Acquire)
    }

    /// Records that the connection made progress (took deliveries, or wrote to its socket).
    pub fn made_progress(&self) {
        self.progress_ms
            .store(self.limits.now_ms(), Ordering::Relaxed);
    }

    /// Says whether the connection is waiting for its socket to take what it writes.
    pub fn set_awaiting_socket(&self, awaiting: bool) {
        self.awaiting_socket.store(awaiting, Ordering::Relaxed);
    }

    /// How long the connection has made no progress (taken no deliveries, written nothing).
    pub(crate) fn idle(&self) -> Duration {
        let now = self.limits.now_ms();
        Duration::from_millis(now.saturating_sub(self.progress_ms.load(Ordering::Relaxed)))
    }

    /// The MQTT client identifier.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// True while a connection is attached.
    pub fn is_online(&self) -> bool {
        self.mailbox.lock().online
    }

    /// Offers a delivery. `waiter` is notified when a full queue drains (only registered when
    /// the outcome is `Full`). A full online receiver that waits for its socket and made no
    /// progress for `patience.stuck` is not waited for: a QoS 0 delivery is dropped, a QoS 1/2 delivery to a
    /// persistent session goes to its durable queue (up to the message bound), so one dead
    /// subscriber holds up a topic for moments at most; after `patience.give_up` the delivery
    /// is dropped whatever its QoS.
    ///
    /// A QoS 1/2 delivery to a persistent session is encoded (before the lock) and handed to
    /// the durable queue under the mailbox lock, so the stored order is the queue order.
    pub fn push(&self, delivery: Delivery, waiter: Option<&Arc<Notify>>) -> PushOutcome {
        self.push_bounded(delivery, waiter, true)
    }

    /// [`SessionHandle::push`] for a server-originated message (a shadow answer, a rule's
    /// republish, a will): its publisher cannot be made to wait, so only the message-count
    /// bound applies, not the online byte bound that pushes back on network publishers.
    pub fn push_from_server(&self, delivery: Delivery) -> PushOutcome {
        self.push_bounded(delivery, None, false)
    }

    fn push_bounded(
        &self,
        mut delivery: Delivery,
        waiter: Option<&Arc<Notify>>,
        byte_bound: bool,
    ) -> PushOutcome {
        let record = self
            .wants_durable(&delivery)
            .then(|| persist::encode_delivery(&delivery, &Clock::now()));
        let mut mb = self.mailbox.lock();
        if !mb.online && delivery.qos == QoS::AtMostOnce {
            return PushOutcome::Dropped(DropReason::Offline);
        }
        let over_count = mb.queue.len() >= self.limits.capacity;
        let over_bytes =
            byte_bound && mb.online && !mb.queue.is_empty() && mb.bytes >= self.limits.online_bytes;
        if over_count || over_bytes {
            if !mb.online {
                return PushOutcome::Dropped(DropReason::QueueFull);
            }
            let idle = self.idle();
            if idle >= self.limits.patience.give_up {
                return PushOutcome::Dropped(DropReason::QueueFull);
            }
            let stuck =
                idle >= self.limits.patience.stuck && self.awaiting_socket.load(Ordering::Relaxed);
            if stuck && delivery.qos == QoS::AtMostOnce {
                return PushOutcome::Dropped(DropReason::Stuck);
            }
            // A stuck persistent session's QoS 1/2 messages wait on disk, as if it were offline.
            if !(stuck && !over_count && record.is_some()) {
                if let Some(w) = waiter {
                    mb.waiting.push(Arc::clone(w));
                }
                return PushOutcome::Full(delivery);
            }
        }
        let mut ticket = 0;
        if let Some(record) = record {
            let seq = self.limits.queues.next_seq();
            delivery.stored = Some(seq);
            ticket = self.limits.queues.put_message(&self.client_id, seq, record);
        }
        if mb.queue.is_empty() {
            // The receiver's clock starts when it has something to do: an idle one is not stuck.
            self.made_progress();
        }
        mb.bytes += queued_size(&delivery);
        mb.queue.push_back(delivery);
        let wake = mb.online && mb.queue.len() == 1;
        drop(mb);
        if wake {
            self.wake.notify_one();
            self.parked.wake();
        }
        PushOutcome::Queued { ticket }
    }

    /// Records that `d` was sent with `packet_id` and waits for its acknowledgement; a QoS 1/2
    /// delivery of a persistent session that is not stored yet (a retained message sent at
    /// subscribe) is stored now. Nobody waits for these writes: they ride along in the next
    /// group commit.
    pub fn sent(&self, d: &mut Delivery, packet_id: u16) {
        if self.wants_durable(d) {
            let seq = self.limits.queues.next_seq();
            d.stored = Some(seq);
            self.limits.queues.put_message(
                &self.client_id,
                seq,
                persist::encode_delivery(d, &Clock::now()),
            );
        }
        if let Some(seq) = d.stored {
            self.limits
                .queues
                .put_inflight(&self.client_id, seq, STAGE_AWAITING_ACK, packet_id);
        }
    }

    /// Records that QoS 2 message `stored` was received by the client (PUBREC): from now on
    /// only its PUBREL is resent.
    pub fn released(&self, stored: Option<u64>, packet_id: u16) {
        if let Some(seq) = stored {
            self.limits.queues.released(&self.client_id, seq, packet_id);
        }
    }

    /// Forgets the stored copy of a delivery that is done with: acknowledged, expired, refused
    /// or dropped.
    pub fn settle(&self, stored: Option<u64>) {
        if let Some(seq) = stored {
            self.limits.queues.settle(&self.client_id, seq);
        }
    }

    /// Adds a delivery regardless of capacity and without storing it (a message restored from
    /// the durable queue, a retained message sent at subscribe).
    pub fn restore(&self, delivery: Delivery) {
        let mut mb = self.mailbox.lock();
        if mb.queue.is_empty() {
            self.made_progress();
        }
        mb.bytes += queued_size(&delivery);
        mb.queue.push_back(delivery);
    }

    /// Moves deliveries into `out` in queue order, up to `max` of them and stopping before
    /// the first QoS 1/2 delivery beyond `acked_room` (the free slots of the inflight window);
    /// wakes publishers that waited for room. A receiver whose window is full takes nothing,
    /// which leaves the mailbox's progress clock alone, so one that stopped acknowledging is
    /// recognised as stuck.
    pub fn pop_into(&self, out: &mut Vec<Delivery>, max: usize, mut acked_room: usize) {
        let mut mb = self.mailbox.lock();
        let mut taken = 0;
        let mut bytes = 0;
        while taken < max {
            match mb.queue.front() {
                Some(d) if d.qos == QoS::AtMostOnce => {}
                Some(_) if acked_room > 0 => acked_room -= 1,
                _ => break,
            }
            if let Some(d) = mb.queue.pop_front() {
                bytes += queued_size(&d);
                out.push(d);
                taken += 1;
            }
        }
        if taken == 0 {
            return;
        }
        mb.bytes -= bytes;
        self.made_progress();
        if !mb.waiting.is_empty() {
            for w in mb.waiting.drain(..) {
                w.notify_one();
            }
        }
    }

    /// Number of queued deliveries.
    pub fn queued(&self) -> usize {
        self.mailbox.lock().queue.len()
    }

    /// Drops every queued delivery (clean start, end of the session), with their stored copies.
    pub fn clear_queue(&self) {
        let mut mb = self.mailbox.lock();
        mb.queue.clear();
        mb.bytes = 0;
        if self.persistent.load(Ordering::Acquire) {
            // Under the mailbox lock, so it is ordered after every stored push before it.
            self.limits.queues.end_session(&self.client_id);
        }
        for w in mb.waiting.drain(..) {
            w.notify_one();
        }
    }

    /// Marks the session online or offline; going offline wakes waiting publishers so they
    /// re-offer their deliveries to the offline queue instead of waiting.
    pub fn set_online(&self, online: bool) {
        let mut mb = self.mailbox.lock();
        mb.online = online;
        self.made_progress();
        self.set_awaiting_socket(false);
        if !online {
            for w in mb.waiting.drain(..) {
                w.notify_one();
            }
        }
    }

    /// The notifier the live connection waits on for new deliveries.
    pub fn wake(&self) -> &Notify {
        &self.wake
    }

    /// Claims the session for connection `conn_id` (0 to send every owner away), telling
    /// the current owner to look.
    pub fn claim(&self, conn_id: u64) {
        self.owner.store(conn_id, Ordering::Release);
        self.kick();
    }

    /// Records when the current owner claimed the session (see `takeover.rs`).
    pub fn set_attached_at(&self, stamp: u64) {
        self.attached_at.store(stamp, Ordering::Release);
    }

    /// When the current owner claimed the session.
    pub fn attached_at(&self) -> u64 {
        self.attached_at.load(Ordering::Acquire)
    }

    /// True while connection `conn_id` owns the session.
    pub fn is_owned_by(&self, conn_id: u64) -> bool {
        self.owner.load(Ordering::Acquire) == conn_id
    }

    /// Asks the current owner to re-check its authorization.
    pub fn request_revalidation(&self) {
        self.revalidations.fetch_add(1, Ordering::AcqRel);
        self.kick();
    }

    /// Tells the owner to look at the session (its ownership, its re-checks, its keep alive),
    /// waking it if parked.
    pub fn kick(&self) {
        self.kick.notify_one();
        self.parked.wake();
    }

    /// Registers the waker of the connection as it parks; the next wake or kick wakes it.
    /// Register before looking for wakes and kicks already pending, so none falls between.
    pub fn register_parked(&self, waker: &std::task::Waker) {
        self.parked.register(waker);
    }

    /// Forgets the parked connection's waker (it did not park after all).
    pub fn unregister_parked(&self) {
        drop(self.parked.take());
    }

    /// How many re-checks were asked for so far.
    pub fn revalidations(&self) -> u64 {
        self.revalidations.load(Ordering::Acquire)
    }

    /// Notified when the owner changes or a re-check is asked for (the permit may be stale:
    /// check `is_owned_by` and `revalidations`).
    pub fn kicked(&self) -> &Notify {
        &self.kick
    }

    /// Waits until the previous owner has released the state, then holds it.
    pub async fn lock_state(&self) -> OwnedMutexGuard<SessionState> {
        Arc::clone(&self.state).lock_owned().await
    }

    /// The state lock, for checks made while the session is offline.
    pub fn try_lock_state(&self) -> Option<OwnedMutexGuard<SessionState>> {
        Arc::clone(&self.state).try_lock_owned().ok()
    }

    /// Starts a new epoch and returns it.
    pub fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRecord {
    /// Options given at subscribe time.
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone)]
pub enum InflightStage {
    /// QoS 1 sent, waiting for PUBACK; or QoS 2 sent, waiting for PUBREC.
    AwaitingAck(Delivery),
    /// QoS 2 PUBREC received and PUBREL sent, waiting for PUBCOMP; carries the message's
    /// sequence number in the durable queue, if stored.
    AwaitingComp(Option<u64>),
}

/// One unacknowledged outbound message.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Its packet identifier.
    pub packet_id: u16,
    /// Its stage.
    pub stage: InflightStage,
}

/// The will of the current connection.
#[derive(Debug)]
pub struct PendingWill {
    /// The message to publish; its expiry is counted from the moment it is published, so it is
    /// kept without `expires_at` until then.
    pub message: Message,
    /// MQTT 5 Will Delay Interval in seconds.
    pub delay: u32,
}

impl PendingWill {
    /// The message as published now.
    pub fn into_message(self, now: Instant) -> Arc<Message> {
        let mut message = self.message;
        message.expires_at =
            Message::expiry_from_interval(message.properties.message_expiry_interval, now);
        Arc::new(message)
    }
}

/// Session state owned by the live connection, and kept while the session is offline.
#[derive(Debug)]
pub struct SessionState {
    /// Subscriptions keyed by the full filter as subscribed (including `$share/g/`).
    pub subscriptions: BTreeMap<String, SubscriptionRecord>,
    /// Outbound QoS 1/2 messages not yet fully acknowledged, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Inbound QoS 2 packet ids received and not yet released.
    pub awaiting_release: BTreeSet<u16>,
    /// The next packet id to try for an outbound message.
    pub next_packet_id: u16,
    /// Session Expiry Interval in seconds (0: ends with the connection).
    pub expiry_interval: u32,
    /// Protocol of the last connection, used to decide how to resend.
    pub protocol: ProtocolVersion,
    /// When the last connection ended, for expiry.
    pub disconnected_at: Option<Instant>,
    /// True once the session ended (expired, or its clean connection closed) while a new
    /// connection was already waiting for it: that connection must not report it present.
    pub ended: bool,
}

impl SessionState {
    /// A fresh session.
    pub fn new(expiry_interval: u32, protocol: ProtocolVersion) -> SessionState {
        SessionState {
            subscriptions: BTreeMap::new(),
            inflight: VecDeque::new(),
            awaiting_release: BTreeSet::new(),
            next_packet_id: 1,
            expiry_interval,
            protocol,
            disconnected_at: None,
            ended: false,
        }
    }

    /// Allocates a packet id that is not in flight. `None` only if all 65535 are.
    pub fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Finds the inflight entry for `packet_id`.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|i| i.packet_id == packet_id)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{PublishProperties, Utf8};

    fn delivery(size: usize) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: Utf8::new("t").unwrap_or_default(),
                payload: Bytes::from(vec![0u8; size - 1]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                origin: None,
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            stored: None,
        }
    }

    fn session(messages: usize, bytes: usize) -> Arc<SessionHandle> {
        let limits = SessionLimits::new(
            messages,
            bytes,
            Patience {
                stuck: Duration::from_secs(60),
                give_up: Duration::from_secs(60),
            },
            super::super::queue_store::QueueStore::new(Arc::new(
                super::super::test_support::NoStore,
            )),
        );
        SessionHandle::new(
            Arc::from("s"),
            &limits,
            SessionState::new(0, ProtocolVersion::V5),
        )
    }

    fn queued(outcome: PushOutcome) -> bool {
        matches!(outcome, PushOutcome::Queued { .. })
    }

    #[test]
    fn sessions_share_one_set_of_limits_and_stay_compact() {
        let a = session(4, 150);
        let b = SessionHandle::new(
            Arc::from("b"),
            &a.limits,
            SessionState::new(0, ProtocolVersion::V5),
        );
        assert!(Arc::ptr_eq(&a.limits, &b.limits));
        // Every parked connection holds one: bounds, patience and queues are not copied in.
        let size = std::mem::size_of::<SessionHandle>();
        eprintln!("SessionHandle {size} B");
        assert!(size <= 256, "SessionHandle grew to {size} B");
    }

    #[test]
    fn a_session_made_long_after_its_limits_is_not_stuck_from_the_start() {
        let a = session(1, 1 << 20);
        let Some(origin) = Instant::now().checked_sub(Duration::from_secs(3600)) else {
            return; // a clock this young cannot be an hour old
        };
        let old = Arc::new(SessionLimits {
            capacity: 1,
            online_bytes: 1 << 20,
            patience: a.limits.patience,
            queues: Arc::clone(&a.limits.queues),
            origin,
        });
        let s = SessionHandle::new(
            Arc::from("late"),
            &old,
            SessionState::new(0, ProtocolVersion::V5),
        );
        assert!(s.idle() < Duration::from_secs(60), "idle {:?}", s.idle());
        s.set_online(true);
        s.set_awaiting_socket(true);
        assert!(queued(s.push(delivery(10), None)));
        // Full, but it made progress when it was made: a publisher waits for it.
        assert!(matches!(s.push(delivery(10), None), PushOutcome::Full(_)));
    }

    #[test]
    fn a_server_message_is_bounded_by_the_message_count_only() {
        let s = session(4, 150);
        s.set_online(true);
        for _ in 0..4 {
            assert!(queued(s.push_from_server(delivery(100))));
        }
        assert!(matches!(
            s.push_from_server(delivery(100)),
            PushOutcome::Full(_)
        ));
    }

    #[test]
    fn an_online_queue_is_full_at_its_byte_bound_and_takes_again_after_a_pop() {
        let s = session(100, 250);
        s.set_online(true);
        assert!(queued(s.push(delivery(100), None)));
        assert!(queued(s.push(delivery(100), None)));
        assert!(
            queued(s.push(delivery(100), None)),
            "under the bound before this one"
        );
        assert!(matches!(s.push(delivery(100), None), PushOutcome::Full(_)));
        let mut out = Vec::new();
        s.pop_into(&mut out, 2, usize::MAX);
        assert!(queued(s.push(delivery(100), None)));
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn one_message_larger_than_the_bound_still_goes_through() {
        let s = session(100, 10);
        s.set_online(true);
        assert!(queued(s.push(delivery(1000), None)));
        assert!(matches!(s.push(delivery(1), None), PushOutcome::Full(_)));
    }

    #[test]
    fn a_pop_stops_at_the_first_acknowledged_delivery_beyond_the_window() {
        let s = session(100, 1 << 20);
        s.set_online(true);
        let mut at_most_once = delivery(10);
        at_most_once.qos = QoS::AtMostOnce;
        for d in [
            delivery(10),
            at_most_once.clone(),
            delivery(20),
            at_most_once,
            delivery(30),
        ] {
            assert!(queued(s.push(d, None)));
        }
        let mut out = Vec::new();
        s.pop_into(&mut out, 64, 1);
        let qos: Vec<QoS> = out.iter().map(|d| d.qos).collect();
        assert_eq!(
            qos,
            [QoS::AtLeastOnce, QoS::AtMostOnce],
            "stops before the second QoS 1"
        );
        out.clear();
        s.pop_into(&mut out, 64, 0);
        assert!(
            out.is_empty(),
            "a full window takes nothing, QoS 1 at the front"
        );
        s.pop_into(&mut out, 2, 5);
        let sizes: Vec<usize> = out.iter().map(|d| d.message.payload.len() + 1).collect();
        assert_eq!(sizes, [20, 10], "at most `max`, in order");
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn an_offline_queue_is_bounded_by_messages_only() {
        let s = session(3, 10);
        for _ in 0..3 {
            assert!(queued(s.push(delivery(100), None)));
        }
        assert!(matches!(
            s.push(delivery(100), None),
            PushOutcome::Dropped(_)
        ));
    }
}
