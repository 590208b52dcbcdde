//! Alerts: every alarm change goes to the profile's SNS target (through core's
//! `TopicPublisher`) and to the MQTT topic `$fleetcore/defender/alerts/{profile}/{thing}`
//! (AWS has no MQTT topic for Detect alerts; this one is fleetcore's). Behaviours with
//! `suppressAlerts` send none.
//!
//! SNS publishes run on one task fed by a bounded queue of [`QUEUE`] alerts; when it is full
//! (SNS far behind) the alert is dropped, counted in `fleetcore_defender_alerts_dropped_total`
//! and logged: the violation itself is recorded either way.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use fleetcore_core::{Notification, TopicPublisher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::profile::AlertTarget;
use crate::violations::ViolationEvent;

/// SNS alerts waiting to be published.
pub const QUEUE: usize = 1024;

/// Publishes on the broker as the server (the binary implements it with its server-publish
/// helper).
pub trait MqttPublisher: Send + Sync + 'static {
    /// Publishes `payload` on `topic` with `qos` (0 or 1).
    fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), String>;
}

/// The topic an alert about `thing` under `profile` is published on.
pub fn alert_topic(profile: &str, thing: &str) -> String {
    format!("$fleetcore/defender/alerts/{profile}/{thing}")
}

/// The alert message: AWS's Detect SNS message (`thingName`, `securityProfileName`,
/// `behavior`, `violationEventType`, `metricValue`, `violationId`, `violationEventTime` in
/// milliseconds).
pub fn alert_message(event: &ViolationEvent) -> String {
    json!({
        "version": "1.0",
        "thingName": event.thing_name,
        "securityProfileName": event.security_profile_name,
        "behavior": event.behavior,
        "violationEventType": event.event_type.as_str(),
        "metricValue": event.metric_value,
        "violationId": event.violation_id,
        "violationEventTime": (event.time * 1000.0) as u64,
    })
    .to_string()
}

/// Where alerts go.
#[derive(Clone)]
pub struct Alerts {
    sns: Option<mpsc::Sender<(String, String)>>,
    mqtt: Option<Arc<dyn MqttPublisher>>,
}

impl Alerts {
    /// Alerts to SNS through `sns` and to MQTT through `mqtt` (each optional); starts the SNS
    /// publishing task.
    pub fn new(
        sns: Option<Arc<dyn TopicPublisher>>,
        mqtt: Option<Arc<dyn MqttPublisher>>,
    ) -> Alerts {
        let sns = sns.map(|publisher| {
            let (tx, mut rx) = mpsc::channel::<(String, String)>(QUEUE);
            tokio::spawn(async move {
                while let Some((topic, message)) = rx.recv().await {
                    let notification = Notification {
                        message,
                        subject: Some("Device Defender violation".into()),
                        ..Notification::default()
                    };
                    if let Err(e) = publisher.publish(&topic, notification).await {
                        tracing::warn!(topic, error = %e, "could not publish a Defender alert to SNS");
                    }
                }
            });
            tx
        });
        Alerts { sns, mqtt }
    }

    /// Sends `event` to `targets` and the MQTT topic.
    pub fn send(&self, event: &ViolationEvent, targets: &BTreeMap<String, AlertTarget>) {
        if event.behavior.suppress_alerts == Some(true) {
            return;
        }
        let message = alert_message(event);
        if let Some(mqtt) = &self.mqtt {
            let topic = alert_topic(&event.security_profile_name, &event.thing_name);
            if let Err(e) = mqtt.publish(&topic, Bytes::from(message.clone()), 1) {
                tracing::warn!(topic, error = %e, "could not publish a Defender alert on MQTT");
            }
        }
        if let (Some(sns), Some(target)) = (&self.sns, targets.get("SNS"))
            && sns
                .try_send((target.alert_target_arn.clone(), message))
                .is_err()
        {
            metrics::counter!("fleetcore_defender_alerts_dropped_total").increment(1);
            tracing::warn!(topic = %target.alert_target_arn, "the Defender SNS alert queue is full: alert dropped");
        }
    }
}
