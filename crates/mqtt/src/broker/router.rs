//! The router owns the broker's shared state: sessions, the subscription tree and the retained
//! messages. Network connections and in-process clients reach it through the same methods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

use super::config::BrokerConfig;
use super::device_meter::DeviceMeter;
use super::drain::Redirect;
use super::handover::{Owners, Previous, SessionPlacement, SessionRelease};
use super::ingest::{IngestLog, Ingested, Publisher};
use super::keep_alive::KeepAliveSweep;
use super::message::{Delivery, Message};
use super::metrics::{BrokerMetrics, DropReason};
use super::persist::{self, Clock, Persister};
use super::queue_store::{QueueStore, STAGE_AWAITING_ACK, STAGE_AWAITING_COMP, SessionRecords};
use super::retained::RetainedStore;
use super::session::{
    Inflight, InflightStage, NEVER_EXPIRES, Patience, PendingWill, PushOutcome, SessionHandle,
    SessionLimits, SessionState, SubscriptionRecord,
};
use super::shared::{SharedGroups, SharedInterest};
use super::subscriptions::{Match, Subscriber, SubscriptionTree};
use super::takeover::{self, AttachObserver};
use super::tap::{ServiceTap, TapEntry, Taps, TooManyTaps};
use crate::protocol::{ProtocolVersion, RetainHandling, SubscriptionOptions, reason};
use crate::topic::{self, FilterKind};

/// A session claimed by a connection.
pub struct Attached {
    /// The session.
    pub session: Arc<SessionHandle>,
    /// Its state, held for the life of the connection.
    pub state: OwnedMutexGuard<SessionState>,
    /// Whether an earlier session was resumed (CONNACK Session Present).
    pub session_present: bool,
    /// The session store's ticket of the session's record as this connection set it (0:
    /// nothing written): CONNACK waits until [`Router::session_watermark`] reaches it.
    pub record_ticket: u64,
}

/// A delivery that could not be queued yet because the receiver's queue is full.
pub type Blocked = (Arc<SessionHandle>, Delivery);

/// What became of a delivery offered to a session.
#[derive(Debug)]
pub enum Offered {
    /// Queued or dropped (and counted): nothing more to do for it. A delivery stored in a
    /// persistent session's durable queue is on disk once the queue's watermark
    /// ([`Router::queue_watermark`]) reaches `ticket` (0: nothing to wait for).
    Taken {
        /// The durable queue's ticket, or 0.
        ticket: u64,
    },
    /// The session is online and its queue is full: the delivery is handed back, and the
    /// waiter registered for a wake-up.
    Full(Delivery),
}

/// The outcome of a SUBSCRIBE to one filter.
pub struct Subscribed {
    /// Retained messages to send now, as deliveries for this subscription.
    pub retained: Vec<Delivery>,
    /// The session store's ticket of the record that holds the subscription (0: a session
    /// that ends with its connection keeps no record): SUBACK waits for it.
    pub record_ticket: u64,
}

/// The broker's shared state.
pub struct Router {
    config: BrokerConfig,
    tree: RwLock<SubscriptionTree>,
    retained: RwLock<RetainedStore>,
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionHandle>>>,
    persister: Arc<Persister>,
    /// The durable queues of persistent sessions.
    queues: Arc<QueueStore>,
    /// Bounds and patience every session shares (with `queues`).
    session_limits: Arc<SessionLimits>,
    metrics: BrokerMetrics,
    next_connection_id: AtomicU64,
    /// Set (under the sessions lock) when shutdown begins: no session is attached after it.
    shutting_down: AtomicBool,
    /// In-process services that see the messages on the topics they claim.
    taps: Taps,
    /// The durable log the rules engine reads, once installed.
    ingest: OnceLock<Arc<dyn IngestLog>>,
    /// The durable log that carries QoS 1/2 messages to the other nodes of a cluster, once
    /// installed.
    forward: OnceLock<Arc<dyn IngestLog>>,
    /// Device Defender's per-client counters, once installed.
    device_meter: OnceLock<Arc<dyn DeviceMeter>>,
    /// Told of every attach, once installed (a cluster, for takeovers across nodes).
    attach_observer: OnceLock<Arc<dyn AttachObserver>>,
    /// Keep-alive deadlines of parked connections.
    keep_alive: Arc<KeepAliveSweep>,
    /// Where clients are sent once the node drains (set when the drain begins).
    redirect: OnceLock<Redirect>,
    /// The shared groups with members here, and the cluster that delivers to them.
    shared: SharedInterest,
    /// The owner records of persistent sessions, when the session tables are shared.
    owners: OnceLock<Owners>,
}

