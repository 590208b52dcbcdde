//! Observability for fleetcore: the embedded metric store in `<data>/metrics/`, filled by a
//! sampler that reads the platform's own metrics registry every resolution period (also under
//! AWS's namespaces and names), and the CloudWatch service (`monitoring`) over it: metrics,
//! metric math, alarms with their evaluator, dashboards; and CloudWatch Logs (`logs`).
//!
//! ```text
//! let observe = Observe::open(config, topics, mqtt)?;
//! let task = observe.start(render);          // sample, evaluate alarms, prune
//! control_plane.service("monitoring", cloudwatch::routes(observe));
//! ```

pub mod aws_names;
pub mod cloudwatch;
pub mod console;
pub mod error;
pub mod logs;
pub mod otlp;
pub mod sampler;
pub mod series;
mod sink;
pub mod store;
pub mod trace;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::notify::TopicPublisher;
use tokio::task::JoinHandle;

pub use cloudwatch::alarms::MqttPublisher;
pub use error::ObserveError;
pub use store::{MetricStore, Retention};

use cloudwatch::alarms::Alarms;
use cloudwatch::dashboards::Dashboards;

/// How the observability capability runs.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// `<data>/metrics`.
    pub dir: PathBuf,
    /// `<data>/logs`.
    pub logs_dir: PathBuf,
    /// Bucketing and retention; `retention.resolution` is also the sampling interval.
    pub retention: Retention,
    /// Whether the sampler stores the platform's own metrics (the CloudWatch API works either
    /// way).
    pub sample: bool,
    /// The region of alarm ARNs.
    pub region: String,
    /// The account id of alarm ARNs.
    pub account_id: String,
}

/// The running capability.
pub struct Observe {
    /// The metric store.
    pub store: Arc<MetricStore>,
    /// The alarms.
    pub alarms: Alarms,
    /// The dashboards.
    pub dashboards: Dashboards,
    /// The log groups (CloudWatch Logs).
    pub logs: Arc<logs::LogStore>,
    config: ObserveConfig,
}

/// Reads the metrics registry as Prometheus text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

impl Observe {
    /// Opens the store and the alarm/dashboard database in `config.dir`.
    pub fn open(
        config: ObserveConfig,
        topics: Option<Arc<dyn TopicPublisher>>,
        mqtt: Option<Arc<dyn MqttPublisher>>,
    ) -> Result<Arc<Observe>, ObserveError> {
        let store = Arc::new(MetricStore::open(&config.dir, config.retention)?);
        let db = Arc::new(redb::Database::create(config.dir.join("cloudwatch.redb"))?);
        let alarms = Alarms::open(
            Arc::clone(&db),
            Arc::clone(&store),
            topics,
            mqtt,
            &config.region,
            &config.account_id,
        )?;
        let dashboards = Dashboards::open(db)?;
        let logs = logs::LogStore::open(&config.logs_dir, &config.region, &config.account_id)
            .map_err(|e| ObserveError::Store(e.to_string()))?;
        Ok(Arc::new(Observe {
            store,
            alarms,
            dashboards,
            logs: Arc::new(logs),
            config,
        }))
    }

    /// Starts the periodic task: every resolution period, sample `render` into the store (if
    /// sampling is on), then evaluate the alarms; once an hour, prune expired buckets.
    pub fn start(self: &Arc<Self>, render: Render) -> JoinHandle<()> {
        let observe = Arc::clone(self);
        tokio::spawn(async move {
            let every = observe.config.retention.resolution.max(1);
            let mut tick = tokio::time::interval(Duration::from_secs(every as u64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sampler = sampler::Sampler::default();
            let mut last_prune = 0.0;
            let mut previous = cloudwatch::now_secs();
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = cloudwatch::now_secs();
                if observe.config.sample {
                    // The reading covers (previous, now]: it is stored at the period it began in.
                    // Rendering and parsing the registry take a millisecond or more: off the
                    // runtime's workers, so no connection task waits behind them.
                    let render = Arc::clone(&render);
                    let taken = tokio::task::spawn_blocking(move || {
                        let points = sampler.points(&render(), previous);
                        (sampler, points)
                    })
                    .await;
                    let points = match taken {
                        Ok((back, points)) => {
                            sampler = back;
                            points
                        }
                        Err(e) => {
                            // Only a panic in the sampler gets here; start again from scratch.
                            tracing::error!(error = %e, "the metric sampler failed");
                            sampler = sampler::Sampler::default();
                            Vec::new()
                        }
                    };
                    if let Err(e) = observe.store.write(points).await {
                        tracing::warn!(error = %e, "storing the metric sample failed");
                    }
                }
                previous = now;
                if let Err(e) = observe.alarms.evaluate(now).await {
                    tracing::warn!(error = %e, "alarm evaluation failed");
                }
                if now - last_prune >= 3600.0 {
                    last_prune = now;
                    let store = Arc::clone(&observe.store);
                    match tokio::task::spawn_blocking(move || store.prune(now as i64)).await {
                        Ok(Ok(n)) if n > 0 => {
                            tracing::info!(buckets = n, "expired metric buckets pruned")
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "pruning the metric store failed"),
                        _ => {}
                    }
                }
            }
        })
    }
}
