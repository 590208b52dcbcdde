//! Saving retained messages and persistent sessions in the platform's store.
//!
//! Messages are stored as encoded MQTT 5 PUBLISH packets: the codec already carries every
//! property, so there is no second serialization format to keep in step with it.
//!
//! Writes go through [`Persister`], which coalesces them by key and commits them in batches from
//! a background task (one fsync for many changes), so a burst of retained updates on the message
//! path costs a map insert each, not a disk commit each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::message::{Delivery, Message};
use super::session::{SessionState, SubscriptionRecord};
use crate::protocol::{
    self, Packet, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};

/// Table of retained messages, keyed by topic.
pub const RETAINED_TABLE: &str = "mqtt_retained";
/// Table of persistent sessions (settings and subscriptions), keyed by client id.
pub const SESSIONS_TABLE: &str = "mqtt_sessions";

const FORMAT_VERSION: u8 = 1;

/// A stored record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} record")]
pub struct CorruptRecord {
    what: &'static str,
}

fn corrupt(what: &'static str) -> CorruptRecord {
    CorruptRecord { what }
}

/// Converts between monotonic instants (used at run time) and wall-clock milliseconds (stored).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            instant: Instant::now(),
            unix_ms,
        }
    }

    /// Wall-clock milliseconds of `at` (0 stands for "none").
    pub fn unix_ms_of(&self, at: Option<Instant>) -> u64 {
        match at {
            None => 0,
            Some(at) if at >= self.instant => self.unix_ms + (at - self.instant).as_millis() as u64,
            Some(at) => self
                .unix_ms
                .saturating_sub((self.instant - at).as_millis() as u64)
                .max(1),
        }
    }

    /// The instant of stored wall-clock milliseconds (0 stands for "none").
    pub fn instant_of(&self, unix_ms: u64) -> Option<Instant> {
        if unix_ms == 0 {
            return None;
        }
        if unix_ms >= self.unix_ms {
            Some(self.instant + Duration::from_millis(unix_ms - self.unix_ms))
        } else {
            let back = Duration::from_millis(self.unix_ms - unix_ms);
            Some(self.instant.checked_sub(back).unwrap_or(self.instant))
        }
    }
}

fn put_message(buf: &mut BytesMut, message: &Message, clock: &Clock) {
    buf.put_u64(clock.unix_ms_of(message.expires_at));
    let publish = Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id: if message.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: message.properties.clone(),
        payload: message.payload.clone(),
    };
    // Encoded in place behind its length, which is filled in afterwards.
    let at = buf.len();
    buf.put_u32(0);
    publish.encode(ProtocolVersion::V5, buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn get_message(buf: &mut Bytes, clock: &Clock) -> Result<Message, CorruptRecord> {
    if buf.remaining() < 12 {
        return Err(corrupt("message"));
    }
    let expires = buf.get_u64();
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return Err(corrupt("message"));
    }
    let mut packet = BytesMut::from(&buf[..len]);
    buf.advance(len);
    match protocol::decode(&mut packet, ProtocolVersion::V5, usize::MAX) {
        Ok(Some(Packet::Publish(p))) => Ok(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires_at: clock.instant_of(expires),
            origin: None,
        }),
        _ => Err(corrupt("message")),
    }
}

/// Encodes a retained message.
pub fn encode_retained(message: &Message, clock: &Clock) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u8(FORMAT_VERSION);
    put_message(&mut buf, message, clock);
    buf.to_vec()
}

/// Decodes a retained message.
pub fn decode_retained(bytes: &[u8], clock: &Clock) -> Result<Message, CorruptRecord> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 1 || buf.get_u8() != FORMAT_VERSION {
        return Err(corrupt("retained"));
    }
    get_message(&mut buf, clock)
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from_byte(b: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::from_u8(b & 0b11)?,
        no_local: b & 0b100 != 0,
        retain_as_published: b & 0b1000 != 0,
        retain_handling: match (b >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return None,
        },
    })
}

/// A persistent session as stored: settings and subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// Protocol of the last connection.
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval in seconds.
    pub expiry_interval: u32,
    /// Wall-clock ms when the last connection ended (0: it was connected when saved).
    pub disconnected_at_ms: u64,
    /// Subscriptions by full filter.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
}

/// Encodes a session's settings and subscriptions.
pub fn encode_session(state: &SessionState, clock: &Clock) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u8(FORMAT_VERSION);
    buf.put_u8(match state.protocol {
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    });
    buf.put_u32(state.expiry_interval);
    buf.put_u64(clock.unix_ms_of(state.disconnected_at));
    buf.put_u32(state.subscriptions.len() as u32);
    for (filter, record) in &state.subscriptions {
        buf.put_u16(filter.len() as u16);
        buf.put_slice(filter.as_bytes());
        buf.put_u8(options_byte(&record.options));
        buf.put_u32(record.id.unwrap_or(0));
    }
    buf.to_vec()
}

