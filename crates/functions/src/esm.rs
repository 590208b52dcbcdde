//! Event source mappings: a Kinesis-API stream feeding a function in batches, as Lambda's
//! Kinesis poller does. The mappings are records of a shared table (with PostgreSQL, one set
//! for every node: created by compare-and-set, updated by compare-and-set on the stored
//! record, and followed on the other nodes through [`Mappings::reload`]). Each node runs a
//! poller per enabled mapping, one member (named after the node) of the consumer group
//! `lambda-esm:<uuid>` (stream crate: leases and checkpoints), so nodes reading one shared
//! stream (the JetStream backend) split its shards and each record reaches the function once
//! (at least once across a lease move). A poller reads up to `BatchSize`
//! records of a shard, invokes the function synchronously with Lambda's Kinesis event, and
//! checkpoints only after the batch succeeded or was given up to the on-failure destination,
//! so a crash resumes where the last checkpoint was and no record is skipped (a batch may be
//! delivered twice). A failing batch is retried with backoff; with `BisectBatchOnFunctionError`
//! it is split in halves until the failing record is alone; past `MaximumRetryAttempts`
//! (default -1: forever, as Lambda until the record expires) the batch's description goes to the
//! `DestinationConfig.OnFailure` stream and reading goes on.

mod kinesis_event;
mod results;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fleetcore_core::{KvStore, WriteBatch};
use fleetcore_stream::{
    ConsumerConfig, ConsumerGroup, NewRecord, Record, ShardId, StartingPosition, Stream,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::FunctionsError;
use crate::model::FunctionRef;
use crate::runtime::WhenBusy;
use crate::service::Functions;
use kinesis_event::KinesisEvent;
use results::Results;

/// The store table of mappings (key: UUID; value: [`MappingRecord`] as JSON).
pub const TABLE: &str = "lambda_event_source_mappings";
/// Compare-and-set attempts of an update racing other nodes' changes of the mapping.
const ATTEMPTS: usize = 8;
/// First wait before retrying a failed batch (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A stored mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingRecord {
    /// Its id.
    pub uuid: String,
    /// `arn:aws:kinesis:{region}:{account}:stream/{name}`.
    pub event_source_arn: String,
    /// The stream's name.
    pub stream: String,
    /// The function as given (name or ARN, with an optional qualifier).
    pub function: String,
    /// Most records per invocation.
    pub batch_size: u32,
    /// `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP`.
    pub starting_position: String,
    /// For `AT_TIMESTAMP` (epoch seconds); for `LATEST`, the creation time.
    pub start_seconds: Option<f64>,
    /// Whether it runs.
    pub enabled: bool,
    /// Split failing batches.
    pub bisect: bool,
    /// Retries of a failing batch before it goes to the destination; -1: forever.
    pub maximum_retry_attempts: i64,
    /// Stored and shown; records are read as soon as they are there.
    pub maximum_batching_window: u32,
    /// The on-failure destination (a Kinesis stream ARN), if any.
    pub on_failure: Option<String>,
    /// When it was last changed (epoch seconds).
    pub last_modified: f64,
}

