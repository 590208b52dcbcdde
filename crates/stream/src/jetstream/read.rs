//! Reads of a shard through ephemeral JetStream pull consumers (no acks, in memory). A read
//! that continues where the previous one stopped reuses that read's consumer, so a reader
//! tailing a shard costs one fetch per GetRecords, not a consumer creation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures_util::StreamExt;

use super::{js_stream, record, sequence, storage};
use crate::{Position, ReadBatch, Record, ShardId, StreamError};

/// Most bytes one read returns (Kinesis: 10 MiB per GetRecords).
const MAX_READ_BYTES: usize = 10 << 20;

/// Idle consumers kept for continuing reads.
const MAX_IDLE: usize = 256;

/// Seconds an unused consumer lives on the server.
const CONSUMER_IDLE: Duration = Duration::from_secs(30);

type Consumer = jetstream::consumer::Consumer<pull::Config>;

/// Consumers waiting for the read that continues where they stopped, by
/// (epoch, shard, next JetStream sequence).
pub(super) struct Readers {
    js: jetstream::Context,
    idle: Mutex<HashMap<(u64, u32, u64), Consumer>>,
}

impl Readers {
    pub fn new(js: jetstream::Context) -> Readers {
        Readers {
            js,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: (u64, u32, u64)) -> Option<Consumer> {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
    }

    fn park(&self, key: (u64, u32, u64), consumer: Consumer) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE
            && let Some(old) = idle.keys().next().copied()
        {
            // The server drops it after CONSUMER_IDLE.
            idle.remove(&old);
        }
        idle.insert(key, consumer);
    }

    /// Drops the parked consumers of a deleted stream.
    pub fn forget_epoch(&self, epoch: u64) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| key.0 != epoch);
    }

    /// Reads up to `limit` records of `shard` from `from`; `closed_at` is the shard's last
    /// JetStream sequence once it is closed.
    pub async fn read(
        &self,
        epoch: u64,
        shard: ShardId,
        closed_at: Option<u64>,
        from: Position,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        let start = sequence::start_of(epoch, shard, from);
        let past_end = closed_at.is_some_and(|last| start > last);
        if start == u64::MAX || past_end {
            return Ok(ReadBatch {
                records: Vec::new(),
                next: from,
                end_of_shard: closed_at.is_some(),
                millis_behind_latest: 0,
            });
        }
        let mut limit = limit.max(1);
        if let Some(last) = closed_at {
            limit = limit.min(usize::try_from(last - start + 1).unwrap_or(usize::MAX));
        }
        let name = js_stream(epoch, shard.0);
        let key = (epoch, shard.0, start);
        let (consumer, messages) = match self.take(key) {
            Some(consumer) => match fetch(&consumer, limit).await {
                Ok(messages) => (consumer, messages),
                // It may have been dropped by the server for being idle: start afresh.
                Err(_) => self.fresh(&name, start, limit).await?,
            },
            None => self.fresh(&name, start, limit).await?,
        };
        let mut records = Vec::with_capacity(messages.len());
        let mut next = start;
        let mut pending = 0;
        for message in messages {
            let Ok(info) = message.info() else { continue };
            let js_seq = info.stream_sequence;
            pending = info.pending;
            next = js_seq + 1;
            let Some((partition_key, data)) = record::decode(&message.payload) else {
                tracing::warn!(stream = %name, sequence = js_seq, "skipping a message that is not a fleetcore record");
                continue;
            };
            records.push(Record {
                sequence: sequence::encode(epoch, shard, js_seq),
                arrival: SystemTime::from(info.published),
                partition_key,
                data,
            });
        }
        self.park((epoch, shard.0, next), consumer);
        let millis_behind_latest = match records.last() {
            Some(last) if pending > 0 => {
                let latest = last_timestamp(&self.js, &name).await?;
                latest
                    .duration_since(last.arrival)
                    .map_or(0, |d| d.as_millis() as u64)
            }
            _ => 0,
        };
        Ok(ReadBatch {
            records,
            next: Position::at(sequence::encode(epoch, shard, next)),
            end_of_shard: closed_at.is_some_and(|last| next > last),
            millis_behind_latest,
        })
    }

    async fn fresh(
        &self,
        name: &str,
        start: u64,
        limit: usize,
    ) -> Result<(Consumer, Vec<jetstream::Message>), StreamError> {
        let consumer = create_consumer(
            &self.js,
            name,
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
        )
        .await?;
        let messages = fetch(&consumer, limit).await?;
        Ok((consumer, messages))
    }
}

async fn create_consumer(
    js: &jetstream::Context,
    name: &str,
    deliver_policy: DeliverPolicy,
) -> Result<Consumer, StreamError> {
    js.create_consumer_on_stream(
        pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            memory_storage: true,
            ..Default::default()
        },
        name,
    )
    .await
    .map_err(|e| StreamError::Storage(format!("reading {name}: {e}")))
}

/// What is there now, up to `limit` records and [`MAX_READ_BYTES`]; never waits for more.
async fn fetch(consumer: &Consumer, limit: usize) -> Result<Vec<jetstream::Message>, StreamError> {
    let mut batch = consumer
        .fetch()
        .max_messages(limit)
        .max_bytes(MAX_READ_BYTES)
        .messages()
        .await
        .map_err(storage)?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            // The server ends a batch that hit its byte limit with a status.
            Err(_) if !messages.is_empty() => break,
            Err(e) => return Err(storage(e)),
        }
    }
    Ok(messages)
}

/// The JetStream sequence of the newest message of stream `name` (0 if none ever).
pub(super) async fn last_sequence(js: &jetstream::Context, name: &str) -> Result<u64, StreamError> {
    let stream = js.get_stream(name).await.map_err(storage)?;
    Ok(stream.cached_info().state.last_sequence)
}

async fn last_timestamp(js: &jetstream::Context, name: &str) -> Result<SystemTime, StreamError> {
    let stream = js.get_stream(name).await.map_err(storage)?;
    Ok(SystemTime::from(stream.cached_info().state.last_timestamp))
}

/// The JetStream sequence of the first message of `name` that arrived at or after `time`, or
/// the one the next message will get.
pub(super) async fn first_at_or_after(
    js: &jetstream::Context,
    name: &str,
    time: SystemTime,
) -> Result<u64, StreamError> {
    let last = last_sequence(js, name).await?;
    let consumer = create_consumer(
        js,
        name,
        DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(time),
        },
    )
    .await?;
    let found = fetch(&consumer, 1).await?;
    let first = found
        .first()
        .and_then(|m| m.info().ok().map(|i| i.stream_sequence));
    let _ = js
        .delete_consumer_from_stream(&consumer.cached_info().name, name)
        .await;
    Ok(first.unwrap_or(last + 1))
}
