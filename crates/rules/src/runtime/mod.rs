//! The rule runtime: one reader per ingest partition decodes each record once, finds the
//! matching enabled rules in the [`RuleIndex`] (a topic-filter tree), evaluates each rule's
//! statement once and queues the output on every action of the rule. Each action has its own
//! bounded queue, drained by a task that runs only while there is work, with its own retries and
//! error action, so a slow destination delays only itself (until its queue is full: then the
//! readers of the partitions feeding it wait for room).
//!
//! Durability: a partition's committed position is the first record some action still has to
//! deliver (or the reader's position when none is pending), checkpointed in the partition's
//! store; after a crash the reader resumes there and every record after it goes again to every
//! rule that matches it, so each action gets every record at least once (an action that had
//! already delivered some of them delivers them again).
//!
//! Rule changes reach the runtime through [`RuleObserver`], before the API call returns, and
//! cost the same however many rules there are: the changed rule leaves or enters the index, its
//! actions are built, nothing else is visited. A created or enabled rule applies to the records
//! at or after each partition's tail at that moment: it sees every message published after
//! CreateTopicRule returned, and nothing older; a replaced rule continues where the old one was.

mod events;
mod index;
mod lane;
mod progress;
mod reader;
mod spill;
mod trace_id;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetcore_stream::{Position, StreamError};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actions::{self, Destinations};
use crate::ingest::IngestPartition;
use crate::message::RuleEnv;
use crate::registry::{RuleObserver, RuleRegistry, TopicRule};
use events::{ActionEvents, RuleEvents};
pub use index::RuleIndex;
use index::RunningRule;
use lane::ActionLane;
use progress::Progress;
use reader::PartitionReader;

/// How the rule runtime reads, queues, retries and stops.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most ingest records a reader takes in one read, and most messages an action delivers
    /// in one batch.
    pub batch_limit: usize,
    /// Most messages waiting in memory in one action's queue; beyond it they wait in the
    /// action's overflow file.
    pub lane_capacity: usize,
    /// Where actions that fell behind keep their overflow files (`None`: no overflow, a reader
    /// waits for room in the queue). Scratch space: cleared when the runtime starts.
    pub spill_dir: Option<PathBuf>,
    /// Most bytes in one action's overflow file; a reader waits for room beyond it.
    pub lane_spill_bytes: u64,
    /// Delivery attempts of a message before it goes to the error action.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failed one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Lease TTL of the readers' consumer group in each partition.
    pub lease_ttl: Duration,
    /// How long shutdown waits for queued deliveries (what is left is delivered again after
    /// the restart: at least once).
    pub stop_grace: Duration,
}

