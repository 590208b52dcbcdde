//! QoS 1/2 messages between nodes, acknowledged end to end, on NATS JetStream.
//!
//! Outbound, the node installs a forward log in its router ([`Router::set_forward_log`]): every
//! QoS 1/2 message published on this node (`$` topics excepted) takes a ticket and waits in a
//! bounded queue; one task publishes the queue to the JetStream stream `<prefix>_forward`
//! (subjects `<prefix>.q.msg.<levels>`, file storage) with up to `forward_window` publishes in
//! flight, and moves the durable watermark as the tickets are stored, in ticket order.
//! The publisher's PUBACK waits for that watermark, so a PUBACKed message is stored by JetStream.
//!
//! Full-policies. The queue (`forward_capacity`) only fills while JetStream is slow or refuses,
//! since each publisher is held at its Receive Maximum by its withheld PUBACKs: when full, the
//! message is not forwarded, its PUBACK is not held, and it is counted as
//! `fleetcore_cluster_dropped_total{reason="forward_full"}`. A publish JetStream refuses (stream
//! full: `discard = new` at `forward_max_messages`; NATS unreachable; no acknowledgement in time)
//! is retried with the same `Nats-Msg-Id` (JetStream drops the copy it already has within its
//! two-minute duplicate window) until accepted, counted as
//! `fleetcore_cluster_forward_retries_total`: meanwhile every later acknowledgement stays
//! withheld, which is backpressure on the publishers. Order: one publisher's messages go to
//! JetStream one at a time (the next once the one before is stored), so a later message can
//! never be stored before a refused one; different publishers' messages are in flight together
//! (up to `forward_window`). A message larger than the server's `max_payload` can never be
//! stored: it is delivered on its own node only, counted as `reason="too_large"`.
//!
//! Why the stream's limit counts messages, not bytes: nats-server checks a new message against
//! a byte limit by its payload and headers only, then counts its stored size (subject and
//! record overhead included) and, once over the limit, deletes the oldest messages — so a
//! stream just below its byte limit accepts each new message and silently drops the oldest one,
//! which a node that is down has not received (seen with nats-server 2.9.10: a stopped node
//! lost 45 of 60 acknowledged messages). Its message-count check is exact: at the limit it
//! refuses, and never deletes.
//!
//! Inbound, each node reads the stream through its own durable consumer `<node id>` (created
//! at its first start to deliver new messages only, forgotten by NATS after `forward_retention`
//! without the node), offers each message of another node to its matching subscribers and
//! acknowledges it to JetStream once every persistent session that took it has it on disk: a
//! node that was down or cut off from NATS gets what it missed when it is back (at least once:
//! what it took but had not acknowledged yet comes again). The stream keeps a message until every
//! node's consumer acknowledged it (`interest` retention), at most `forward_retention`.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer, stream};
use fleetcore_mqtt::broker::{IngestLog, Ingested, Message, Publisher, Router};
use fleetcore_mqtt::protocol::QoS;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::route::{Deliverer, decode, headers};
use crate::subject::{all_messages, topic_subject};
use crate::{ClusterConfig, ClusterError};

/// The subject prefix of forwarded messages, apart from the core ones.
pub(crate) fn forward_prefix(prefix: &str) -> String {
    format!("{prefix}.q")
}

/// The name of the JetStream stream that carries QoS 1/2 messages between nodes.
pub(crate) fn stream_name(prefix: &str) -> String {
    format!("{prefix}_forward")
}

/// A message waiting for JetStream, with its ticket and its publisher's key.
struct Queued {
    ticket: u64,
    /// Messages with one key go to JetStream one at a time, in ticket order.
    key: u64,
    message: Arc<Message>,
}

/// The key that orders a message: its publisher's client id, or for a server-originated
/// message (no client) its topic. Two publishers sharing a key (a hash collision) only share
/// a turn.
fn order_key(message: &Message, publisher: Publisher<'_>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    match publisher.client_id {
        Some(client_id) => (0u8, client_id).hash(&mut hasher),
        None => (1u8, &*message.topic).hash(&mut hasher),
    }
    hasher.finish()
}

/// The router's forward log: answers at once, never blocks.
struct ForwardLog {
    /// The last ticket handed out, and the queue, under one lock: tickets enter the queue in
    /// the order they are handed out, so the watermark can follow the acknowledgements.
    queue: Mutex<(u64, mpsc::Sender<Queued>)>,
    durable: watch::Sender<u64>,
}

