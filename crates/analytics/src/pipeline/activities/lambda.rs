//! `lambda`: sends the messages, `batchSize` at a time, to a function as a JSON array and
//! takes the array it returns as the new messages (through core's FunctionInvoker seam).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::FunctionInvoker;
use serde_json::Value;

use crate::columns::Message;
use crate::pipeline::{Activity, Services, required_str};

struct Lambda {
    functions: Arc<dyn FunctionInvoker>,
    function: String,
    batch_size: usize,
}

/// Builds it from `{name, lambdaName, batchSize, next}`.
pub(crate) fn build(members: &Value, services: &Services) -> Result<Box<dyn Activity>, String> {
    let functions = services
        .functions
        .clone()
        .ok_or("this server runs no functions")?;
    let batch_size = members
        .get("batchSize")
        .and_then(Value::as_u64)
        .filter(|n| (1..=1000).contains(n))
        .ok_or("lambda needs `batchSize` from 1 to 1000")?;
    Ok(Box::new(Lambda {
        functions,
        function: required_str(members, "lambdaName")?.to_string(),
        batch_size: batch_size as usize,
    }))
}

#[async_trait]
impl Activity for Lambda {
    async fn apply(&self, messages: Vec<Message>) -> Result<Vec<Message>, String> {
        let mut out = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(self.batch_size) {
            let payload = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
            let result = self
                .functions
                .invoke(&self.function, payload)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(kind) = result.function_error {
                return Err(format!(
                    "function {} failed ({kind}): {}",
                    self.function,
                    String::from_utf8_lossy(&result.payload)
                ));
            }
            let returned: Vec<Value> = serde_json::from_slice(&result.payload).map_err(|e| {
                format!(
                    "function {} must return a JSON array of messages: {e}",
                    self.function
                )
            })?;
            for value in returned {
                match value {
                    Value::Object(m) => out.push(m),
                    _ => {
                        return Err(format!(
                            "function {} returned a message that is not an object",
                            self.function
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}
