//! The durable ingest seam: where the rules engine takes the messages its rules match, and how
//! a QoS 1/2 acknowledgement waits until such a message is on disk (DESIGN §3).
//!
//! The broker hands each authorized message to the [`IngestLog`] (if one is installed). The log
//! answers at once, without blocking: not wanted (no rule matches the topic), or accepted with a
//! ticket. The log may be partitioned; all messages of one publisher go to the same partition,
//! whose tickets grow in the order of acceptance. The log publishes the highest ticket of that
//! partition that is durable on a watch channel ([`IngestLog::durable`]), so a connection holds
//! its PUBACK / PUBREC back until the watermark passes the ticket — many messages share one
//! fsync (group commit) and acknowledgements keep the order of their PUBLISH packets (MQTT §4.6).

use std::sync::Arc;

use tokio::sync::watch;

use super::message::Message;

/// Who published a message, as the ingest log records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Publisher<'a> {
    /// The MQTT client id; `None` for server-originated messages (HTTP publish, republish).
    pub client_id: Option<&'a str>,
    /// The authenticated principal (certificate id, or `anonymous`); `None` for the server.
    pub principal: Option<&'a str>,
}

/// What the ingest log did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// No rule wants the message; nothing to wait for.
    NotWanted,
    /// Accepted: durable once the log's watermark reaches this ticket.
    Accepted(u64),
    /// Not logged: shed under overload (QoS 0 only: an at-most-once message may be shed), or
    /// too large for the log; nothing to wait for.
    Shed,
}

/// The durable log rules read from.
pub trait IngestLog: Send + Sync + 'static {
    /// Takes `message` if some rule wants it. Must not block: it enqueues for a writer that
    /// commits in groups. A QoS 1/2 message that is wanted is always accepted (flow control
    /// bounds them: a client may have at most Receive Maximum of them unacknowledged, and is
    /// disconnected with reason 0x93 when it sends more).
    fn ingest(&self, message: &Arc<Message>, publisher: Publisher<'_>) -> Ingested;

    /// The highest durable ticket of the partition `publisher`'s messages go to; its tickets at
    /// or below it are on disk.
    fn durable(&self, publisher: Publisher<'_>) -> watch::Receiver<u64>;
}