/// A running mapping's poller.
struct Poller {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Every mapping and its poller.
pub struct Mappings {
    functions: Arc<Functions>,
    streams: Arc<dyn Stream>,
    store: Arc<dyn KvStore>,
    records: Mutex<BTreeMap<String, MappingRecord>>,
    pollers: Mutex<HashMap<String, Poller>>,
    results: Arc<Results>,
    /// Serializes this node's changes and its following of other nodes' changes.
    writer: tokio::sync::Mutex<()>,
}

/// Fields of CreateEventSourceMapping / UpdateEventSourceMapping (absent = default/unchanged).
#[derive(Debug, Clone, Default)]
pub struct MappingChange {
    /// The stream ARN (create only).
    pub event_source_arn: Option<String>,
    /// The function.
    pub function: Option<String>,
    /// Records per batch.
    pub batch_size: Option<u32>,
    /// Starting position (create only).
    pub starting_position: Option<String>,
    /// For `AT_TIMESTAMP`.
    pub starting_position_timestamp: Option<f64>,
    /// Run or not.
    pub enabled: Option<bool>,
    /// Split failing batches.
    pub bisect: Option<bool>,
    /// Retries before the destination.
    pub maximum_retry_attempts: Option<i64>,
    /// Batching window (stored).
    pub maximum_batching_window: Option<u32>,
    /// On-failure destination ARN; `Some("")` removes it.
    pub on_failure: Option<String>,
}

fn now_seconds() -> f64 {
    crate::clock::epoch_seconds(SystemTime::now())
}

/// The stream name of a Kinesis stream ARN.
fn stream_of(arn: &str) -> Result<String, FunctionsError> {
    let resource = arn
        .strip_prefix("arn:")
        .and_then(|rest| {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            (parts.len() == 5 && parts[1] == "kinesis").then(|| parts[4])
        })
        .and_then(|r| r.strip_prefix("stream/"));
    match resource {
        Some(name) if !name.is_empty() && !name.contains('/') => Ok(name.to_string()),
        _ => Err(FunctionsError::InvalidParameter(format!(
            "Unsupported event source {arn}: this server maps Kinesis streams \
             (arn:aws:kinesis:<region>:<account>:stream/<name>)"
        ))),
    }
}

/// Every readable stored mapping.
fn load(store: &dyn KvStore) -> Result<BTreeMap<String, MappingRecord>, FunctionsError> {
    let mut records = BTreeMap::new();
    for (_, value) in store.scan_prefix(TABLE, b"")? {
        match serde_json::from_slice::<MappingRecord>(&value) {
            Ok(record) => {
                records.insert(record.uuid.clone(), record);
            }
            Err(error) => {
                tracing::error!(%error, "skipping an unreadable event source mapping")
            }
        }
    }
    Ok(records)
}

fn encode(record: &MappingRecord) -> Result<Vec<u8>, FunctionsError> {
    serde_json::to_vec(record).map_err(|e| FunctionsError::Io(format!("encoding a mapping: {e}")))
}

fn not_found(uuid: &str) -> FunctionsError {
    FunctionsError::NotFound(format!(
        "The resource you requested does not exist. (Service: Lambda, Status Code: 404) \
         UUID: {uuid}"
    ))
}

impl MappingChange {
    /// Applies the fields of an update to `record`.
    fn apply_to(&self, record: &mut MappingRecord) {
        if let Some(f) = &self.function {
            record.function.clone_from(f);
        }
        if let Some(n) = self.batch_size {
            record.batch_size = n;
        }
        if let Some(e) = self.enabled {
            record.enabled = e;
        }
        if let Some(b) = self.bisect {
            record.bisect = b;
        }
        if let Some(n) = self.maximum_retry_attempts {
            record.maximum_retry_attempts = n;
        }
        if let Some(n) = self.maximum_batching_window {
            record.maximum_batching_window = n;
        }
        if let Some(d) = &self.on_failure {
            record.on_failure = (!d.is_empty()).then(|| d.clone());
        }
    }
}

impl Mappings {
    /// Loads the stored mappings and starts a poller of each enabled one.
    pub fn start(
        functions: Arc<Functions>,
        streams: Arc<dyn Stream>,
        store: Arc<dyn KvStore>,
    ) -> Result<Arc<Mappings>, FunctionsError> {
        let records = load(store.as_ref())?;
        let results = Arc::new(Results::new(Arc::clone(&store), functions.consumer_owner()));
        let mappings = Arc::new(Mappings {
            functions,
            streams,
            store,
            records: Mutex::new(records.clone()),
            pollers: Mutex::new(HashMap::new()),
            results,
            writer: tokio::sync::Mutex::new(()),
        });
        for record in records.values().filter(|r| r.enabled) {
            mappings.start_poller(record);
        }
        Ok(mappings)
    }

