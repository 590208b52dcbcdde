//! IoT Analytics for fleetcore: channels keep raw messages, pipelines run activities over them
//! into datastores (Hive-partitioned Parquet or JSON folders any engine reads), and datasets run
//! SQL over the datastores with Apache DataFusion, their content a CSV file served over HTTP.
//! The `iotanalytics` service ([`api`]) is its AWS face; [`Analytics`] is the handle the
//! binary wires, and [`query`] the SQL the `fleetcore sql` command uses too.

pub mod api;
pub mod bucket;
mod catalog;
mod channel;
pub mod columns;
mod dataset;
pub mod datastore;
mod error;
mod functions;
mod late;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod reprocess;
pub mod resources;
mod retention;
mod runner;
mod schedule;
mod scheduler;
mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fleetcore_core::{
    AccountContext, ChannelError, ChannelFuture, ChannelMessage, ChannelSink, KvStore,
};
use parking_lot::Mutex;
use tokio::task::AbortHandle;

pub use channel::Stored;
pub use error::AnalyticsError;
pub use pipeline::Services;
pub use source::SOURCE_TAG;

use catalog::Catalog;
use channel::ChannelFiles;
use datastore::DatastoreFiles;

/// Where the capability keeps its files and how it names its resources.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// The folder of channels (`channels/`), datastores (`datastores/`) and dataset
    /// contents (`datasets/`).
    pub root: PathBuf,
    /// Region and account of the ARNs.
    pub account: AccountContext,
    /// The HTTP base URL dataset contents are downloaded from (`http://host:port`).
    pub content_base_url: String,
    /// This node's member name in the channel sources' consumer groups: unique per node and
    /// stable across its restarts (the node id), so a restarted node takes its leases back at
    /// once.
    pub consumer_owner: String,
}

/// The running analytics capability.
pub struct Analytics {
    config: AnalyticsConfig,
    catalog: Catalog,
    channels: ChannelFiles,
    datastores: DatastoreFiles,
    services: Services,
    runners: Mutex<HashMap<String, AbortHandle>>,
    reprocessing_tasks: Mutex<HashMap<String, AbortHandle>>,
    sources: Mutex<HashMap<String, AbortHandle>>,
    datastore_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Analytics {
    /// Opens the capability over `store` and starts every pipeline where it stopped.
    pub fn start(
        store: Arc<dyn KvStore>,
        config: AnalyticsConfig,
        services: Services,
    ) -> Result<Arc<Analytics>, AnalyticsError> {
        for dir in ["channels", "datastores", "datasets"] {
            let path = config.root.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|e| AnalyticsError::io(format!("creating {}", path.display()), e))?;
        }
        let analytics = Arc::new(Analytics {
            channels: ChannelFiles::new(config.root.join("channels"), services.buckets.clone()),
            datastores: DatastoreFiles::new(
                config.root.join("datastores"),
                services.buckets.clone(),
            ),
            catalog: Catalog::new(store),
            config,
            services,
            runners: Mutex::new(HashMap::new()),
            reprocessing_tasks: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            datastore_locks: Mutex::new(HashMap::new()),
        });
        let channels = analytics
            .catalog
            .list::<model::ChannelRecord>("channel", "")?;
        for channel in &channels {
            analytics.channels.open(channel);
        }
        for pipeline in analytics
            .catalog
            .list::<model::PipelineRecord>("pipeline", "")?
        {
            analytics.start_pipeline(&pipeline.name);
        }
        for channel in &channels {
            analytics.run_source(channel);
        }
        analytics.resume_reprocessings()?;
        dataset::fail_interrupted(&analytics)?;
        tokio::spawn(retention::run(Arc::downgrade(&analytics)));
        tokio::spawn(scheduler::run(Arc::downgrade(&analytics)));
        Ok(analytics)
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        self.config
            .account
            .arn("iotanalytics", format!("{kind}/{name}"))
            .to_string()
    }

