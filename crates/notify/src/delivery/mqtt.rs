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

use super::{Context, Failure, Outgoing, ProtocolKind, Targets, Transport};
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

fn build(targets: &Targets) -> Result<Option<Arc<dyn Transport>>, String> {
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
        let topic = Utf8::new(subscription.endpoint.clone())
            .ok_or_else(|| Failure::Permanent("the MQTT topic contains U+0000".into()))?;
        self.router.publish(Arc::new(Message {
            topic,
            payload: Bytes::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        }));
        Ok(())
    }
}
