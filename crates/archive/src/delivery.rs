//! The delivery task of one delivery stream: reads its source stream through a consumer group,
//! buffers records until `SizeInMBs` or `IntervalInSeconds`, writes the objects, and only then
//! checkpoints. Both source types take this one path (a DirectPut delivery stream reads its own
//! internal stream), which gives the durability promise: a record acknowledged by PutRecord (or
//! appended to the Kinesis source) is in the stream until the object holding it is written;
//! after a crash the records since the last checkpoint are delivered again (at most twice), and
//! a graceful stop flushes and checkpoints (never twice).
//!
//! Memory is bounded: the task stops reading while its buffer is full or an object write is
//! being retried, so the source stream holds the backlog (and DirectPut refuses new records
//! once the backlog passes its limit, see [`Backlog`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use fleetcore_stream::{ConsumerBatch, ConsumerGroup, Record, ShardId, Stream, StreamError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DeliveryPlan;
use crate::lake::Lake;
use crate::metrics;
use crate::objects::{PendingObject, build_objects};
use crate::transform::{TransformContext, transform};
use fleetcore_core::FunctionInvoker;

/// How long a stopping task waits for more records from its source before the final flush.
/// [`ConsumerGroup::next`] is cancel-safe: a read is handed out in the same poll it completes.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// Least time after a count of a backlog in its stream that found it full before the next.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// Bytes accepted by DirectPut and not yet delivered. PutRecord refuses new records
/// (`ServiceUnavailableException`) while it is over the limit.
#[derive(Debug)]
pub struct Backlog {
    stream: String,
    bytes: AtomicUsize,
    limit: usize,
    /// When a count taken from the stream last found it full (see [`Backlog::may_recount`]).
    found_full: parking_lot::Mutex<Option<Instant>>,
}

impl Backlog {
    /// An empty backlog of at most `limit` bytes.
    pub fn new(stream: &str, limit: usize) -> Backlog {
        Backlog {
            stream: stream.to_string(),
            bytes: AtomicUsize::new(0),
            limit,
            found_full: parking_lot::Mutex::new(None),
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when the count may be taken from the stream (not within [`RECOUNT_EVERY`] of a
    /// count that found it full): this node counts what it accepted and delivered, which
    /// drifts when nodes share the internal stream (JetStream backend: the node holding its
    /// lease delivers the records every node accepted).
    pub fn may_recount(&self) -> bool {
        !self
            .found_full
            .lock()
            .is_some_and(|at| at.elapsed() < RECOUNT_EVERY)
    }

    /// Takes `bytes` counted in the stream: the new count when under the limit (true), else
    /// remembered as a count that found the backlog full (false).
    pub fn recounted(&self, bytes: usize) -> bool {
        if bytes >= self.limit {
            *self.found_full.lock() = Some(Instant::now());
            return false;
        }
        self.bytes.store(bytes, Ordering::Release);
        metrics::backlog(&self.stream, bytes);
        true
    }

    /// True when new records must be refused.
    pub fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Acquire) >= self.limit
    }

    /// Counts accepted bytes.
    pub fn add(&self, bytes: usize) {
        let now = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        metrics::backlog(&self.stream, now);
    }

    /// Counts delivered bytes (records accepted before a restart were never added: saturate).
    pub fn release(&self, bytes: usize) {
        let previous = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(bytes))
            })
            .unwrap_or(0);
        metrics::backlog(&self.stream, previous.saturating_sub(bytes));
    }
}

/// What a delivery task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep delivering.
    Running,
    /// The server stops: take in what the source already holds, flush, checkpoint.
    Shutdown,
    /// A new configuration takes over: flush what is buffered (read under the old one) and
    /// leave the rest of the source to the successor.
    Replaced,
}

