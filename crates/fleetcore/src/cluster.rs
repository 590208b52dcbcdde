//! Running as one node of several (`[cluster]` in the config file, `--cluster-*` flags,
//! `FLEETCORE_CLUSTER_*` variables): the node's id and the NATS servers messages travel between
//! nodes through.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Json;
use axum::routing::{get, post};
use fleetcore_api::ApiError;
use fleetcore_cluster::Cluster;
use fleetcore_mqtt::broker::Drainer;
use serde::Deserialize;

/// Options of the cluster, layered like the other `serve` options.
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterArgs {
    /// NATS servers through which this node exchanges messages with the other nodes
    /// (`nats://host:4222`, comma separated). Without it the node runs alone.
    #[arg(
        long = "cluster-nats",
        env = "FLEETCORE_CLUSTER_NATS",
        value_name = "URLS"
    )]
    pub nats: Option<String>,

    /// This node's id, unique in the cluster: 1 to 64 of [A-Za-z0-9_-]. [default: the one in
    /// <data-dir>/node-id, made `node-<random>` at the first start]
    #[arg(
        id = "cluster_node_id",
        long = "cluster-node-id",
        env = "FLEETCORE_CLUSTER_NODE_ID",
        value_name = "ID"
    )]
    pub node_id: Option<String>,

    /// Messages the JetStream stream that carries QoS 1/2 messages between nodes may hold, set
    /// when the first node creates it; beyond it JetStream refuses new messages and publishers'
    /// PUBACKs wait until the nodes catch up. [default: 1048576]
    #[arg(
        long = "cluster-forward-max-messages",
        env = "FLEETCORE_CLUSTER_FORWARD_MAX_MESSAGES",
        value_name = "COUNT"
    )]
    pub forward_max_messages: Option<u64>,

    /// Host name or IP address this node's MQTT listeners are reached at by clients of the
    /// other nodes: a draining node sends its clients to `<host>:<listener port>` of another
    /// node (MQTT 5 Server Reference). [default: the listener's own IP when it binds one, else
    /// the first of --server-names, the name its certificate is issued for]
    #[arg(
        long = "cluster-advertise-host",
        env = "FLEETCORE_CLUSTER_ADVERTISE_HOST",
        value_name = "HOST"
    )]
    pub advertise_host: Option<String>,
}

/// The cluster settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id as configured (see [`node_id`] for the one in use).
    pub node_id: Option<String>,
    /// NATS servers, when the node routes messages to others.
    pub nats: Option<String>,
    /// The forward stream's limit in messages, when not the default.
    pub forward_max_messages: Option<i64>,
    /// The host clients of other nodes reach this node's MQTT listeners at, when configured.
    pub advertise_host: Option<String>,
}

impl ClusterArgs {
    /// Fills what these options leave unset from `under` (the config file).
    pub fn layer(&mut self, under: &mut ClusterArgs) {
        if self.nats.is_none() {
            self.nats = under.nats.take();
        }
        if self.node_id.is_none() {
            self.node_id = under.node_id.take();
        }
        if self.forward_max_messages.is_none() {
            self.forward_max_messages = under.forward_max_messages.take();
        }
        if self.advertise_host.is_none() {
            self.advertise_host = under.advertise_host.take();
        }
    }

    /// The settings; a node id that cannot be a NATS subject token is refused.
    pub fn resolve(self) -> anyhow::Result<ClusterSettings> {
        let node_id = self.node_id.filter(|n| !n.trim().is_empty());
        if let Some(id) = &node_id {
            check(id)?;
        }
        let forward_max_messages = match self.forward_max_messages {
            Some(n) if !(MIN_FORWARD_MESSAGES..=i64::MAX as u64).contains(&n) => bail!(
                "cluster forward_max_messages {n} must be between {MIN_FORWARD_MESSAGES} and {}",
                i64::MAX
            ),
            n => n.map(|n| n as i64),
        };
        let advertise_host = self.advertise_host.filter(|h| !h.trim().is_empty());
        if let Some(host) = &advertise_host
            && (host.contains(['/', ' ', '\0']) || host.len() > 253)
        {
            bail!("cluster advertise_host {host:?} must be a host name or IP address");
        }
        Ok(ClusterSettings {
            node_id,
            nats: self.nats.filter(|n| !n.trim().is_empty()),
            forward_max_messages,
            advertise_host,
        })
    }
}

/// The smallest forward stream: room for a few messages.
const MIN_FORWARD_MESSAGES: u64 = 4;

fn check(id: &str) -> anyhow::Result<()> {
    if !fleetcore_cluster::valid_node_id(id) {
        bail!("cluster node id {id:?} must be 1 to 64 characters of [A-Za-z0-9_-]");
    }
    Ok(())
}