    /// The mapping's configuration as Lambda shows it, with `state`.
    pub fn describe(&self, record: &MappingRecord, state: &str) -> Value {
        let reference = FunctionRef::parse(&record.function, None).ok();
        let function_arn = reference.map_or_else(
            || record.function.clone(),
            |r| self.functions.arn(&r.name, r.qualifier.as_deref()),
        );
        let mut v = json!({
            "UUID": record.uuid,
            "EventSourceArn": record.event_source_arn,
            "FunctionArn": function_arn,
            "BatchSize": record.batch_size,
            "StartingPosition": record.starting_position,
            "MaximumBatchingWindowInSeconds": record.maximum_batching_window,
            "ParallelizationFactor": 1,
            "LastModified": record.last_modified,
            "LastProcessingResult": self.results.of(&record.uuid),
            "State": state,
            "StateTransitionReason": "User action",
            "BisectBatchOnFunctionError": record.bisect,
            "MaximumRetryAttempts": record.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": -1,
            "TumblingWindowInSeconds": 0,
            "FunctionResponseTypes": [],
            "EventSourceMappingArn": self.functions.account()
                .arn("lambda", format!("event-source-mapping:{}", record.uuid)).to_string(),
            "DestinationConfig": {
                "OnFailure": record.on_failure.as_ref().map_or(json!({}), |d| json!({"Destination": d})),
            },
        });
        if record.starting_position == "AT_TIMESTAMP"
            && let Some(at) = record.start_seconds
        {
            v["StartingPositionTimestamp"] = json!(at);
        }
        v
    }

    /// The state a stored mapping is in.
    pub fn state_of(record: &MappingRecord) -> &'static str {
        if record.enabled {
            "Enabled"
        } else {
            "Disabled"
        }
    }

    /// One mapping.
    pub fn get(&self, uuid: &str) -> Result<MappingRecord, FunctionsError> {
        self.records
            .lock()
            .get(uuid)
            .cloned()
            .ok_or_else(|| not_found(uuid))
    }

    /// The stored mapping `uuid` and its bytes (what a compare-and-set expects).
    fn stored(&self, uuid: &str) -> Result<(Vec<u8>, MappingRecord), FunctionsError> {
        let bytes = self
            .store
            .get(TABLE, uuid.as_bytes())?
            .ok_or_else(|| not_found(uuid))?;
        let record = serde_json::from_slice(&bytes)
            .map_err(|e| FunctionsError::Io(format!("reading mapping {uuid}: {e}")))?;
        Ok((bytes, record))
    }

    /// The mappings of a function and/or a source.
    pub fn list(&self, function: Option<&str>, source: Option<&str>) -> Vec<MappingRecord> {
        let function = function.and_then(|f| FunctionRef::parse(f, None).ok());
        self.records
            .lock()
            .values()
            .filter(|r| source.is_none_or(|s| s == r.event_source_arn))
            .filter(|r| {
                function.as_ref().is_none_or(|f| {
                    FunctionRef::parse(&r.function, None).is_ok_and(|g| g.name == f.name)
                })
            })
            .cloned()
            .collect()
    }

    /// Writes `record` over the stored bytes `expected` (none: a new mapping); false when
    /// another node changed or deleted it meanwhile.
    fn save(
        &self,
        expected: Option<&[u8]>,
        record: &MappingRecord,
    ) -> Result<bool, FunctionsError> {
        let saved =
            self.store
                .compare_and_set(TABLE, record.uuid.as_bytes(), expected, encode(record)?)?;
        if saved {
            self.records
                .lock()
                .insert(record.uuid.clone(), record.clone());
        }
        Ok(saved)
    }

    fn check(&self, record: &MappingRecord) -> Result<(), FunctionsError> {
        self.functions
            .resolve(&FunctionRef::parse(&record.function, None)?)?;
        if !(1..=10_000).contains(&record.batch_size) {
            return Err(FunctionsError::InvalidParameter(format!(
                "1 validation error detected: Value '{}' at 'batchSize' failed to satisfy \
                 constraint: Member must have value between 1 and 10000",
                record.batch_size
            )));
        }
        if record.maximum_retry_attempts < -1 || record.maximum_retry_attempts > 10_000 {
            return Err(FunctionsError::InvalidParameter(
                "MaximumRetryAttempts must be between -1 and 10000".into(),
            ));
        }
        if let Some(destination) = &record.on_failure {
            stream_of(destination).map_err(|_| {
                FunctionsError::InvalidParameter(format!(
                    "The on-failure destination {destination} is not supported: this server \
                     sends failed batches to a Kinesis stream"
                ))
            })?;
        }
        Ok(())
    }

