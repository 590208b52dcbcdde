//! An action's `payload{contentExpression, type}` and, without one, the default payload AWS
//! sends (the detector, the trigger, the state with variables and timers, the event name).

use serde_json::{Value as Json, json};

use super::{Run, Trigger};
use crate::expr::{self, Expr};

/// A parsed `payload` member.
pub(super) struct Payload {
    content: Option<Expr>,
}

impl Payload {
    /// Parses the optional `payload` member of an action.
    pub(super) fn parse(members: &Json) -> Result<Payload, String> {
        let Some(payload) = members.get("payload") else {
            return Ok(Payload { content: None });
        };
        let text = super::required_str(payload, "contentExpression")
            .map_err(|e| format!("payload.{e}"))?;
        match payload.get("type").and_then(Json::as_str) {
            Some("STRING" | "JSON") => {}
            _ => return Err("payload.type must be STRING or JSON".into()),
        }
        let content = expr::parse(text)
            .map_err(|e| format!("payload.contentExpression {text:?} is not valid: {e}"))?;
        Ok(Payload {
            content: Some(content),
        })
    }

    /// The expressions to check at create time.
    pub(super) fn expressions(&self) -> Vec<&Expr> {
        self.content.iter().collect()
    }

    /// The payload's bytes for this run.
    pub(super) fn render(&self, run: &Run<'_>) -> String {
        match &self.content {
            Some(e) => run.eval(e).text(),
            None => match run.default_payload {
                Some(payload) => payload.to_string(),
                None => default_payload(run).to_string(),
            },
        }
    }
}

/// The payload AWS sends when an action has none.
pub fn default_payload(run: &Run<'_>) -> Json {
    let (input_name, message_id, trigger_type) = match run.trigger {
        Trigger::Message {
            input, message_id, ..
        } => (
            Some(input.to_string()),
            Some(message_id.to_string()),
            "Message",
        ),
        Trigger::Timer(_) => (None, None, "Timer"),
        Trigger::Update => (None, None, "Update"),
    };
    let variables: serde_json::Map<String, Json> = run
        .variables
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    let timers: serde_json::Map<String, Json> = run
        .timers
        .iter()
        .map(|(k, t)| (k.clone(), json!(t.due_ms)))
        .collect();
    json!({
        "eventTime": run.now_ms,
        "payload": {
            "actionExecutionId": uuid::Uuid::new_v4().to_string(),
            "detector": {
                "detectorModelName": run.detector.model,
                "keyValue": run.detector.key,
                "detectorModelVersion": run.detector.version.to_string(),
            },
            "eventTriggerDetails": {
                "inputName": input_name,
                "messageId": message_id,
                "triggerType": trigger_type,
            },
            "state": {
                "stateName": run.state,
                "variables": variables,
                "timers": timers,
            },
        },
        "eventName": run.event,
    })
}