impl IngestLog for ForwardLog {
    fn ingest(&self, message: &Arc<Message>, publisher: Publisher<'_>) -> Ingested {
        if message.qos == QoS::AtMostOnce || message.topic.starts_with('$') {
            return Ingested::NotWanted;
        }
        let key = order_key(message, publisher);
        let mut queue = self.queue.lock();
        let ticket = queue.0 + 1;
        let queued = Queued {
            ticket,
            key,
            message: Arc::clone(message),
        };
        match queue.1.try_send(queued) {
            Ok(()) => {
                queue.0 = ticket;
                Ingested::Accepted(ticket)
            }
            Err(_) => {
                metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "forward_full")
                    .increment(1);
                Ingested::Shed
            }
        }
    }

    fn durable(&self, _: Publisher<'_>) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

/// Creates the stream and this node's consumer, installs the forward log in `router` and starts
/// the publishing and delivering tasks.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
) -> Result<(), ClusterError> {
    let js = jetstream::new(client.clone());
    let prefix = forward_prefix(&config.subject_prefix);
    let stream_name = stream_name(&config.subject_prefix);
    let jetstream_error = |e: &dyn std::fmt::Display| ClusterError::JetStream {
        stream: stream_name.clone(),
        message: e.to_string(),
    };
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![all_messages(&prefix)],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_messages: config.forward_max_messages,
            max_age: config.forward_retention,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream_error(&e))?;
    let consumer = stream
        .get_or_create_consumer::<consumer::pull::Config>(
            &config.node_id,
            consumer::pull::Config {
                durable_name: Some(config.node_id.clone()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                inactive_threshold: config.forward_retention,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| jetstream_error(&e))?;
    let (queue, outbound) = mpsc::channel(config.forward_capacity.max(1));
    let (durable, _) = watch::channel(0);
    let log = Arc::new(ForwardLog {
        queue: Mutex::new((0, queue)),
        durable: durable.clone(),
    });
    router.set_forward_log(log);
    let publisher = Publishing {
        js,
        prefix: prefix.clone(),
        node_id: config.node_id.clone(),
        // Message ids must not repeat when the node restarts and its tickets start again at 1.
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        durable,
        window: config.forward_window.max(1),
        capacity: config.forward_capacity.max(1),
    };
    tokio::spawn(publisher.run(outbound));
    tokio::spawn(deliver_forwarded(
        consumer,
        Deliverer::new(router),
        prefix,
        config.node_id.clone(),
    ));
    Ok(())
}

/// How long JetStream remembers a message id to drop a second copy.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a delivered message may stay unacknowledged before JetStream delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages a node's consumer may have delivered and not yet acknowledged.
const MAX_ACK_PENDING: i64 = 8192;
/// The longest pause between two attempts of a refused publish.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// The pause before the second retry of a refused publish (the first is at once: a refusal
/// may be old news), doubling up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The task publishing the queue to JetStream.
///
/// Order. JetStream answers each publish on its own: with several publishes in flight, a
/// message sent after a refused one may be stored (room was freed in between, by a consumer's
/// acknowledgement) and so land before it. So the messages of one publisher (one
/// [`order_key`]) go one at a time: the next leaves only once the one before is stored,
/// however many attempts that takes, while other publishers' messages keep flowing (up to
/// `window` in flight in all). The watermark follows the tickets in order, so every PUBACK
/// behind a refused message waits for it.
struct Publishing {
    js: jetstream::Context,
    prefix: String,
    node_id: String,
    boot: u64,
    durable: watch::Sender<u64>,
    window: usize,
    /// Messages waiting behind their publisher's message in flight, at most.
    capacity: usize,
}

/// One attempt at storing a message: the message, JetStream's answer, and how many attempts
/// before it were refused.
type Attempt = (Queued, Result<(), PublishError>, u32);

impl Publishing {
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        let sent = metrics::counter!("fleetcore_cluster_forwarded_total");
        let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
        // Keys with a message in flight, each with the messages waiting behind it.
        let mut turns: HashMap<u64, VecDeque<Queued>> = HashMap::new();
        let mut waiting = 0usize;
        let mut outstanding = Outstanding::default();
        let mut open = true;
        while open || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some(attempt) = in_flight.next(), if !in_flight.is_empty() => {
                    let (queued, answer, refused): Attempt = attempt;
                    match answer {
                        Ok(()) => sent.increment(1),
                        Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "too_large")
                                .increment(1);
                        }
                        Err(error) => {
                            metrics::counter!("fleetcore_cluster_forward_retries_total").increment(1);
                            if refused == 0 {
                                tracing::warn!(%error, ticket = queued.ticket,
                                    "JetStream did not store a message for the other nodes: retrying (acknowledgements wait)");
                            } else {
                                tracing::debug!(%error, ticket = queued.ticket, attempts = refused + 1,
                                    "JetStream still does not store a message: retrying");
                            }
                            in_flight.push(self.attempt(queued, refused + 1));
                            continue;
                        }
                    }
                    if let Some(watermark) = outstanding.stored(queued.ticket) {
                        self.durable.send_replace(watermark);
                    }
                    match turns.get_mut(&queued.key).and_then(VecDeque::pop_front) {
                        Some(next) => {
                            waiting -= 1;
                            in_flight.push(self.attempt(next, 0));
                        }
                        None => {
                            turns.remove(&queued.key);
                        }
                    }
                }
                next = queue.recv(), if open && in_flight.len() < self.window && waiting < self.capacity => match next {
                    Some(queued) => {
                        outstanding.push(queued.ticket);
                        match turns.get_mut(&queued.key) {
                            Some(behind) => {
                                behind.push_back(queued);
                                waiting += 1;
                            }
                            None => {
                                turns.insert(queued.key, VecDeque::new());
                                in_flight.push(self.attempt(queued, 0));
                            }
                        }
                    }
                    None => open = false,
                },
            }
        }
    }

    /// Sends `queued` (after a pause when earlier attempts were refused) and waits for
    /// JetStream's answer.
    fn attempt(&self, queued: Queued, refused: u32) -> impl Future<Output = Attempt> + use<> {
        let js = self.js.clone();
        let (subject, headers) = self.publish_parts(&queued);
        let pause = match refused {
            0 | 1 => Duration::ZERO,
            n => FIRST_RETRY_PAUSE
                .saturating_mul(1 << (n - 2).min(16))
                .min(MAX_RETRY_PAUSE),
        };
        async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            // The payload is shared, not copied.
            let answer = match js
                .publish_with_headers(subject, headers, queued.message.payload.clone())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            (queued, answer, refused)
        }
    }

    fn publish_parts(&self, queued: &Queued) -> (String, HeaderMap) {
        let mut headers = headers(&self.node_id, queued.message.qos);
        let id = format!("{}.{:x}.{}", self.node_id, self.boot, queued.ticket);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        (topic_subject(&self.prefix, &queued.message.topic), headers)
    }
}

