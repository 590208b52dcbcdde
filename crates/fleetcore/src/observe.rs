//! Wiring of the observability capability: its store in `<data>/metrics/`, the sampler over
//! this process's Prometheus registry, and alarm actions published on the broker and to SNS
//! topics.

use std::sync::Arc;

use anyhow::Context;
use fleetcore_core::TopicPublisher;
use fleetcore_mqtt::broker::Router;
use fleetcore_mqtt::protocol::QoS;
use fleetcore_observe::{MqttPublisher, Observe, ObserveConfig, Retention};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use crate::config::Settings;

/// The running capability and its periodic task.
pub struct Running {
    /// The capability (the `monitoring` service serves from it).
    pub observe: Arc<Observe>,
    /// Sampling, alarm evaluation, pruning.
    pub task: JoinHandle<()>,
    /// The functions' invocation logs into `/aws/lambda/<function>`.
    pub lambda_logs: Arc<fleetcore_observe::logs::lambda::LambdaLogFeed>,
}

/// Alarm actions to MQTT topics, published by the server at QoS 1.
struct BrokerPublisher(Arc<Router>);

impl MqttPublisher for BrokerPublisher {
    fn publish(&self, topic: &str, payload: Vec<u8>) {
        if let Err(reason) =
            crate::server_publish::publish(&self.0, topic, payload.into(), QoS::AtLeastOnce)
        {
            tracing::warn!(topic, reason, "alarm action not published");
        }
    }
}

/// Opens the store and starts sampling `prometheus` every `metrics_resolution` seconds.
pub fn start(
    settings: &Settings,
    router: &Arc<Router>,
    topics: Arc<dyn TopicPublisher>,
    prometheus: &PrometheusHandle,
) -> anyhow::Result<Running> {
    let resolution = settings.metrics_resolution as i64;
    let config = ObserveConfig {
        dir: settings.data_dir.join("metrics"),
        logs_dir: settings.data_dir.join("logs"),
        retention: Retention {
            resolution,
            raw: settings.metrics_retention_days as i64 * 86_400,
            ..Retention::default()
        },
        sample: settings.metrics_sample,
        region: settings.region.clone(),
        account_id: settings.account_id.clone(),
    };
    let observe = Observe::open(
        config,
        Some(topics),
        Some(Arc::new(BrokerPublisher(Arc::clone(router)))),
    )
    .context("opening the metric store (<data>/metrics)")?;
    // The platform's failure events go to AWSIotLogsV2 from here on.
    fleetcore_observe::logs::platform::start_writer(Arc::clone(&observe.logs));
    let lambda_logs = fleetcore_observe::logs::lambda::start(Arc::clone(&observe.logs));
    let handle = prometheus.clone();
    let task = observe.start(Arc::new(move || handle.render()));
    if let Some(endpoint) = &settings.otlp_endpoint {
        let handle = prometheus.clone();
        let otlp = fleetcore_observe::otlp::OtlpConfig {
            endpoint: endpoint.clone(),
            interval: std::time::Duration::from_secs(settings.otlp_interval),
            instance: settings.http.to_string(),
        };
        fleetcore_observe::otlp::start(otlp.clone(), Arc::new(move || handle.render()));
        fleetcore_observe::trace::start(otlp);
        fleetcore_core::trace::set_message_sampling(settings.otlp_trace_sampling);
        tracing::info!(
            %endpoint,
            interval = settings.otlp_interval,
            trace_sampling = settings.otlp_trace_sampling,
            "exporting metrics and traces over OTLP/HTTP"
        );
    }
    tracing::info!(
        resolution,
        sample = settings.metrics_sample,
        "metric store ready"
    );
    Ok(Running {
        observe,
        task,
        lambda_logs,
    })
}
