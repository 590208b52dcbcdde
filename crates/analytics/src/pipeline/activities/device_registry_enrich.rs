//! `deviceRegistryEnrich`: adds the registry's description of the thing named by an attribute
//! (a message whose thing does not exist passes unchanged).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::DeviceDirectory;
use serde_json::Value;

use crate::columns::Message;
use crate::pipeline::{Activity, Services, required_str};

/// What an enrich activity reads: the thing, or its shadow.
#[derive(Clone, Copy)]
pub(crate) enum Source {
    /// DescribeThing's answer.
    Registry,
    /// The classic shadow document.
    Shadow,
}

/// An enrich activity of either source.
pub(crate) struct Enrich {
    devices: Arc<dyn DeviceDirectory>,
    source: Source,
    attribute: String,
    thing_name: String,
}

impl Enrich {
    /// Builds one from `{name, attribute, thingName, roleArn, next}`.
    pub(crate) fn build(
        members: &Value,
        services: &Services,
        source: Source,
    ) -> Result<Box<dyn Activity>, String> {
        let devices = services
            .devices
            .clone()
            .ok_or("this server has no device registry to enrich from")?;
        Ok(Box::new(Enrich {
            devices,
            source,
            attribute: required_str(members, "attribute")?.to_string(),
            thing_name: required_str(members, "thingName")?.to_string(),
        }))
    }
}

/// Builds the registry enrichment.
pub(crate) fn build(members: &Value, services: &Services) -> Result<Box<dyn Activity>, String> {
    Enrich::build(members, services, Source::Registry)
}

#[async_trait]
impl Activity for Enrich {
    async fn apply(&self, mut messages: Vec<Message>) -> Result<Vec<Message>, String> {
        for message in &mut messages {
            let Some(thing) = message.get(&self.thing_name).and_then(Value::as_str) else {
                continue;
            };
            let document = match self.source {
                Source::Registry => self.devices.thing(thing)?,
                Source::Shadow => self.devices.shadow(thing)?,
            };
            if let Some(document) = document
                .as_deref()
                .and_then(|d| serde_json::from_slice::<Value>(d).ok())
            {
                message.insert(self.attribute.clone(), document);
            }
        }
        Ok(messages)
    }
}