impl Default for RuntimeConfig {
    /// 5 attempts within about 30 s (1 + 2 + 4 + 8 s of backoff plus the attempts).
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            batch_limit: 500,
            lane_capacity: 4096,
            spill_dir: None,
            lane_spill_bytes: 256 << 20,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            lease_ttl: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// The running rules engine.
pub struct RuleRuntime {
    index: Arc<RuleIndex>,
    partitions: Vec<Arc<IngestPartition>>,
    progress: Arc<[Arc<Progress>]>,
    destinations: Destinations,
    env: RuleEnv,
    config: Arc<RuntimeConfig>,
    stop: watch::Sender<bool>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

/// True if the rule runs: enabled, with something to deliver to.
fn runs(rule: &TopicRule) -> bool {
    !rule.record.rule_disabled && !rule.record.actions.is_empty()
}

impl RuleRuntime {
    /// Puts every enabled rule of `registry` in `index` (the index the ingest writer asks),
    /// starts one reader per partition (resuming from its checkpoint) and follows the
    /// registry's changes from then on. Call it before clients can change rules.
    pub async fn start(
        registry: Arc<RuleRegistry>,
        partitions: Vec<Arc<IngestPartition>>,
        index: Arc<RuleIndex>,
        destinations: Destinations,
        env: RuleEnv,
        config: RuntimeConfig,
    ) -> Result<Arc<RuleRuntime>, StreamError> {
        if let Some(dir) = &config.spill_dir {
            // Overflow of a previous run: its records are read again from the checkpoint.
            match std::fs::remove_dir_all(dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), %error, "could not clear the rules overflow folder");
                }
                _ => {}
            }
        }
        let mut progress = Vec::with_capacity(partitions.len());
        for partition in &partitions {
            let start = PartitionReader::start_position(partition, config.lease_ttl).await?;
            progress.push(Arc::new(Progress::new(start)));
        }
        let (stop, stopped) = watch::channel(false);
        let runtime = Arc::new(RuleRuntime {
            index,
            partitions,
            progress: progress.into(),
            destinations,
            env,
            config: Arc::new(config),
            stop,
            readers: Mutex::new(Vec::new()),
        });
        // Rules that existed before the restart apply to every record after the checkpoint.
        let from_start = vec![Position(0); runtime.partitions.len()];
        for rule in registry.snapshot().iter().filter(|r| runs(r)) {
            runtime
                .index
                .insert(Arc::new(runtime.running(rule, from_start.clone())));
        }
        registry.set_observer(Arc::clone(&runtime) as Arc<dyn RuleObserver>);
        let readers = runtime
            .partitions
            .iter()
            .zip(runtime.progress.iter())
            .enumerate()
            .map(|(number, (partition, progress))| {
                let reader = PartitionReader {
                    number,
                    partition: Arc::clone(partition),
                    index: Arc::clone(&runtime.index),
                    progress: Arc::clone(progress),
                    env: runtime.env.clone(),
                    config: Arc::clone(&runtime.config),
                };
                tokio::spawn(reader.run(stopped.clone()))
            })
            .collect();
        *runtime.readers.lock() = readers;
        Ok(runtime)
    }

    /// Builds the running form of `rule`: its actions, error action and counters.
    fn running(&self, rule: &Arc<TopicRule>, starts: Vec<Position>) -> RunningRule {
        let version = rule.statement.version();
        let name = rule.record.name.as_str();
        let error_action = rule
            .record
            .error_action
            .as_ref()
            .map(|a| actions::build(a, version, &self.destinations));
        let lanes = rule
            .record
            .actions
            .iter()
            .enumerate()
            .map(|(index, action)| {
                let kind = action
                    .as_object()
                    .and_then(|m| m.keys().next().cloned())
                    .unwrap_or_default();
                Arc::new(ActionLane::new(
                    actions::build(action, version, &self.destinations),
                    error_action.clone(),
                    ActionEvents::new(name, format!("{index}:{kind}")),
                    Arc::clone(&self.config),
                    Arc::clone(&self.progress),
                ))
            })
            .collect();
        RunningRule {
            rule: Arc::clone(rule),
            name: name.into(),
            starts,
            lanes,
            error_action,
            events: RuleEvents::new(name),
        }
    }

    /// Stops the readers; each waits (up to the grace period) for the deliveries pending on
    /// its partition, then writes its last checkpoint.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let readers = std::mem::take(&mut *self.readers.lock());
        for reader in readers {
            let _ = reader.await;
        }
    }
}

impl RuleObserver for RuleRuntime {
    /// Takes the old rule out of the index and puts the new one in: the next record any reader
    /// reads sees the change.
    fn rule_changed(&self, old: Option<&Arc<TopicRule>>, new: Option<&Arc<TopicRule>>) {
        let previous = old
            .filter(|rule| runs(rule))
            .and_then(|rule| self.index.remove(rule.topic_pattern(), &rule.record.name));
        let Some(new) = new.filter(|rule| runs(rule)) else {
            return;
        };
        let starts = match previous {
            Some(previous) => previous.starts.clone(),
            None => self.partitions.iter().map(|p| p.tail()).collect(),
        };
        self.index.insert(Arc::new(self.running(new, starts)));
        tracing::debug!(rule = %new.record.name, "rule running");
    }
}
