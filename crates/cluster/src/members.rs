//! Membership: each node publishes a heartbeat on `<prefix>.node.<id>` — its id, the addresses
//! its MQTT listeners are reached at (by transport: `tcp`, `tls`, `ws`, `wss`) and whether it
//! drains — and counts as a member while its heartbeats keep coming (three periods of silence
//! and it is gone). A draining node stays listed, marked `draining`, and is never a place to
//! send clients to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetcore_core::auth::TransportKind;
use fleetcore_mqtt::broker::Redirect;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{ClusterConfig, ClusterError};

/// A node of the cluster as seen from this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its node id.
    pub node_id: String,
    /// Milliseconds since its last heartbeat arrived (0 for this node).
    pub last_seen_ms: u64,
    /// True once it drains: its clients are being sent to the other nodes.
    pub draining: bool,
    /// Where its MQTT listeners are reached, by transport (`tcp`, `tls`, `ws`, `wss`).
    pub listeners: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node_id: String,
    #[serde(default)]
    draining: bool,
    #[serde(default)]
    listeners: BTreeMap<String, String>,
}

struct Seen {
    at: Instant,
    draining: bool,
    listeners: BTreeMap<String, String>,
}

pub(crate) struct Members {
    own: String,
    listeners: Mutex<BTreeMap<String, String>>,
    draining: AtomicBool,
    /// Wakes the heartbeat task to announce a change at once.
    changed: Notify,
    period: Duration,
    seen: Mutex<BTreeMap<String, Seen>>,
}

/// The transports by their heartbeat names.
const TRANSPORTS: [TransportKind; 4] = [
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::WebSocket,
    TransportKind::WebSocketTls,
];

impl Members {
    pub(crate) fn current(&self) -> Vec<Member> {
        let now = Instant::now();
        let gone = self.period * 3;
        let mut seen = self.seen.lock();
        seen.retain(|_, s| now.duration_since(s.at) < gone);
        let mut out: Vec<Member> = seen
            .iter()
            .map(|(node_id, s)| Member {
                node_id: node_id.clone(),
                last_seen_ms: u64::try_from(now.duration_since(s.at).as_millis())
                    .unwrap_or(u64::MAX),
                draining: s.draining,
                listeners: s.listeners.clone(),
            })
            .collect();
        drop(seen);
        out.push(Member {
            node_id: self.own.clone(),
            last_seen_ms: 0,
            draining: self.draining.load(Ordering::Acquire),
            listeners: self.listeners.lock().clone(),
        });
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// True while `node`, another node, is heard from (its heartbeats keep coming).
    pub(crate) fn is_live(&self, node: &str) -> bool {
        let gone = self.period * 3;
        self.seen
            .lock()
            .get(node)
            .is_some_and(|s| s.at.elapsed() < gone)
    }

    /// How long after its start a node has heard every live node at least once.
    pub(crate) fn settling(&self) -> Duration {
        self.period * 2
    }

    /// Marks this node draining and announces it at once; the addresses of the other live
    /// nodes that do not drain, for its clients.
    pub(crate) fn start_draining(&self) -> Redirect {
        self.draining.store(true, Ordering::Release);
        self.changed.notify_one();
        let mut redirect = Redirect::default();
        for member in self.current() {
            if member.node_id == self.own || member.draining {
                continue;
            }
            for transport in TRANSPORTS {
                if let Some(address) = member.listeners.get(transport.as_str()) {
                    redirect.add(transport, address);
                }
            }
        }
        redirect
    }

    pub(crate) fn advertise(&self, transport: TransportKind, address: String) {
        self.listeners
            .lock()
            .insert(transport.as_str().to_owned(), address);
    }

    fn heartbeat(&self) -> Vec<u8> {
        serde_json::to_vec(&Heartbeat {
            node_id: self.own.clone(),
            draining: self.draining.load(Ordering::Acquire),
            listeners: self.listeners.lock().clone(),
        })
        .unwrap_or_default()
    }
}

pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
) -> Result<Arc<Members>, ClusterError> {
    let members = Arc::new(Members {
        own: config.node_id.clone(),
        listeners: Mutex::new(BTreeMap::new()),
        draining: AtomicBool::new(false),
        changed: Notify::new(),
        period: config.heartbeat,
        seen: Mutex::new(BTreeMap::new()),
    });
    let wildcard = format!("{}.node.*", config.subject_prefix);
    let mut heard =
        client
            .subscribe(wildcard.clone())
            .await
            .map_err(|e| ClusterError::Subscribe {
                subject: wildcard,
                message: e.to_string(),
            })?;
    let listening = Arc::clone(&members);
    tokio::spawn(async move {
        while let Some(message) = heard.next().await {
            match serde_json::from_slice::<Heartbeat>(&message.payload) {
                Ok(beat) if beat.node_id != listening.own => {
                    let seen = Seen {
                        at: Instant::now(),
                        draining: beat.draining,
                        listeners: beat.listeners,
                    };
                    listening.seen.lock().insert(beat.node_id, seen);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed cluster heartbeat"),
            }
        }
    });
    let subject = format!("{}.node.{}", config.subject_prefix, config.node_id);
    let (client, period, beating) = (client.clone(), config.heartbeat, Arc::clone(&members));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = beating.changed.notified() => {}
            }
            if let Err(e) = client
                .publish(subject.clone(), beating.heartbeat().into())
                .await
            {
                tracing::warn!(error = %e, "cluster heartbeat not sent");
            }
        }
    });
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(own: &str) -> Members {
        Members {
            own: own.into(),
            listeners: Mutex::new(BTreeMap::from([("tcp".into(), format!("{own}:1883"))])),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            period: Duration::from_secs(1),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    fn hear(m: &Members, node: &str, draining: bool, listeners: &[(&str, &str)]) {
        let seen = Seen {
            at: Instant::now(),
            draining,
            listeners: listeners
                .iter()
                .map(|(t, a)| ((*t).to_owned(), (*a).to_owned()))
                .collect(),
        };
        m.seen.lock().insert(node.into(), seen);
    }

    #[test]
    fn a_drain_sends_clients_to_live_nodes_that_do_not_drain() {
        let m = members("a");
        hear(&m, "b", false, &[("tcp", "b:1883"), ("tls", "b:8883")]);
        hear(&m, "c", true, &[("tcp", "c:1883")]);
        let redirect = m.start_draining();
        let listed = m.current();
        assert!(listed.iter().any(|x| x.node_id == "a" && x.draining));
        let pick = |t, n| redirect.pick(t, n).map(|a| a.as_str().to_owned());
        let tcp: Vec<_> = (0..3).filter_map(|n| pick(TransportKind::Tcp, n)).collect();
        assert_eq!(tcp, ["b:1883", "b:1883", "b:1883"]);
        assert_eq!(pick(TransportKind::Tls, 0).as_deref(), Some("b:8883"));
        // Alone (or with every other node draining) there is nowhere to go.
        assert!(members("z").start_draining().is_empty());
    }

    #[test]
    fn heartbeats_of_older_nodes_without_addresses_still_count() {
        let beat: Heartbeat = serde_json::from_slice(br#"{"node_id":"old"}"#).expect("json");
        assert!(!beat.draining && beat.listeners.is_empty());
    }
}
