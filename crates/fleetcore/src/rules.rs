//! Wiring of the rules engine in `fleetcore serve`: the ingest log's partitions, each in a
//! stream store of its own (`<data dir>/ingest/partition-<n>`, so they never show in the user's
//! ListStreams and each has its own writer thread and fsyncs), the ingest writer the broker
//! hands messages to, and the runtime running every enabled rule's actions against the user's
//! streams, the delivery streams, the functions, the IoT Events inputs, the SNS topics, the broker
//! and the device shadows.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_archive::Archive;
use fleetcore_core::{FunctionInvoker, InputSink, TopicPublisher};
use fleetcore_mqtt::broker::Router;
use fleetcore_rules::actions::{Destinations, FirehoseSink};
use fleetcore_rules::destinations::TopicRuleDestinations;
use fleetcore_rules::ingest::{IngestConfig, IngestPartition, IngestWriter};
use fleetcore_rules::registry::RuleRegistry;
use fleetcore_rules::runtime::{RuleIndex, RuleRuntime, RuntimeConfig};
use fleetcore_rules::{RuleEnv, ShadowReader};
use fleetcore_shadow::ShadowService;
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Stream};
use serde_json::Value;

use crate::config::RulesRetry;

/// The shadow service as `get_thing_shadow()` reads it.
struct Shadows(ShadowService);

impl ShadowReader for Shadows {
    fn read_shadow(&self, thing: &str, shadow_name: Option<&str>) -> Option<Value> {
        match self.0.get(thing, shadow_name) {
            Ok(document) => document,
            Err(error) => {
                tracing::debug!(%thing, %error, "get_thing_shadow found no shadow");
                None
            }
        }
    }
}

/// The delivery streams as the firehose action writes to them.
struct DeliveryStreams(Arc<Archive>);

#[async_trait]
impl FirehoseSink for DeliveryStreams {
    async fn put_records(
        &self,
        name: &str,
        records: Vec<Bytes>,
    ) -> Result<Vec<Result<(), String>>, String> {
        let outcomes = self
            .0
            .put_records(name, records)
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.map(|_| ()).map_err(|refusal| refusal.message))
            .collect())
    }
}

/// The running rules engine.
pub struct RulesEngine {
    runtime: Arc<RuleRuntime>,
}

/// The services of this server that rule actions and SQL functions reach.
pub struct RuleTargets {
    /// The user's streams (the kinesis action).
    pub streams: Arc<dyn Stream>,
    /// The delivery streams (the firehose action).
    pub archive: Arc<Archive>,
    /// The device shadows (`get_thing_shadow`, republish to a shadow topic).
    pub shadows: ShadowService,
    /// The confirmed destinations of http actions.
    pub topic_rule_destinations: Arc<TopicRuleDestinations>,
    /// The functions (the lambda action).
    pub functions: Arc<dyn FunctionInvoker>,
    /// The IoT Events inputs (the iotEvents action).
    pub events: Arc<dyn InputSink>,
    /// The analytics channels (the iotAnalytics action), if the server runs them.
    pub analytics: Option<Arc<dyn fleetcore_core::ChannelSink>>,
    /// The SNS topics (the sns action).
    pub notifications: Arc<dyn TopicPublisher>,
    /// CloudWatch (the cloudwatch* actions).
    pub cloudwatch: Arc<dyn fleetcore_core::CloudWatchSink>,
}

impl RulesEngine {
    /// Opens the ingest log's partitions (`partitions` of them, or more if more exist on
    /// disk: their records are still read), installs its writer in the broker and starts the
    /// rules.
    pub async fn start(
        data_dir: &Path,
        partitions: usize,
        retry: RulesRetry,
        registry: Arc<RuleRegistry>,
        router: &Arc<Router>,
        targets: RuleTargets,
    ) -> anyhow::Result<RulesEngine> {
        let RuleTargets {
            streams,
            archive,
            shadows,
            topic_rule_destinations,
            functions,
            events,
            analytics,
            notifications,
            cloudwatch,
        } = targets;
        let https = topic_rule_destinations.https().clone();
        let dir = data_dir.join("ingest");
        let ingest_config = IngestConfig::default();
        let mut opened = Vec::with_capacity(partitions);
        for number in 0..partitions.max(existing_partitions(&dir)) {
            let path = dir.join(format!("partition-{number}"));
            let store: Arc<dyn Stream> = Arc::new(
                EmbeddedStreams::open(&path, EmbeddedConfig::default())
                    .await
                    .with_context(|| format!("opening the ingest log {}", path.display()))?,
            );
            let partition = IngestPartition::open(store, ingest_config.retention_hours)
                .await
                .with_context(|| format!("opening the ingest log {}", path.display()))?;
            opened.push(Arc::new(partition));
        }
        let index = Arc::new(RuleIndex::new());
        let writer = IngestWriter::start(&opened, Arc::clone(&index) as _, ingest_config);
        router.set_ingest_log(Arc::new(writer));
        let config = RuntimeConfig {
            max_attempts: retry.attempts,
            initial_backoff: retry.initial_backoff,
            max_backoff: retry.initial_backoff * 8,
            spill_dir: Some(dir.join("overflow")),
            ..RuntimeConfig::default()
        };
        let runtime = RuleRuntime::start(
            registry,
            opened,
            index,
            Destinations {
                router: Arc::clone(router),
                streams,
                firehose: Some(Arc::new(DeliveryStreams(archive))),
                https,
                topic_rule_destinations,
                functions: Some(Arc::clone(&functions)),
                events: Some(events),
                analytics,
                notifications: Some(notifications),
                cloudwatch: Some(cloudwatch),
            },
            RuleEnv {
                shadows: Some(Arc::new(Shadows(shadows))),
                functions: Some(functions),
            },
            config,
        )
        .await
        .context("starting the rules runtime")?;
        Ok(RulesEngine { runtime })
    }

    /// Stops the partition readers (pending deliveries finish within the grace period or are
    /// delivered again after a restart).
    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}

/// How many `partition-<n>` folders the ingest log has on disk (the highest `n` plus one).
fn existing_partitions(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("partition-")?
                .parse::<usize>()
                .ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}
