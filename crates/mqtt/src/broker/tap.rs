//! Service taps: in-process services (device shadows, later the rules engine) that see the
//! messages published on the topics they claim, as well as the subscribers do.
//!
//! A tap is called on the publisher's task after the publish was authorized and before it is
//! routed, so it must not block: it looks at the message (a shared pointer, no copy) and
//! enqueues what it needs. It answers, if at all, with [`super::Router::publish`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::message::Message;
use crate::topic;

/// Most taps a router takes (a handful of in-process services).
pub const MAX_TAPS: usize = 8;

/// [`super::Router::add_tap`] was called more than [`MAX_TAPS`] times.
#[derive(Debug, thiserror::Error)]
#[error("at most {MAX_TAPS} service taps can be registered")]
pub struct TooManyTaps;

/// An in-process service that receives the messages published on its claimed topics.
pub trait ServiceTap: Send + Sync + 'static {
    /// A message was published on a topic matching one of the tap's filters. `message.origin`
    /// is the publisher's client id (`None` for server-originated messages). Must not block.
    fn on_message(&self, message: &Arc<Message>);

    /// A client authenticated as `principal` (a certificate id, or `anonymous`) published
    /// `message`. Services that answer by identity (fleet provisioning) override this; the
    /// default is [`ServiceTap::on_message`]. Must not block.
    fn on_client_message(&self, message: &Arc<Message>, principal: &str) {
        let _ = principal;
        self.on_message(message);
    }
}

/// The registered taps: an append-only list read on every publish without a lock or any
/// shared write (a length and a fixed array of write-once slots), so publishers on different
/// cores never contend for it, and a tap may publish from inside `on_message`.
pub(super) struct Taps {
    slots: [OnceLock<TapEntry>; MAX_TAPS],
    len: AtomicUsize,
    adding: Mutex<()>,
}

impl Taps {
    pub(super) fn new() -> Taps {
        Taps {
            slots: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }

    pub(super) fn add(&self, entry: TapEntry) -> Result<(), TooManyTaps> {
        let _adding = self.adding.lock();
        let n = self.len.load(Ordering::Acquire);
        let slot = self.slots.get(n).ok_or(TooManyTaps)?;
        slot.set(entry).map_err(|_| TooManyTaps)?;
        self.len.store(n + 1, Ordering::Release);
        Ok(())
    }

    /// Hands `message` to every tap whose filters match its topic.
    pub(super) fn offer(&self, message: &Arc<Message>, principal: Option<&str>) {
        let n = self.len.load(Ordering::Acquire);
        for slot in &self.slots[..n] {
            if let Some(entry) = slot.get() {
                entry.offer(message, principal);
            }
        }
    }
}

/// A tap with the topic filters it claims.
pub(super) struct TapEntry {
    filters: Vec<String>,
    tap: Arc<dyn ServiceTap>,
}

impl TapEntry {
    pub(super) fn new(filters: Vec<String>, tap: Arc<dyn ServiceTap>) -> TapEntry {
        TapEntry { filters, tap }
    }

    /// Hands `message` to the tap when one of its filters matches the topic.
    pub(super) fn offer(&self, message: &Arc<Message>, principal: Option<&str>) {
        if self
            .filters
            .iter()
            .any(|f| topic::matches(f, &message.topic))
        {
            match principal {
                Some(principal) => self.tap.on_client_message(message, principal),
                None => self.tap.on_message(message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PublishProperties, QoS, Utf8};
    use std::sync::atomic::AtomicU32;

    struct Count(AtomicU32);

    impl ServiceTap for Count {
        fn on_message(&self, _: &Arc<Message>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn message(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: Utf8::new(topic).expect("topic"),
            payload: bytes::Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        })
    }

    #[test]
    fn taps_see_only_their_topics_and_are_bounded() {
        let taps = Taps::new();
        let counts: Vec<Arc<Count>> = (0..MAX_TAPS)
            .map(|_| Arc::new(Count(AtomicU32::new(0))))
            .collect();
        for (i, c) in counts.iter().enumerate() {
            let filter = if i == 0 {
                "$aws/things/+/shadow/#".to_string()
            } else {
                format!("t{i}/#")
            };
            taps.add(TapEntry::new(
                vec![filter],
                Arc::clone(c) as Arc<dyn ServiceTap>,
            ))
            .expect("room");
        }
        let extra = Arc::new(Count(AtomicU32::new(0)));
        assert!(taps.add(TapEntry::new(vec!["#".into()], extra)).is_err());
        taps.offer(&message("$aws/things/a/shadow/update"), None);
        taps.offer(&message("t1/x"), Some("cert"));
        taps.offer(&message("elsewhere"), None);
        let seen: Vec<u32> = counts.iter().map(|c| c.0.load(Ordering::Relaxed)).collect();
        assert_eq!(seen[..3], [1, 1, 0]);
        assert_eq!(seen.iter().sum::<u32>(), 2);
    }
}
