//! The seam through which capabilities call user functions (the rules engine's `lambda`
//! action, event sources): defined here, implemented by `fleetcore-functions`, wired by the
//! binary, so no capability depends on the functions crate.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// What a finished synchronous invocation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeOutput {
    /// The function's result (JSON as the handler returned it, or the error document).
    pub payload: Vec<u8>,
    /// `Some("Unhandled")` / `Some("Handled")` when the handler failed (Lambda's
    /// `X-Amz-Function-Error`); the payload then holds the error document.
    pub function_error: Option<String>,
}

/// Why a function could not be invoked at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// No function, version or alias of that name.
    #[error("function not found: {0}")]
    NotFound(String),
    /// The function's concurrency is exhausted or its queue is full.
    #[error("too many requests: {0}")]
    Throttled(String),
    /// The request is malformed (bad name, payload too large).
    #[error("invalid invocation: {0}")]
    Invalid(String),
    /// The service failed (store, runtime could not start).
    #[error("invocation failed: {0}")]
    Service(String),
}

/// The future an invocation returns.
pub type InvokeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<InvokeOutput, InvokeError>> + Send + 'a>>;

/// The future of [`FunctionInvoker::invoke_each`]: one result per event, in order.
pub type InvokeEachFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<InvokeOutput, InvokeError>>> + Send + 'a>>;

/// Invokes user functions by name or ARN (with an optional `:qualifier`), synchronously.
pub trait FunctionInvoker: Send + Sync + 'static {
    /// Runs `function` with the JSON `payload` and waits for its result.
    fn invoke<'a>(&'a self, function: &'a str, payload: Vec<u8>) -> InvokeFuture<'a>;

    /// Runs `function` once per event of `events` (one invocation each, exactly as
    /// [`FunctionInvoker::invoke`] would) and waits for all of them; the results are in the
    /// order of `events`. An implementor may share per-call work across the events (resolving
    /// the function, writing the logs) and run them concurrently; this default invokes them one
    /// after another.
    fn invoke_each<'a>(&'a self, function: &'a str, events: &'a [Bytes]) -> InvokeEachFuture<'a> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                results.push(self.invoke(function, event.to_vec()).await);
            }
            results
        })
    }
}
