//! [`Archive`]: the delivery streams of one server. Configurations live in the store (table
//! `firehose_delivery_streams`, JSON values) and survive restarts; each delivery stream runs one
//! delivery task. Nodes sharing the store share the configurations ([`Archive::reload`] follows
//! another node's change); each node delivers the records it took, from its own streams.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fleetcore_core::{FunctionInvoker, KvStore, WriteBatch};
use fleetcore_stream::{
    ConsumerConfig, ConsumerGroup, NewRecord, StartingPosition, Stream, StreamError, StreamMode,
    StreamSpec, unconsumed,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{DeliveryPlan, S3Destination, Tag};
use crate::delivery::{Backlog, Delivery, Stop};
use crate::error::ArchiveError;
use crate::lake::{Lake, LakeConfig};
use crate::metrics;

/// The store table of the delivery streams (key: name; value: [`DeliveryStream`] as JSON).
pub const TABLE: &str = "firehose_delivery_streams";

/// Largest record Firehose accepts (1,000 KiB).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;
/// Most records in one PutRecordBatch.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most bytes in one PutRecordBatch (4 MiB).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Most delivery streams per server.
pub const MAX_DELIVERY_STREAMS: usize = 500;

/// The id of a delivery stream's one destination (`DestinationId` in describe and update).
pub const DESTINATION_ID: &str = "destinationId-000000000001";

/// Settings of the archive from the server's configuration.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// Where objects go.
    pub lake: LakeConfig,
    /// Region in ARNs.
    pub region: String,
    /// Account id in ARNs.
    pub account_id: String,
    /// Undelivered DirectPut bytes per delivery stream before PutRecord answers
    /// ServiceUnavailableException.
    pub backlog_limit_bytes: usize,
    /// How long a graceful shutdown waits for each delivery task's final flush.
    pub shutdown_grace: Duration,
    /// This node's member name in the delivery streams' consumer groups: unique per node and
    /// stable across its restarts (the node id), so nodes reading one shared source stream
    /// split its shards and a restarted node takes its leases back at once.
    pub consumer_owner: String,
}

/// Where a delivery stream's records come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// PutRecord / PutRecordBatch, through the internal stream `stream`.
    DirectPut {
        /// The internal fleetcore stream.
        stream: String,
    },
    /// A fleetcore (Kinesis) stream.
    KinesisStream {
        /// Its ARN as given.
        stream_arn: String,
        /// Its name.
        stream: String,
        /// The role given (not used).
        role_arn: String,
    },
}

impl Source {
    /// The stream the delivery task reads.
    pub fn stream(&self) -> &str {
        match self {
            Source::DirectPut { stream } | Source::KinesisStream { stream, .. } => stream,
        }
    }

    /// `DirectPut` or `KinesisStreamAsSource`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Source::DirectPut { .. } => "DirectPut",
            Source::KinesisStream { .. } => "KinesisStreamAsSource",
        }
    }
}

/// A stored delivery stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStream {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Source.
    pub source: Source,
    /// Creation time, milliseconds since the epoch.
    pub created_millis: u64,
    /// VersionId.
    pub version: u64,
    /// The S3 destination as given.
    pub destination: S3Destination,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// What CreateDeliveryStream asks for.
#[derive(Debug, Clone)]
pub struct CreateDeliveryStream {
    /// Name.
    pub name: String,
    /// `Some(arn)` for KinesisStreamAsSource.
    pub kinesis_source: Option<(String, String)>,
    /// The destination.
    pub destination: S3Destination,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// What UpdateDestination asks for.
#[derive(Debug, Clone)]
pub struct UpdateDestination {
    /// The delivery stream.
    pub name: String,
    /// `CurrentDeliveryStreamVersionId`: the version the caller read (stale: refused).
    pub current_version_id: String,
    /// `DestinationId`.
    pub destination_id: String,
    /// The members of `ExtendedS3DestinationUpdate` (or `S3DestinationUpdate`) as sent.
    pub update: Map<String, Value>,
}

/// Why one record of a put was refused (PutRecordBatch's per-record `ErrorCode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRefusal {
    /// `ServiceUnavailableException` or `InternalFailure`.
    pub code: &'static str,
    /// Why.
    pub message: String,
}

