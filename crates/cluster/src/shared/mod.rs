//! Shared subscriptions across the nodes (`$share/{group}/{filter}`): each message goes to one
//! member of the group across the whole cluster, not one per node.
//!
//! Design: the cluster, not each node, picks the node a group's message goes to, with NATS's
//! own work sharing; the node then picks one of its members (round robin, online first). A node
//! with members of a group (told by the router's [`SharedGroups`] seam when the group gets its
//! first member there and loses its last) reads the group's messages:
//!
//! - QoS 1/2: through a durable JetStream consumer of the forward stream per group and filter
//!   subject (`share-<hash of prefix, group, filter>-<generation>-<n>`, filtered on the filter's subjects,
//!   see [`filter_subjects`]) that every node with members pulls from. JetStream hands each
//!   message to one puller, and it is acknowledged once the member took it (on disk for a
//!   persistent session): at least once, one member in the normal case; a node that dies with
//!   messages unacknowledged has them delivered again to a node with members after the ack
//!   wait (30 s). A message arriving at a node whose last member just left is refused (NAK) and
//!   goes to another node. Which nodes read a group, and which *generation* of its consumers
//!   they read, is one record per group in a JetStream key-value bucket changed by
//!   compare-and-set (`record.rs`): the node whose leaving empties the record deletes the
//!   consumers, and a node that starts reading a group no live node reads starts a new
//!   generation (new consumers, new messages only), so a group without members anywhere keeps
//!   no messages and hands none to a later member, as MQTT drops what such a group gets.
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

mod readers;
mod record;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self, ErrorCode, consumer, kv,
    stream::{ConsumerError, ConsumerErrorKind},
};
use fleetcore_mqtt::broker::{Message, Router, SharedGroups};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::members::Members;
use crate::route::Deliverer;
use crate::subject::filter_subjects;
use crate::{ClusterConfig, ClusterError};
use readers::{Lost, Reader, read_qos0, read_stored};
use record::{Liveness, Record};

/// How long NATS keeps a group's consumer once no node pulls from it (a node that died
/// reading it; the next node to read the group deletes it sooner).
const IDLE_GROUP: Duration = Duration::from_secs(3600);
/// How long a message handed to a node may stay unacknowledged before another gets it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A group's messages a node may hold unacknowledged.
const MAX_ACK_PENDING: i64 = 1024;
/// Room left under NATS's `max_payload` for the subject and headers.
const ENVELOPE: usize = 1024;

/// The groups (by name, then filter) this node reads already, on every subject and hop.
type Ready = Arc<RwLock<HashMap<String, HashSet<String>>>>;

/// What the coordinator of this node's readers is told, in the order it happened.
enum Event {
    /// The group (name, filter) got its first member here.
    Joined(String, String),
    /// The group lost its last member here.
    Left(String, String),
    /// A reader found the consumers of this generation gone (another node deleted them).
    Lost(String, String, u64),
    /// Every live node has been heard from since this node started.
    Settled,
}

/// The router's shared-group seam: tells the coordinator of groups gained and lost.
struct Groups {
    events: mpsc::UnboundedSender<Event>,
    max_payload: usize,
    ready: Ready,
}

/// Counts a group's readers that are set up, and marks the group ready here once all are
/// (unless the readers were stopped meanwhile).
struct Readiness {
    ready: Ready,
    group: String,
    filter: String,
    left: AtomicUsize,
    /// Set, under the `ready` lock, once the readers are stopped.
    stopped: std::sync::atomic::AtomicBool,
}

impl Readiness {
    fn set_up(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut ready = self.ready.write();
            if !self.stopped.load(Ordering::Acquire) {
                ready
                    .entry(self.group.clone())
                    .or_default()
                    .insert(self.filter.clone());
            }
        }
    }

    /// Stops counting and takes the group out of the ready ones.
    fn stop(&self) {
        let mut ready = self.ready.write();
        self.stopped.store(true, Ordering::Release);
        if let Some(filters) = ready.get_mut(&self.group) {
            filters.remove(&self.filter);
            if filters.is_empty() {
                ready.remove(&self.group);
            }
        }
    }
}

