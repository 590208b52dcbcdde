//! `lambda`: invokes a function with the rule's output through the `FunctionInvoker` seam
//! (implemented by the functions capability, wired by the binary). The messages of a batch are
//! invoked concurrently; each waits for its function to finish, so a message counts as
//! delivered only once its function succeeded (at least once, from the ingest log), and a
//! function error, timeout or unknown function fails the message (the errorAction fires).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::FunctionInvoker;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of a lambda action.
pub(super) struct LambdaSpec {
    function_arn: String,
}

impl ActionSpec for LambdaSpec {
    const KIND: &'static str = "lambda";

    fn parse(members: &Members<'_>) -> Result<LambdaSpec, String> {
        Ok(LambdaSpec {
            function_arn: members.required_str("functionArn")?.to_string(),
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let functions = destinations
            .functions
            .clone()
            .ok_or_else(|| "this server runs no functions".to_string())?;
        Ok(Arc::new(Lambda {
            functions,
            function_arn: self.function_arn,
        }))
    }
}

/// The lambda action.
struct Lambda {
    functions: Arc<dyn FunctionInvoker>,
    function_arn: String,
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
        let functions = &self.functions;
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
