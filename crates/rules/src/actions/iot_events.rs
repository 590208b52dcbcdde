//! `iotEvents`: sends the rule's output to an IoT Events input through core's `InputSink`
//! seam (implemented by the events capability, wired by the binary). `messageId` is a
//! substitution template (the engine makes a new id when absent); in `batchMode` the output must be a JSON
//! array and each element is one message. A message counts as delivered once the engine
//! accepted it; an unknown input or a payload that is not a JSON object fails it (the
//! errorAction fires).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{InputMessage, InputSink};
use serde_json::Value;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of an iotEvents action.
pub(super) struct IotEventsSpec {
    input_name: String,
    batch_mode: bool,
    templates: Vec<Template>,
}

impl ActionSpec for IotEventsSpec {
    const KIND: &'static str = "iotEvents";

    fn parse(members: &Members<'_>) -> Result<IotEventsSpec, String> {
        let input_name = members.required_str("inputName")?.to_string();
        members.required_str("roleArn")?;
        Ok(IotEventsSpec {
            input_name,
            batch_mode: members.bool("batchMode", false)?,
            templates: members.template("messageId")?.into_iter().collect(),
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let inputs = destinations
            .events
            .clone()
            .ok_or_else(|| "this server runs no IoT Events inputs".to_string())?;
        Ok(Arc::new(IotEvents { inputs, spec: self }))
    }
}

/// The iotEvents action.
struct IotEvents {
    inputs: Arc<dyn InputSink>,
    spec: IotEventsSpec,
}

impl IotEvents {
    /// The messages of one rule output.
    fn messages(&self, item: &Prepared) -> Result<Vec<InputMessage>, String> {
        // An empty id asks the events engine for a new one.
        let message_id = |n: usize| match item.params.first() {
            Some(id) if !id.is_empty() && n == 0 => id.clone(),
            Some(id) if !id.is_empty() => format!("{id}-{n}"),
            _ => String::new(),
        };
        if !self.spec.batch_mode {
            return Ok(vec![InputMessage {
                input_name: self.spec.input_name.clone(),
                message_id: message_id(0),
                payload: item.body.to_vec(),
            }]);
        }
        match serde_json::from_slice::<Value>(&item.body) {
            Ok(Value::Array(elements)) if !elements.is_empty() && elements.len() <= 10 => {
                Ok(elements
                    .iter()
                    .enumerate()
                    .map(|(n, e)| InputMessage {
                        input_name: self.spec.input_name.clone(),
                        message_id: message_id(n),
                        payload: e.to_string().into_bytes(),
                    })
                    .collect())
            }
            _ => {
                Err("batchMode needs the rule output to be a JSON array of 1 to 10 messages".into())
            }
        }
    }
}

#[async_trait]
impl Action for IotEvents {
    fn name(&self) -> &'static str {
        "IotEventsAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.spec.input_name.clone()
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match self.messages(item) {
                Ok(messages) => self
                    .inputs
                    .put(messages)
                    .await
                    .into_iter()
                    .find_map(Result::err)
                    .map_or(Ok(()), |e| Err(e.to_string())),
                Err(e) => Err(e),
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
