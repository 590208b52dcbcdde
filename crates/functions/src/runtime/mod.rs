//! Running a function: worker processes speaking the Lambda Runtime API (`process`, served by
//! `runtime_api`) for Python, Node.js and `bootstrap` executables, and WebAssembly modules run
//! in process (`wasm`). Both answer an [`Invocation`] with an [`Outcome`].

pub mod process;
mod runtime_api;
pub mod wasm;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::FunctionsError;

/// Largest synchronous response (Lambda: 6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// One call of a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request id (a UUID), in every log line and header.
    pub request_id: String,
    /// The event (JSON).
    pub payload: Bytes,
    /// The ARN the caller named (with its qualifier).
    pub invoked_arn: Arc<str>,
    /// How long it may run.
    pub timeout: Duration,
    /// `X-Amz-Client-Context`, passed through.
    pub client_context: Option<String>,
    /// What it does when the function's reserved concurrency is all in use.
    pub when_busy: WhenBusy,
}

/// What an invocation does when every slot of its function's reserved concurrency is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// It is refused with `TooManyRequestsException`: the Invoke API, as Lambda answers a
    /// synchronous call over the reservation.
    Refuse,
    /// It waits for a slot: the callers inside the server (rule actions, event source mappings,
    /// the `Event` queue), whose AWS counterparts retry a throttled invocation until it runs.
    Wait,
}

/// How an invocation ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The result, or the error document when `function_error` is set.
    pub payload: Bytes,
    /// `Some("Unhandled")` when the function failed (threw, timed out, exited, ran out of memory).
    pub function_error: Option<&'static str>,
    /// The end of what the function wrote to stdout/stderr during the invocation.
    pub output: Vec<u8>,
    /// How many bytes it wrote in all.
    pub written: u64,
    /// How long it ran.
    pub duration: Duration,
    /// How long starting its worker took, for a cold start.
    pub init: Option<Duration>,
    /// Records a WebAssembly module put (`env.put_record`) in a successful invocation, for the
    /// caller to append to their streams.
    pub records: Vec<OutRecord>,
}

/// A record a WebAssembly module asked to put on a Kinesis stream (`env.put_record`).
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// The stream's name.
    pub stream: Arc<str>,
    /// The partition key (1 to 256 characters).
    pub partition_key: String,
    /// The record's data.
    pub data: Bytes,
}

impl Outcome {
    /// A successful invocation that returned `payload` (no output, no timing yet).
    pub fn result(payload: Bytes) -> Outcome {
        Outcome {
            payload,
            function_error: None,
            output: Vec::new(),
            written: 0,
            duration: Duration::ZERO,
            init: None,
            records: Vec::new(),
        }
    }

    /// A failed invocation whose error document is `{errorType, errorMessage}`.
    pub fn failed(error_type: &str, message: String) -> Outcome {
        Outcome {
            function_error: Some("Unhandled"),
            ..Outcome::result(Bytes::from(
                json!({"errorType": error_type, "errorMessage": message}).to_string(),
            ))
        }
    }
}

/// How many invocations of one function version run at once.
pub struct Concurrency {
    permits: Arc<Semaphore>,
    /// Reserved concurrency: when every permit is taken, refuse instead of waiting.
    strict: bool,
}

impl Concurrency {
    /// At most `limit` at once; with `strict`, one more is refused (`TooManyRequestsException`)
    /// instead of queued, unless it is one that waits ([`WhenBusy::Wait`]).
    pub fn new(limit: usize, strict: bool) -> Concurrency {
        Concurrency {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            strict,
        }
    }

    /// Room for one invocation, held until it ends.
    pub async fn permit(
        &self,
        when_busy: WhenBusy,
    ) -> Result<OwnedSemaphorePermit, FunctionsError> {
        let refused = || {
            FunctionsError::TooManyRequests(
                "Rate Exceeded. (ReservedFunctionConcurrentInvocationLimitExceeded)".into(),
            )
        };
        if self.strict && when_busy == WhenBusy::Refuse {
            Arc::clone(&self.permits)
                .try_acquire_owned()
                .map_err(|_| refused())
        } else {
            Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| refused())
        }
    }
}

/// A function version ready to run.
#[derive(Clone)]
pub enum Runner {
    /// A pool of worker processes.
    Process(Arc<process::Pool>),
    /// A compiled WebAssembly module and its warm instances.
    Wasm(Arc<wasm::WasmFunction>),
}

impl Runner {
    /// Runs one invocation to its end (result, error, timeout or crash).
    pub async fn invoke(&self, invocation: Invocation) -> Result<Outcome, FunctionsError> {
        match self {
            Runner::Process(pool) => pool.invoke(invocation).await,
            Runner::Wasm(function) => {
                let _permit = function.concurrency().permit(invocation.when_busy).await?;
                // Most calls end within the inline fuel, with no hop to another thread; one
                // that needs more continues where blocking does not stall the broker.
                let blocking = |work: Box<dyn FnOnce() -> Outcome + Send>| async move {
                    tokio::task::spawn_blocking(work)
                        .await
                        .map_err(|e| FunctionsError::Io(format!("the wasm invocation failed: {e}")))
                };
                match function.start(&invocation, wasm::INLINE_FUEL) {
                    wasm::Started::Done(outcome) => Ok(outcome),
                    wasm::Started::Paused(paused) => {
                        let function = Arc::clone(function);
                        blocking(Box::new(move || function.finish(paused))).await
                    }
                    wasm::Started::NotStarted => {
                        let function = Arc::clone(function);
                        blocking(Box::new(move || function.invoke(&invocation))).await
                    }
                }
            }
        }
    }

    /// Lets go of the workers or instances idle for longer than `ttl`.
    pub fn reap(&self, ttl: Duration) {
        match self {
            Runner::Process(pool) => pool.reap(ttl),
            Runner::Wasm(function) => function.reap(ttl),
        }
    }
}