fn split_filter(filter: &str) -> Option<(Option<&str>, &str)> {
    match topic::parse_filter(filter).ok()? {
        FilterKind::Plain(f) => Some((None, f)),
        FilterKind::Shared { group, filter } => Some((Some(group), filter)),
    }
}

impl Router {
    /// A router with empty state; call [`Router::load`] to restore saved state.
    pub fn new(
        config: BrokerConfig,
        persister: Arc<Persister>,
        queues: Arc<QueueStore>,
        metrics: BrokerMetrics,
    ) -> Arc<Router> {
        let session_limits = SessionLimits::new(
            config.max_queued_messages,
            config.max_queued_bytes,
            Patience {
                stuck: config.stuck_subscriber_timeout,
                give_up: config.slow_subscriber_timeout,
            },
            Arc::clone(&queues),
        );
        Arc::new(Router {
            session_limits,
            config,
            tree: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::new()),
            sessions: Mutex::new(HashMap::new()),
            persister,
            queues,
            metrics,
            next_connection_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            taps: Taps::new(),
            ingest: OnceLock::new(),
            forward: OnceLock::new(),
            device_meter: OnceLock::new(),
            attach_observer: OnceLock::new(),
            keep_alive: Arc::new(KeepAliveSweep::default()),
            redirect: OnceLock::new(),
            shared: SharedInterest::default(),
            owners: OnceLock::new(),
        })
    }

    /// Sets where persistent sessions live (before [`Router::load`]; once).
    pub fn set_placement(&self, placement: SessionPlacement) {
        if let SessionPlacement::Shared { node_id } = placement {
            let store = Arc::clone(self.persister.store());
            let _ = self.owners.set(Owners::new(node_id, store));
        }
    }

    /// Installs how this node asks another to release a session (the cluster; once). Ignored
    /// when the sessions are not shared.
    pub fn set_session_release(&self, release: Arc<dyn SessionRelease>) {
        if let Some(owners) = self.owners.get() {
            owners.set_release(release);
        }
    }

    /// The shared sweep that watches parked connections' keep-alive deadlines.
    pub(crate) fn keep_alive_sweep(&self) -> &Arc<KeepAliveSweep> {
        &self.keep_alive
    }

    /// The broker's limits.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// A new connection id (never 0, which stands for "no owner").
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    fn update_gauges(&self) {
        self.metrics.sessions.set(self.sessions.lock().len() as f64);
        self.metrics
            .subscriptions
            .set(self.tree.read().len() as f64);
        self.metrics.retained.set(self.retained.read().len() as f64);
    }

    /// Restores retained messages and persistent sessions saved by an earlier run. Must run
    /// inside the runtime (it starts session expiry timers).
    pub fn load(self: &Arc<Self>) -> Result<LoadReport, fleetcore_core::StoreError> {
        let clock = Clock::now();
        let store = Arc::clone(self.persister.store());
        let mut report = LoadReport::default();
        for (key, value) in store.scan_prefix(persist::RETAINED_TABLE, b"")? {
            match persist::decode_retained(&value, &clock) {
                Ok(m) if !m.is_expired(Instant::now()) => {
                    self.retained.write().restore(Arc::new(m));
                    report.retained += 1;
                }
                Ok(_) => {
                    self.persister.delete(persist::RETAINED_TABLE, key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable retained message");
                    report.skipped += 1;
                }
            }
        }
        let mut queues = self.queues.load()?;
        // With shared session tables, only the sessions this node owns are its to load.
        let owned = match self.owners.get() {
            Some(owners) => Some(owners.owned()?),
            None => None,
        };
        let ours = |client_id: &str| owned.as_ref().is_none_or(|o| o.contains(client_id));
        for (key, value) in store.scan_prefix(persist::SESSIONS_TABLE, b"")? {
            let Ok(client_id) = String::from_utf8(key.clone()) else {
                report.skipped += 1;
                continue;
            };
            if !ours(&client_id) {
                queues.remove(&client_id);
                continue;
            }
            let records = queues.remove(&client_id);
            self.restore_session(&client_id, &value, records, &clock, &mut report);
        }
        // Records of sessions that are gone (ended between their last commits, or unreadable).
        for client_id in queues.keys().filter(|c| ours(c)) {
            self.queues.end_session(client_id);
        }
        self.update_gauges();
        Ok(report)
    }

    /// Restores one stored session (its record `value` and queued `records`) into the
    /// registry, with its subscriptions and expiry timer.
    fn restore_session(
        self: &Arc<Self>,
        client_id: &str,
        value: &[u8],
        records: Option<SessionRecords>,
        clock: &Clock,
        report: &mut LoadReport,
    ) {
        let stored = match persist::decode_session(value) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, client_id, "skipping unreadable session");
                report.skipped += 1;
                return;
            }
        };
        let mut state = SessionState::new(stored.expiry_interval, stored.protocol);
        let disconnected_at = clock
            .instant_of(stored.disconnected_at_ms)
            .unwrap_or_else(Instant::now);
        state.disconnected_at = Some(disconnected_at);
        let handle = self.new_session(Arc::from(client_id), state);
        let Some(mut state) = handle.try_lock_state() else {
            report.skipped += 1;
            return;
        };
        for (filter, record) in stored.subscriptions {
            let Some((group, plain)) = split_filter(&filter) else {
                continue;
            };
            let replaced = self.tree.write().insert(
                plain,
                group,
                Subscriber {
                    session: Arc::clone(&handle),
                    options: record.options,
                    id: record.id,
                },
            );
            if let (Some(g), false) = (group, replaced) {
                self.shared.added(g, plain);
            }
            state.subscriptions.insert(filter, record);
        }
        if let Some(records) = records {
            report.queued += self.restore_queue(&handle, &mut state, records, clock);
        }
        let expiry = state.expiry_interval;
        drop(state);
        self.sessions
            .lock()
            .insert(Arc::clone(handle.client_id()), Arc::clone(&handle));
        report.sessions += 1;
        if expiry != NEVER_EXPIRES {
            let elapsed = Instant::now().saturating_duration_since(disconnected_at);
            let left = Duration::from_secs(u64::from(expiry)).saturating_sub(elapsed);
            let epoch = handle.next_epoch();
            self.schedule_expiry(handle, epoch, left);
        }
    }

    /// With shared session tables, before a connection attaches to a session this node does
    /// not hold: makes this node its owner (see `handover.rs`) and loads what is durable of it
    /// (or, on a clean start, discards what another node left). `false`: the session could
    /// not be taken over, and the CONNECT is refused.
    async fn take_ownership(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
    ) -> bool {
        let Some(owners) = self.owners.get() else {
            return true;
        };
        if (clean_start && expiry_interval == 0) || self.sessions.lock().contains_key(client_id) {
            return true;
        }
        let previous = match owners.acquire(client_id, self.config.connect_timeout).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, %client_id, "cannot take the session over: refusing the connection");
                return false;
            }
        };
        if clean_start {
            if matches!(previous, Previous::Node(_)) {
                self.persister
                    .delete(persist::SESSIONS_TABLE, client_id.as_bytes().to_vec());
                self.queues.end_session(client_id);
            }
            return true;
        }
        let store = Arc::clone(self.persister.store());
        let queues = Arc::clone(&self.queues);
        let id = Arc::clone(client_id);
        let loaded = tokio::task::spawn_blocking(move || {
            let record = store.get(persist::SESSIONS_TABLE, id.as_bytes())?;
            Ok::<_, fleetcore_core::StoreError>((record, queues.load_session(&id)?))
        })
        .await;
        let (record, records) = match loaded {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %client_id, "cannot load the session taken over: refusing the connection");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, %client_id, "loading the session taken over failed");
                return false;
            }
        };
        match record {
            // Another connection of this client id may have made it meanwhile.
            Some(value) if !self.sessions.lock().contains_key(client_id) => {
                let mut report = LoadReport::default();
                let records = (!records.is_empty()).then_some(records);
                self.restore_session(client_id, &value, records, &Clock::now(), &mut report);
                self.update_gauges();
                tracing::info!(%client_id, ?previous, queued = report.queued, "resumed a persistent session taken over from its owner");
            }
            Some(_) => {}
            None if !records.is_empty() => self.queues.end_session(client_id),
            None => {}
        }
        true
    }

    /// Lets go of `client_id`'s session for another node that takes it over: sends its
    /// connection away, takes its subscriptions out, forgets it here (its stored record and
    /// queue stay) and returns once every write made for it is durable.
    pub async fn release(&self, client_id: &str) -> Result<(), fleetcore_core::StoreError> {
        let session = self.sessions.lock().get(client_id).cloned();
        if let Some(session) = &session {
            session.claim(0);
            let mut state = session.lock_state().await;
            // Cancels its expiry timer and a delayed will: the new owner runs them now.
            session.next_epoch();
            if !state.subscriptions.is_empty() {
                let mut tree = self.tree.write();
                for filter in state.subscriptions.keys() {
                    if let Some((group, plain)) = split_filter(filter)
                        && tree.remove(plain, group, session.client_id())
                        && let Some(g) = group
                    {
                        self.shared.removed(g, plain);
                    }
                }
            }
            let mut sessions = self.sessions.lock();
            if sessions
                .get(client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(client_id);
            }
            drop(sessions);
            state.ended = true;
            drop(state);
        }
        self.persister.flush().await?;
        self.queues.flush().await?;
        if let Some(session) = session {
            // Its stored queue now belongs to the new owner: drop only the copy in memory.
            session.set_persistent(false);
            session.clear_queue();
            self.update_gauges();
            tracing::info!(client_id, "released a persistent session to another node");
        }
        Ok(())
    }

    /// Puts a session's stored messages back in its inflight window (those sent and not yet
    /// acknowledged, resent with their packet ids) and its queue, in their original order.
    /// Returns how many messages came back.
    fn restore_queue(
        &self,
        handle: &SessionHandle,
        state: &mut SessionState,
        records: SessionRecords,
        clock: &Clock,
    ) -> usize {
        let mut restored = 0;
        for (seq, (message, marker)) in records {
            let delivery = match message.map(|m| persist::decode_delivery(&m, seq, clock)) {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, client_id = %handle.client_id(), "dropping an unreadable queued message");
                    handle.settle(Some(seq));
                    continue;
                }
                None => None,
            };
            match (delivery, marker) {
                (Some(d), None) => handle.restore(d),
                (Some(d), Some((STAGE_AWAITING_ACK, packet_id))) => {
                    state.inflight.push_back(Inflight {
                        packet_id,
                        stage: InflightStage::AwaitingAck(d),
                    })
                }
                (_, Some((STAGE_AWAITING_COMP, packet_id))) => state.inflight.push_back(Inflight {
                    packet_id,
                    stage: InflightStage::AwaitingComp(Some(seq)),
                }),
                _ => {
                    handle.settle(Some(seq));
                    continue;
                }
            }
            restored += 1;
        }
        restored
    }

    fn new_session(&self, client_id: Arc<str>, state: SessionState) -> Arc<SessionHandle> {
        SessionHandle::new(client_id, &self.session_limits, state)
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Starts shutdown: no new session is attached, and every connected client is told to go.
    pub fn begin_shutdown(&self) {
        let sessions = self.sessions.lock();
        self.shutting_down.store(true, Ordering::Release);
        for session in sessions.values() {
            session.claim(0);
        }
    }

    /// Starts a drain: like [`Router::begin_shutdown`], but connected clients are sent to
    /// `redirect`'s addresses. Returns how many sessions were online; `None` when shutdown or
    /// a drain had begun already.
    pub fn begin_drain(&self, redirect: Redirect) -> Option<usize> {
        let sessions = self.sessions.lock();
        if self.is_shutting_down() || self.redirect.set(redirect).is_err() {
            return None;
        }
        self.shutting_down.store(true, Ordering::Release);
        let mut online = 0;
        for session in sessions.values() {
            online += usize::from(session.is_online());
            session.claim(0);
        }
        Some(online)
    }

    /// The Server Reference for the `n`-th client of `transport` once the node drains; `None`
    /// when it is not draining or has no address for that transport.
    pub(crate) fn server_reference(
        &self,
        transport: fleetcore_core::auth::TransportKind,
        n: u64,
    ) -> Option<crate::protocol::Utf8> {
        self.redirect.get()?.pick(transport, n)
    }

    /// Asks every connected client to check again that it may stay connected (identity state
    /// changed: a certificate revoked, a policy detached). Each connection re-asks its grant
    /// on its own task; the router only wakes them.
    pub fn revalidate_all(&self) {
        let sessions: Vec<Arc<SessionHandle>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            if session.is_online() {
                session.request_revalidation();
            }
        }
    }

    /// Claims the session of `client_id` for a new connection, waiting for a previous
    /// connection with the same client id to let go (it is told to by the claim). `None` once
    /// the server is shutting down.
    pub async fn attach(
        self: &Arc<Self>,
        client_id: Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
        protocol: ProtocolVersion,
        connection_id: u64,
    ) -> Option<Attached> {
        if !self
            .take_ownership(&client_id, clean_start, expiry_interval)
            .await
        {
            return None;
        }
        loop {
            let stamp = takeover::attach_stamp();
            let (session, existed) = {
                let mut sessions = self.sessions.lock();
                if self.is_shutting_down() {
                    return None;
                }
                let found = match sessions.get(&client_id) {
                    Some(s) => (Arc::clone(s), true),
                    None => {
                        let s = self.new_session(
                            Arc::clone(&client_id),
                            SessionState::new(expiry_interval, protocol),
                        );
                        sessions.insert(Arc::clone(&client_id), Arc::clone(&s));
                        (s, false)
                    }
                };
                // Claimed under the lock, so begin_shutdown cannot miss this connection.
                found.0.claim(connection_id);
                found.0.set_attached_at(stamp);
                found
            };
            let mut state = session.lock_state().await;
            let still_registered = self
                .sessions
                .lock()
                .get(&client_id)
                .is_some_and(|s| Arc::ptr_eq(s, &session));
            if !still_registered {
                // It expired or ended while we waited; start over with a fresh one.
                continue;
            }
            session.next_epoch();
            // Only a session that outlived a connection can have a record in the store.
            let stored = existed && state.expiry_interval > 0 && !state.ended;
            let resumed = existed && !clean_start && !state.ended;
            if !resumed {
                self.clear_session(&session, &mut state);
            }
            state.ended = false;
            state.expiry_interval = expiry_interval;
            state.protocol = protocol;
            state.disconnected_at = None;
            session.set_persistent(expiry_interval > 0);
            session.set_online(true);
            let record_ticket = if expiry_interval > 0 {
                self.save_session(&session, &state)
            } else if stored {
                self.persister
                    .delete(persist::SESSIONS_TABLE, client_id.as_bytes().to_vec())
            } else {
                0
            };
            self.update_gauges();
            if let Some(observer) = self.attach_observer.get() {
                observer.attached(&client_id, stamp);
            }
            return Some(Attached {
                session,
                state,
                session_present: resumed,
                record_ticket,
            });
        }
    }

    /// Installs the observer told of every attach (once; later calls are ignored).
    pub fn set_attach_observer(&self, observer: Arc<dyn AttachObserver>) {
        let _ = self.attach_observer.set(observer);
    }

    /// The client `client_id` connected on another node, stamped `attached_at`: the
    /// connection holding its session here, if older, is sent away as taken over (DISCONNECT
    /// 0x8E for MQTT 5). `theirs_wins_tie` breaks equal stamps. Returns whether one was.
    pub fn take_over_from_elsewhere(
        &self,
        client_id: &str,
        attached_at: u64,
        theirs_wins_tie: bool,
    ) -> bool {
        // Under the sessions lock, as attach claims, so a newer local claim is never sent away.
        let sessions = self.sessions.lock();
        let Some(session) = sessions.get(client_id) else {
            return false;
        };
        if !session.is_online()
            || !takeover::gives_way(session.attached_at(), attached_at, theirs_wins_tie)
        {
            return false;
        }
        session.claim(0);
        true
    }

    /// Ends a connection's hold on its session: publishes or schedules the will, and ends or
    /// keeps the session according to its expiry interval.
    pub fn detach(
        self: &Arc<Self>,
        session: Arc<SessionHandle>,
        mut state: OwnedMutexGuard<SessionState>,
        will: Option<PendingWill>,
        taken_over: bool,
    ) {
        let epoch = session.next_epoch();
        session.set_online(false);
        let now = Instant::now();
        state.disconnected_at = Some(now);
        let expiry = state.expiry_interval;
        if let Some(will) = will {
            let delay = will.delay.min(expiry);
            if delay == 0 {
                self.publish(will.into_message(Instant::now()));
            } else {
                let router = Arc::clone(self);
                let session = Arc::clone(&session);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                    if session.epoch() == epoch {
                        router.publish(will.into_message(Instant::now()));
                    }
                });
            }
        }
        if expiry == 0 {
            self.clear_session(&session, &mut state);
            state.ended = true;
            // A takeover from another node leaves no owner here: nobody resumes the session.
            if !taken_over || session.is_owned_by(0) {
                self.forget(&session);
            }
        } else {
            self.save_session(&session, &state);
            if expiry != NEVER_EXPIRES {
                self.schedule_expiry(
                    Arc::clone(&session),
                    epoch,
                    Duration::from_secs(u64::from(expiry)),
                );
            }
        }
        drop(state);
        self.update_gauges();
    }

    fn schedule_expiry(self: &Arc<Self>, session: Arc<SessionHandle>, epoch: u64, after: Duration) {
        let router = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if session.epoch() != epoch {
                return;
            }
            let Some(mut state) = session.try_lock_state() else {
                return;
            };
            if session.epoch() != epoch {
                return;
            }
            router.clear_session(&session, &mut state);
            state.ended = true;
            router.forget(&session);
            drop(state);
            router.update_gauges();
        });
    }

    /// Removes a session from the registry and the store.
    fn forget(&self, session: &Arc<SessionHandle>) {
        let mut sessions = self.sessions.lock();
        if sessions
            .get(session.client_id())
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(session.client_id());
        }
        drop(sessions);
        let key = session.client_id().as_bytes().to_vec();
        self.persister.delete(persist::SESSIONS_TABLE, key);
    }

    /// Drops every subscription, queued and inflight message of a session (and their stored
    /// copies).
    fn clear_session(&self, session: &Arc<SessionHandle>, state: &mut SessionState) {
        if !state.subscriptions.is_empty() {
            let mut tree = self.tree.write();
            for filter in state.subscriptions.keys() {
                if let Some((group, plain)) = split_filter(filter)
                    && tree.remove(plain, group, session.client_id())
                    && let Some(g) = group
                {
                    self.shared.removed(g, plain);
                }
            }
        }
        state.subscriptions.clear();
        state.inflight.clear();
        state.awaiting_release.clear();
        session.clear_queue();
        session.set_persistent(false);
    }

    /// Queues the session's record for the store; returns its ticket.
    fn save_session(&self, session: &SessionHandle, state: &SessionState) -> u64 {
        let clock = Clock::now();
        self.persister.put(
            persist::SESSIONS_TABLE,
            session.client_id().as_bytes().to_vec(),
            persist::encode_session(state, &clock),
        )
    }

    /// The durable watermark of the session store: a record whose ticket is at or below it is
    /// on disk.
    pub fn session_watermark(&self) -> watch::Receiver<u64> {
        self.persister.durable()
    }

    /// Adds or replaces a subscription. `Err` carries the SUBACK reason code of a refusal.
    pub fn subscribe(
        &self,
        session: &Arc<SessionHandle>,
        state: &mut SessionState,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> Result<Subscribed, u8> {
        if filter.len() > self.config.max_topic_length {
            return Err(reason::TOPIC_FILTER_INVALID);
        }
        let Some((group, plain)) = split_filter(filter) else {
            return Err(reason::TOPIC_FILTER_INVALID);
        };
        let existed = self.tree.write().insert(
            plain,
            group,
            Subscriber {
                session: Arc::clone(session),
                options,
                id,
            },
        );
        if let (Some(g), false) = (group, existed) {
            self.shared.added(g, plain);
        }
        state
            .subscriptions
            .insert(filter.to_string(), SubscriptionRecord { options, id });
        let record_ticket = if state.expiry_interval > 0 {
            self.save_session(session, state)
        } else {
            0
        };
        let send_retained = group.is_none()
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !existed,
                RetainHandling::Never => false,
            };
        let retained = if send_retained {
            self.retained
                .read()
                .matching(plain, Instant::now())
                .into_iter()
                .map(|message| Delivery {
                    qos: message.qos.min(options.qos),
                    retain: true,
                    subscription_ids: id.into_iter().collect(),
                    message,
                    stored: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        self.update_gauges();
        Ok(Subscribed {
            retained,
            record_ticket,
        })
    }

    /// Removes a subscription. `None` if it did not exist; otherwise the session store's
    /// ticket of the record without it (0: the session keeps no record), which UNSUBACK waits
    /// for.
    pub fn unsubscribe(
        &self,
        session: &Arc<SessionHandle>,
        state: &mut SessionState,
        filter: &str,
    ) -> Option<u64> {
        state.subscriptions.remove(filter)?;
        if let Some((group, plain)) = split_filter(filter)
            && self.tree.write().remove(plain, group, session.client_id())
            && let Some(g) = group
        {
            self.shared.removed(g, plain);
        }
        let ticket = if state.expiry_interval > 0 {
            self.save_session(session, state)
        } else {
            0
        };
        self.update_gauges();
        Some(ticket)
    }

    /// Sets or clears the retained message of `message.topic` (an empty payload clears).
    pub fn retain(&self, message: &Arc<Message>) {
        if !self.retained.write().apply(message) {
            return;
        }
        let key = message.topic.as_bytes().to_vec();
        if message.payload.is_empty() {
            self.persister.delete(persist::RETAINED_TABLE, key);
        } else {
            let clock = Clock::now();
            self.persister.put(
                persist::RETAINED_TABLE,
                key,
                persist::encode_retained(message, &clock),
            );
        }
        self.metrics.retained.set(self.retained.read().len() as f64);
    }

    /// Finds every session `message` goes to. Overlapping plain subscriptions of one session
    /// merge into one delivery (highest QoS, all subscription identifiers; MQTT 5 §3.3.4);
    /// each matching shared group adds one delivery of its own, even to a session that also
    /// has a plain subscription (MQTT 5 §4.8.2).
    pub fn targets(&self, message: &Arc<Message>, out: &mut Vec<Blocked>) {
        // In a cluster, the shared groups it delivers this message to are its.
        let cluster_groups = self.shared.groups();
        let tree = self.tree.read();
        let origin = message.origin.as_deref();
        let delivery = |s: &Subscriber| {
            (
                Arc::clone(&s.session),
                Delivery {
                    message: Arc::clone(message),
                    qos: message.qos.min(s.options.qos),
                    retain: s.options.retain_as_published && message.retain,
                    subscription_ids: s.id.into_iter().collect(),
                    stored: None,
                },
            )
        };
        let mut shared = Vec::new();
        tree.for_each_match(&message.topic, &mut |m| match m {
            Match::Plain(s) => {
                if !(s.options.no_local && origin == Some(&**s.session.client_id())) {
                    out.push(delivery(s));
                }
            }
            Match::Shared(g) => {
                let here = cluster_groups.is_none_or(|c| !c.delivers(message, &g.name, &g.filter));
                if here && let Some(s) = g.pick() {
                    shared.push(delivery(s));
                }
            }
        });
        drop(tree);
        if out.len() > 1 {
            merge_same_session(out);
        }
        out.append(&mut shared);
    }

    /// The delivery of `message` to one member of the shared group `group` with `filter` on
    /// this node (its next member, round robin), if the group has members here and `filter`
    /// matches the topic: how a cluster hands a group's message to the node it chose.
    pub fn shared_target(
        &self,
        group: &str,
        filter: &str,
        message: &Arc<Message>,
    ) -> Option<Blocked> {
        if !topic::matches(filter, &message.topic) {
            return None;
        }
        let tree = self.tree.read();
        let member = tree.shared_group(filter, group)?.pick()?;
        Some((
            Arc::clone(&member.session),
            Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(member.options.qos),
                retain: false,
                subscription_ids: member.id.into_iter().collect(),
                stored: None,
            },
        ))
    }

    /// Installs the cluster that delivers messages to shared groups (once; later calls are
    /// ignored), and tells it of the groups with members here already.
    pub fn set_shared_groups(&self, groups: Arc<dyn SharedGroups>) {
        self.shared.install(groups);
    }

    /// Offers `delivery` to `session`; hands it back when the session is online and full, with
    /// `waiter` registered for a wake-up.
    pub fn offer(
        &self,
        session: &Arc<SessionHandle>,
        delivery: Delivery,
        waiter: Option<&Arc<Notify>>,
    ) -> Offered {
        match session.push(delivery, waiter) {
            PushOutcome::Queued { ticket } => Offered::Taken { ticket },
            PushOutcome::Full(d) => Offered::Full(d),
            PushOutcome::Dropped(reason) => {
                self.metrics.dropped(reason, session.client_id());
                Offered::Taken { ticket: 0 }
            }
        }
    }

    /// The durable watermark of the persistent sessions' queues: tickets at or below it are on
    /// disk.
    pub fn queue_watermark(&self) -> watch::Receiver<u64> {
        self.queues.durable()
    }

    /// Registers an in-process service that is handed every message published (by clients or
    /// with [`Router::publish`]) on a topic matching one of `filters`; the message still goes
    /// to the subscribers as usual. At most [`super::tap::MAX_TAPS`] taps.
    pub fn add_tap(
        &self,
        filters: Vec<String>,
        tap: Arc<dyn ServiceTap>,
    ) -> Result<(), TooManyTaps> {
        self.taps.add(TapEntry::new(filters, tap))
    }

    /// Hands an authorized message to the taps whose filters match its topic.
    pub fn tap(&self, message: &Arc<Message>) {
        self.taps.offer(message, None);
    }

    /// Hands a message a client authenticated as `principal` published to the taps.
    pub fn tap_from_client(&self, message: &Arc<Message>, principal: &str) {
        self.taps.offer(message, Some(principal));
    }

    /// Delivers a server-originated answer to the session of `client_id` only, if it is
    /// subscribed to the topic: request/response services whose answers are meant for the
    /// requesting connection alone (fleet provisioning's private keys and ownership tokens).
    /// Not tapped, not ingested, never retained. Returns whether it was queued.
    pub fn publish_to(&self, client_id: &str, message: Arc<Message>) -> bool {
        let mut targets = Vec::new();
        self.targets(&message, &mut targets);
        let mut queued = false;
        for (session, delivery) in targets {
            if &**session.client_id() != client_id {
                continue;
            }
            match session.push_from_server(delivery) {
                PushOutcome::Queued { .. } => queued = true,
                PushOutcome::Full(_) => self
                    .metrics
                    .dropped(DropReason::QueueFull, session.client_id()),
                PushOutcome::Dropped(reason) => self.metrics.dropped(reason, session.client_id()),
            }
        }
        queued
    }

    /// Installs the device meter (once; later calls are ignored): connections from then on
    /// keep per-client counters for it.
    pub fn set_device_meter(&self, meter: Arc<dyn DeviceMeter>) {
        let _ = self.device_meter.set(meter);
    }

    /// The device meter, if one is installed.
    pub fn device_meter(&self) -> Option<&Arc<dyn DeviceMeter>> {
        self.device_meter.get()
    }

    /// Installs the durable ingest log (once; later calls are ignored).
    pub fn set_ingest_log(&self, log: Arc<dyn IngestLog>) {
        let _ = self.ingest.set(log);
    }

    /// Hands an authorized message to the ingest log, if one is installed.
    pub fn ingest(&self, message: &Arc<Message>, publisher: Publisher<'_>) -> Ingested {
        match self.ingest.get() {
            Some(log) => log.ingest(message, publisher),
            None => Ingested::NotWanted,
        }
    }

    /// The durable watermark of the ingest log's partition that `publisher`'s messages go to,
    /// if a log is installed.
    pub fn ingest_watermark(&self, publisher: Publisher<'_>) -> Option<watch::Receiver<u64>> {
        self.ingest.get().map(|log| log.durable(publisher))
    }

    /// Installs the durable log that carries messages to the other nodes of a cluster (once;
    /// later calls are ignored). A client's QoS 1/2 acknowledgement then also waits until it
    /// took the message ([`IngestLog`]'s contract: answer at once, durable by watermark).
    pub fn set_forward_log(&self, log: Arc<dyn IngestLog>) {
        let _ = self.forward.set(log);
    }

    /// Hands an authorized message to the forward log, if one is installed.
    pub fn forward(&self, message: &Arc<Message>, publisher: Publisher<'_>) -> Ingested {
        match self.forward.get() {
            Some(log) => log.ingest(message, publisher),
            None => Ingested::NotWanted,
        }
    }

    /// The durable watermark of the forward log's partition that `publisher`'s messages go to,
    /// if a forward log is installed.
    pub fn forward_watermark(&self, publisher: Publisher<'_>) -> Option<watch::Receiver<u64>> {
        self.forward.get().map(|log| log.durable(publisher))
    }

    /// Publishes a server-originated message (a will, a message from an in-process client):
    /// hands it to the taps, retains it if asked, and queues it for every subscriber without
    /// waiting for room. Returns what the ingest log did with it, so an in-process publisher
    /// that must not lose it (a rule's republish) can wait until it is durable.
    pub fn publish(&self, message: Arc<Message>) -> Ingested {
        self.tap(&message);
        let ingested = self.ingest(&message, Publisher::default());
        // Server-originated messages reach the other nodes without anyone waiting for it.
        self.forward(&message, Publisher::default());
        if message.retain {
            self.retain(&message);
        }
        let mut targets = Vec::new();
        self.targets(&message, &mut targets);
        for (session, delivery) in targets {
            match session.push_from_server(delivery) {
                PushOutcome::Queued { .. } => {}
                PushOutcome::Full(_) => self
                    .metrics
                    .dropped(DropReason::QueueFull, session.client_id()),
                PushOutcome::Dropped(reason) => self.metrics.dropped(reason, session.client_id()),
            }
        }
        ingested
    }

    /// Saves every persistent session, then commits all pending writes (queued and inflight
    /// messages are already in their durable queues). Called at graceful shutdown, after the
    /// connections have closed.
    pub async fn save_all(&self) -> Result<(), fleetcore_core::StoreError> {
        let clock = Clock::now();
        let sessions: Vec<Arc<SessionHandle>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            let Some(state) = session.try_lock_state() else {
                continue;
            };
            if state.expiry_interval == 0 || state.ended {
                continue;
            }
            self.persister.put(
                persist::SESSIONS_TABLE,
                session.client_id().as_bytes().to_vec(),
                persist::encode_session(&state, &clock),
            );
        }
        self.queues.flush().await?;
        self.persister.flush().await
    }
}

/// What [`Router::load`] restored.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    /// Retained messages restored.
    pub retained: usize,
    /// Persistent sessions restored.
    pub sessions: usize,
    /// Queued and inflight messages restored into those sessions.
    pub queued: usize,
    /// Records that could not be read and were skipped.
    pub skipped: usize,
}

/// Merges deliveries to the same session (a session whose subscriptions overlap gets one copy,
/// MQTT 5 §3.3.4).
fn merge_same_session(out: &mut Vec<Blocked>) {
    out.sort_by_key(|(s, _)| Arc::as_ptr(s) as usize);
    let mut merged: Vec<Blocked> = Vec::with_capacity(out.len());
    for (session, delivery) in out.drain(..) {
        match merged.last_mut() {
            Some((last, d)) if Arc::ptr_eq(last, &session) => {
                d.qos = d.qos.max(delivery.qos);
                d.retain |= delivery.retain;
                d.subscription_ids.extend(delivery.subscription_ids);
            }
            _ => merged.push((session, delivery)),
        }
    }
    *out = merged;
}
