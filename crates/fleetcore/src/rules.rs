//! Wiring of the rules engine in `fleetcore serve`: the ingest log in a stream store of its own
//! (`<data dir>/ingest`, so it never shows in the user's ListStreams), the ingest writer the
//! broker hands messages to, and the runtime running every enabled rule's actions against the
//! user's streams, the delivery streams, the functions, the broker and the device shadows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_archive::Archive;
use fleetcore_core::FunctionInvoker;
use fleetcore_mqtt::broker::Router;
use fleetcore_rules::actions::{Destinations, FirehoseSink};
use fleetcore_rules::ingest::{IngestConfig, IngestFilters, IngestWriter};
use fleetcore_rules::registry::RuleRegistry;
use fleetcore_rules::runtime::{RuleRuntime, RuntimeConfig};
use fleetcore_rules::{RuleEnv, ShadowReader};
use fleetcore_shadow::ShadowService;
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Stream};
use serde_json::Value;

/// Test-only override of the first retry wait of rule actions, in milliseconds (the default
/// 1 s, doubling, makes an error-action test wait 15 s). Not a documented setting.
const RETRY_BACKOFF_ENV: &str = "FLEETCORE_TEST_RULES_RETRY_BACKOFF_MS";

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

impl RulesEngine {
    /// Opens the ingest log, installs its writer in the broker and starts the rules.
    pub async fn start(
        data_dir: &Path,
        registry: Arc<RuleRegistry>,
        router: &Arc<Router>,
        streams: Arc<dyn Stream>,
        archive: Arc<Archive>,
        shadows: ShadowService,
        functions: Arc<dyn FunctionInvoker>,
    ) -> anyhow::Result<RulesEngine> {
        let dir = data_dir.join("ingest");
        let ingest: Arc<dyn Stream> = Arc::new(
            EmbeddedStreams::open(&dir, EmbeddedConfig::default())
                .await
                .with_context(|| format!("opening the ingest log {}", dir.display()))?,
        );
        let filters = Arc::new(IngestFilters::default());
        let writer = IngestWriter::start(
            Arc::clone(&ingest),
            Arc::clone(&filters),
            IngestConfig::default(),
        )
        .await
        .context("starting the ingest log writer")?;
        router.set_ingest_log(Arc::new(writer));
        let mut config = RuntimeConfig::default();
        if let Some(ms) = std::env::var(RETRY_BACKOFF_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            config.initial_backoff = Duration::from_millis(ms);
            config.max_backoff = Duration::from_millis(ms * 8);
        }
        let runtime = RuleRuntime::start(
            registry,
            ingest,
            filters,
            Destinations {
                router: Arc::clone(router),
                streams,
                firehose: Some(Arc::new(DeliveryStreams(archive))),
                functions: Some(functions),
            },
            RuleEnv {
                shadows: Some(Arc::new(Shadows(shadows))),
            },
            config,
        )
        .await;
        Ok(RulesEngine { runtime })
    }

    /// Stops the rule workers (each finishes its batch or is redelivered after a restart).
    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}
