//! fleetcore nodes as one broker. Each node publishes the messages its clients publish to NATS
//! (core subjects derived from the topics, see [`subject`]) and delivers what the other nodes
//! publish to its own subscribers; nodes announce themselves on a heartbeat subject, so each
//! knows the cluster's members.
//!
//! What holds: every message reaches each matching subscriber of every node once (a node never
//! receives its own messages back: the NATS connection is `no_echo`, and messages from other
//! nodes are delivered, not published again, so they never loop); order per publisher and topic
//! is kept (one queue and one NATS connection per node, one delivering task per node). The QoS
//! of a delivery is the smaller of the published and the subscribed one, and a QoS 1 delivery
//! is acknowledged by the subscriber to its own node. What does not hold yet: the hop between
//! nodes is core NATS (at most once): the publisher's PUBACK means its node took the message,
//! not that the other nodes did; retained messages, shared subscriptions, sessions and MQTT 5
//! properties stay per node (see docs/SCALING.md).

mod members;
mod route;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use fleetcore_mqtt::broker::Router;

pub use members::Member;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS servers, comma separated (`nats://host:4222`).
    pub nats_url: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// First token of every subject; nodes with the same prefix form one cluster.
    pub subject_prefix: String,
    /// Messages waiting to be sent to NATS before new ones are dropped (and counted).
    pub outbound_capacity: usize,
    /// How often the node announces itself.
    pub heartbeat: Duration,
}

impl ClusterConfig {
    /// Defaults for a node `node_id` on `nats_url`: prefix `fleetcore`, 65,536 messages queued,
    /// a heartbeat per second.
    pub fn new(nats_url: impl Into<String>, node_id: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            nats_url: nats_url.into(),
            node_id: node_id.into(),
            subject_prefix: "fleetcore".into(),
            outbound_capacity: 65_536,
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS is unreachable or refused the connection.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// Node ids are 1 to 64 of `[A-Za-z0-9_-]` (they are a NATS subject token).
    #[error("node id {0:?} must be 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidNodeId(String),
    /// A subscription could not be made.
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
    /// The broker has no room for one more service tap.
    #[error(transparent)]
    Tap(#[from] fleetcore_mqtt::broker::TooManyTaps),
}

/// True for a usable node id: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A node's membership of the cluster: routing runs until the process ends.
pub struct Cluster {
    node_id: String,
    members: Arc<members::Members>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS, starts routing messages between `router` and the other nodes, and
    /// starts the heartbeat.
    pub async fn join(config: ClusterConfig, router: Arc<Router>) -> Result<Cluster, ClusterError> {
        if !valid_node_id(&config.node_id) {
            return Err(ClusterError::InvalidNodeId(config.node_id));
        }
        let client = async_nats::ConnectOptions::new()
            .no_echo()
            .name(format!("fleetcore {}", config.node_id))
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ClusterError::Connect {
                url: config.nats_url.clone(),
                message: e.to_string(),
            })?;
        route::start(&config, &client, router).await?;
        let members = members::start(&config, &client).await?;
        tracing::info!(node = %config.node_id, nats = %config.nats_url, "joined the cluster");
        Ok(Cluster {
            node_id: config.node_id,
            members,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The nodes heard from lately, this one included, by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.current()
    }
}
