//! The durable ingest log (DESIGN §3): every message some enabled rule's topic filter matches is
//! appended to the log before its QoS 1/2 acknowledgement goes out; the rules runtime reads each
//! partition once and hands every matching rule the decoded message.
//!
//! The log has several partitions ([`IngestPartition`]), each a one-shard stream in a stream
//! store of its own: one store commits its shards on one writer thread, one after the other, so
//! only separate stores let group commits (fsyncs) run in parallel. A message goes to the
//! partition of its publisher (a hash of the client id; server-originated messages go to
//! partition 0), so one publisher's messages keep their order. The broker's publisher task calls
//! [`IngestWriter::ingest`]: it encodes the message and enqueues it with a ticket of its
//! partition, without blocking. Each partition's writer task appends what has queued up in one
//! `put_records` (one fsync for the lot), then raises that partition's durable watermark;
//! connections release the acknowledgements up to it.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetcore_mqtt::broker::{IngestLog, Ingested, Message, Publisher};
use fleetcore_mqtt::protocol::QoS;
use fleetcore_stream::{
    MAX_PUT_BYTES, MAX_PUT_RECORDS, MAX_RECORD_BYTES, NewRecord, Position, SequenceNumber, ShardId,
    StartingPosition, Stream, StreamError, StreamMode, StreamSpec,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::ingest_tail::IngestTail;

/// Name of the ingest stream inside its own stream store.
pub const INGEST_STREAM: &str = "ingest";

/// Most records the writer appends in one go.
const WRITE_BATCH: usize = 2048;

/// One message as the ingest log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecord<'a> {
    /// The topic it was published to.
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    /// The publisher's client id (`None`: published by the server or over HTTP).
    #[serde(borrow)]
    pub client_id: Option<Cow<'a, str>>,
    /// The publisher's principal.
    #[serde(borrow)]
    pub principal: Option<Cow<'a, str>>,
    /// QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// The payload.
    #[serde(borrow, serialize_with = "as_bytes")]
    pub payload: Cow<'a, [u8]>,
    /// MQTT 5 user properties.
    #[serde(borrow)]
    pub user_properties: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// MQTT 5 Content Type.
    #[serde(borrow)]
    pub content_type: Option<Cow<'a, str>>,
    /// MQTT 5 Payload Format Indicator (0: unspecified bytes, 1: UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// MQTT 5 Response Topic.
    #[serde(borrow)]
    pub response_topic: Option<Cow<'a, str>>,
    /// MQTT 5 Correlation Data.
    #[serde(borrow, serialize_with = "option_as_bytes")]
    pub correlation_data: Option<Cow<'a, [u8]>>,
}

// Bytes as one block, not as a sequence of u8 values one by one (serde's default for `[u8]`,
// which showed in profiles of the message path). postcard writes both the same way (a length,
// then the bytes), so records written before read back unchanged; reading borrows them either way.
fn as_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

fn option_as_bytes<S: serde::Serializer>(
    bytes: &Option<Cow<'_, [u8]>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => s.serialize_some(&serde_bytes_ref(bytes)),
        None => s.serialize_none(),
    }
}

/// A byte slice that serializes as bytes.
fn serde_bytes_ref(bytes: &[u8]) -> impl Serialize + '_ {
    struct Block<'b>(&'b [u8]);
    impl Serialize for Block<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    Block(bytes)
}

impl<'a> IngestRecord<'a> {
    /// Reads a record back from the bytes [`IngestRecord::encode`] wrote.
    pub fn decode(bytes: &'a [u8]) -> Result<IngestRecord<'a>, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// The stored form, in one allocation of about its size.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let text = |t: &Option<Cow<'_, str>>| t.as_deref().map_or(0, str::len);
        let size = 32
            + self.topic.len()
            + self.payload.len()
            + text(&self.client_id)
            + text(&self.principal)
            + text(&self.content_type)
            + text(&self.response_topic)
            + self.correlation_data.as_deref().map_or(0, <[u8]>::len)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        postcard::to_io(self, Vec::with_capacity(size))
    }
}

