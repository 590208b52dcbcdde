//! `lambda`: invokes a function with the rule's output through the `FunctionInvoker` seam
//! (implemented by the functions capability, wired by the binary). Up to [`IN_FLIGHT`] messages
//! are invoked at once, each as its own call of the lane's window; each waits for its function to finish, so a message counts as
//! delivered only once its function succeeded (at least once, from the ingest log), and a
//! function error, timeout or unknown function fails the message (the errorAction fires).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::FunctionInvoker;
use futures_util::future::join_all;

use super::{Action, ActionSpec, Destinations, Members, Pipelining, Prepared};
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

/// Invocations one lambda action has running at once (the function's own concurrency limit
/// throttles beyond it, which fails and retries the message).
const IN_FLIGHT: usize = 64;

impl Lambda {
    /// Invokes the function with one message; `Ok` once it succeeded.
    async fn invoke(&self, item: &Prepared) -> Result<(), String> {
        match self
            .functions
            .invoke(&self.function_arn, item.body.to_vec())
            .await
        {
            Ok(output) => match output.function_error {
                None => Ok(()),
                Some(kind) => Err(format!(
                    "the function failed ({kind}): {}",
                    String::from_utf8_lossy(&output.payload[..output.payload.len().min(512)])
                )),
            },
            Err(error) => Err(error.to_string()),
        }
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

    /// One message per call, many calls at once: each waits for its function, and a slot is
    /// refilled as soon as any finishes.
    fn pipelining(&self) -> Pipelining {
        Pipelining {
            batch: 1,
            in_flight: IN_FLIGHT,
        }
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        join_all(items.iter().map(|item| self.invoke(item))).await
    }
}
