//! `republish`: publishes the rule's output to an MQTT topic (a template; `$$` at its start
//! stands for a literal `$`, for reserved topics) through the broker, like any server-originated
//! message, so other rules see it too (as in AWS). QoS 1 republishes return once the message is
//! in the ingest log when a rule wants it.

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_mqtt::broker::{Ingested, Message, Publisher, Router};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_mqtt::topic::valid_topic_name;
use serde_json::Value;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of a republish action.
pub(super) struct RepublishSpec {
    qos: QoS,
    /// `[topic, contentType?, userProperty values...]`.
    templates: Vec<Template>,
    content_type: bool,
    user_property_keys: Vec<String>,
}

impl ActionSpec for RepublishSpec {
    const KIND: &'static str = "republish";

    fn parse(members: &Members<'_>) -> Result<RepublishSpec, String> {
        let qos = match members.get("qos").map(|q| q.as_i64()) {
            None | Some(Some(0)) => QoS::AtMostOnce,
            Some(Some(1)) => QoS::AtLeastOnce,
            Some(_) => return Err("republish.qos must be 0 or 1".into()),
        };
        let mut templates = vec![members.required_template("topic")?];
        let headers = members.get("headers");
        let content_type = match headers
            .and_then(|h| h.get("contentType"))
            .and_then(Value::as_str)
        {
            Some(text) => {
                templates.push(members.compile("headers.contentType", text)?);
                true
            }
            None => false,
        };
        let mut user_property_keys = Vec::new();
        for property in headers
            .and_then(|h| h.get("userProperties"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(key), Some(value)) = (
                property.get("key").and_then(Value::as_str),
                property.get("value").and_then(Value::as_str),
            ) else {
                return Err("republish.headers.userProperties[] needs key and value".into());
            };
            user_property_keys.push(key.to_string());
            templates.push(members.compile("headers.userProperties", value)?);
        }
        Ok(RepublishSpec {
            qos,
            templates,
            content_type,
            user_property_keys,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        Ok(Arc::new(Republish {
            router: Arc::clone(&destinations.router),
            spec: self,
        }))
    }
}

/// The republish action.
struct Republish {
    router: Arc<Router>,
    spec: RepublishSpec,
}

impl Republish {
    fn message(&self, item: &Prepared) -> Result<Message, String> {
        let raw = item.params.first().map_or("", String::as_str);
        let topic = match raw.strip_prefix("$$") {
            Some(rest) => format!("${rest}"),
            None => raw.to_string(),
        };
        if !valid_topic_name(&topic, self.router.config().max_topic_length) {
            return Err(format!(
                "the republish topic {topic:?} is not a valid topic name"
            ));
        }
        let mut properties = PublishProperties::default();
        let mut next = 1;
        if self.spec.content_type {
            properties.content_type = item.params.get(next).cloned().and_then(Utf8::new);
            next += 1;
        }
        for (key, value) in self
            .spec
            .user_property_keys
            .iter()
            .zip(&item.params[next..])
        {
            if let (Some(k), Some(v)) = (Utf8::new(key.clone()), Utf8::new(value.clone())) {
                properties.user_properties.push((k, v));
            }
        }
        Ok(Message {
            topic: Utf8::new(topic).ok_or("the republish topic contains U+0000")?,
            payload: item.body.clone(),
            qos: self.spec.qos,
            retain: false,
            properties,
            expires_at: None,
            origin: None,
        })
    }
}

#[async_trait]
impl Action for Republish {
    fn name(&self) -> &'static str {
        "RepublishAction"
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut last_ticket = None;
        for item in items {
            match self.message(item) {
                Ok(message) => {
                    if let Ingested::Accepted(ticket) = self.router.publish(Arc::new(message)) {
                        last_ticket = Some(ticket);
                    }
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        // A republished message a rule wants is durable before the batch counts as delivered.
        if let (Some(ticket), Some(mut durable)) = (
            last_ticket,
            self.router.ingest_watermark(Publisher::default()),
        ) && durable.wait_for(|w| *w >= ticket).await.is_err()
        {
            return items
                .iter()
                .map(|_| Err("the ingest log stopped before the message was durable".into()))
                .collect();
        }
        outcomes
    }
}