/// The node id in use: the configured one, else the one kept in `<data_dir>/node-id`, made
/// `node-<random>` and kept there at the first start. A node keeps its id across restarts, and
/// with it its per-node state and its consumer-group leases (it is the node's member name in
/// every consumer group, so a restarted node takes its own leases back at once; a node alone
/// too, whose stream leases outlive a restart in the embedded segment log).
pub fn node_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    let fresh = || format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_owned();
            check(&id).with_context(|| format!("in {}", path.display()))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = fresh();
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The address clients reach the listener bound at `bound` from other nodes: `advertise_host`
/// when configured, else the bound IP when the listener binds one, else `fallback` (the first
/// server name); with the bound port.
pub fn advertised_address(
    advertise_host: Option<&str>,
    bound: SocketAddr,
    fallback: &str,
) -> String {
    let host = match advertise_host {
        Some(h) => h.to_owned(),
        None if !bound.ip().is_unspecified() => bound.ip().to_string(),
        None => fallback.to_owned(),
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", bound.port())
    } else {
        format!("{host}:{}", bound.port())
    }
}

/// `POST /admin/drain` (signed with the admin credentials, service name `fleetcore`): drains
/// this node (see [`Cluster::drain`]). 200 with `{"node_id", "clients", "targets"}`; 409
/// when the node is alone, no other live node could take its clients, or it drains already.
pub fn admin_routes(drain: Option<(Arc<Cluster>, Drainer)>) -> axum::Router {
    axum::Router::new().route(
        "/admin/drain",
        post(move || {
            let drain = drain.clone();
            async move {
                let Some((cluster, drainer)) = drain else {
                    return Err(ApiError::conflict(
                        "this node is not part of a cluster: there is no other node to send its clients to",
                    ));
                };
                match cluster.drain(&drainer) {
                    Ok(done) => Ok(Json(serde_json::json!({
                        "node_id": cluster.node_id(),
                        "clients": done.clients,
                        "targets": done.targets,
                    }))),
                    Err(e) => Err(ApiError::conflict(e.to_string())),
                }
            }
        }),
    )
}

/// `GET /health/cluster` (no signature, like `/health`): this node's id, its state backend and
/// the cluster members it hears (itself only when it runs alone).
pub fn health_routes(
    node_id: String,
    state: &'static str,
    cluster: Option<Arc<Cluster>>,
) -> axum::Router {
    axum::Router::new().route(
        "/health/cluster",
        get(move || {
            let members = match &cluster {
                Some(c) => c.members(),
                None => vec![fleetcore_cluster::Member {
                    node_id: node_id.clone(),
                    last_seen_ms: 0,
                    draining: false,
                    listeners: Default::default(),
                }],
            };
            let body = serde_json::json!({
                "node_id": node_id,
                "state": state,
                "clustered": cluster.is_some(),
                "members": members,
            });
            async move { Json(body) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_made_when_none_is_given_and_bad_ones_are_refused() {
        let s = ClusterArgs::default().resolve().expect("default");
        assert_eq!((s.node_id, s.nats), (None, None));
        let dir = tempfile::tempdir().expect("tempdir");
        let made = node_id(None, dir.path()).expect("made");
        assert!(made.starts_with("node-") && made.len() == 17, "{made}");
        assert!(dir.path().join("node-id").exists());
        assert_eq!(node_id(None, dir.path()).expect("kept"), made);
        assert_eq!(node_id(Some("x"), dir.path()).expect("configured"), "x");
        let s = ClusterArgs {
            nats: Some("nats://10.0.0.1:4222".into()),
            node_id: Some("edge-1".into()),
            forward_max_messages: Some(4096),
            advertise_host: None,
        }
        .resolve()
        .expect("given");
        assert_eq!(s.forward_max_messages, Some(4096));
        assert_eq!(s.node_id.as_deref(), Some("edge-1"));
        assert_eq!(s.nats.as_deref(), Some("nats://10.0.0.1:4222"));
        let err = ClusterArgs {
            nats: None,
            node_id: Some("a.b".into()),
            forward_max_messages: None,
            advertise_host: None,
        }
        .resolve()
        .expect_err("dot");
        assert!(err.to_string().contains("a.b"), "{err}");
        let err = ClusterArgs {
            nats: None,
            node_id: None,
            forward_max_messages: Some(2),
            advertise_host: None,
        }
        .resolve()
        .expect_err("too small");
        assert!(err.to_string().contains("forward_max_messages 2"), "{err}");
        let err = ClusterArgs {
            advertise_host: Some("http://x".into()),
            ..ClusterArgs::default()
        }
        .resolve()
        .expect_err("not a host");
        assert!(err.to_string().contains("advertise_host"), "{err}");
    }

    #[test]
    fn the_advertised_address_is_the_configured_host_the_bound_ip_or_the_server_name() {
        let any: SocketAddr = "0.0.0.0:1883".parse().expect("addr");
        let one: SocketAddr = "10.1.2.3:8883".parse().expect("addr");
        let v6: SocketAddr = "[::]:1883".parse().expect("addr");
        assert_eq!(
            advertised_address(Some("b.example"), any, "x"),
            "b.example:1883"
        );
        assert_eq!(advertised_address(None, one, "x"), "10.1.2.3:8883");
        assert_eq!(
            advertised_address(None, any, "iot.example"),
            "iot.example:1883"
        );
        assert_eq!(
            advertised_address(Some("fd00::1"), v6, "x"),
            "[fd00::1]:1883"
        );
    }
}