    fn datastore_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.datastore_locks
                .lock()
                .entry(name.to_string())
                .or_default(),
        )
    }

    fn start_pipeline(self: &Arc<Self>, name: &str) {
        let task = tokio::spawn(runner::run(Arc::clone(self), name.to_string()));
        if let Some(old) = self
            .runners
            .lock()
            .insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
    }

    fn stop_pipeline(&self, name: &str) {
        if let Some(task) = self.runners.lock().remove(name) {
            task.abort();
        }
    }

    /// The tables of every datastore, for a query.
    pub fn tables(&self) -> Result<Vec<query::Table>, AnalyticsError> {
        self.catalog
            .list::<model::DatastoreRecord>("datastore", "")?
            .into_iter()
            .map(|d| {
                Ok(query::Table {
                    source: self.datastores.source(&d)?,
                    schema: Some(columns::schema(&d.columns)),
                    format: d.format(),
                    partitions: Some(
                        std::iter::once(datastore::DAY_COLUMN.to_string())
                            .chain(d.attribute_partition.clone())
                            .collect(),
                    ),
                    name: d.name,
                })
            })
            .collect()
    }

    /// Stores messages in `channel`: each must be a JSON object whose attribute names are
    /// letters, digits and `_` (not starting with a digit). One outcome per message.
    pub async fn put_messages(
        &self,
        channel: &str,
        messages: Vec<ChannelMessage>,
    ) -> Result<Vec<Result<(), ChannelError>>, AnalyticsError> {
        if self
            .catalog
            .get::<model::ChannelRecord>("channel", channel)?
            .is_none()
        {
            return Err(AnalyticsError::not_found("channel", channel));
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut accepted = Vec::with_capacity(messages.len());
        for message in messages {
            match parse_message(&message.payload) {
                Ok(m) => {
                    accepted.push(m);
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(ChannelError::Invalid(e))),
            }
        }
        if !accepted.is_empty() {
            let now_ms = (model::now_seconds() * 1000.0) as i64;
            if let Err(e) = self.channels.append(channel, now_ms, &accepted, None).await {
                let e = e.to_string();
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = Err(ChannelError::Storage(e.clone()));
                }
            }
        }
        Ok(outcomes)
    }
}

/// A channel message: a JSON object with valid attribute names.
fn parse_message(payload: &[u8]) -> Result<columns::Message, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("the payload must be a JSON object".into());
    };
    for name in map.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "attribute name `{name}` is not valid: use letters, digits and _, not starting with a digit"
            ));
        }
    }
    Ok(map)
}

impl ChannelSink for Analytics {
    fn put<'a>(&'a self, channel: &'a str, messages: Vec<ChannelMessage>) -> ChannelFuture<'a> {
        Box::pin(async move {
            let count = messages.len();
            match self.put_messages(channel, messages).await {
                Ok(outcomes) => outcomes,
                Err(AnalyticsError::NotFound { .. }) => {
                    vec![Err(ChannelError::NotFound(channel.to_string())); count]
                }
                Err(e) => vec![Err(ChannelError::Storage(e.to_string())); count],
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_checks() {
        assert!(parse_message(br#"{"temp": 1, "_id": "a", "x9": null}"#).is_ok());
        assert!(parse_message(b"[1]").unwrap_err().contains("object"));
        assert!(parse_message(b"{").unwrap_err().contains("not JSON"));
        assert!(parse_message(br#"{"9a": 1}"#).unwrap_err().contains("9a"));
        assert!(parse_message(br#"{"a-b": 1}"#).unwrap_err().contains("a-b"));
    }
}

/// An analytics capability over a temporary folder, for the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The capability and the folder it lives in (removed when dropped).
    pub(crate) fn analytics() -> (Arc<Analytics>, tempfile::TempDir) {
        analytics_with(Services::default())
    }

    /// The capability calling on `services`, and its folder.
    pub(crate) fn analytics_with(services: Services) -> (Arc<Analytics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> =
            Arc::new(fleetcore_core::RedbStore::open(&dir.path().join("store.redb")).unwrap());
        let config = AnalyticsConfig {
            root: dir.path().join("analytics"),
            account: fleetcore_core::AccountContext::new("us-east-1", "000000000000"),
            content_base_url: "http://127.0.0.1:0".into(),
            consumer_owner: "test-node".into(),
        };
        (Analytics::start(store, config, services).unwrap(), dir)
    }
}
