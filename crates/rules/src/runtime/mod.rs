//! The rule runtime: one worker per action of every enabled rule, each reading the durable
//! ingest log through its own consumer group (`rule:<name>:<created ms>:<action index>`, so a
//! re-created rule is a new group), and the ingest filters kept to the enabled rules' FROM
//! filters.
//!
//! A new group's checkpoint is written at the log's tail before the filters are widened, so
//! a rule sees every message published after CreateTopicRule returned, and nothing older.
//! Rule changes reach the runtime through [`RuleObserver`], before the API call returns.

mod events;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetcore_stream::{Position, StartingPosition, Stream, StreamError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::actions::{self, Destinations};
use crate::ingest::{INGEST_STREAM, IngestFilters};
use crate::message::RuleEnv;
use crate::registry::{RuleObserver, RuleRegistry, TopicRule};
use events::Labels;
use worker::{OWNER, Worker};

/// How the rule workers read, retry and stop.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most ingest records one worker has in flight (one batch).
    pub batch_limit: usize,
    /// Delivery attempts of a message before it goes to the error action.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failed one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Lease TTL of the workers' consumer groups.
    pub lease_ttl: Duration,
    /// How long a stopping worker may finish its batch before it is aborted (its batch is then
    /// delivered again after the restart: at least once).
    pub stop_grace: Duration,
}

impl Default for RuntimeConfig {
    /// 5 attempts within about 30 s (1 + 2 + 4 + 8 s of backoff plus the attempts).
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            batch_limit: 500,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            lease_ttl: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// The consumer group of action `index` of `rule`.
fn group_name(rule: &TopicRule, index: usize) -> String {
    format!(
        "rule:{}:{}:{index}",
        rule.record.name, rule.record.created_at_ms
    )
}

struct Running {
    rule: Arc<TopicRule>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Everything the manager task owns.
struct Manager {
    registry: Arc<RuleRegistry>,
    ingest: Arc<dyn Stream>,
    filters: Arc<IngestFilters>,
    destinations: Destinations,
    env: RuleEnv,
    config: RuntimeConfig,
    running: HashMap<String, Running>,
}

enum Command {
    Reconcile(std::sync::mpsc::SyncSender<()>),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// The running rules engine.
pub struct RuleRuntime {
    commands: mpsc::UnboundedSender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RuleRuntime {
    /// Starts a worker for every action of every enabled rule of `registry` (resuming from
    /// their checkpoints) and follows the registry's changes from then on.
    pub async fn start(
        registry: Arc<RuleRegistry>,
        ingest: Arc<dyn Stream>,
        filters: Arc<IngestFilters>,
        destinations: Destinations,
        env: RuleEnv,
        config: RuntimeConfig,
    ) -> Arc<RuleRuntime> {
        let mut manager = Manager {
            registry: Arc::clone(&registry),
            ingest,
            filters,
            destinations,
            env,
            config,
            running: HashMap::new(),
        };
        let (commands, mut receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(command) = receiver.recv().await {
                match command {
                    Command::Reconcile(done) => {
                        manager.reconcile().await;
                        let _ = done.try_send(());
                    }
                    Command::Shutdown(done) => {
                        manager.stop_all().await;
                        let _ = done.send(());
                        return;
                    }
                }
            }
        });
        let runtime = Arc::new(RuleRuntime {
            commands,
            task: Mutex::new(Some(task)),
        });
        registry.set_observer(Arc::clone(&runtime) as Arc<dyn RuleObserver>);
        // The first reconcile reads the registry as it is now; later changes queue behind it.
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if runtime.commands.send(Command::Reconcile(done)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
        }
        runtime
    }

