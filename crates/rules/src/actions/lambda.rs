//! `lambda`: invokes a function with the rule's output through the `FunctionInvoker` seam
//! (implemented by the functions capability, wired by the binary). A call of the action takes up
//! to [`BATCH`] messages and invokes the function once per message (one invocation each, as
//! Lambda does for IoT rules) in one call of the seam, which shares the per-call work (resolving
//! the function, writing the logs) across them; up to [`IN_FLIGHT`] such calls run at once. Each
//! message waits for its function to finish, so it counts as delivered only once its function
//! succeeded (at least once, from the ingest log), and a function error, timeout or unknown
//! function fails that message alone (the errorAction fires for it).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fleetcore_core::{FunctionInvoker, InvokeError, InvokeOutput};

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

/// Most messages of one call of the action (each still its own invocation). What a call costs
/// beyond its invocations (resolving the function, one write of the log frames, one CloudWatch
/// Logs hand-off, one durable append of the records a WebAssembly function put) is shared by
/// this many: 128 rather than 16 took 25-28 % off the server's CPU per message of rule -> wasm
/// -> stream (BENCHMARKS.md, "rule -> wasm -> stream").
const BATCH: usize = 128;

/// Calls of the action running at once: with [`BATCH`], up to 1,024 invocations outstanding
/// (the function's own concurrency makes the rest wait for a slot).
const IN_FLIGHT: usize = 8;

/// What one invocation's result means for its message: `Ok` once the function succeeded.
fn verdict(result: Result<InvokeOutput, InvokeError>) -> Result<(), String> {
    match result {
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

    /// A few messages per call, several calls at once: each message waits for its own
    /// invocation, and a slot is refilled as soon as any call finishes.
    fn pipelining(&self) -> Pipelining {
        Pipelining {
            batch: BATCH,
            in_flight: IN_FLIGHT,
        }
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let events: Vec<Bytes> = items.iter().map(|item| item.body.clone()).collect();
        self.functions
            .invoke_each(&self.function_arn, &events)
            .await
            .into_iter()
            .map(verdict)
            .collect()
    }
}