/// The tickets handed to JetStream and not yet all stored: the watermark is the highest ticket
/// with every ticket up to it stored. Tickets arrive in increasing order.
#[derive(Default)]
struct Outstanding {
    tickets: VecDeque<(u64, bool)>,
}

impl Outstanding {
    fn push(&mut self, ticket: u64) {
        self.tickets.push_back((ticket, false));
    }

    /// Marks `ticket` stored; returns the new watermark if it moved.
    fn stored(&mut self, ticket: u64) -> Option<u64> {
        if let Ok(i) = self.tickets.binary_search_by_key(&ticket, |(t, _)| *t) {
            self.tickets[i].1 = true;
        }
        let mut watermark = None;
        while let Some(&(t, true)) = self.tickets.front() {
            watermark = Some(t);
            self.tickets.pop_front();
        }
        watermark
    }
}

/// Delivers the other nodes' forwarded messages to this node's subscribers, acknowledging each
/// to JetStream once it is durable where it was taken.
async fn deliver_forwarded(
    consumer: consumer::Consumer<consumer::pull::Config>,
    mut deliverer: Deliverer,
    prefix: String,
    node_id: String,
) {
    let received = metrics::counter!("fleetcore_cluster_received_total");
    let mut watermark = deliverer.router().queue_watermark();
    // Delivered, waiting for the durable queues before they are acknowledged.
    let mut waiting: VecDeque<(u64, jetstream::Message)> = VecDeque::new();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the forwarded messages: trying again");
                tokio::time::sleep(MAX_RETRY_PAUSE).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    Some(Ok(js_message)) => {
                        let ticket = match decode(&prefix, &node_id, &js_message.message) {
                            Some(message) => {
                                received.increment(1);
                                deliverer.deliver(Arc::new(message)).await
                            }
                            None => 0, // this node's own, or not a message
                        };
                        if ticket == 0 {
                            acknowledge(&js_message).await;
                        } else {
                            waiting.push_back((ticket, js_message));
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "reading forwarded messages"),
                    None => break,
                },
                _ = watermark.changed(), if !waiting.is_empty() => {}
            }
            let durable = *watermark.borrow_and_update();
            while waiting.front().is_some_and(|(t, _)| *t <= durable) {
                if let Some((_, js_message)) = waiting.pop_front() {
                    acknowledge(&js_message).await;
                }
            }
        }
    }
}

async fn acknowledge(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "a forwarded message could not be acknowledged (it comes again)");
    }
}
