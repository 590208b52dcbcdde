//! Shared subscriptions across the nodes (`$share/{group}/{filter}`): each message goes to one
//! member of the group across the whole cluster, not one per node.
//!
//! Design: the cluster, not each node, picks the node a group's message goes to, with NATS's
//! own work sharing; the node then picks one of its members (round robin, online first). A node
//! with members of a group (told by the router's [`SharedGroups`] seam when the group gets its
//! first member there and loses its last) reads the group's messages:
//!
//! - QoS 1/2: through a durable JetStream consumer of the forward stream per group and filter
//!   subject (`share-<hash of prefix, group, filter>-<n>`, filtered on the filter's subjects,
//!   see [`filter_subjects`]) that every node with members pulls from. JetStream hands each
//!   message to one puller, and it is acknowledged once the member took it (on disk for a
//!   persistent session): at least once, one member in the normal case; a node that dies with
//!   messages unacknowledged has them delivered again to a node with members after the ack
//!   wait (30 s). A message arriving at a node whose last member just left is refused (NAK) and
//!   goes to another node. The consumer is kept by NATS while any node pulls, and forgotten an
//!   hour after the last one stopped (meanwhile the stream keeps the group's messages).
//! - QoS 0: a core NATS queue subscription per group and filter subject (queue group named as
//!   the consumer), on a second connection of the node (the first one has `no_echo`, and a
//!   node's own messages must reach the queue group too): NATS hands each message to one
//!   subscriber, at most once.
//!
//! Why a JetStream consumer per group rather than a NATS queue subscription for QoS 1/2: the
//! queue group forgets a message it handed to a node that dies; a consumer redelivers it, and a
//! PUBACKed message is stored in the forward stream already (`forward.rs`). Once a node reads a
//! group (its consumer and queue subscriptions are set up), its local fan-out leaves that group
//! out of the messages the cluster carries (all but `$` topics and messages too large for
//! NATS), so the node's own members get its messages through the cluster too and no message
//! reaches the group twice; until then (the milliseconds after a group's first member joins
//! here) the node delivers to its members itself, as a single node does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use fleetcore_mqtt::broker::{Message, Router, SharedGroups};
use fleetcore_mqtt::protocol::QoS;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::route::{Deliverer, decode_any};
use crate::subject::filter_subjects;
use crate::{ClusterConfig, ClusterError};

/// How long NATS keeps a group's consumer once no node pulls from it.
const IDLE_GROUP: Duration = Duration::from_secs(3600);
/// How long a message handed to a node may stay unacknowledged before another gets it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A group's messages a node may hold unacknowledged.
const MAX_ACK_PENDING: i64 = 1024;
/// Room left under NATS's `max_payload` for the subject and headers.
const ENVELOPE: usize = 1024;

/// The reading tasks of each group (by name and filter) with members here.
type Tasks = HashMap<(String, String), Vec<JoinHandle<()>>>;

/// The router's shared-group seam: starts and stops this node's readers of each group.
struct Groups {
    /// The core subjects' prefix (`<prefix>`) and the forward stream's (`<prefix>.q`).
    prefix: String,
    forward_prefix: String,
    stream: String,
    /// The second connection, with echo, for the QoS 0 queue subscriptions.
    echo: async_nats::Client,
    js: jetstream::Context,
    router: Arc<Router>,
    max_payload: usize,
    readers: Mutex<Tasks>,
    /// The groups (by name, then filter) this node reads already, on every subject and hop.
    ready: Arc<RwLock<HashMap<String, HashSet<String>>>>,
}

/// Counts a group's readers that are set up, and marks the group ready here once all are.
struct Readiness {
    ready: Arc<RwLock<HashMap<String, HashSet<String>>>>,
    group: String,
    filter: String,
    left: AtomicUsize,
}

impl Readiness {
    fn set_up(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ready
                .write()
                .entry(self.group.clone())
                .or_default()
                .insert(self.filter.clone());
        }
    }
}

/// The consumer and queue group name of `group` with `filter`'s `n`-th subject.
fn group_name(prefix: &str, group: &str, filter: &str, n: usize) -> String {
    let digest = Sha256::new()
        .chain_update(prefix.as_bytes())
        .chain_update([0])
        .chain_update(group.as_bytes())
        .chain_update([0])
        .chain_update(filter.as_bytes())
        .finalize();
    format!("share-{}-{n}", &fleetcore_core::sigv4::hex(&digest)[..32])
}

impl SharedGroups for Groups {
    fn delivers(&self, message: &Message, group: &str, filter: &str) -> bool {
        !message.topic.starts_with('$')
            && message.payload.len() + ENVELOPE <= self.max_payload
            && self
                .ready
                .read()
                .get(group)
                .is_some_and(|filters| filters.contains(filter))
    }