struct Running {
    stream: Arc<DeliveryStream>,
    backlog: Option<Arc<Backlog>>,
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

/// The delivery streams of this server.
pub struct Archive {
    store: Arc<dyn KvStore>,
    streams: Arc<dyn Stream>,
    lake: Arc<Lake>,
    settings: ArchiveSettings,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serializes create and delete (they touch the store, the stream and the task map).
    changes: tokio::sync::Mutex<()>,
    /// Runs Lambda processors; without it a delivery stream with one is refused.
    functions: Option<Arc<dyn FunctionInvoker>>,
}

impl Archive {
    /// Loads the stored delivery streams and starts their delivery tasks; `functions` runs
    /// their Lambda processors.
    pub async fn start(
        store: Arc<dyn KvStore>,
        streams: Arc<dyn Stream>,
        settings: ArchiveSettings,
        functions: Option<Arc<dyn FunctionInvoker>>,
    ) -> Result<Arc<Archive>, ArchiveError> {
        let archive = Arc::new(Archive {
            store,
            streams,
            lake: Arc::new(Lake::new(settings.lake.clone())),
            settings,
            running: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            functions,
        });
        let stored = archive.store.scan_prefix(TABLE, b"")?;
        for (key, value) in stored {
            let stream: DeliveryStream = match serde_json::from_slice(&value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "skipping an unreadable delivery stream");
                    continue;
                }
            };
            match stream.destination.plan(&stream.tags) {
                Ok(plan) => {
                    // Made by another node sharing the store, this node has no internal
                    // stream for it yet.
                    if let Source::DirectPut { stream: internal } = &stream.source
                        && let Err(e) = archive.ensure_internal_stream(internal).await
                    {
                        tracing::error!(delivery_stream = %stream.name, error = %e, "could not make the internal stream; its records cannot be put here");
                    }
                    archive.launch(stream, plan, None)
                }
                Err(e) => {
                    tracing::error!(delivery_stream = %stream.name, error = %e, "skipping a delivery stream whose configuration no longer validates");
                }
            }
        }
        Ok(archive)
    }

    /// Where objects go.
    pub fn lake(&self) -> &LakeConfig {
        self.lake.config()
    }

    /// CreateDeliveryStream.
    pub async fn create(
        &self,
        request: CreateDeliveryStream,
    ) -> Result<DeliveryStream, ArchiveError> {
        check_name(&request.name)?;
        let plan = request.destination.plan(&request.tags)?;
        if plan.transform.is_some() && self.functions.is_none() {
            return Err(ArchiveError::InvalidArgument(
                "a Lambda processor needs the functions capability, which this server does not run"
                    .into(),
            ));
        }
        let _guard = self.changes.lock().await;
        if self.running.lock().contains_key(&request.name) {
            return Err(ArchiveError::InUse(format!(
                "Firehose {} under accountId {} already exists",
                request.name, self.settings.account_id
            )));
        }
        if self.running.lock().len() >= MAX_DELIVERY_STREAMS {
            return Err(ArchiveError::LimitExceeded(format!(
                "this server holds at most {MAX_DELIVERY_STREAMS} delivery streams"
            )));
        }
        let source = match request.kinesis_source {
            Some((stream_arn, role_arn)) => {
                let stream = stream_name_from_arn(&stream_arn)?;
                self.streams
                    .describe_stream(&stream)
                    .await
                    .map_err(|e| match e {
                        StreamError::NotFound(_) => ArchiveError::InvalidArgument(format!(
                            "the source stream {stream_arn} does not exist"
                        )),
                        other => other.into(),
                    })?;
                Source::KinesisStream {
                    stream_arn,
                    stream,
                    role_arn,
                }
            }
            None => {
                let stream = internal_stream_name(&request.name);
                self.create_internal_stream(&stream).await?;
                Source::DirectPut { stream }
            }
        };
        let created_millis = millis(SystemTime::now());
        let stream = DeliveryStream {
            arn: format!(
                "arn:aws:firehose:{}:{}:deliverystream/{}",
                self.settings.region, self.settings.account_id, request.name
            ),
            name: request.name,
            source,
            created_millis,
            version: 1,
            destination: request.destination,
            tags: request.tags,
        };
        let value =
            serde_json::to_vec(&stream).map_err(|e| ArchiveError::Internal(e.to_string()))?;
        // By compare-and-set: another node sharing the store may have created the name.
        if !self.compare_and_set(&stream.name, None, value).await? {
            return Err(ArchiveError::InUse(format!(
                "Firehose {} under accountId {} already exists",
                stream.name, self.settings.account_id
            )));
        }
        self.launch(stream.clone(), plan, None);
        tracing::info!(delivery_stream = %stream.name, source = stream.source.type_name(), "delivery stream created");
        Ok(stream)
    }

    /// UpdateDestination: merges the update into the destination, stores it under the next
    /// VersionId and hands delivery over to a task running it. The old task flushes what it
    /// had read (delivered under the old configuration) and stops reading at once, so every
    /// record put after this returns is delivered under the new one.
    pub async fn update_destination(
        &self,
        request: UpdateDestination,
    ) -> Result<DeliveryStream, ArchiveError> {
        let _guard = self.changes.lock().await;
        // The stored configuration: another node sharing the store may have updated it.
        let (old, current) = self
            .stored(&request.name)
            .await?
            .ok_or_else(|| self.not_found(&request.name))?;
        if request.current_version_id != current.version.to_string() {
            return Err(ArchiveError::ConcurrentModification(format!(
                "Cannot update delivery stream {}: CurrentDeliveryStreamVersionId {} is not the current version {}",
                request.name, request.current_version_id, current.version
            )));
        }
        if request.destination_id != DESTINATION_ID {
            return Err(ArchiveError::InvalidArgument(format!(
                "Delivery stream {} has no destination {} (its destination is {DESTINATION_ID})",
                request.name, request.destination_id
            )));
        }
        let destination = current.destination.merged(&request.update)?;
        let plan = destination.plan(&current.tags)?;
        if plan.transform.is_some() && self.functions.is_none() {
            return Err(ArchiveError::InvalidArgument(
                "a Lambda processor needs the functions capability, which this server does not run"
                    .into(),
            ));
        }
        let stream = DeliveryStream {
            version: current.version + 1,
            destination,
            ..current
        };
        let value =
            serde_json::to_vec(&stream).map_err(|e| ArchiveError::Internal(e.to_string()))?;
        if !self.compare_and_set(&stream.name, Some(old), value).await? {
            return Err(ArchiveError::ConcurrentModification(format!(
                "Cannot update delivery stream {}: it was changed by another request meanwhile",
                stream.name
            )));
        }
        let previous = self.running.lock().remove(&stream.name);
        if let Some(previous) = &previous {
            let _ = previous.stop.send(Stop::Replaced);
        }
        self.launch(stream.clone(), plan, previous);
        tracing::info!(delivery_stream = %stream.name, version = stream.version, "delivery stream destination updated");
        Ok(stream)
    }

    /// DescribeDeliveryStream.
    pub fn describe(&self, name: &str) -> Result<Arc<DeliveryStream>, ArchiveError> {
        self.running
            .lock()
            .get(name)
            .map(|r| Arc::clone(&r.stream))
            .ok_or_else(|| self.not_found(name))
    }

    /// ListDeliveryStreams: names after `start` of the given source type, at most `limit`, and
    /// whether there are more.
    pub fn list(
        &self,
        source_type: Option<&str>,
        start: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let running = self.running.lock();
        let mut names = running
            .values()
            .filter(|r| source_type.is_none_or(|t| r.stream.source.type_name() == t))
            .map(|r| r.stream.name.clone())
            .filter(|n| start.is_none_or(|s| n.as_str() > s));
        let page: Vec<String> = names.by_ref().take(limit).collect();
        let more = names.next().is_some();
        (page, more)
    }

    /// DeleteDeliveryStream. Records not yet delivered are discarded, as Firehose warns.
    pub async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        let _guard = self.changes.lock().await;
        let Some(running) = self.running.lock().remove(name) else {
            return Err(self.not_found(name));
        };
        let _ = running.stop.send(Stop::Shutdown);
        running.task.abort();
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, name.as_bytes().to_vec());
        self.apply(batch).await?;
        self.delete_internal_stream(&running.stream).await;
        tracing::info!(delivery_stream = %name, "delivery stream deleted");
        Ok(())
    }

    /// Follows another node's change of delivery stream `name`: a new or updated configuration
    /// gets its delivery task here (reading this node's own records: the internal stream of a
    /// DirectPut stream is made here if missing), a deleted one has its task stopped and its
    /// records not yet delivered here discarded, as DeleteDeliveryStream does.
    pub async fn reload(&self, name: &str) -> Result<(), ArchiveError> {
        let _guard = self.changes.lock().await;
        let stored = self.stored(name).await?.map(|(_, stream)| stream);
        let running = self
            .running
            .lock()
            .get(name)
            .map(|r| (r.stream.created_millis, r.stream.version));
        match stored {
            None => {
                let Some(running) = self.running.lock().remove(name) else {
                    return Ok(());
                };
                let _ = running.stop.send(Stop::Shutdown);
                running.task.abort();
                self.delete_internal_stream(&running.stream).await;
                tracing::info!(delivery_stream = %name, "delivery stream deleted by another node");
            }
            Some(stream) if running == Some((stream.created_millis, stream.version)) => {}
            Some(stream) => {
                let plan = stream.destination.plan(&stream.tags)?;
                if let Source::DirectPut { stream: internal } = &stream.source {
                    self.ensure_internal_stream(internal).await?;
                }
                let previous = self.running.lock().remove(name);
                if let Some(previous) = &previous {
                    let _ = previous.stop.send(Stop::Replaced);
                }
                tracing::info!(delivery_stream = %name, version = stream.version, "delivery stream changed by another node");
                self.launch(stream, plan, previous);
            }
        }
        Ok(())
    }

    /// Follows every delivery stream again (another node may have changed any).
    pub async fn reload_all(&self) -> Result<(), ArchiveError> {
        let store = Arc::clone(&self.store);
        let mut names: std::collections::BTreeSet<String> =
            tokio::task::spawn_blocking(move || store.scan_prefix(TABLE, b""))
                .await
                .map_err(|e| ArchiveError::Internal(e.to_string()))??
                .into_iter()
                .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
                .collect();
        names.extend(self.running.lock().keys().cloned());
        for name in names {
            self.reload(&name).await?;
        }
        Ok(())
    }

    /// Makes internal stream `internal` if this node has none (never replaces one: it holds
    /// records this node took and has not delivered yet).
    async fn ensure_internal_stream(&self, internal: &str) -> Result<(), ArchiveError> {
        match self.streams.describe_stream(internal).await {
            Ok(_) => Ok(()),
            Err(StreamError::NotFound(_)) => {
                self.streams
                    .create_stream(internal_stream_spec(internal))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the internal stream of a DirectPut delivery stream (its records not delivered).
    async fn delete_internal_stream(&self, stream: &DeliveryStream) {
        if let Source::DirectPut { stream: internal } = &stream.source {
            match self.streams.delete_stream(internal).await {
                Ok(()) | Err(StreamError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(delivery_stream = %stream.name, error = %e, "could not delete the internal stream (it is replaced on the next create)");
                }
            }
        }
    }

    /// Counts the delivery stream's undelivered bytes in its internal stream (what its
    /// consumer group has not checkpointed, whichever node delivers it; not within a second of
    /// a count that found it full); true when they are under the limit after all (the count is
    /// then reset to them).
    async fn room_after_recount(
        &self,
        stream: &DeliveryStream,
        internal: &str,
        backlog: &Backlog,
    ) -> bool {
        if !backlog.may_recount() {
            return false;
        }
        let group = stream.consumer_group();
        match unconsumed(
            self.streams.as_ref(),
            internal,
            &group,
            usize::MAX,
            backlog.limit(),
        )
        .await
        {
            Ok(stored) => backlog.recounted(stored.bytes),
            Err(error) => {
                tracing::warn!(delivery_stream = %stream.name, %error, "could not count the undelivered records");
                false
            }
        }
    }

    /// PutRecord / PutRecordBatch on a DirectPut delivery stream: durable on return. Returns a
    /// record id or a refusal per record, in order.
    pub async fn put_records(
        &self,
        name: &str,
        records: Vec<Bytes>,
    ) -> Result<Vec<Result<String, RecordRefusal>>, ArchiveError> {
        let (stream, backlog) = {
            let running = self.running.lock();
            let r = running.get(name).ok_or_else(|| self.not_found(name))?;
            (Arc::clone(&r.stream), r.backlog.clone())
        };
        let (Source::DirectPut { stream: internal }, Some(backlog)) = (&stream.source, backlog)
        else {
            return Err(ArchiveError::InvalidArgument(
                "This operation is not permitted on KinesisStreamAsSource delivery stream type."
                    .into(),
            ));
        };
        if backlog.is_full() && !self.room_after_recount(&stream, internal, &backlog).await {
            metrics::throttled(name, records.len());
            return Err(ArchiveError::Unavailable(format!(
                "Slow down: delivery stream {name} has {} MiB of records not yet delivered (its destination is slow or unreachable).",
                self.settings.backlog_limit_bytes >> 20
            )));
        }
        let bytes: usize = records.iter().map(Bytes::len).sum();
        let new: Vec<NewRecord> = records
            .into_iter()
            .map(|data| NewRecord {
                partition_key: "firehose".into(),
                explicit_hash_key: None,
                data,
            })
            .collect();
        let count = new.len();
        let outcomes = self.streams.put_records(internal, new).await?;
        backlog.add(bytes);
        metrics::incoming(name, count, bytes);
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(appended) => Ok(format!(
                    "{:08}{:048}",
                    appended.shard.0, appended.sequence.0
                )),
                Err(failure) => Err(RecordRefusal {
                    code: "ServiceUnavailableException",
                    message: format!("{failure:?}"),
                }),
            })
            .collect())
    }

    /// Flushes every delivery stream's buffer and stops the delivery tasks.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = std::mem::take(&mut *self.running.lock())
            .into_values()
            .collect();
        for r in &running {
            let _ = r.stop.send(Stop::Shutdown);
        }
        for r in running {
            let name = r.stream.name.clone();
            let abort = r.task.abort_handle();
            if tokio::time::timeout(self.settings.shutdown_grace, r.task)
                .await
                .is_err()
            {
                abort.abort();
                tracing::warn!(delivery_stream = %name, "final flush did not finish in time; its records are delivered after restart");
            }
        }
    }

    /// Starts the delivery task of `stream`; with `previous` (its task told to stop), the new
    /// task keeps its backlog count and starts reading once it has finished (or after the
    /// shutdown grace, when it is aborted: its unflushed records are then read again).
    fn launch(&self, stream: DeliveryStream, plan: DeliveryPlan, previous: Option<Running>) {
        let (start, backlog) = match &stream.source {
            Source::DirectPut { .. } => (
                StartingPosition::TrimHorizon,
                Some(
                    previous
                        .as_ref()
                        .and_then(|p| p.backlog.clone())
                        .unwrap_or_else(|| {
                            Arc::new(Backlog::new(
                                &stream.name,
                                self.settings.backlog_limit_bytes,
                            ))
                        }),
                ),
            ),
            // Like Firehose, a Kinesis source is read from the delivery stream's creation on.
            Source::KinesisStream { .. } => (
                StartingPosition::AtTimestamp(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(stream.created_millis),
                ),
                None,
            ),
        };
        let group_name = consumer_group_name(&stream);
        let group = ConsumerGroup::new(
            Arc::clone(&self.streams),
            stream.source.stream(),
            group_name.clone(),
            self.settings.consumer_owner.clone(),
            ConsumerConfig {
                lease_ttl: Duration::from_secs(60),
                batch_limit: 1000,
                start,
            },
        );
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let delivery = Delivery {
            name: stream.name.clone(),
            version: stream.version,
            plan: Arc::new(plan),
            lake: Arc::clone(&self.lake),
            group,
            streams: Arc::clone(&self.streams),
            stream_name: stream.source.stream().to_string(),
            group_name,
            owner: self.settings.consumer_owner.clone(),
            backlog: backlog.clone(),
            stop: stop_rx,
            functions: self.functions.clone(),
            arn: stream.arn.clone(),
            region: self.settings.region.clone(),
        };
        let task = match previous {
            None => tokio::spawn(delivery.run()),
            Some(previous) => {
                let (grace, name) = (self.settings.shutdown_grace, stream.name.clone());
                tokio::spawn(async move {
                    let abort = previous.task.abort_handle();
                    if tokio::time::timeout(grace, previous.task).await.is_err() {
                        abort.abort();
                        tracing::warn!(delivery_stream = %name, "the previous configuration's flush did not finish in time; its records are delivered again under the new one");
                    }
                    delivery.run().await;
                })
            }
        };
        self.running.lock().insert(
            stream.name.clone(),
            Running {
                stream: Arc::new(stream),
                backlog,
                stop,
                task,
            },
        );
    }

    async fn create_internal_stream(&self, stream: &str) -> Result<(), ArchiveError> {
        let spec = internal_stream_spec(stream);
        match self.streams.create_stream(spec.clone()).await {
            Ok(_) => Ok(()),
            // Left over from a delivery stream of the same name whose deletion did not finish.
            Err(StreamError::AlreadyExists(_)) => {
                self.streams.delete_stream(stream).await?;
                self.streams.create_stream(spec).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Delivery stream `name` as stored, with its bytes.
    async fn stored(&self, name: &str) -> Result<Option<(Vec<u8>, DeliveryStream)>, ArchiveError> {
        let store = Arc::clone(&self.store);
        let key = name.as_bytes().to_vec();
        let bytes = tokio::task::spawn_blocking(move || store.get(TABLE, &key))
            .await
            .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        bytes
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map(|stream| (bytes, stream))
                    .map_err(|e| {
                        ArchiveError::Internal(format!("unreadable delivery stream {name}: {e}"))
                    })
            })
            .transpose()
    }

    /// Writes delivery stream `name` only if its stored bytes are `expected` (`None`: absent).
    async fn compare_and_set(
        &self,
        name: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, ArchiveError> {
        let store = Arc::clone(&self.store);
        let key = name.as_bytes().to_vec();
        Ok(tokio::task::spawn_blocking(move || {
            store.compare_and_set(TABLE, &key, expected.as_deref(), value)
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))??)
    }

    async fn apply(&self, batch: WriteBatch) -> Result<(), ArchiveError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.apply(batch))
            .await
            .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        Ok(())
    }

    fn not_found(&self, name: &str) -> ArchiveError {
        ArchiveError::NotFound(format!(
            "Firehose {name} under account {} not found.",
            self.settings.account_id
        ))
    }
}

