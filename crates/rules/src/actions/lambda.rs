//! `lambda`: invokes a function with the rule's output through the `FunctionInvoker` seam
//! (implemented by the functions capability, wired by the binary). The messages of a batch are
//! invoked concurrently; each waits for its function to finish, so a message counts as
//! delivered only once its function succeeded (at least once, from the ingest log), and a
//! function error, timeout or unknown function fails the message (the errorAction fires).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::FunctionInvoker;
use serde_json::Value;

use super::{Action, Destinations, Prepared, required_str};
use crate::sql::Template;

/// The lambda action.
pub(super) struct Lambda {
    functions: Option<Arc<dyn FunctionInvoker>>,
    function_arn: String,
}

impl Lambda {
    pub(super) fn build(members: &Value, destinations: &Destinations) -> Result<Lambda, String> {
        Ok(Lambda {
            functions: destinations.functions.clone(),
            function_arn: required_str(members, "lambda", "functionArn")?.to_string(),
        })
    }
}

#[async_trait]
impl Action for Lambda {
    fn name(&self) -> &'static str {
        "LambdaAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.function_arn.clone()
    }

    fn templates(&self) -> &[Template] {
        &[]
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let Some(functions) = &self.functions else {
            return items
                .iter()
                .map(|_| Err("this server runs no functions".to_string()))
                .collect();
        };
        let mut running = tokio::task::JoinSet::new();
        for (index, item) in items.iter().enumerate() {
            let functions = Arc::clone(functions);
            let function = self.function_arn.clone();
            let payload = item.body.to_vec();
            running.spawn(async move {
                let outcome = match functions.invoke(&function, payload).await {
                    Ok(output) => match output.function_error {
                        None => Ok(()),
                        Some(kind) => Err(format!(
                            "the function failed ({kind}): {}",
                            String::from_utf8_lossy(
                                &output.payload[..output.payload.len().min(512)]
                            )
                        )),
                    },
                    Err(error) => Err(error.to_string()),
                };
                (index, outcome)
            });
        }
        let mut outcomes: Vec<Result<(), String>> =
            vec![Err("the invocation did not finish".to_string()); items.len()];
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok((index, outcome)) => outcomes[index] = outcome,
                Err(error) => tracing::error!(%error, "a lambda invocation task failed"),
            }
        }
        outcomes
    }
}
