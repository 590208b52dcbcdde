//! Wiring of the events capability (IoT Events) in `fleetcore serve`: its detector actions
//! reach the broker (iotTopicPublish), the delivery streams (firehose) and the functions
//! (lambda) through the adapters here, the SNS topics through core's TopicPublisher and the
//! alarm mails and texts through its RecipientNotifier.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use fleetcore_archive::Archive;
use fleetcore_core::{AccountContext, FunctionInvoker, KvStore, RecipientNotifier, TopicPublisher};
use fleetcore_events::{Events, EventsConfig, MqttPublisher, RecordFuture, RecordSink, Targets};
use fleetcore_mqtt::broker::Router;
use fleetcore_mqtt::protocol::QoS;

use crate::config::Settings;

/// The broker as detector actions publish to it.
struct Broker(Arc<Router>);

impl MqttPublisher for Broker {
    fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), String> {
        let qos = if qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        crate::server_publish::publish(&self.0, topic, payload, qos)
    }
}

/// The delivery streams as the firehose detector action writes to them.
struct DeliveryStreams(Arc<Archive>);

impl RecordSink for DeliveryStreams {
    fn put_record<'a>(&'a self, stream: &'a str, record: Bytes) -> RecordFuture<'a> {
        Box::pin(async move {
            let mut outcomes = self
                .0
                .put_records(stream, vec![record])
                .await
                .map_err(|e| e.to_string())?;
            match outcomes.pop() {
                Some(Ok(_)) => Ok(()),
                Some(Err(refusal)) => Err(refusal.message),
                None => Err("the delivery stream answered nothing".into()),
            }
        })
    }
}

/// Starts the events engine (detectors resume in their stored state; overdue timers fire).
pub fn start(
    settings: &Settings,
    store: &Arc<dyn KvStore>,
    router: &Arc<Router>,
    archive: &Arc<Archive>,
    functions: Arc<dyn FunctionInvoker>,
    topics: Arc<dyn TopicPublisher>,
    recipients: Arc<dyn RecipientNotifier>,
) -> anyhow::Result<Arc<Events>> {
    let targets = Targets {
        mqtt: Some(Arc::new(Broker(Arc::clone(router)))),
        topics: Some(topics),
        functions: Some(functions),
        firehose: Some(Arc::new(DeliveryStreams(Arc::clone(archive)))),
        recipients: Some(recipients),
        inputs: Arc::default(),
    };
    Events::start(
        Arc::clone(store),
        targets,
        AccountContext::new(&settings.region, &settings.account_id),
        EventsConfig::default(),
    )
    .context("starting the events engine")
}