/// Limits of the ingest writer.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Encoded bytes that may wait for the writer before QoS 0 messages are shed. QoS 1/2
    /// messages are never shed: MQTT flow control bounds them (a connection stops reading while
    /// its acknowledgements wait).
    pub queue_bytes: usize,
    /// Retention of the ingest stream, in hours.
    pub retention_hours: u32,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            queue_bytes: 64 << 20,
            retention_hours: 24,
        }
    }
}

struct Queued {
    ticket: u64,
    data: Bytes,
}

/// Tells the ingest log which topics some rule wants (the rules runtime's [`RuleIndex`]).
///
/// [`RuleIndex`]: crate::runtime::RuleIndex
pub trait IngestFilter: Send + Sync + 'static {
    /// True if some enabled rule's topic filter matches `topic`.
    fn wants(&self, topic: &str) -> bool;
}

/// One partition of the ingest log: the one-shard stream [`INGEST_STREAM`] in a store of its own.
pub struct IngestPartition {
    /// The partition's stream store.
    pub stream: Arc<dyn Stream>,
    /// The one shard of its ingest stream.
    pub shard: ShardId,
    /// Where the next appended record will be (at or after).
    tail: Mutex<Position>,
    /// The newest durable records, for the partition's reader.
    pub recent: IngestTail,
}

impl IngestPartition {
    /// Creates the ingest stream in `stream` if it is missing.
    pub async fn open(
        stream: Arc<dyn Stream>,
        retention_hours: u32,
    ) -> Result<IngestPartition, StreamError> {
        ensure_stream(stream.as_ref(), retention_hours).await?;
        let info = stream.describe_stream(INGEST_STREAM).await?;
        let shard = info
            .shards
            .first()
            .map(|s| s.id)
            .ok_or_else(|| StreamError::Storage("the ingest stream has no shard".into()))?;
        let tail = stream
            .resolve(INGEST_STREAM, shard, StartingPosition::Latest)
            .await?;
        Ok(IngestPartition {
            stream,
            shard,
            tail: Mutex::new(tail),
            recent: IngestTail::new(tail),
        })
    }

    /// Where the next record appended to this partition will be: a rule created now sees the
    /// records at or after it.
    pub fn tail(&self) -> Position {
        *self.tail.lock()
    }
}

/// The broker-facing side of one partition.
struct PartitionWriter {
    /// Hands out tickets in queue order (ticket and enqueue under one lock).
    next_ticket: Mutex<(u64, mpsc::UnboundedSender<Queued>)>,
    durable: watch::Receiver<u64>,
}

/// The broker-facing side of the ingest log.
pub struct IngestWriter {
    filter: Arc<dyn IngestFilter>,
    partitions: Vec<PartitionWriter>,
    queued_bytes: Arc<AtomicUsize>,
    queue_limit: usize,
}

impl IngestWriter {
    /// Starts one writer task per partition; the log takes the messages `filter` wants.
    pub fn start(
        partitions: &[Arc<IngestPartition>],
        filter: Arc<dyn IngestFilter>,
        config: IngestConfig,
    ) -> IngestWriter {
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let partitions = partitions
            .iter()
            .map(|partition| {
                let (sender, receiver) = mpsc::unbounded_channel();
                let (durable_tx, durable) = watch::channel(0);
                tokio::spawn(write_loop(
                    Arc::clone(partition),
                    receiver,
                    durable_tx,
                    Arc::clone(&queued_bytes),
                ));
                PartitionWriter {
                    next_ticket: Mutex::new((0, sender)),
                    durable,
                }
            })
            .collect();
        IngestWriter {
            filter,
            partitions,
            queued_bytes,
            queue_limit: config.queue_bytes,
        }
    }

    /// The partition `publisher`'s messages go to.
    fn partition_of(&self, publisher: Publisher<'_>) -> Option<&PartitionWriter> {
        let index = match publisher.client_id {
            None => 0,
            Some(id) => {
                // A fixed-key hash: the same client lands on the same partition every time.
                let hash = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
                    .hash_one(id);
                (hash % self.partitions.len().max(1) as u64) as usize
            }
        };
        self.partitions.get(index)
    }
}