/// The bucket key of `group` with `filter` (and the stem of its consumers' names).
fn group_key(prefix: &str, group: &str, filter: &str) -> String {
    let digest = Sha256::new()
        .chain_update(prefix.as_bytes())
        .chain_update([0])
        .chain_update(group.as_bytes())
        .chain_update([0])
        .chain_update(filter.as_bytes())
        .finalize();
    format!("share-{}", &fleetcore_core::sigv4::hex(&digest)[..32])
}

/// The consumer (and QoS 0 queue group) name of a group's `n`-th subject in `generation`.
fn consumer_name(key: &str, generation: u64, n: usize) -> String {
    format!("{key}-{generation}-{n}")
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
        let _ = self
            .events
            .send(Event::Joined(group.to_owned(), filter.to_owned()));
    }

    fn left(&self, group: &str, filter: &str) {
        let _ = self
            .events
            .send(Event::Left(group.to_owned(), filter.to_owned()));
    }
}

/// Installs the shared-group seam in `router`; groups with members already start reading.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
    members: Arc<Members>,
) -> Result<(), ClusterError> {
    let echo = crate::connect(
        config,
        async_nats::ConnectOptions::new().name(format!("fleetcore {} shared", config.node_id)),
    )
    .await?;
    let js = jetstream::new(client.clone());
    let name = format!("{}_shared", config.subject_prefix);
    let bucket = crate::kv_bucket::bucket(
        &js,
        &name,
        "fleetcore shared groups: their readers and consumer generation",
    )
    .await
    .map_err(|message| ClusterError::JetStream {
        stream: format!("KV_{name}"),
        message,
    })?;
    // One event per group gained or lost here, each following a subscription change the
    // router made already: unbounded, since dropping one would leave a group read, or unread,
    // for good; the coordinator handles each in milliseconds.
    let (events, inbox) = mpsc::unbounded_channel();
    let ready = Ready::default();
    let coordinator = Coordinator {
        node_id: config.node_id.clone(),
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        members,
        bucket,
        prefix: config.subject_prefix.clone(),
        forward_prefix: crate::forward::forward_prefix(&config.subject_prefix),
        stream: crate::forward::stream_name(&config.subject_prefix),
        echo,
        js,
        router: Arc::clone(&router),
        ready: Arc::clone(&ready),
        events: events.clone(),
        reading: HashMap::new(),
        settled: false,
    };
    tokio::spawn(coordinator.run(inbox));
    router.set_shared_groups(Arc::new(Groups {
        events,
        max_payload: client.server_info().max_payload,
        ready,
    }));
    Ok(())
}

/// This node's readers of one group.
struct Reading {
    generation: u64,
    /// Joined before every live node was heard from, with other readers in the record that
    /// were taken for alive on trust: checked again once settled.
    on_trust: bool,
    readiness: Arc<Readiness>,
    tasks: Vec<JoinHandle<()>>,
}

impl Reading {
    fn stop(self) {
        self.readiness.stop();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts and stops this node's readers of each group, one event at a time, and keeps the
/// group's cluster-wide record (`record.rs`) and consumers in step.
struct Coordinator {
    node_id: String,
    boot: u64,
    members: Arc<Members>,
    bucket: kv::Store,
    /// The core subjects' prefix (`<prefix>`) and the forward stream's (`<prefix>.q`).
    prefix: String,
    forward_prefix: String,
    stream: String,
    /// The second connection, with echo, for the QoS 0 queue subscriptions.
    echo: async_nats::Client,
    js: jetstream::Context,
    router: Arc<Router>,
    ready: Ready,
    events: mpsc::UnboundedSender<Event>,
    reading: HashMap<(String, String), Reading>,
    /// Whether every live node has been heard from: until then, every reader in a record
    /// counts as alive (no generation is started or deleted on a guess), and the groups
    /// joined so are checked again afterwards.
    settled: bool,
}

impl Coordinator {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        let (settling, events) = (self.members.settling(), self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(settling).await;
            let _ = events.send(Event::Settled);
        });
        while let Some(event) = inbox.recv().await {
            match event {
                Event::Settled => {
                    self.settled = true;
                    self.check_trusted().await;
                }
                Event::Joined(group, filter) => self.join(group, filter).await,
                Event::Left(group, filter) => self.leave(group, filter).await,
                Event::Lost(group, filter, generation) => {
                    let key = (group, filter);
                    if self
                        .reading
                        .get(&key)
                        .is_some_and(|r| r.generation == generation)
                    {
                        if let Some(old) = self.reading.remove(&key) {
                            old.stop();
                        }
                        let (group, filter) = key;
                        self.join(group, filter).await;
                    }
                }
            }
        }
    }