/// What a delivery task needs.
pub struct Delivery {
    /// Delivery stream name.
    pub name: String,
    /// Its VersionId (part of object names).
    pub version: u64,
    /// The compiled destination.
    pub plan: Arc<DeliveryPlan>,
    /// Where objects go.
    pub lake: Arc<Lake>,
    /// The source.
    pub group: ConsumerGroup,
    /// The stream backend, the source stream's name, the group's name and this member's name
    /// (to take the lease back if it lapsed while a flush was retried, see [`Delivery::commit`]).
    pub streams: Arc<dyn Stream>,
    /// The source stream.
    pub stream_name: String,
    /// The consumer group.
    pub group_name: String,
    /// The lease owner.
    pub owner: String,
    /// DirectPut's backlog, released as records are delivered.
    pub backlog: Option<Arc<Backlog>>,
    /// Leaves [`Stop::Running`] when the task must flush and stop.
    pub stop: watch::Receiver<Stop>,
    /// What runs the plan's Lambda processor (present whenever the plan has one).
    pub functions: Option<Arc<dyn FunctionInvoker>>,
    /// The delivery stream's ARN and region, for the Lambda processor's requests.
    pub arn: String,
    /// See `arn`.
    pub region: String,
}

/// Records read but not yet delivered, and where each shard's checkpoint goes once they are.
#[derive(Default)]
struct Buffer {
    records: Vec<Record>,
    bytes: usize,
    started: Option<Instant>,
    checkpoints: BTreeMap<ShardId, ConsumerBatch>,
}

impl Buffer {
    fn add(&mut self, batch: ConsumerBatch) {
        if self.started.is_none() && !batch.records.is_empty() {
            self.started = Some(Instant::now());
        }
        self.bytes += batch.records.iter().map(|r| r.data.len()).sum::<usize>();
        let ConsumerBatch {
            shard,
            records,
            next,
        } = batch;
        self.records.extend(records);
        self.checkpoints.insert(
            shard,
            ConsumerBatch {
                shard,
                records: Vec::new(),
                next,
            },
        );
    }
}

/// Whether a flush completed.
enum FlushOutcome {
    Delivered,
    /// The objects could not even be built (a bug, not an outage): nothing is checkpointed, the
    /// records stay in the stream, and the task stops rather than skip them.
    Abandoned,
}

