//! Membership: each node publishes a heartbeat on `<prefix>.node.<id>` and counts as a member
//! while its heartbeats keep coming (three periods of silence and it is gone).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{ClusterConfig, ClusterError};

/// A node of the cluster as seen from this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its node id.
    pub node_id: String,
    /// Milliseconds since its last heartbeat arrived (0 for this node).
    pub last_seen_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node_id: String,
}

pub(crate) struct Members {
    own: String,
    period: Duration,
    seen: Mutex<BTreeMap<String, Instant>>,
}

impl Members {
    pub(crate) fn current(&self) -> Vec<Member> {
        let now = Instant::now();
        let gone = self.period * 3;
        let mut seen = self.seen.lock();
        seen.retain(|_, at| now.duration_since(*at) < gone);
        let mut out: Vec<Member> = seen
            .iter()
            .map(|(node_id, at)| Member {
                node_id: node_id.clone(),
                last_seen_ms: u64::try_from(now.duration_since(*at).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        out.push(Member {
            node_id: self.own.clone(),
            last_seen_ms: 0,
        });
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}

pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
) -> Result<Arc<Members>, ClusterError> {
    let members = Arc::new(Members {
        own: config.node_id.clone(),
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
                    listening.seen.lock().insert(beat.node_id, Instant::now());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed cluster heartbeat"),
            }
        }
    });
    let subject = format!("{}.node.{}", config.subject_prefix, config.node_id);
    let beat = serde_json::to_vec(&Heartbeat {
        node_id: config.node_id.clone(),
    })
    .unwrap_or_default();
    let (client, period) = (client.clone(), config.heartbeat);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Err(e) = client.publish(subject.clone(), beat.clone().into()).await {
                tracing::warn!(error = %e, "cluster heartbeat not sent");
            }
        }
    });
    Ok(members)
}