    fn is_live(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let (members, settled) = (Arc::clone(&self.members), self.settled);
        move |node: &str| !settled || members.is_live(node)
    }

    /// Once settled: joins again each group joined on trust whose record still names a reader
    /// that is not alive (it may start a new generation now).
    async fn check_trusted(&mut self) {
        let trusted: Vec<(String, String)> = self
            .reading
            .iter()
            .filter(|(_, r)| r.on_trust)
            .map(|(key, _)| key.clone())
            .collect();
        for (group, filter) in trusted {
            let key = group_key(&self.prefix, &group, &filter);
            let dead = match self.bucket.entry(key.as_str()).await {
                Ok(Some(e)) => serde_json::from_slice::<Record>(&e.value).is_ok_and(|r| {
                    r.readers
                        .keys()
                        .any(|n| *n != self.node_id && !self.members.is_live(n))
                }),
                _ => false,
            };
            let entry = (group, filter);
            if dead {
                if let Some(old) = self.reading.remove(&entry) {
                    old.stop();
                }
                let (group, filter) = entry;
                self.join(group, filter).await;
            } else if let Some(r) = self.reading.get_mut(&entry) {
                r.on_trust = false;
            }
        }
    }

    /// Registers this node as a reader of the group, makes sure the generation's consumers
    /// exist (deleting an older generation's when it starts a new one) and starts reading.
    async fn join(&mut self, group: String, filter: String) {
        let key = group_key(&self.prefix, &group, &filter);
        let subjects = filter_subjects(&self.forward_prefix, &filter).len();
        let is_live = self.is_live();
        let (generation, on_trust) = loop {
            let live = Liveness {
                own: &self.node_id,
                boot: self.boot,
                is_live: &is_live,
            };
            let (written, stale) = record::change(&self.bucket, &key, |r| r.join(&live)).await;
            let on_trust = !self.settled && written.readers.len() > 1;
            if let Some(old) = stale {
                self.delete_consumers(&key, old, subjects).await;
            }
            self.create_consumers(&key, written.generation, &filter)
                .await;
            // Another node may have started a newer generation meanwhile (it took this one
            // for dead) and deleted these consumers before they were made: then join again.
            match self.bucket.entry(key.as_str()).await {
                Ok(Some(e)) => match serde_json::from_slice::<Record>(&e.value) {
                    Ok(now) if now.generation != written.generation => {
                        self.delete_consumers(&key, written.generation, subjects)
                            .await;
                        continue;
                    }
                    _ => break (written.generation, on_trust),
                },
                _ => break (written.generation, on_trust),
            }
        };
        let mut reading = self.spawn_readers(&key, generation, &group, &filter);
        reading.on_trust = on_trust;
        tracing::debug!(
            group,
            filter,
            generation,
            "reading a shared group's messages"
        );
        if let Some(old) = self.reading.insert((group, filter), reading) {
            old.stop();
        }
    }