    fn joined(&self, group: &str, filter: &str) {
        let mut tasks = Vec::new();
        let js_subjects = filter_subjects(&self.forward_prefix, filter);
        let subjects = filter_subjects(&self.prefix, filter);
        let readiness = Arc::new(Readiness {
            ready: Arc::clone(&self.ready),
            group: group.to_owned(),
            filter: filter.to_owned(),
            left: AtomicUsize::new(subjects.len() * 2),
        });
        for (n, subject) in subjects.into_iter().enumerate() {
            let reader = |subject: String, prefix: &str| Reader {
                readiness: Arc::clone(&readiness),
                group: group.to_owned(),
                filter: filter.to_owned(),
                name: group_name(&self.prefix, group, filter, n),
                subject,
                prefix: prefix.to_owned(),
                deliverer: Deliverer::new(Arc::clone(&self.router)),
            };
            tasks.push(tokio::spawn(read_qos0(
                reader(subject, &self.prefix),
                self.echo.clone(),
            )));
            tasks.push(tokio::spawn(read_stored(
                reader(js_subjects[n].clone(), &self.forward_prefix),
                self.js.clone(),
                self.stream.clone(),
            )));
        }
        tracing::debug!(group, filter, "reading a shared group's messages");
        let old = self
            .readers
            .lock()
            .insert((group.to_owned(), filter.to_owned()), tasks);
        for task in old.into_iter().flatten() {
            task.abort();
        }
    }

    fn left(&self, group: &str, filter: &str) {
        let mut ready = self.ready.write();
        if let Some(filters) = ready.get_mut(group) {
            filters.remove(filter);
            if filters.is_empty() {
                ready.remove(group);
            }
        }
        drop(ready);
        let tasks = self
            .readers
            .lock()
            .remove(&(group.to_owned(), filter.to_owned()));
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
        tracing::debug!(group, filter, "no member of a shared group left here");
    }
}

/// Installs the shared-group seam in `router`; groups with members already start reading.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
) -> Result<(), ClusterError> {
    let echo = crate::connect(
        config,
        async_nats::ConnectOptions::new().name(format!("fleetcore {} shared", config.node_id)),
    )
    .await?;
    let groups = Arc::new(Groups {
        prefix: config.subject_prefix.clone(),
        forward_prefix: crate::forward::forward_prefix(&config.subject_prefix),
        stream: crate::forward::stream_name(&config.subject_prefix),
        max_payload: client.server_info().max_payload,
        echo,
        js: jetstream::new(client.clone()),
        router: Arc::clone(&router),
        readers: Mutex::new(HashMap::new()),
        ready: Arc::default(),
    });
    router.set_shared_groups(groups);
    Ok(())
}

/// One reader of a group on this node: what it reads and where it hands messages.
struct Reader {
    readiness: Arc<Readiness>,
    group: String,
    filter: String,
    /// The group's consumer (QoS 1/2) or queue group (QoS 0) for this subject.
    name: String,
    subject: String,
    /// The prefix of the subjects it reads (core or forward).
    prefix: String,
    deliverer: Deliverer,
}

/// Hands the QoS 0 messages NATS gives this node for the group to one of its members.
async fn read_qos0(reader: Reader, client: async_nats::Client) {
    let Reader {
        readiness,
        group,
        filter,
        name,
        subject,
        prefix,
        mut deliverer,
    } = reader;
    let mut inbound = match client.queue_subscribe(subject.clone(), name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, subject, "cannot subscribe to a shared group's messages");
            return;
        }
    };
    // Once the server has the subscription, messages published from now on reach it.
    if client.flush().await.is_ok() {
        readiness.set_up();
    }
    while let Some(nats) = inbound.next().await {
        match decode_any(&prefix, &nats) {
            Some(message) if message.qos == QoS::AtMostOnce => {
                deliverer
                    .deliver_shared(&group, &filter, Arc::new(message))
                    .await;
            }
            _ => {}
        }
    }
}

/// Pulls the QoS 1/2 messages of the group from its consumer and hands each to one member
/// here, acknowledging it once the member has it (on disk for a persistent session).
async fn read_stored(reader: Reader, js: jetstream::Context, stream: String) {
    let Reader {
        readiness,
        group,
        filter,
        name,
        subject,
        prefix,
        mut deliverer,
    } = reader;
    let mut watermark = deliverer.router().queue_watermark();
    let mut set_up = false;
    loop {
        let consumer = match js.get_stream(&stream).await {
            Ok(stream) => stream
                .get_or_create_consumer::<consumer::pull::Config>(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: subject.clone(),
                        deliver_policy: consumer::DeliverPolicy::New,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_ack_pending: MAX_ACK_PENDING,
                        inactive_threshold: IDLE_GROUP,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let messages = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, group, filter, "cannot read a shared group's messages: trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        // The consumer exists: every message stored from now on is the group's.
        if !set_up {
            set_up = true;
            readiness.set_up();
        }
        while let Some(next) = messages.next().await {
            let js_message = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "reading a shared group's messages");
                    continue;
                }
            };
            let Some(message) = decode_any(&prefix, &js_message.message) else {
                acknowledge(&js_message, AckKind::Ack).await;
                continue;
            };
            match deliverer
                .deliver_shared(&group, &filter, Arc::new(message))
                .await
            {
                None => acknowledge(&js_message, AckKind::Nak(None)).await,
                Some(ticket) => {
                    if ticket > 0 {
                        let _ = watermark.wait_for(|durable| *durable >= ticket).await;
                    }
                    acknowledge(&js_message, AckKind::Ack).await;
                }
            }
        }
    }
}

async fn acknowledge(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "a shared group's message could not be acknowledged (it comes again)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_stable_distinct_and_valid_consumer_names() {
        let a = group_name("fleetcore", "g", "a/#", 0);
        assert_eq!(a, group_name("fleetcore", "g", "a/#", 0));
        assert_ne!(a, group_name("fleetcore", "g", "a/#", 1));
        assert_ne!(a, group_name("fleetcore", "h", "a/#", 0));
        assert_ne!(a, group_name("other", "g", "a/#", 0));
        assert!(
            a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{a}"
        );
    }
}
