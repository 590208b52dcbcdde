//! The durable queue of `Event` invocations. `Invoke` with `InvocationType=Event` appends the
//! event to the internal stream [`EVENTS_STREAM`] and answers 202 only once the append is durable
//! (the stream group-commits concurrent appends into one fsync). One consumer task reads the
//! stream through the consumer group [`GROUP`], runs up to [`MAX_RUNNING`] events at once,
//! retries a failed one twice (Lambda's default for asynchronous invocation), and checkpoints
//! the first event still running: after a crash, the events not yet finished run again (at
//! least once), none is lost.
//!
//! Full-policy: at most `FunctionsConfig::event_queue` events may wait or run; past that
//! `Invoke` is refused with `TooManyRequestsException` and nothing is stored. The node counts
//! the events it accepted and saw finish; when that count says full it counts the stream's
//! events after the group's checkpoint instead (after a count that found the queue full, not
//! again for [`RECOUNT_EVERY`]), which is
//! the true queue when nodes share the stream (JetStream backend: the node holding the lease
//! runs every node's events, so the others never see theirs finish).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fleetcore_stream::{
    ConsumerBatch, ConsumerConfig, ConsumerGroup, NewRecord, Position, ShardId, Stream,
    StreamError, StreamMode, StreamSpec, unconsumed,
};
use tokio::sync::mpsc;

use crate::FunctionsError;
use crate::model::FunctionRef;
use crate::runtime::WhenBusy;
use crate::service::Functions;

/// The internal stream holding the queued events (hidden from the Kinesis API).
pub const EVENTS_STREAM: &str = "__lambda.events";
/// The consumer group whose checkpoint is the first event not yet finished.
const GROUP: &str = "lambda-events";
/// Most events running at once.
const MAX_RUNNING: usize = 64;
/// Attempts per event (the first and Lambda's two retries).
const ATTEMPTS: u32 = 3;
/// Wait before the first retry; doubled for the second.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Least time after a count of the stream's backlog that found the queue full before the next.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// The producer side: accepts events while there is room.
pub(crate) struct EventQueue {
    streams: Arc<dyn Stream>,
    /// Events accepted (or found after a restart) and not finished.
    waiting: AtomicUsize,
    limit: usize,
    /// When a count of the stream's backlog last found the queue full.
    found_full: parking_lot::Mutex<Option<Instant>>,
}

impl EventQueue {
    /// Opens the queue (creating its stream on first start; the stream keeps what a previous
    /// run left).
    pub(crate) async fn open(
        streams: Arc<dyn Stream>,
        limit: usize,
    ) -> Result<EventQueue, FunctionsError> {
        let spec = StreamSpec {
            name: EVENTS_STREAM.to_string(),
            mode: StreamMode::Provisioned,
            shard_count: 1,
            retention_hours: 24 * 7,
        };
        match streams.create_stream(spec).await {
            Ok(_) | Err(StreamError::AlreadyExists(_)) => {}
            Err(e) => return Err(stream_failed("creating the event queue", e)),
        }
        Ok(EventQueue {
            streams,
            waiting: AtomicUsize::new(0),
            limit: limit.max(1),
            found_full: parking_lot::Mutex::new(None),
        })
    }

    /// Stores one event durably; refused while the queue is full.
    pub(crate) async fn push(
        &self,
        reference: &FunctionRef,
        payload: &[u8],
    ) -> Result<(), FunctionsError> {
        let taken = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() && !self.recount().await {
            metrics::counter!("fleetcore_functions_async_refused_total").increment(1);
            return Err(FunctionsError::TooManyRequests(
                "Rate Exceeded. (the queue of asynchronous invocations is full)".into(),
            ));
        }
        let record = NewRecord {
            partition_key: "event".into(),
            explicit_hash_key: None,
            data: encode(reference, payload),
        };
        let stored = match self.streams.put_records(EVENTS_STREAM, vec![record]).await {
            Ok(mut outcomes) => match outcomes.pop() {
                Some(Ok(_)) => Ok(()),
                Some(Err(failure)) => Err(FunctionsError::Io(format!(
                    "queueing the event: {failure:?}"
                ))),
                None => Err(FunctionsError::Io("queueing the event: no outcome".into())),
            },
            Err(e) => Err(stream_failed("queueing the event", e)),
        };
        if stored.is_err() {
            self.finished();
        }
        stored
    }

    /// Counts the events in the stream after the group's checkpoint (not within
    /// [`RECOUNT_EVERY`] of a count that found the queue full); true, with this event counted,
    /// when there is room after all.
    async fn recount(&self) -> bool {
        if self
            .found_full
            .lock()
            .is_some_and(|at| at.elapsed() < RECOUNT_EVERY)
        {
            return false;
        }
        match unconsumed(
            self.streams.as_ref(),
            EVENTS_STREAM,
            GROUP,
            self.limit,
            usize::MAX,
        )
        .await
        {
            Ok(stored) if stored.records < self.limit => {
                self.waiting.store(stored.records + 1, Ordering::Release);
                true
            }
            Ok(_) => {
                *self.found_full.lock() = Some(Instant::now());
                false
            }
            Err(error) => {
                tracing::warn!(%error, "could not count the queued events");
                false
            }
        }
    }