    /// Stops this node's readers and takes it out of the group's record; deletes the
    /// consumers when no live node reads the group any more.
    async fn leave(&mut self, group: String, filter: String) {
        if let Some(reading) = self.reading.remove(&(group.clone(), filter.clone())) {
            reading.stop();
        }
        let key = group_key(&self.prefix, &group, &filter);
        let is_live = self.is_live();
        let live = Liveness {
            own: &self.node_id,
            boot: self.boot,
            is_live: &is_live,
        };
        let (_, last) = record::change(&self.bucket, &key, |r| r.leave(&live)).await;
        if let Some(generation) = last {
            let subjects = filter_subjects(&self.forward_prefix, &filter).len();
            self.delete_consumers(&key, generation, subjects).await;
        }
        tracing::debug!(
            group,
            filter,
            last = last.is_some(),
            "no member of a shared group left here"
        );
    }

    async fn create_consumers(&self, key: &str, generation: u64, filter: &str) {
        let stream = match self.js.get_stream(&self.stream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the forward stream for a shared group (its readers retry)");
                return;
            }
        };
        for (n, subject) in filter_subjects(&self.forward_prefix, filter)
            .into_iter()
            .enumerate()
        {
            let name = consumer_name(key, generation, n);
            let made = stream
                .get_or_create_consumer::<consumer::pull::Config>(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: subject,
                        deliver_policy: consumer::DeliverPolicy::New,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_ack_pending: MAX_ACK_PENDING,
                        inactive_threshold: IDLE_GROUP,
                        ..Default::default()
                    },
                )
                .await;
            if let Err(e) = made {
                tracing::warn!(error = %e, name, "cannot make a shared group's consumer (its reader retries)");
            }
        }
    }

    async fn delete_consumers(&self, key: &str, generation: u64, subjects: usize) {
        let Ok(stream) = self.js.get_stream(&self.stream).await else {
            tracing::warn!(
                key,
                generation,
                "cannot delete a shared group's consumers: NATS forgets them after an hour"
            );
            return;
        };
        for n in 0..subjects {
            let name = consumer_name(key, generation, n);
            match stream.delete_consumer(&name).await {
                Ok(_) => tracing::debug!(name, "deleted a shared group's consumer"),
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, name, "cannot delete a shared group's consumer: NATS forgets it after an hour");
                }
            }
        }
    }

    fn spawn_readers(&self, key: &str, generation: u64, group: &str, filter: &str) -> Reading {
        let js_subjects = filter_subjects(&self.forward_prefix, filter);
        let subjects = filter_subjects(&self.prefix, filter);
        let readiness = Arc::new(Readiness {
            ready: Arc::clone(&self.ready),
            group: group.to_owned(),
            filter: filter.to_owned(),
            left: AtomicUsize::new(subjects.len() * 2),
            stopped: Default::default(),
        });
        let mut tasks = Vec::new();
        for (n, subject) in subjects.into_iter().enumerate() {
            let reader = |subject: String, prefix: &str| Reader {
                readiness: Arc::clone(&readiness),
                group: group.to_owned(),
                filter: filter.to_owned(),
                name: consumer_name(key, generation, n),
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
                Lost {
                    events: self.events.clone(),
                    generation,
                },
            )));
        }
        Reading {
            generation,
            on_trust: false,
            readiness,
            tasks,
        }
    }
}

/// True when JetStream answered that the consumer does not exist.
fn not_found(error: &ConsumerError) -> bool {
    matches!(error.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_stable_distinct_and_valid_consumer_names() {
        let key = group_key("fleetcore", "g", "a/#");
        let a = consumer_name(&key, 1, 0);
        assert_eq!(a, consumer_name(&group_key("fleetcore", "g", "a/#"), 1, 0));
        assert_ne!(a, consumer_name(&key, 1, 1));
        assert_ne!(a, consumer_name(&key, 2, 0));
        assert_ne!(a, consumer_name(&group_key("fleetcore", "h", "a/#"), 1, 0));
        assert_ne!(a, consumer_name(&group_key("other", "g", "a/#"), 1, 0));
        assert!(
            a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{a}"
        );
    }
}