impl IngestLog for IngestWriter {
    fn ingest(&self, message: &Arc<Message>, publisher: Publisher<'_>) -> Ingested {
        if !self.filter.wants(&message.topic) {
            return Ingested::NotWanted;
        }
        let Some(partition) = self.partition_of(publisher) else {
            return Ingested::NotWanted;
        };
        let qos = message.qos as u8;
        if message.qos == QoS::AtMostOnce
            && self.queued_bytes.load(Ordering::Relaxed) >= self.queue_limit
        {
            metrics::counter!("fleetcore_ingest_shed_total").increment(1);
            return Ingested::Shed;
        }
        let record = IngestRecord {
            topic: Cow::Borrowed(&message.topic),
            client_id: publisher.client_id.map(Cow::Borrowed),
            principal: publisher.principal.map(Cow::Borrowed),
            qos,
            payload: Cow::Borrowed(&message.payload),
            user_properties: message
                .properties
                .user_properties
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            content_type: message
                .properties
                .content_type
                .as_ref()
                .map(|t| Cow::Borrowed(t.as_str())),
            payload_format_indicator: message.properties.payload_format_indicator,
            response_topic: message
                .properties
                .response_topic
                .as_ref()
                .map(|t| Cow::Borrowed(t.as_str())),
            correlation_data: message
                .properties
                .correlation_data
                .as_deref()
                .map(Cow::Borrowed),
        };
        let data = match record.encode() {
            Ok(data) if data.len() <= MAX_RECORD_BYTES => Bytes::from(data),
            Ok(data) => {
                // The log's records hold at most 1 MiB; such a message reaches subscribers but
                // no rule (AWS IoT refuses messages over 128 KiB outright).
                tracing::warn!(bytes = data.len(), topic = %message.topic, "message too large for the ingest log; rules do not see it");
                metrics::counter!("fleetcore_ingest_too_large_total").increment(1);
                return Ingested::Shed;
            }
            Err(error) => {
                tracing::error!(%error, topic = %message.topic, "ingest record not encodable");
                return Ingested::Shed;
            }
        };
        self.queued_bytes.fetch_add(data.len(), Ordering::Relaxed);
        let mut next = partition.next_ticket.lock();
        next.0 += 1;
        let ticket = next.0;
        if next.1.send(Queued { ticket, data }).is_err() {
            // The writer is gone (shutdown): the acknowledgement is never released.
            tracing::warn!(topic = %message.topic, "ingest writer stopped; message not logged");
        }
        Ingested::Accepted(ticket)
    }

    fn durable(&self, publisher: Publisher<'_>) -> watch::Receiver<u64> {
        match self.partition_of(publisher) {
            Some(partition) => partition.durable.clone(),
            // No partition: nothing is ever accepted, so nothing waits on this.
            None => watch::channel(0).1,
        }
    }
}

async fn ensure_stream(streams: &dyn Stream, retention_hours: u32) -> Result<(), StreamError> {
    match streams.describe_stream(INGEST_STREAM).await {
        Ok(_) => Ok(()),
        Err(StreamError::NotFound(_)) => streams
            .create_stream(StreamSpec {
                name: INGEST_STREAM.to_owned(),
                mode: StreamMode::Provisioned,
                shard_count: 1,
                retention_hours,
            })
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    }
}

/// Appends what has queued for `partition`, one batch at a time; raises the watermark after
/// each. A failed append is retried with backoff, never skipped: a ticket is only released once
/// it is durable.
async fn write_loop(
    partition: Arc<IngestPartition>,
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    durable: watch::Sender<u64>,
    queued_bytes: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut data = Vec::with_capacity(WRITE_BATCH);
    while receiver.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let last_ticket = batch.last().map_or(0, |q: &Queued| q.ticket);
        let count = batch.len() as u64;
        data.extend(batch.drain(..).map(|q| q.data));
        let bytes: usize = data.iter().map(Bytes::len).sum();
        // A put takes at most MAX_PUT_RECORDS records and MAX_PUT_BYTES bytes: larger batches
        // go in several puts (each durable before the next; the watermark moves after all).
        let mut rest = &data[..];
        while !rest.is_empty() {
            let mut take = 0;
            let mut size = 0;
            for record in rest {
                let len = record.len() + INGEST_STREAM.len();
                if take == MAX_PUT_RECORDS || (take > 0 && size + len > MAX_PUT_BYTES) {
                    break;
                }
                take += 1;
                size += len;
            }
            let (put, after) = rest.split_at(take);
            let appended = append(partition.stream.as_ref(), put).await;
            if let Some((last, _)) = appended.last() {
                *partition.tail.lock() = Position::after(*last);
            }
            partition.recent.push(appended);
            rest = after;
        }
        data.clear();
        queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        metrics::counter!("fleetcore_ingest_records_total").increment(count);
        durable.send_replace(last_ticket);
    }
}

