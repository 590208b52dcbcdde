//! QoS 0 messages between nodes, on core NATS (at most once; QoS 1/2 go through JetStream, see
//! `forward.rs`). Outbound: a service tap on `#` hands every QoS 0 message this node's clients
//! (and its in-process services) publish to a bounded queue — full-policy: drop the message for
//! the other nodes and count it (`fleetcore_cluster_dropped_total{reason="outbound_full"}`),
//! since a tap must never block a publisher — and one task publishes the queue to NATS in order.
//! Inbound: one task takes the other nodes' messages and offers each to this node's matching
//! subscribers ([`Deliverer`]). Delivered messages go to no tap, no ingest log, no forward log
//! and no retained store: their own node ran those already, so rules run once per message in
//! the cluster.

use std::sync::Arc;
use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleetcore_mqtt::broker::{Blocked, Message, Offered, Router, ServiceTap};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::subject::{all_messages, subject_topic, topic_subject};
use crate::{ClusterConfig, ClusterError};

/// Header naming the publishing node.
const NODE_HEADER: &str = "Fc-Node";
/// Header with the QoS the message was published with.
const QOS_HEADER: &str = "Fc-Qos";

/// The outbound tap: never blocks.
struct Outbound {
    queue: mpsc::Sender<Arc<Message>>,
}

impl ServiceTap for Outbound {
    fn on_message(&self, message: &Arc<Message>) {
        if message.qos != QoS::AtMostOnce {
            return; // the forward log's
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Arc::clone(message)) {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "outbound_full")
                .increment(1);
        }
    }
}

pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
) -> Result<(), ClusterError> {
    let wildcard = all_messages(&config.subject_prefix);
    let inbound =
        client
            .subscribe(wildcard.clone())
            .await
            .map_err(|e| ClusterError::Subscribe {
                subject: wildcard,
                message: e.to_string(),
            })?;
    let (queue, outbound) = mpsc::channel(config.outbound_capacity.max(1));
    router.add_tap(vec!["#".into()], Arc::new(Outbound { queue }))?;
    tokio::spawn(publish_outbound(
        outbound,
        client.clone(),
        config.subject_prefix.clone(),
        config.node_id.clone(),
    ));
    tokio::spawn(deliver_inbound(
        inbound,
        Deliverer::new(router),
        config.subject_prefix.clone(),
        config.node_id.clone(),
    ));
    Ok(())
}

async fn publish_outbound(
    mut queue: mpsc::Receiver<Arc<Message>>,
    client: async_nats::Client,
    prefix: String,
    node_id: String,
) {
    let sent = metrics::counter!("fleetcore_cluster_sent_total");
    while let Some(message) = queue.recv().await {
        let headers = headers(&node_id, message.qos);
        let subject = topic_subject(&prefix, &message.topic);
        // The payload is shared, not copied.
        match client
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(()) => sent.increment(1),
            Err(e) => {
                metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "nats_error")
                    .increment(1);
                tracing::warn!(error = %e, "a message could not be sent to the other nodes");
            }
        }
    }
}

/// The headers of a message this node sends to the others.
pub(crate) fn headers(node_id: &str, qos: QoS) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NODE_HEADER, node_id);
    headers.insert(QOS_HEADER, qos_text(qos));
    headers
}

fn qos_text(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

/// The message carried by a NATS message from another node, or `None` if it is not one.
pub(crate) fn decode(prefix: &str, own: &str, nats: &async_nats::Message) -> Option<Message> {
    let node = nats.headers.as_ref()?.get(NODE_HEADER)?.as_str();
    if node == own {
        return None;
    }
    decode_any(prefix, nats)
}

/// The message carried by a NATS message from any node, this one included.
pub(crate) fn decode_any(prefix: &str, nats: &async_nats::Message) -> Option<Message> {
    let headers = nats.headers.as_ref()?;
    let qos = headers
        .get(QOS_HEADER)
        .and_then(|v| v.as_str().parse::<u8>().ok())
        .and_then(QoS::from_u8)?;
    let topic = Utf8::new(subject_topic(prefix, nats.subject.as_str())?)?;
    Some(Message {
        topic,
        payload: Bytes::clone(&nats.payload),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    })
}

async fn deliver_inbound(
    mut inbound: async_nats::Subscriber,
    mut deliverer: Deliverer,
    prefix: String,
    node_id: String,
) {
    let received = metrics::counter!("fleetcore_cluster_received_total");
    while let Some(nats) = inbound.next().await {
        let Some(message) = decode(&prefix, &node_id, &nats) else {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "malformed")
                .increment(1);
            continue;
        };
        received.increment(1);
        deliverer.deliver(Arc::new(message)).await;
    }
}

/// Offers the other nodes' messages to this node's matching subscribers, waiting for room in
/// full queues as a local publisher does (up to the slow-subscriber timeout; then the message
/// is dropped for them and counted as `reason="subscriber_full"`).
pub(crate) struct Deliverer {
    router: Arc<Router>,
    space: Arc<Notify>,
    targets: Vec<Blocked>,
    blocked: Vec<Blocked>,
}

impl Deliverer {
    pub(crate) fn new(router: Arc<Router>) -> Deliverer {
        Deliverer {
            router,
            space: Arc::new(Notify::new()),
            targets: Vec::new(),
            blocked: Vec::new(),
        }
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Offers `message` to every matching subscriber; returns the durable queues' ticket the
    /// persistent sessions that took it wait for (0: none).
    pub(crate) async fn deliver(&mut self, message: Arc<Message>) -> u64 {
        self.router.targets(&message, &mut self.targets);
        self.offer_targets().await
    }

    /// Offers `message` to one member of the shared group `group` with `filter` on this node
    /// and returns the ticket as [`Deliverer::deliver`]; `None` when the group has no member
    /// here (any more).
    pub(crate) async fn deliver_shared(
        &mut self,
        group: &str,
        filter: &str,
        message: Arc<Message>,
    ) -> Option<u64> {
        let target = self.router.shared_target(group, filter, &message)?;
        self.targets.push(target);
        Some(self.offer_targets().await)
    }

    async fn offer_targets(&mut self) -> u64 {
        let mut ticket = 0;
        let router = &self.router;
        for (session, delivery) in self.targets.drain(..) {
            match router.offer(&session, delivery, Some(&self.space)) {
                Offered::Taken { ticket: t } => ticket = ticket.max(t),
                Offered::Full(d) => self.blocked.push((session, d)),
            }
        }
        let deadline = Instant::now() + router.config().slow_subscriber_timeout;
        while !self.blocked.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, self.space.notified())
                    .await
                    .is_err()
            {
                metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "subscriber_full")
                    .increment(self.blocked.len() as u64);
                self.blocked.clear();
                break;
            }
            let mut still = Vec::new();
            for (session, delivery) in self.blocked.drain(..) {
                match router.offer(&session, delivery, Some(&self.space)) {
                    Offered::Taken { ticket: t } => ticket = ticket.max(t),
                    Offered::Full(d) => still.push((session, d)),
                }
            }
            self.blocked = still;
        }
        ticket
    }
}