    /// One event finished (or was found again after a restart, not counted: saturates).
    fn finished(&self) {
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

fn stream_failed(what: &str, error: StreamError) -> FunctionsError {
    FunctionsError::Io(format!("{what}: {error}"))
}

/// `u16 length | reference ("name" or "name:qualifier") | payload`.
fn encode(reference: &FunctionRef, payload: &[u8]) -> Bytes {
    let text = match &reference.qualifier {
        Some(q) => format!("{}:{q}", reference.name),
        None => reference.name.clone(),
    };
    let mut out = BytesMut::with_capacity(2 + text.len() + payload.len());
    // Names and qualifiers are checked short (at most 64 + 128 characters).
    out.put_u16(u16::try_from(text.len()).unwrap_or(u16::MAX));
    out.put_slice(text.as_bytes());
    out.put_slice(payload);
    out.freeze()
}

fn decode(data: &Bytes) -> Option<(FunctionRef, Bytes)> {
    let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
    let text = std::str::from_utf8(data.get(2..2 + len)?).ok()?;
    let reference = FunctionRef::parse(text, None).ok()?;
    Some((reference, data.slice(2 + len..)))
}

/// Reads the queue and runs its events until the service is dropped, as member `owner` of the
/// group (the node id: nodes sharing the stream split its shards).
pub(crate) async fn run(functions: Weak<Functions>, streams: Arc<dyn Stream>, owner: String) {
    let mut group = ConsumerGroup::new(
        streams,
        EVENTS_STREAM,
        GROUP,
        owner,
        ConsumerConfig {
            batch_limit: MAX_RUNNING / 4,
            ..ConsumerConfig::default()
        },
    );
    let (done_tx, mut done) = mpsc::unbounded_channel::<(ShardId, u128)>();
    // Sequences started and not finished, and the position after the last one started.
    let mut running: BTreeSet<(ShardId, u128)> = BTreeSet::new();
    let mut read_up_to: Option<(ShardId, Position)> = None;
    let mut backoff = FIRST_RETRY;
    loop {
        let room = running.len() + MAX_RUNNING / 4 <= MAX_RUNNING;
        tokio::select! {
            Some(finished) = done.recv() => {
                running.remove(&finished);
                while let Ok(more) = done.try_recv() {
                    running.remove(&more);
                }
                if let Some((shard, after)) = read_up_to {
                    // The checkpoint: the first event still running, or past every one read.
                    let next = running
                        .iter()
                        .find(|(s, _)| *s == shard)
                        .map_or(after, |&(_, seq)| Position(seq));
                    let batch = ConsumerBatch { shard, records: Vec::new(), next };
                    if let Err(error) = group.commit(&batch).await {
                        tracing::warn!(%error, "the event queue could not checkpoint (its finished events may run again)");
                    }
                }
            }
            batch = group.next(), if room => match batch {
                Ok(batch) => {
                    backoff = FIRST_RETRY;
                    let Some(functions) = functions.upgrade() else { return };
                    read_up_to = Some((batch.shard, batch.next));
                    for record in batch.records {
                        let key = (batch.shard, record.sequence.0);
                        running.insert(key);
                        let functions = Arc::clone(&functions);
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            match decode(&record.data) {
                                Some((reference, payload)) => run_event(&functions, &reference, payload).await,
                                None => tracing::error!(sequence = record.sequence.0, "unreadable queued event skipped"),
                            }
                            functions.events.finished();
                            let _ = done.send(key);
                        });
                    }
                }
                Err(error) => {
                    if functions.strong_count() == 0 {
                        return;
                    }
                    tracing::warn!(%error, "the event queue cannot be read; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
}

/// Runs one event: up to [`ATTEMPTS`] times while it fails, then logs and drops it.
async fn run_event(functions: &Functions, reference: &FunctionRef, payload: Bytes) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let error = match functions
            .invoke(reference, payload.clone(), None, WhenBusy::Wait)
            .await
        {
            Ok(invoked) if invoked.outcome.function_error.is_none() => return,
            Ok(invoked) => String::from_utf8_lossy(&invoked.outcome.payload).into_owned(),
            Err(error) => error.to_string(),
        };
        tracing::info!(function = %reference.name, attempt, %error, "asynchronous invocation failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    metrics::counter!("fleetcore_functions_async_dropped_total").increment(1);
    tracing::warn!(function = %reference.name, "asynchronous invocation failed {ATTEMPTS} times; dropped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        for qualifier in [None, Some("prod".to_string())] {
            let reference = FunctionRef {
                name: "f-1".into(),
                qualifier,
            };
            let data = encode(&reference, b"{\"a\":1}");
            let (back, payload) = decode(&data).expect("decodes");
            assert_eq!(back, reference);
            assert_eq!(&payload[..], b"{\"a\":1}");
        }
        assert!(decode(&Bytes::from_static(b"\x00")).is_none());
        assert!(decode(&Bytes::from_static(b"\x00\x09f")).is_none());
    }
}