impl Delivery {
    /// Runs until stop is signalled (then flushes what it holds).
    pub async fn run(mut self) {
        let mut buffer = Buffer::default();
        let mut read_backoff = Duration::from_secs(1);
        loop {
            let deadline = buffer.started.map(|s| s + self.plan.buffer_interval);
            let room = buffer.bytes < self.plan.buffer_bytes;
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                () = sleep_until(deadline), if deadline.is_some() => {}
                batch = self.group.next(), if room => match batch {
                    Ok(batch) => {
                        read_backoff = Duration::from_secs(1);
                        buffer.add(batch);
                        let due = deadline.is_some_and(|d| d <= Instant::now())
                            || self.plan.buffer_interval.is_zero();
                        if buffer.bytes < self.plan.buffer_bytes && !due {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(delivery_stream = %self.name, error = %e, retry_in = ?read_backoff, "reading the source stream failed");
                        if self.pause(read_backoff).await {
                            break;
                        }
                        read_backoff = (read_backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            }
            if let FlushOutcome::Abandoned = self.flush(&mut buffer).await {
                return;
            }
        }
        // Shutting down: take in what the source already holds (a graceful stop leaves nothing
        // behind for the next start), then flush. Replaced: the successor reads the rest.
        let drain = *self.stop.borrow() == Stop::Shutdown;
        while drain && let Ok(Ok(batch)) = tokio::time::timeout(DRAIN_WAIT, self.group.next()).await
        {
            buffer.add(batch);
            if buffer.bytes >= self.plan.buffer_bytes
                && let FlushOutcome::Abandoned = self.flush(&mut buffer).await
            {
                return;
            }
        }
        if let FlushOutcome::Delivered = self.flush(&mut buffer).await {
            tracing::debug!(delivery_stream = %self.name, "delivery stopped after a final flush");
        }
    }

    /// Writes the buffer's objects, then checkpoints. Failed writes and checkpoints are retried
    /// with backoff until they succeed, also while stopping: a clean stop should leave no object
    /// written and not checkpointed (it would be written again after the restart). The owner
    /// aborts the task when its grace period ends or the delivery stream is deleted; the records
    /// then stay in the stream.
    async fn flush(&mut self, buffer: &mut Buffer) -> FlushOutcome {
        let Buffer {
            records,
            bytes,
            checkpoints,
            ..
        } = std::mem::take(buffer);
        if records.is_empty() && checkpoints.is_empty() {
            return FlushOutcome::Delivered;
        }
        let oldest = records.iter().map(|r| r.arrival).min();
        let (records, rejected) = match (&self.plan.transform, &self.functions) {
            (Some(processor), Some(functions)) => {
                let context = TransformContext {
                    functions: &**functions,
                    delivery_stream_arn: &self.arn,
                    region: &self.region,
                };
                transform(processor, &context, records).await
            }
            _ => (records, Vec::new()),
        };
        // Encoding (gzip, Parquet) is CPU work of up to SizeInMBs: off the async workers.
        let (plan, name, version) = (Arc::clone(&self.plan), self.name.clone(), self.version);
        let built = tokio::task::spawn_blocking(move || {
            build_objects(&plan, &name, version, &records, rejected)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the encoding task failed: {e}")));
        let mut pending = match built {
            Ok(objects) => objects,
            Err(e) => {
                // Encoding in memory failed: nothing to retry against; keep the records in the
                // stream (no checkpoint) and stop, so they are not skipped.
                tracing::error!(delivery_stream = %self.name, error = %e, "building objects failed; delivery stopped");
                return FlushOutcome::Abandoned;
            }
        };
        let mut backoff = Duration::from_millis(200);
        while !pending.is_empty() {
            let mut failed = Vec::new();
            for object in pending {
                match self
                    .lake
                    .put(&self.plan.bucket, &object.key, object.body.clone())
                    .await
                {
                    Ok(()) => {
                        metrics::object(&self.name, true);
                        self.count(&object);
                    }
                    Err(e) => {
                        metrics::object(&self.name, false);
                        tracing::warn!(delivery_stream = %self.name, key = %object.key, error = %e, retry_in = ?backoff, "writing an object failed");
                        failed.push(object);
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        for batch in checkpoints.values() {
            loop {
                match self.commit(batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(delivery_stream = %self.name, shard = %batch.shard, error = %e, "checkpoint failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        if let Some(backlog) = &self.backlog {
            backlog.release(bytes);
        }
        if let Some(oldest) = oldest {
            let freshness = SystemTime::now()
                .duration_since(oldest)
                .unwrap_or_default()
                .as_secs_f64();
            metrics::freshness(&self.name, freshness);
        }
        FlushOutcome::Delivered
    }

    /// Checkpoints `batch`. The group renews its leases only while it is being read, so a long
    /// flush (a destination outage) can outlive the lease; the group then reports it lost. With
    /// no other member holding it, this member takes it back and writes the checkpoint itself
    /// (the group resumes from it when it re-takes the shard), so a clean run never delivers a
    /// record twice. If another member took the shard, it re-delivers the batch (at least once).
    async fn commit(&mut self, batch: &ConsumerBatch) -> Result<(), StreamError> {
        match self.group.commit(batch).await {
            Err(StreamError::LeaseLost { .. }) => {}
            other => return other,
        }
        let ttl = Duration::from_secs(60);
        let (stream, group, owner) = (&self.stream_name, &self.group_name, &self.owner);
        if !self
            .streams
            .acquire_lease(stream, group, batch.shard, owner, ttl)
            .await?
        {
            tracing::warn!(delivery_stream = %self.name, shard = %batch.shard, "another consumer took the shard; it delivers these records again");
            return Ok(());
        }
        self.streams
            .checkpoint(stream, group, batch.shard, owner, batch.next)
            .await
    }

    fn count(&self, object: &PendingObject) {
        match object.error_output_type {
            Some(kind) => metrics::error_records(&self.name, kind, object.records),
            None => metrics::delivered(&self.name, object.records, object.input_bytes),
        }
    }

    /// Sleeps `d`; true if stop was signalled meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() != Stop::Running {
            return true;
        }
        tokio::select! {
            _ = self.stop.changed() => true,
            () = tokio::time::sleep(d) => false,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
