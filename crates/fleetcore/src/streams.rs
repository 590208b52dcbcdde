//! The stream store `fleetcore serve` runs on: its settings (`[stream]` in the config file,
//! `--stream-*` flags, `FLEETCORE_STREAM_*` variables) and opening the backend they name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, JetStreamStreams, Stream};
use serde::Deserialize;

/// Default NATS servers of the JetStream backend.
const DEFAULT_SERVERS: &str = "nats://127.0.0.1:4222";

/// Test-only override of the shard iterator lifetime, in milliseconds (iterators expire after
/// 5 minutes; a test of expiry should not wait that long). Not a documented setting.
const ITERATOR_TTL_ENV: &str = "FLEETCORE_TEST_KINESIS_ITERATOR_TTL_MS";

/// Options of the stream store, layered like the other `serve` options.
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StreamArgs {
    /// Stream backend: `embedded` (segment log under <data-dir>/streams) or `jetstream`
    /// (NATS JetStream at --stream-servers). [default: embedded]
    #[arg(
        long = "stream-backend",
        env = "FLEETCORE_STREAM_BACKEND",
        value_name = "BACKEND"
    )]
    pub backend: Option<String>,

    /// NATS servers of the JetStream backend, comma separated. [default: nats://127.0.0.1:4222]
    #[arg(
        long = "stream-servers",
        env = "FLEETCORE_STREAM_SERVERS",
        value_name = "URLS"
    )]
    pub servers: Option<String>,
}

/// Which stream store to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamBackend {
    /// The segment log in `<data dir>/streams`.
    Embedded,
    /// NATS JetStream at these servers.
    JetStream { servers: String },
}

impl StreamArgs {
    /// Fills what these options leave unset from `under` (the config file).
    pub fn layer(&mut self, under: &mut StreamArgs) {
        if self.backend.is_none() {
            self.backend = under.backend.take();
        }
        if self.servers.is_none() {
            self.servers = under.servers.take();
        }
    }

    /// The backend these options name.
    pub fn resolve(self) -> anyhow::Result<StreamBackend> {
        match self.backend.as_deref().map(str::trim) {
            None | Some("embedded") => Ok(StreamBackend::Embedded),
            Some("jetstream") => Ok(StreamBackend::JetStream {
                servers: self
                    .servers
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_SERVERS.into()),
            }),
            Some(other) => bail!("stream backend `{other}` is not `embedded` or `jetstream`"),
        }
    }
}

/// Opens the stream store.
pub async fn open(backend: &StreamBackend, data_dir: &Path) -> anyhow::Result<Arc<dyn Stream>> {
    Ok(match backend {
        StreamBackend::Embedded => {
            let dir = data_dir.join("streams");
            Arc::new(
                EmbeddedStreams::open(&dir, EmbeddedConfig::default())
                    .await
                    .with_context(|| format!("opening the stream store {}", dir.display()))?,
            )
        }
        StreamBackend::JetStream { servers } => Arc::new(
            JetStreamStreams::connect(servers)
                .await
                .with_context(|| format!("connecting the JetStream stream store at {servers}"))?,
        ),
    })
}

/// The shard iterator lifetime: 5 minutes unless a test overrides it.
pub fn iterator_ttl() -> Duration {
    std::env::var(ITERATOR_TTL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(
            fleetcore_api::kinesis::token::ITERATOR_TTL,
            Duration::from_millis,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_the_default_and_jetstream_takes_servers() {
        assert_eq!(
            StreamArgs::default().resolve().expect("default"),
            StreamBackend::Embedded
        );
        let js = StreamArgs {
            backend: Some("jetstream".into()),
            servers: None,
        };
        assert_eq!(
            js.resolve().expect("jetstream"),
            StreamBackend::JetStream {
                servers: DEFAULT_SERVERS.into()
            }
        );
        let bad = StreamArgs {
            backend: Some("kafka".into()),
            servers: None,
        };
        assert!(format!("{:#}", bad.resolve().expect_err("unknown")).contains("kafka"));
    }
}