/// Decodes a session's settings and subscriptions.
pub fn decode_session(bytes: &[u8]) -> Result<StoredSession, CorruptRecord> {
    let mut buf = bytes;
    let err = || corrupt("session");
    if buf.remaining() < 18 || buf.get_u8() != FORMAT_VERSION {
        return Err(err());
    }
    let protocol = match buf.get_u8() {
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        _ => return Err(err()),
    };
    let expiry_interval = buf.get_u32();
    let disconnected_at_ms = buf.get_u64();
    let count = buf.get_u32();
    let mut subscriptions = Vec::new();
    for _ in 0..count {
        if buf.remaining() < 2 {
            return Err(err());
        }
        let len = buf.get_u16() as usize;
        if buf.remaining() < len + 5 {
            return Err(err());
        }
        let filter = std::str::from_utf8(&buf[..len])
            .map_err(|_| err())?
            .to_string();
        buf.advance(len);
        let options = options_from_byte(buf.get_u8()).ok_or_else(err)?;
        let id = match buf.get_u32() {
            0 => None,
            id => Some(id),
        };
        subscriptions.push((filter, SubscriptionRecord { options, id }));
    }
    Ok(StoredSession {
        protocol,
        expiry_interval,
        disconnected_at_ms,
        subscriptions,
    })
}

/// Encodes a message queued for a session (what the subscription decided, and the message).
pub fn encode_delivery(d: &Delivery, clock: &Clock) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(
        32 + d.message.topic.len() + d.message.payload.len() + 4 * d.subscription_ids.len(),
    );
    buf.put_u8(FORMAT_VERSION);
    buf.put_u8(d.qos as u8);
    buf.put_u8(u8::from(d.retain));
    buf.put_u16(d.subscription_ids.len() as u16);
    for id in &d.subscription_ids {
        buf.put_u32(*id);
    }
    put_message(&mut buf, &d.message, clock);
    buf.to_vec()
}

/// Decodes what [`encode_delivery`] wrote; the delivery is stored under `seq`.
pub fn decode_delivery(bytes: &[u8], seq: u64, clock: &Clock) -> Result<Delivery, CorruptRecord> {
    let err = || corrupt("queued message");
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 5 || buf.get_u8() != FORMAT_VERSION {
        return Err(err());
    }
    let qos = QoS::from_u8(buf.get_u8()).ok_or_else(err)?;
    let retain = buf.get_u8() != 0;
    let n = buf.get_u16() as usize;
    if buf.remaining() < n * 4 {
        return Err(err());
    }
    let subscription_ids = (0..n).map(|_| buf.get_u32()).collect();
    let message = Arc::new(get_message(&mut buf, clock)?);
    Ok(Delivery {
        message,
        qos,
        retain,
        subscription_ids,
        stored: Some(seq),
    })
}