    /// CreateEventSourceMapping.
    pub async fn create(&self, change: MappingChange) -> Result<MappingRecord, FunctionsError> {
        let arn = change.event_source_arn.ok_or_else(|| {
            FunctionsError::InvalidParameter("EventSourceArn is required.".into())
        })?;
        let stream = stream_of(&arn)?;
        self.streams
            .describe_stream(&stream)
            .await
            .map_err(|_| FunctionsError::InvalidParameter(format!("Stream not found: {arn}")))?;
        let function = change
            .function
            .ok_or_else(|| FunctionsError::InvalidParameter("FunctionName is required.".into()))?;
        let position = change.starting_position.ok_or_else(|| {
            FunctionsError::InvalidParameter(
                "StartingPosition is required for Kinesis event sources.".into(),
            )
        })?;
        let created = now_seconds();
        let start_seconds = match position.as_str() {
            "TRIM_HORIZON" => None,
            // Resolved once: a restart before the first checkpoint must not skip what arrived.
            "LATEST" => Some(created),
            "AT_TIMESTAMP" => Some(change.starting_position_timestamp.ok_or_else(|| {
                FunctionsError::InvalidParameter(
                    "StartingPositionTimestamp is required with AT_TIMESTAMP.".into(),
                )
            })?),
            other => {
                return Err(FunctionsError::InvalidParameter(format!(
                    "1 validation error detected: Value '{other}' at 'startingPosition' failed \
                     to satisfy constraint: Member must satisfy enum value set: [TRIM_HORIZON, \
                     LATEST, AT_TIMESTAMP]"
                )));
            }
        };
        let record = MappingRecord {
            uuid: uuid::Uuid::new_v4().to_string(),
            event_source_arn: arn,
            stream,
            function,
            batch_size: change.batch_size.unwrap_or(100),
            starting_position: position,
            start_seconds,
            enabled: change.enabled.unwrap_or(true),
            bisect: change.bisect.unwrap_or(false),
            maximum_retry_attempts: change.maximum_retry_attempts.unwrap_or(-1),
            maximum_batching_window: change.maximum_batching_window.unwrap_or(0),
            on_failure: change.on_failure.filter(|d| !d.is_empty()),
            last_modified: created,
        };
        self.check(&record)?;
        let _writer = self.writer.lock().await;
        if !self.save(None, &record)? {
            return Err(FunctionsError::Conflict(format!(
                "The event source mapping {} exists already.",
                record.uuid
            )));
        }
        if record.enabled {
            self.start_poller(&record);
        }
        Ok(record)
    }

    /// UpdateEventSourceMapping: made on the stored record (again on a newer one when another
    /// node changed it meanwhile, so no change is lost); the poller restarts with the new
    /// settings (from the checkpoint).
    pub async fn update(
        &self,
        uuid: &str,
        change: MappingChange,
    ) -> Result<MappingRecord, FunctionsError> {
        let _writer = self.writer.lock().await;
        for _ in 0..ATTEMPTS {
            let (old, mut record) = self.stored(uuid)?;
            change.apply_to(&mut record);
            record.last_modified = now_seconds();
            self.check(&record)?;
            if self.save(Some(&old), &record)? {
                self.stop_poller(uuid).await;
                if record.enabled {
                    self.start_poller(&record);
                }
                return Ok(record);
            }
        }
        Err(FunctionsError::Conflict(format!(
            "The event source mapping {uuid} is being changed on another node; try again."
        )))
    }

