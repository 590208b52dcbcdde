//! The seam through which capabilities call user functions (the rules engine's `lambda`
//! action, event sources): defined here, implemented by `fleetcore-functions`, wired by the
//! binary, so no capability depends on the functions crate.

use std::future::Future;
use std::pin::Pin;

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

/// Invokes user functions by name or ARN (with an optional `:qualifier`), synchronously.
pub trait FunctionInvoker: Send + Sync + 'static {
    /// Runs `function` with the JSON `payload` and waits for its result.
    fn invoke<'a>(&'a self, function: &'a str, payload: Vec<u8>) -> InvokeFuture<'a>;
}
