//! The seam through which capabilities feed messages to IoT Events inputs (the rules engine's
//! `iotEvents` action, detector actions of another model): defined here, implemented by
//! `fleetcore-events`, wired by the binary, so no capability depends on the events crate.

use std::future::Future;
use std::pin::Pin;

/// One message for an input, as BatchPutMessage takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMessage {
    /// The input's name.
    pub input_name: String,
    /// The message's id (unique per input; a new one is made when the sender has none).
    pub message_id: String,
    /// The JSON body.
    pub payload: Vec<u8>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// No input of that name.
    #[error("input not found: {0}")]
    NotFound(String),
    /// The payload is not a JSON object, or too large.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The engine is stopping.
    #[error("events service unavailable: {0}")]
    Unavailable(String),
}

/// The future a put returns: one outcome per message, in order.
pub type InputFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), InputError>>> + Send + 'a>>;

/// Accepts messages for IoT Events inputs; they are evaluated by every detector model that
/// reads the input.
pub trait InputSink: Send + Sync + 'static {
    /// Accepts `messages` (waits while the engine's queue is full).
    fn put(&self, messages: Vec<InputMessage>) -> InputFuture<'_>;
}