    /// DeleteEventSourceMapping (with every node's result of it).
    pub async fn delete(&self, uuid: &str) -> Result<MappingRecord, FunctionsError> {
        let _writer = self.writer.lock().await;
        let (_, record) = self.stored(uuid)?;
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, uuid.as_bytes().to_vec());
        batch.delete_prefix(results::TABLE, results::prefix(uuid));
        self.store.apply(batch)?;
        self.follow(uuid, None).await;
        Ok(record)
    }

    /// Reads mapping `uuid` again from the store (another node created, changed or deleted
    /// it): this node's poller of it starts, restarts with the new settings, or stops.
    pub async fn reload(&self, uuid: &str) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let stored = match self.stored(uuid) {
            Ok((_, record)) => Some(record),
            Err(FunctionsError::NotFound(_)) => None,
            Err(error) => return Err(error),
        };
        self.follow(uuid, stored).await;
        Ok(())
    }

    /// Reads every mapping again from the store (another node may have changed any).
    pub async fn reload_all(&self) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let stored = load(self.store.as_ref())?;
        let known: Vec<String> = self.records.lock().keys().cloned().collect();
        for uuid in known.iter().filter(|uuid| !stored.contains_key(*uuid)) {
            self.follow(uuid, None).await;
        }
        for (uuid, record) in stored {
            self.follow(&uuid, Some(record)).await;
        }
        Ok(())
    }

    /// Brings this node's copy and poller of mapping `uuid` to `stored` (none: deleted).
    async fn follow(&self, uuid: &str, stored: Option<MappingRecord>) {
        let Some(record) = stored else {
            self.records.lock().remove(uuid);
            self.stop_poller(uuid).await;
            self.results.forget(uuid);
            return;
        };
        let same = self.records.lock().get(uuid) == Some(&record);
        let running = self.pollers.lock().contains_key(uuid);
        if same && running == record.enabled {
            return;
        }
        self.records.lock().insert(uuid.to_string(), record.clone());
        self.stop_poller(uuid).await;
        if record.enabled {
            self.start_poller(&record);
        }
    }

    /// Deletes the mappings of a deleted function.
    pub async fn function_deleted(&self, name: &str) {
        for record in self.list(Some(name), None) {
            if let Err(error) = self.delete(&record.uuid).await {
                tracing::warn!(uuid = %record.uuid, %error, "could not delete the mapping of a deleted function");
            }
        }
    }

    /// Stops every poller (a batch in flight finishes or is delivered again after a restart).
    pub async fn shutdown(&self) {
        let uuids: Vec<String> = self.pollers.lock().keys().cloned().collect();
        for uuid in uuids {
            self.stop_poller(&uuid).await;
        }
    }

    async fn stop_poller(&self, uuid: &str) {
        let poller = self.pollers.lock().remove(uuid);
        if let Some(poller) = poller {
            let _ = poller.stop.send(true);
            let abort = poller.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), poller.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn start_poller(&self, record: &MappingRecord) {
        let (stop, stopped) = watch::channel(false);
        let function = FunctionRef::parse(&record.function, None)
            .map_or_else(|_| record.function.clone(), |r| r.name);
        let poller = BatchPoller {
            record: record.clone(),
            functions: Arc::clone(&self.functions),
            streams: Arc::clone(&self.streams),
            results: Arc::clone(&self.results),
            stopped,
            identity_arn: format!(
                "arn:aws:iam::{}:role/fleetcore",
                self.functions.account().account_id
            ),
            delivered: metrics::counter!("fleetcore_functions_esm_records_total", "function" => function),
        };
        let task = tokio::spawn(poller.run());
        self.pollers
            .lock()
            .insert(record.uuid.clone(), Poller { stop, task });
    }
}

/// Why delivering a batch ended early.
struct Stopped;

/// The loop of one mapping.
struct BatchPoller {
    record: MappingRecord,
    functions: Arc<Functions>,
    streams: Arc<dyn Stream>,
    results: Arc<Results>,
    stopped: watch::Receiver<bool>,
    /// The event's `invokeIdentityArn`.
    identity_arn: String,
    /// `fleetcore_functions_esm_records_total` of the function: records of batches it
    /// processed successfully.
    delivered: metrics::Counter,
}