/// Key of a pending write: table and key.
type PendingKey = (&'static str, Vec<u8>);

/// Writes not yet committed, coalesced by key, and the ticket of the last one.
#[derive(Default)]
struct Pending {
    writes: BTreeMap<PendingKey, Option<Vec<u8>>>,
    ticket: u64,
}

/// How long a failed commit waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Coalescing, group-committing writer in front of the store. Every write gets a ticket; the
/// durable watermark ([`Persister::durable`]) reaches it once the write is committed, so an
/// acknowledgement that promises the write (a persistent session's SUBACK) can wait for it
/// without a commit of its own. A failed commit keeps its writes and is tried again: the
/// watermark never passes a write that is not on disk.
pub struct Persister {
    store: Arc<dyn KvStore>,
    pending: Mutex<Pending>,
    wake: Notify,
    durable: watch::Sender<u64>,
    /// How long the writer gathers writes after the first one before it commits them.
    gather: Duration,
}

impl Persister {
    /// A writer for `store` that commits `gather` after the first write of a batch (zero: at
    /// once); call [`Persister::run`] on a task.
    pub fn new(store: Arc<dyn KvStore>, gather: Duration) -> Arc<Persister> {
        Arc::new(Persister {
            store,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            durable: watch::channel(0).0,
            gather,
        })
    }

    /// The underlying store, for reads at start.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Queues a put (replacing any pending write of the same key); returns its ticket.
    pub fn put(&self, table: &'static str, key: Vec<u8>, value: Vec<u8>) -> u64 {
        self.write((table, key), Some(value))
    }

    /// Queues a delete; returns its ticket.
    pub fn delete(&self, table: &'static str, key: Vec<u8>) -> u64 {
        self.write((table, key), None)
    }

    fn write(&self, key: PendingKey, value: Option<Vec<u8>>) -> u64 {
        let mut pending = self.pending.lock();
        pending.writes.insert(key, value);
        pending.ticket += 1;
        let ticket = pending.ticket;
        drop(pending);
        self.wake.notify_one();
        ticket
    }

    /// The highest ticket that is committed.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Commits everything queued so far, on a blocking thread, and moves the watermark. On
    /// failure the writes go back to the queue (behind newer writes of the same keys).
    async fn commit(&self) -> Result<(), StoreError> {
        let (writes, ticket) = {
            let mut pending = self.pending.lock();
            (std::mem::take(&mut pending.writes), pending.ticket)
        };
        if !writes.is_empty() {
            let mut batch = WriteBatch::new();
            for ((table, key), value) in &writes {
                match value {
                    Some(v) => batch.put(table, key.clone(), v.clone()),
                    None => batch.delete(table, key.clone()),
                }
            }
            let store = Arc::clone(&self.store);
            let committed = match tokio::task::spawn_blocking(move || store.apply(batch)).await {
                Ok(result) => result,
                Err(join) => Err(StoreError::Backend {
                    operation: "commit",
                    message: join.to_string(),
                }),
            };
            if let Err(e) = committed {
                let mut pending = self.pending.lock();
                for (key, value) in writes {
                    pending.writes.entry(key).or_insert(value);
                }
                return Err(e);
            }
        }
        self.durable.send_if_modified(|d| {
            let moved = ticket > *d;
            *d = (*d).max(ticket);
            moved
        });
        Ok(())
    }

    /// Commits everything queued so far (graceful shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit().await
    }

    /// Commits queued writes as they come, until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            if !self.gather.is_zero() {
                tokio::time::sleep(self.gather).await;
            }
            if let Err(e) = self.commit().await {
                tracing::error!(error = %e, "could not save broker state; retrying");
                metrics::counter!("fleetcore_store_errors_total").increment(1);
                tokio::time::sleep(RETRY_AFTER).await;
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PublishProperties, Utf8};

    fn message(topic: &str, payload: &'static [u8]) -> Message {
        Message {
            topic: Utf8::new(topic).expect("topic"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties {
                content_type: Utf8::new("text/plain"),
                user_properties: vec![(Utf8::new("k").expect("k"), Utf8::new("v").expect("v"))],
                ..Default::default()
            },
            expires_at: None,
            origin: None,
        }
    }

    #[test]
    fn retained_round_trips() {
        let clock = Clock::now();
        let mut m = message("a/b", b"hello");
        m.expires_at = Some(clock.instant + Duration::from_secs(30));
        let back = decode_retained(&encode_retained(&m, &clock), &clock).expect("decode");
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.payload, m.payload);
        assert_eq!(back.properties, m.properties);
        assert_eq!(back.expires_at, m.expires_at);
        assert!(decode_retained(b"\x01\x00", &clock).is_err());
    }

    #[test]
    fn session_round_trips() {
        let clock = Clock::now();
        let mut state = SessionState::new(3600, ProtocolVersion::V5);
        state.subscriptions.insert(
            "$share/g/a/+".into(),
            SubscriptionRecord {
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                id: Some(7),
            },
        );
        let back = decode_session(&encode_session(&state, &clock)).expect("decode");
        assert_eq!(back.expiry_interval, 3600);
        assert_eq!(back.subscriptions.len(), 1);
        assert_eq!(back.subscriptions[0].0, "$share/g/a/+");
        assert_eq!(back.subscriptions[0].1, state.subscriptions["$share/g/a/+"]);
        assert!(decode_session(&[1, 9]).is_err());
    }

    #[test]
    fn deliveries_round_trip() {
        let clock = Clock::now();
        let d = Delivery {
            message: Arc::new(message("t/1", b"payload")),
            qos: QoS::ExactlyOnce,
            retain: true,
            subscription_ids: vec![3, 9],
            stored: None,
        };
        let bytes = encode_delivery(&d, &clock);
        let back = decode_delivery(&bytes, 17, &clock).expect("decode");
        assert_eq!(back.message.topic, d.message.topic);
        assert_eq!(back.message.payload, d.message.payload);
        assert_eq!(back.message.properties, d.message.properties);
        assert_eq!((back.qos, back.retain), (QoS::ExactlyOnce, true));
        assert_eq!(back.subscription_ids, [3, 9]);
        assert_eq!(back.stored, Some(17));
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(
                decode_delivery(&bytes[..cut], 17, &clock).is_err(),
                "cut at {cut}"
            );
        }
    }
}