/// The internal stream `name` of a DirectPut delivery stream: one shard, kept a week.
fn internal_stream_spec(name: &str) -> StreamSpec {
    StreamSpec {
        name: name.to_string(),
        mode: StreamMode::Provisioned,
        shard_count: 1,
        retention_hours: 24 * 7,
    }
}

/// The internal stream a DirectPut delivery stream writes into (hidden from the Kinesis API).
pub fn internal_stream_name(delivery_stream: &str) -> String {
    format!(
        "{}firehose.{delivery_stream}",
        fleetcore_stream::INTERNAL_STREAM_PREFIX
    )
}

fn consumer_group_name(stream: &DeliveryStream) -> String {
    stream.consumer_group()
}

impl DeliveryStream {
    /// The consumer group its delivery reads its source stream as.
    pub fn consumer_group(&self) -> String {
        // The creation time makes a re-created delivery stream of the same name a new group.
        format!("firehose.{}.{}", self.name, self.created_millis)
    }
}

fn check_name(name: &str) -> Result<(), ArchiveError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(ArchiveError::InvalidArgument(format!(
            "DeliveryStreamName {name:?} must be 1 to 64 characters of [a-zA-Z0-9_.-]"
        )));
    }
    Ok(())
}

fn stream_name_from_arn(arn: &str) -> Result<String, ArchiveError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "kinesis", _, _, resource] => resource
            .strip_prefix("stream/")
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                ArchiveError::InvalidArgument(format!("{arn} is not a Kinesis stream ARN"))
            }),
        _ => Err(ArchiveError::InvalidArgument(format!(
            "KinesisStreamARN {arn:?} is not a Kinesis stream ARN (arn:aws:kinesis:region:account:stream/name)"
        ))),
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
