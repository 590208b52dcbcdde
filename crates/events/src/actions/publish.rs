//! `iotTopicPublish{mqttTopic, qos, payload}`: publishes to an MQTT topic of this server's
//! broker. The topic is a template: `alerts/${$input.In.thingType}/critical`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value as Json;

use super::payload::Payload;
use super::{DetectorAction, Effect, MqttPublisher, Run, Targets, needs, required_str};
use crate::expr::{self, Expr, Part, Template};

struct IotTopicPublish {
    broker: Arc<dyn MqttPublisher>,
    topic: Template,
    qos: u8,
    payload: Payload,
}

pub(super) fn build(members: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    let text = required_str(members, "mqttTopic")?;
    let topic =
        expr::parse_template(text).map_err(|e| format!("mqttTopic {text:?} is not valid: {e}"))?;
    let literal: String = topic
        .parts()
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::Expr(_) => None,
        })
        .collect();
    if literal.contains(['+', '#']) {
        return Err(format!("mqttTopic {text:?} must not contain wildcards"));
    }
    let qos = match members.get("qos") {
        None => 0,
        Some(Json::Number(n)) if n.as_u64() == Some(0) => 0,
        Some(Json::Number(n)) if n.as_u64() == Some(1) => 1,
        Some(_) => return Err("qos must be 0 or 1".into()),
    };
    Ok(Box::new(IotTopicPublish {
        broker: needs(&targets.mqtt, "an MQTT broker")?,
        topic,
        qos,
        payload: Payload::parse(members)?,
    }))
}

impl DetectorAction for IotTopicPublish {
    fn expressions(&self) -> Vec<&Expr> {
        let mut all = self.payload.expressions();
        all.extend(self.topic.parts().iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Text(_) => None,
        }));
        all
    }

    fn run(&self, run: &mut Run<'_>) {
        let topic = self.topic.render(&run.scope());
        let payload = Bytes::from(self.payload.render(run));
        let broker = Arc::clone(&self.broker);
        let qos = self.qos;
        run.effects.push(Effect {
            action: "iotTopicPublish",
            call: Box::pin(async move { broker.publish(&topic, payload, qos) }),
        });
    }
}
