//! `iotEvents{inputName, payload}`: sends a message to an input of this server (another
//! detector model, or this one).

use std::sync::{Arc, OnceLock};

use fleetcore_core::{InputMessage, InputSink};
use serde_json::Value as Json;

use super::payload::Payload;
use super::{DetectorAction, Effect, Run, Targets, required_str};
use crate::expr::Expr;

struct IotEvents {
    inputs: Arc<OnceLock<Arc<dyn InputSink>>>,
    input_name: String,
    payload: Payload,
}

pub(super) fn build(members: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    Ok(Box::new(IotEvents {
        inputs: Arc::clone(&targets.inputs),
        input_name: required_str(members, "inputName")?.to_string(),
        payload: Payload::parse(members)?,
    }))
}

impl DetectorAction for IotEvents {
    fn expressions(&self) -> Vec<&Expr> {
        self.payload.expressions()
    }

    fn run(&self, run: &mut Run<'_>) {
        let message = InputMessage {
            input_name: self.input_name.clone(),
            message_id: uuid::Uuid::new_v4().to_string(),
            payload: self.payload.render(run).into_bytes(),
        };
        let inputs = Arc::clone(&self.inputs);
        run.effects.push(Effect {
            action: "iotEvents",
            call: Box::pin(async move {
                let sink = inputs
                    .get()
                    .ok_or_else(|| "the events engine is not running".to_string())?;
                match sink.put(vec![message]).await.pop() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("the message was not accepted".into()),
                }
            }),
        });
    }
}
