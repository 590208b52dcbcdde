//! The seams of IoT Analytics: how capabilities feed messages to an analytics channel (the
//! rules engine's `iotAnalytics` action) and how pipeline activities read the device registry
//! and shadows (`deviceRegistryEnrich`, `deviceShadowEnrich`). Defined here, implemented by
//! their owners, wired by the binary, so no capability depends on another's crate.

use std::future::Future;
use std::pin::Pin;

/// One message for a channel, as BatchPutMessage takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// The message's id (unique within its batch).
    pub message_id: String,
    /// The JSON object.
    pub payload: Vec<u8>,
}

/// Why a channel did not accept a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No channel of that name.
    #[error("channel not found: {0}")]
    NotFound(String),
    /// The payload is not a JSON object with valid attribute names.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The channel's storage failed.
    #[error("channel storage failed: {0}")]
    Storage(String),
}

/// The future a put returns: one outcome per message, in order.
pub type ChannelFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<(), ChannelError>>> + Send + 'a>>;

/// Accepts messages for analytics channels; a message is accepted once it is durable.
pub trait ChannelSink: Send + Sync + 'static {
    /// Stores `messages` in channel `channel`.
    fn put<'a>(&'a self, channel: &'a str, messages: Vec<ChannelMessage>) -> ChannelFuture<'a>;
}

/// Reads things and shadows for enrichment (JSON documents, as the APIs answer them).
pub trait DeviceDirectory: Send + Sync + 'static {
    /// The thing as DescribeThing answers it, or `None` if there is no such thing.
    fn thing(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
    /// The thing's classic shadow as GetThingShadow answers it, or `None`.
    fn shadow(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
}
