//! Session takeover across nodes. Every connection that claims a session on this node is
//! announced on the core NATS subject `<prefix>.takeover` (header `Fc-Node`: this node,
//! `Fc-Attached`: the attach stamp; payload: the client id), and every node, hearing of a
//! client id it has connected with an older stamp, sends that connection away as taken over
//! (DISCONNECT 0x8E for MQTT 5, a plain close for 3.1.1), as one node does for a second
//! CONNECT (see `fleetcore_mqtt::broker::AttachObserver`: the later stamp stays, the node ids
//! break a tie, so exactly one connection stays even when both nodes announce at once).
//!
//! Why core NATS, at most once, is enough: a takeover is about the connections alive now, so an
//! announcement has nothing to wait for and nothing to replay (a node that was down has no
//! connection to send away, and a late announcement is judged by its stamp, never by when it
//! arrives); it reaches every node in milliseconds. One subject for all client ids, since every
//! node must hear every announcement anyway. Announcements wait in a bounded queue (4,096)
//! before one task publishes them; full — only with NATS stalled — an announcement is dropped
//! and counted (`fleetcore_cluster_dropped_total{reason="takeover_full"}`): the attach never
//! waits for the cluster, and the old connection then stays until it goes on its own.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleetcore_mqtt::broker::{AttachObserver, Router};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{ClusterConfig, ClusterError};

/// Header naming the announcing node.
const NODE_HEADER: &str = "Fc-Node";
/// Header with the attach stamp.
const STAMP_HEADER: &str = "Fc-Attached";
/// Announcements waiting for NATS before new ones are dropped.
const CAPACITY: usize = 4096;

/// The router's attach observer: queues each attach for the other nodes, never blocks.
struct Announcer {
    queue: mpsc::Sender<(Arc<str>, u64)>,
}

impl AttachObserver for Announcer {
    fn attached(&self, client_id: &Arc<str>, attached_at: u64) {
        if self
            .queue
            .try_send((Arc::clone(client_id), attached_at))
            .is_err()
        {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "takeover_full")
                .increment(1);
        }
    }
}

fn subject(prefix: &str) -> String {
    format!("{prefix}.takeover")
}

/// Subscribes to the other nodes' announcements, installs the announcer in `router` and starts
/// both tasks.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
) -> Result<(), ClusterError> {
    let subject = subject(&config.subject_prefix);
    let inbound = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| ClusterError::Subscribe {
            subject: subject.clone(),
            message: e.to_string(),
        })?;
    let (queue, outbound) = mpsc::channel(CAPACITY);
    router.set_attach_observer(Arc::new(Announcer { queue }));
    tokio::spawn(announce(
        outbound,
        client.clone(),
        subject,
        config.node_id.clone(),
    ));
    tokio::spawn(take_over(inbound, router, config.node_id.clone()));
    Ok(())
}

async fn announce(
    mut queue: mpsc::Receiver<(Arc<str>, u64)>,
    client: async_nats::Client,
    subject: String,
    node_id: String,
) {
    while let Some((client_id, stamp)) = queue.recv().await {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, node_id.as_str());
        headers.insert(STAMP_HEADER, stamp.to_string().as_str());
        let payload = Bytes::copy_from_slice(client_id.as_bytes());
        if let Err(e) = client
            .publish_with_headers(subject.clone(), headers, payload)
            .await
        {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "nats_error")
                .increment(1);
            tracing::warn!(error = %e, "a connection could not be announced to the other nodes");
        }
    }
}

/// An announcement from another node: its id, the client id and the attach stamp.
fn decode<'m>(own: &str, nats: &'m async_nats::Message) -> Option<(&'m str, &'m str, u64)> {
    let headers = nats.headers.as_ref()?;
    let node = headers.get(NODE_HEADER)?.as_str();
    if node == own {
        return None;
    }
    let stamp = headers.get(STAMP_HEADER)?.as_str().parse().ok()?;
    let client_id = std::str::from_utf8(&nats.payload).ok()?;
    Some((node, client_id, stamp))
}

async fn take_over(mut inbound: async_nats::Subscriber, router: Arc<Router>, node_id: String) {
    while let Some(nats) = inbound.next().await {
        let Some((node, client_id, stamp)) = decode(&node_id, &nats) else {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "malformed")
                .increment(1);
            continue;
        };
        if router.take_over_from_elsewhere(client_id, stamp, node > node_id.as_str()) {
            metrics::counter!("fleetcore_cluster_takeovers_total").increment(1);
            tracing::info!(
                client_id,
                node,
                "session taken over by a connection on another node"
            );
        }
    }
}