impl BatchPoller {
    async fn run(mut self) {
        let start = match self.record.start_seconds {
            Some(seconds) => StartingPosition::AtTimestamp(
                UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)),
            ),
            None => StartingPosition::TrimHorizon,
        };
        let mut group = ConsumerGroup::new(
            Arc::clone(&self.streams),
            self.record.stream.clone(),
            format!("lambda-esm:{}", self.record.uuid),
            self.functions.consumer_owner().to_string(),
            ConsumerConfig {
                batch_limit: self.record.batch_size as usize,
                start,
                ..ConsumerConfig::default()
            },
        );
        let mut backoff = FIRST_BACKOFF;
        loop {
            let batch = tokio::select! {
                batch = group.next() => batch,
                _ = self.stopped.changed() => return,
            };
            let batch = match batch {
                Ok(batch) => {
                    backoff = FIRST_BACKOFF;
                    batch
                }
                Err(error) => {
                    tracing::warn!(uuid = %self.record.uuid, %error, "event source mapping cannot read its stream");
                    self.set_result(&format!("PROBLEM: cannot read the stream: {error}"));
                    if self.pause(&mut backoff).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if self.deliver(&batch.records, batch.shard).await.is_err() {
                return;
            }
            if let Err(error) = group.commit(&batch).await {
                tracing::warn!(uuid = %self.record.uuid, %error, "event source mapping could not checkpoint (the batch will be delivered again)");
            }
        }
    }

    fn set_result(&self, text: &str) {
        self.results.set(&self.record.uuid, text);
    }

    /// Waits `backoff` (doubling it), or returns `Stopped`.
    async fn pause(&mut self, backoff: &mut Duration) -> Result<(), Stopped> {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            _ = self.stopped.changed() => Err(Stopped),
        }
    }

    /// Delivers `records` until they succeed or are given up to the destination.
    async fn deliver(&mut self, records: &[Record], shard: ShardId) -> Result<(), Stopped> {
        let mut attempts: i64 = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.invoke(records, shard).await {
                Ok(()) => {
                    self.set_result(results::OK);
                    return Ok(());
                }
                Err(reason) => {
                    self.set_result("PROBLEM: Function call failed");
                    tracing::info!(uuid = %self.record.uuid, records = records.len(), %reason, "event source mapping batch failed");
                    if self.record.bisect && records.len() > 1 {
                        let (left, right) = records.split_at(records.len() / 2);
                        Box::pin(self.deliver(left, shard)).await?;
                        return Box::pin(self.deliver(right, shard)).await;
                    }
                    attempts += 1;
                    let limit = self.record.maximum_retry_attempts;
                    if limit >= 0 && attempts > limit {
                        self.give_up(records, shard, attempts, &reason).await;
                        return Ok(());
                    }
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    async fn invoke(&self, records: &[Record], shard: ShardId) -> Result<(), String> {
        let account = self.functions.account();
        let event = KinesisEvent {
            records,
            shard,
            source_arn: &self.record.event_source_arn,
            region: &account.region,
            identity_arn: &self.identity_arn,
        }
        .to_json();
        let reference =
            FunctionRef::parse(&self.record.function, None).map_err(|e| e.to_string())?;
        let invoked = self
            .functions
            .invoke(&reference, Bytes::from(event), None, WhenBusy::Wait)
            .await
            .map_err(|e| e.to_string())?;
        match invoked.outcome.function_error {
            None => {
                self.delivered.increment(records.len() as u64);
                Ok(())
            }
            Some(_) => Err(String::from_utf8_lossy(&invoked.outcome.payload).into_owned()),
        }
    }

    /// Sends the description of a batch that kept failing to the on-failure destination.
    async fn give_up(&self, records: &[Record], shard: ShardId, attempts: i64, reason: &str) {
        metrics::counter!("fleetcore_functions_esm_batches_discarded_total").increment(1);
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return;
        };
        tracing::warn!(uuid = %self.record.uuid, %shard, first = %first.sequence, last = %last.sequence, "event source mapping gave up on a batch");
        let Some(destination) = &self.record.on_failure else {
            return;
        };
        let document = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": self.functions.arn(&self.record.function, None),
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": crate::clock::iso8601_now(),
            "errorMessage": reason,
            "KinesisBatchInfo": {
                "shardId": shard.to_string(),
                "startSequenceNumber": first.sequence.to_string(),
                "endSequenceNumber": last.sequence.to_string(),
                "approximateArrivalOfFirstRecord": crate::clock::epoch_seconds(first.arrival),
                "approximateArrivalOfLastRecord": crate::clock::epoch_seconds(last.arrival),
                "batchSize": records.len(),
                "streamArn": self.record.event_source_arn,
            },
        });
        let Ok(stream) = stream_of(destination) else {
            return;
        };
        let put = self
            .streams
            .put_records(
                &stream,
                vec![NewRecord {
                    partition_key: shard.to_string(),
                    explicit_hash_key: None,
                    data: Bytes::from(document.to_string()),
                }],
            )
            .await;
        match put {
            Ok(outcomes) if outcomes.iter().all(Result::is_ok) => {}
            Ok(_) | Err(_) => {
                tracing::error!(uuid = %self.record.uuid, %destination, "could not write to the on-failure destination");
            }
        }
    }
}