/// Appends one put's worth of records; a failed append is retried with backoff, never skipped.
/// Returns each record with its sequence number, in log order.
async fn append(streams: &dyn Stream, data: &[Bytes]) -> Vec<(SequenceNumber, Bytes)> {
    // Every record goes to the one shard (explicit hash key 0); the partition key is only the
    // stream's required field. Built per attempt: a record is a refcount of its bytes.
    let records = |data: &mut dyn Iterator<Item = &Bytes>| -> Vec<NewRecord> {
        data.map(|d| NewRecord {
            partition_key: INGEST_STREAM.to_owned(),
            explicit_hash_key: Some(0),
            data: d.clone(),
        })
        .collect()
    };
    let mut pending: Vec<usize> = (0..data.len()).collect();
    let mut backoff = Duration::from_millis(10);
    let mut appended = Vec::with_capacity(data.len());
    loop {
        let attempt = if pending.len() == data.len() {
            records(&mut data.iter())
        } else {
            records(&mut pending.iter().map(|&i| &data[i]))
        };
        match streams.put_records(INGEST_STREAM, attempt).await {
            Ok(outcomes) => {
                let mut failed = Vec::new();
                for (k, i) in pending.into_iter().enumerate() {
                    match outcomes.get(k) {
                        Some(Ok(done)) => appended.push((done.sequence, data[i].clone())),
                        // Failed, or not answered for: again.
                        _ => failed.push(i),
                    }
                }
                pending = failed;
                if pending.is_empty() {
                    // A retried record is numbered after the ones that went in before it.
                    appended.sort_unstable_by_key(|(sequence, _)| *sequence);
                    return appended;
                }
                tracing::error!(
                    failed = pending.len(),
                    "ingest append partly failed; retrying"
                );
            }
            Err(error) => tracing::error!(%error, "ingest append failed; retrying"),
        }
        metrics::counter!("fleetcore_ingest_append_failures_total").increment(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record as serde wrote it before bytes were written as one block.
    #[derive(Serialize)]
    struct ByElement<'a> {
        topic: &'a str,
        client_id: Option<&'a str>,
        principal: Option<&'a str>,
        qos: u8,
        payload: &'a [u8],
        user_properties: Vec<(&'a str, &'a str)>,
        content_type: Option<&'a str>,
        payload_format_indicator: Option<u8>,
        response_topic: Option<&'a str>,
        correlation_data: Option<&'a [u8]>,
    }

    #[test]
    fn records_read_back_and_keep_the_format_of_the_log() {
        let payload: Vec<u8> = (0..=255).collect();
        let record = IngestRecord {
            topic: Cow::Borrowed("t/1"),
            client_id: Some(Cow::Borrowed("c")),
            principal: None,
            qos: 1,
            payload: Cow::Borrowed(&payload),
            user_properties: vec![(Cow::Borrowed("k"), Cow::Borrowed("v"))],
            content_type: None,
            payload_format_indicator: Some(0),
            response_topic: None,
            correlation_data: Some(Cow::Borrowed(&[9, 8, 7])),
        };
        let encoded = record.encode().expect("encodes");
        let before = postcard::to_stdvec(&ByElement {
            topic: "t/1",
            client_id: Some("c"),
            principal: None,
            qos: 1,
            payload: &payload,
            user_properties: vec![("k", "v")],
            content_type: None,
            payload_format_indicator: Some(0),
            response_topic: None,
            correlation_data: Some(&[9, 8, 7]),
        })
        .expect("encodes");
        assert_eq!(encoded, before, "records already in a log still decode");
        let decoded = IngestRecord::decode(&encoded).expect("decodes");
        assert_eq!(decoded, record);
        assert!(
            matches!(decoded.payload, Cow::Borrowed(_)),
            "no copy on read"
        );
    }
}
