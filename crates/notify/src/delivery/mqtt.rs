//! `mqtt` (fleetcore's own protocol): publishes the JSON envelope (or, with
//! `RawMessageDelivery`, the bare message) at QoS 1 on the MQTT topic named by the endpoint,
//! through the broker like any server-originated message (as the rules' republish does), so
//! subscribers and rules see it. No confirmation: the topic is on this server.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_mqtt::broker::{Message, Router};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_mqtt::topic::valid_topic_name;

use super::{Built, Context, Failure, Outgoing, ProtocolKind, Targets, Transport};
use crate::model::Subscription;

/// Longest MQTT topic an endpoint may name (AWS IoT's limit).
const MAX_TOPIC_BYTES: usize = 256;

/// The `mqtt` protocol.
pub(super) const MQTT: ProtocolKind = ProtocolKind {
    name: "mqtt",
    needs_confirmation: false,
    check_endpoint,
    build,
    unavailable: "this server runs no MQTT broker",
};

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if valid_topic_name(endpoint, MAX_TOPIC_BYTES) {
        Ok(())
    } else {
        Err(format!(
            "{endpoint:?} is not an MQTT topic name (1 to {MAX_TOPIC_BYTES} bytes, no wildcards)"
        ))
    }
}

fn build(targets: &Targets) -> Built {
    Ok(targets
        .router
        .clone()
        .map(|router| Arc::new(Mqtt { router }) as Arc<dyn Transport>))
}

struct Mqtt {
    router: Arc<Router>,
}

#[async_trait]
impl Transport for Mqtt {
    async fn send(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> Result<(), Failure> {
        let Outgoing::Notification(published) = outgoing else {
            return Ok(());
        };
        let payload = if subscription.raw() {
            published.message_for("mqtt").to_string()
        } else {
            published
                .envelope(
                    "mqtt",
                    &context.signer,
                    &context.urls,
                    &subscription.arn,
                    &subscription.token,
                )
                .to_string()
        };
        publish(&self.router, &subscription.endpoint, Bytes::from(payload))
            .map_err(Failure::Permanent)
    }
}

/// Publishes `payload` at QoS 1 on `topic` as a server-originated message.
pub(crate) fn publish(router: &Router, topic: &str, payload: Bytes) -> Result<(), String> {
    let topic = Utf8::new(topic.to_string()).ok_or("the MQTT topic contains U+0000".to_string())?;
    router.publish(Arc::new(Message {
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    }));
    Ok(())
}
