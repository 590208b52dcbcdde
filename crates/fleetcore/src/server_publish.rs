//! Messages the server itself publishes on the broker: CloudWatch alarm actions and IoT Events
//! detector actions reach their MQTT topics through here.

use std::sync::Arc;

use bytes::Bytes;
use fleetcore_mqtt::broker::{Message, Router};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_mqtt::topic::valid_topic_name;

/// Publishes `payload` on `topic` at `qos` as the server (no retain, no properties); a topic
/// that is not a valid topic name is refused with the reason.
pub fn publish(router: &Router, topic: &str, payload: Bytes, qos: QoS) -> Result<(), String> {
    if !valid_topic_name(topic, router.config().max_topic_length) {
        return Err(format!("{topic:?} is not a valid topic name"));
    }
    let topic = Utf8::new(topic.to_string()).ok_or("the topic contains U+0000")?;
    router.publish(Arc::new(Message {
        topic,
        payload,
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    }));
    Ok(())
}
