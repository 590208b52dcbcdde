//! fleetcore nodes as one broker. Each node hands the messages its clients publish to the other
//! nodes over NATS — QoS 0 on core subjects derived from the topics (see [`subject`]), at most
//! once; QoS 1/2 through a JetStream stream with acknowledgements, so a publisher's PUBACK means
//! JetStream stored the message and every node gets it, at least once, even after being down
//! (see `forward.rs`) — and delivers what the other nodes publish to its own subscribers; nodes
//! announce themselves on a heartbeat subject, so each knows the cluster's members.
//!
//! What holds: every message reaches each matching subscriber of every node (once while the
//! nodes stay up; a node's own messages never come back to it as deliveries, and messages from
//! other nodes are delivered, not published again, so they never loop); order per publisher,
//! topic and QoS is kept (one queue, one NATS connection and one delivering task per node and
//! hop). The QoS of a delivery is the smaller of the published and the subscribed one, and a QoS
//! 1 delivery is acknowledged by the subscriber to its own node. Retained messages are shared
//! through a JetStream key-value bucket (see `retained.rs`); a client id connecting on one node
//! takes the session over from its connection on another (see `takeover.rs`); shared groups
//! have one member cluster-wide (see `shared/`); with shared session tables, a persistent
//! session resumes on any node, its owner asked to release it (see `sessions.rs`). What does
//! not hold yet: MQTT 5 properties stay per node (see docs/SCALING.md).

mod forward;
mod kv_bucket;
mod members;
mod retained;
mod route;
mod sessions;
mod shared;
pub mod subject;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::auth::TransportKind;
use fleetcore_mqtt::broker::{Drainer, Router};

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
    /// QoS 1/2 messages waiting for JetStream before new ones are not forwarded (and counted).
    pub forward_capacity: usize,
    /// QoS 1/2 publishes to JetStream in flight at once.
    pub forward_window: usize,
    /// How long the forward stream keeps a message no node has acknowledged yet, and how long
    /// NATS keeps the consumer of a node that is gone.
    pub forward_retention: Duration,
    /// The forward stream's limit in messages; beyond it JetStream refuses new messages
    /// (acknowledgements wait) until the nodes catch up. A message count, not bytes: nats-server
    /// enforces a byte limit by discarding the oldest messages (see `forward.rs`).
    pub forward_max_messages: i64,
}

impl ClusterConfig {
    /// Defaults for a node `node_id` on `nats_url`: prefix `fleetcore`, 65,536 messages queued
    /// for each hop, a heartbeat per second, 256 JetStream publishes in flight, a forward stream
    /// of at most 1,048,576 messages keeping them for 24 hours.
    pub fn new(nats_url: impl Into<String>, node_id: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            nats_url: nats_url.into(),
            node_id: node_id.into(),
            subject_prefix: "fleetcore".into(),
            outbound_capacity: 65_536,
            heartbeat: Duration::from_secs(1),
            forward_capacity: 65_536,
            forward_window: 256,
            forward_retention: Duration::from_secs(24 * 3600),
            forward_max_messages: 1 << 20,
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
    /// The forward stream or this node's consumer could not be set up (is JetStream enabled?).
    #[error(
        "cannot set up the JetStream stream {stream} (nats-server must run with JetStream enabled): {message}"
    )]
    JetStream { stream: String, message: String },
    /// A drain needs another live node that does not drain to send the clients to.
    #[error(
        "no other live node that does not drain is known: its clients would have nowhere to go"
    )]
    NowhereToGo,
    /// The node is draining or shutting down already.
    #[error("this node is draining or shutting down already")]
    AlreadyDraining,
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

/// Connects to the cluster's NATS server with `options`.
pub(crate) async fn connect(
    config: &ClusterConfig,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, ClusterError> {
    options
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| ClusterError::Connect {
            url: config.nats_url.clone(),
            message: e.to_string(),
        })
}

impl Cluster {
    /// Connects to NATS, starts routing messages between `router` and the other nodes, and
    /// starts the heartbeat.
    pub async fn join(config: ClusterConfig, router: Arc<Router>) -> Result<Cluster, ClusterError> {
        if !valid_node_id(&config.node_id) {
            return Err(ClusterError::InvalidNodeId(config.node_id));
        }
        let client = connect(
            &config,
            async_nats::ConnectOptions::new()
                .no_echo()
                .name(format!("fleetcore {}", config.node_id)),
        )
        .await?;
        forward::start(&config, &client, Arc::clone(&router)).await?;
        retained::start(&config, &client, Arc::clone(&router)).await?;
        takeover::start(&config, &client, Arc::clone(&router)).await?;
        let members = members::start(&config, &client).await?;
        shared::start(&config, &client, Arc::clone(&router), Arc::clone(&members)).await?;
        sessions::start(&config, &client, Arc::clone(&router), Arc::clone(&members)).await?;
        route::start(&config, &client, router).await?;
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

    /// Announces, from the next heartbeat on, that clients of `transport` reach this node at
    /// `address` (`host:port`): where a draining node may send its clients.
    pub fn advertise(&self, transport: TransportKind, address: String) {
        self.members.advertise(transport, address);
    }

    /// Drains this node: announces it as draining (the others send no clients here and list
    /// it so), stops accepting MQTT connections and sends every connected client to the other
    /// live nodes (spread over them; DISCONNECT 0x9C with a Server Reference for MQTT 5, a
    /// plain close for 3.1.1), each after the acknowledgements it is owed. Refused, with
    /// nothing changed, when no other live node could take the clients. Returns how many
    /// clients were told to go and where they may go.
    pub fn drain(&self, broker: &Drainer) -> Result<Drained, ClusterError> {
        if broker.is_draining() {
            return Err(ClusterError::AlreadyDraining);
        }
        if !self
            .members
            .current()
            .iter()
            .any(|m| m.node_id != self.node_id && !m.draining && !m.listeners.is_empty())
        {
            return Err(ClusterError::NowhereToGo);
        }
        let redirect = self.members.start_draining();
        let targets = redirect.addresses();
        let clients = broker
            .drain(redirect)
            .ok_or(ClusterError::AlreadyDraining)?;
        tracing::info!(node = %self.node_id, clients, ?targets, "draining: clients sent to the other nodes");
        Ok(Drained { clients, targets })
    }
}

/// What a drain did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drained {
    /// Clients connected when the drain began, each told to go.
    pub clients: usize,
    /// The addresses they were sent to.
    pub targets: Vec<String>,
}