    /// Stops every worker (each may finish its batch within the grace period).
    pub async fn shutdown(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl RuleObserver for RuleRuntime {
    /// Called on the thread that changed the registry (a blocking one): waits until the
    /// workers and filters match the new rule set.
    fn rules_changed(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.commands.send(Command::Reconcile(done)).is_ok()
            && wait.recv_timeout(Duration::from_secs(30)).is_err()
        {
            tracing::warn!("the rules runtime did not apply a rule change within 30 s");
        }
    }
}

impl Manager {
    /// Brings the workers and the ingest filters in line with the registry.
    async fn reconcile(&mut self) {
        let rules = self.registry.snapshot();
        let mut wanted: HashMap<String, (Arc<TopicRule>, usize)> = HashMap::new();
        for rule in rules.iter().filter(|r| !r.record.rule_disabled) {
            for index in 0..rule.record.actions.len() {
                wanted.insert(group_name(rule, index), (Arc::clone(rule), index));
            }
        }
        // Workers of deleted, disabled or changed rules stop first (a changed rule's new
        // worker continues from the same checkpoint, so the old one must be gone).
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(group, running)| {
                wanted
                    .get(*group)
                    .is_none_or(|(rule, _)| !Arc::ptr_eq(rule, &running.rule))
            })
            .map(|(group, _)| group.clone())
            .collect();
        for group in stale {
            if let Some(running) = self.running.remove(&group) {
                self.stop(running).await;
            }
        }
        let new: Vec<(String, Arc<TopicRule>, usize)> = wanted
            .into_iter()
            .filter(|(group, _)| !self.running.contains_key(group))
            .map(|(group, (rule, index))| (group, rule, index))
            .collect();
        for (group, _, _) in &new {
            if let Err(error) = self.start_at_tail(group).await {
                tracing::error!(%group, %error, "could not write the initial checkpoint of a rule action");
            }
        }
        let mut filters: Vec<String> = rules
            .iter()
            .filter(|r| !r.record.rule_disabled && !r.record.actions.is_empty())
            .map(|r| r.topic_pattern().to_string())
            .collect();
        filters.sort();
        filters.dedup();
        self.filters.set(filters);
        for (group, rule, index) in new {
            self.spawn(group, rule, index);
        }
    }

    /// A group without a checkpoint starts at the log's current tail.
    async fn start_at_tail(&self, group: &str) -> Result<(), StreamError> {
        let info = self.ingest.describe_stream(INGEST_STREAM).await?;
        for shard in info.shards {
            if self
                .ingest
                .checkpoint_of(INGEST_STREAM, group, shard.id)
                .await?
                .is_some()
            {
                continue;
            }
            if !self
                .ingest
                .acquire_lease(INGEST_STREAM, group, shard.id, OWNER, self.config.lease_ttl)
                .await?
            {
                continue;
            }
            let tail: Position = self
                .ingest
                .resolve(INGEST_STREAM, shard.id, StartingPosition::Latest)
                .await?;
            self.ingest
                .checkpoint(INGEST_STREAM, group, shard.id, OWNER, tail)
                .await?;
        }
        Ok(())
    }

    fn spawn(&mut self, group: String, rule: Arc<TopicRule>, index: usize) {
        let version = rule.statement.version();
        let Some(action) = rule.record.actions.get(index) else {
            return;
        };
        let kind = action
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        let worker = Worker {
            action: actions::build(action, version, &self.destinations),
            error_action: rule
                .record
                .error_action
                .as_ref()
                .map(|a| actions::build(a, version, &self.destinations)),
            env: self.env.clone(),
            labels: Labels {
                rule: rule.record.name.clone(),
                action: format!("{index}:{kind}"),
            },
            group: group.clone(),
            config: self.config.clone(),
            rule: Arc::clone(&rule),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(worker.run(Arc::clone(&self.ingest), stopped));
        tracing::info!(rule = %rule.record.name, action = index, %kind, "rule action started");
        self.running.insert(group, Running { rule, stop, task });
    }

    async fn stop(&self, mut running: Running) {
        let _ = running.stop.send(true);
        if tokio::time::timeout(self.config.stop_grace, &mut running.task)
            .await
            .is_err()
        {
            running.task.abort();
            let _ = running.task.await;
        }
    }

    async fn stop_all(&mut self) {
        let all: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        for running in &all {
            let _ = running.stop.send(true);
        }
        for running in all {
            self.stop(running).await;
        }
    }
}
