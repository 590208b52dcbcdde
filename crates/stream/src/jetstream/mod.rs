//! The NATS JetStream backend: [`JetStreamStreams`].
//!
//! Each shard of a fleetcore stream is one JetStream stream (`FCS_<epoch>_<shard>`, file
//! storage, subject `fleetcore.streams.<epoch>.<shard>`, `max_age` = the retention), so a
//! shard's JetStream sequence is dense and maps straight into the sequence number
//! ([`sequence`]). Stream descriptions live in the KV bucket `fleetcore_streams`, consumer-group
//! leases and checkpoints in `fleetcore_stream_leases`; both change by compare-and-set on the
//! entry revision. A put is acknowledged once JetStream acknowledged every record (stored in
//! its file store). Only JetStream APIs of nats-server 2.9 are used.

mod leases;
mod meta;
mod read;
mod record;
mod sequence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::RwLock;

use self::meta::{META_BUCKET, ShardMeta, StreamMeta};
use crate::routing::{self, ON_DEMAND_SHARDS};
use crate::{
    Appended, Lease, MAX_RECORD_BYTES, NewRecord, Position, PutOutcome, ReadBatch, RecordFailure,
    ShardId, StartingPosition, Stream, StreamError, StreamInfo, StreamMode, StreamSpec,
};

/// Most shards a stream may have, open and closed together (each is a JetStream stream).
pub const MAX_SHARDS_PER_STREAM: u32 = 2048;

/// A [`Stream`] store on a NATS JetStream server (2.9 or later).
pub struct JetStreamStreams {
    js: jetstream::Context,
    client: async_nats::Client,
    meta: kv::Store,
    leases: kv::Store,
    /// Stream descriptions as last read or written by this process.
    cache: Mutex<HashMap<String, StreamMeta>>,
    /// Per stream: puts hold it shared, reshards and deletes exclusively, so no record lands
    /// in a shard after it was closed.
    gates: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    readers: read::Readers,
}

impl JetStreamStreams {
    /// Connects to the NATS servers `servers` (comma-separated URLs, e.g.
    /// `nats://127.0.0.1:4222`) and opens (or creates) the metadata buckets.
    pub async fn connect(servers: &str) -> Result<JetStreamStreams, StreamError> {
        let addrs = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<async_nats::ServerAddr>().map_err(|e| {
                    StreamError::InvalidArgument(format!("`{s}` is not a NATS server URL: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(StreamError::InvalidArgument(
                "no NATS server given for the JetStream stream backend".into(),
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .name("fleetcore-streams")
            .connect(addrs)
            .await
            .map_err(|e| StreamError::Storage(format!("connecting to NATS at {servers}: {e}")))?;
        let max_payload = client.server_info().max_payload;
        if max_payload < MAX_RECORD_BYTES + record::OVERHEAD {
            tracing::warn!(
                max_payload,
                "nats-server's max_payload is below 1 MiB plus the record header: records that large will fail (set `max_payload: 2MB` in nats-server.conf)"
            );
        }
        let js = jetstream::new(client.clone());
        let meta = bucket(&js, META_BUCKET).await?;
        let leases = bucket(&js, leases::LEASE_BUCKET).await?;
        Ok(JetStreamStreams {
            readers: read::Readers::new(js.clone()),
            js,
            client,
            meta,
            leases,
            cache: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        })
    }

    fn gate(&self, name: &str) -> Arc<RwLock<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(gates.entry(name.to_string()).or_default())
    }

    fn remember(&self, meta: &StreamMeta) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(meta.name.clone(), meta.clone());
    }

    fn forget(&self, name: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(name);
    }

    /// The stored description and its revision, read from the bucket.
    async fn load(&self, name: &str) -> Result<(StreamMeta, u64), StreamError> {
        let entry = self
            .meta
            .entry(StreamMeta::key(name))
            .await
            .map_err(storage)?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let meta = StreamMeta::from_json(&entry.value)?;
                self.remember(&meta);
                Ok((meta, entry.revision))
            }
            _ => {
                self.forget(name);
                Err(not_found(name))
            }
        }
    }

    /// The description as cached, read from the bucket when not cached.
    async fn cached(&self, name: &str) -> Result<StreamMeta, StreamError> {
        let hit = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(name).cloned()
        };
        match hit {
            Some(meta) => Ok(meta),
            None => Ok(self.load(name).await?.0),
        }
    }

    /// The description (re-read if `shard` is not in the cached one) and the shard.
    async fn with_shard(
        &self,
        name: &str,
        shard: ShardId,
    ) -> Result<(StreamMeta, ShardMeta), StreamError> {
        let mut meta = self.cached(name).await?;
        if meta.shard(shard).is_err() {
            meta = self.load(name).await?.0;
        }
        let found = meta.shard(shard)?.clone();
        Ok((meta, found))
    }

    async fn create_shard_stream(&self, meta: &StreamMeta, shard: u32) -> Result<(), StreamError> {
        self.js
            .create_stream(jetstream::stream::Config {
                name: js_stream(meta.epoch, shard),
                subjects: vec![js_subject(meta.epoch, shard)],
                storage: StorageType::File,
                max_age: meta.retention(),
                description: Some(format!("fleetcore stream {} shard {shard}", meta.name)),
                ..Default::default()
            })
            .await
            .map_err(|e| StreamError::Storage(format!("creating the JetStream stream: {e}")))?;
        Ok(())
    }

    async fn delete_shard_streams(&self, epoch: u64, shards: impl Iterator<Item = u32>) {
        for shard in shards {
            let name = js_stream(epoch, shard);
            if let Err(e) = self.js.delete_stream(&name).await {
                tracing::warn!(stream = %name, error = %e, "could not delete a JetStream stream");
            }
        }
    }

    /// Writes `meta` over revision `revision`; `ResourceInUse` if someone changed it since.
    async fn store(&self, meta: &StreamMeta, revision: u64) -> Result<u64, StreamError> {
        let revision = self
            .meta
            .update(StreamMeta::key(&meta.name), meta.to_json(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => StreamError::ResourceInUse(format!(
                    "Stream {} was changed concurrently; try again.",
                    meta.name
                )),
                _ => storage(e),
            })?;
        self.remember(meta);
        Ok(revision)
    }
}

/// Opens the KV bucket `name`, creating it first if needed. The bucket's stream is created
/// directly with the KV layout, because the client's own `create_key_value` first queries the
/// account info in a shape nats-server 2.9 does not answer.
async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, StreamError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some("fleetcore stream metadata".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| StreamError::Storage(format!("creating the KV bucket {name}: {e}")))?;
    js.get_key_value(name)
        .await
        .map_err(|e| StreamError::Storage(format!("opening the KV bucket {name}: {e}")))
}

/// The JetStream stream of a shard.
fn js_stream(epoch: u64, shard: u32) -> String {
    format!("FCS_{epoch}_{shard}")
}

/// The subject records of a shard are published on.
fn js_subject(epoch: u64, shard: u32) -> String {
    format!("fleetcore.streams.{epoch}.{shard}")
}

fn storage(e: impl std::fmt::Display) -> StreamError {
    StreamError::Storage(e.to_string())
}

/// True if two hash key ranges share a key.
fn overlaps(a: &crate::HashKeyRange, b: &crate::HashKeyRange) -> bool {
    a.start <= b.end && b.start <= a.end
}

fn not_found(name: &str) -> StreamError {
    StreamError::NotFound(format!("Stream {name} not found."))
}

#[async_trait]
impl Stream for JetStreamStreams {
    async fn create_stream(&self, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        routing::validate_stream_name(&spec.name)?;
        routing::validate_retention(spec.retention_hours)?;
        let shard_count = match spec.mode {
            StreamMode::OnDemand => ON_DEMAND_SHARDS,
            StreamMode::Provisioned => spec.shard_count,
        };
        routing::validate_shard_count(shard_count)?;
        let mut meta = StreamMeta {
            name: spec.name.clone(),
            epoch: 0,
            on_demand: spec.mode == StreamMode::OnDemand,
            retention_hours: spec.retention_hours,
            created_ms: meta::now_ms(),
            shards: routing::uniform_ranges(shard_count)
                .into_iter()
                .zip(0u32..)
                .map(|(range, id)| ShardMeta::new(id, range, &[]))
                .collect(),
        };
        let revision = self
            .meta
            .create(StreamMeta::key(&spec.name), meta.to_json())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    StreamError::AlreadyExists(format!("Stream {} already exists.", spec.name))
                }
                _ => storage(e),
            })?;
        if revision > sequence::MAX_EPOCH {
            return Err(StreamError::Storage(
                "the stream metadata bucket ran out of epochs".into(),
            ));
        }
        meta.epoch = revision;
        let mut created = Vec::new();
        let mut failure = None;
        for shard in &meta.shards {
            match self.create_shard_stream(&meta, shard.id).await {
                Ok(()) => created.push(shard.id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = match failure {
            None => self.store(&meta, revision).await.err(),
            some => some,
        };
        if let Some(e) = failure {
            self.delete_shard_streams(meta.epoch, created.into_iter())
                .await;
            let _ = self.meta.delete(StreamMeta::key(&spec.name)).await;
            self.forget(&spec.name);
            return Err(e);
        }
        meta.info()
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        let gate = self.gate(name);
        let _exclusive = gate.write().await;
        let (meta, revision) = self.load(name).await?;
        self.meta
            .delete_expect_revision(StreamMeta::key(name), Some(revision))
            .await
            .map_err(storage)?;
        self.forget(name);
        self.readers.forget_epoch(meta.epoch);
        self.delete_shard_streams(meta.epoch, meta.shards.iter().map(|s| s.id))
            .await;
        leases::delete_all(&self.leases, &meta).await;
        Ok(())
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamInfo, StreamError> {
        self.load(name).await?.0.info()
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        let mut keys = match self.meta.keys().await {
            Ok(keys) => keys,
            Err(e) => return Err(storage(e)),
        };
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(name) = StreamMeta::name_of_key(&key.map_err(storage)?) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn set_retention(&self, name: &str, hours: u32) -> Result<StreamInfo, StreamError> {
        routing::validate_retention(hours)?;
        let gate = self.gate(name);
        let _exclusive = gate.write().await;
        let (mut meta, revision) = self.load(name).await?;
        meta.retention_hours = hours;
        for shard in &meta.shards {
            let mut stream = self
                .js
                .get_stream(js_stream(meta.epoch, shard.id))
                .await
                .map_err(storage)?;
            let mut config = stream.info().await.map_err(storage)?.config.clone();
            config.max_age = meta.retention();
            self.js.update_stream(config).await.map_err(storage)?;
        }
        self.store(&meta, revision).await?;
        meta.info()
    }

    async fn update_shard_count(&self, name: &str, target: u32) -> Result<StreamInfo, StreamError> {
        let gate = self.gate(name);
        let _exclusive = gate.write().await;
        let (mut meta, revision) = self.load(name).await?;
        let open: Vec<ShardMeta> = meta
            .shards
            .iter()
            .filter(|s| s.is_open())
            .cloned()
            .collect();
        let current = open.len() as u32;
        routing::validate_reshard(current, target)?;
        if target == current {
            return meta.info();
        }
        if meta.shards.len() as u32 + target > MAX_SHARDS_PER_STREAM {
            return Err(StreamError::LimitExceeded(format!(
                "Stream {name} would have more than {MAX_SHARDS_PER_STREAM} shards, open and closed."
            )));
        }
        let next_id = meta.shards.iter().map(|s| s.id).max().map_or(0, |m| m + 1);
        if next_id + target > sequence::MAX_SHARD_ID {
            return Err(StreamError::LimitExceeded("shard ids exhausted".into()));
        }
        let mut children = Vec::new();
        for (range, id) in routing::uniform_ranges(target).into_iter().zip(next_id..) {
            let mut parents = Vec::new();
            for parent in &open {
                if overlaps(&parent.range()?, &range) {
                    parents.push(parent.id);
                }
            }
            children.push(ShardMeta::new(id, range, &parents));
        }
        // Close the parents at their current last record: nothing more is put into them
        // while the gate is held, and after the metadata update puts go to the children.
        for parent in &open {
            let mut stream = self
                .js
                .get_stream(js_stream(meta.epoch, parent.id))
                .await
                .map_err(storage)?;
            let last = stream.info().await.map_err(storage)?.state.last_sequence;
            if let Some(shard) = meta.shards.iter_mut().find(|s| s.id == parent.id) {
                shard.closed_at = Some(last);
            }
        }
        let mut created = Vec::new();
        for child in &children {
            if let Err(e) = self.create_shard_stream(&meta, child.id).await {
                self.delete_shard_streams(meta.epoch, created.into_iter())
                    .await;
                return Err(e);
            }
            created.push(child.id);
        }
        meta.shards.extend(children);
        if let Err(e) = self.store(&meta, revision).await {
            self.delete_shard_streams(meta.epoch, created.into_iter())
                .await;
            self.forget(name);
            return Err(e);
        }
        meta.info()
    }

    async fn put_records(
        &self,
        name: &str,
        records: Vec<NewRecord>,
    ) -> Result<Vec<PutOutcome>, StreamError> {
        routing::validate_put(&records)?;
        let gate = self.gate(name);
        let _shared = gate.read().await;
        let meta = self.cached(name).await?;
        let mut open = Vec::new();
        for shard in meta.shards.iter().filter(|s| s.is_open()) {
            open.push((shard.range()?, shard.id));
        }
        let mut pending = Vec::with_capacity(records.len());
        for record in &records {
            let key = routing::routing_key(record);
            let Some(&(_, shard)) = open.iter().find(|(range, _)| range.contains(key)) else {
                return Err(StreamError::Storage(format!(
                    "no open shard of {name} owns hash key {key}"
                )));
            };
            let payload = record::encode(&record.partition_key, &record.data);
            let ack = self
                .js
                .publish(js_subject(meta.epoch, shard), payload)
                .await
                .map_err(|e| e.to_string());
            pending.push((shard, ack));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        let mut failed = false;
        for (shard, ack) in pending {
            let outcome = match ack {
                Ok(future) => match future.await {
                    Ok(ack) if ack.stream == js_stream(meta.epoch, shard) => Ok(Appended {
                        shard: ShardId(shard),
                        sequence: sequence::encode(meta.epoch, ShardId(shard), ack.sequence),
                    }),
                    Ok(ack) => Err(format!("stored in the foreign stream {}", ack.stream)),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            };
            outcomes.push(outcome.map_err(|e| {
                failed = true;
                RecordFailure::Internal(format!("JetStream did not store the record: {e}"))
            }));
        }
        if failed {
            // The description may be stale (another node resharded or deleted the stream).
            self.forget(name);
        }
        Ok(outcomes)
    }

    async fn resolve(
        &self,
        name: &str,
        shard: ShardId,
        start: StartingPosition,
    ) -> Result<Position, StreamError> {
        let (meta, _) = self.with_shard(name, shard).await?;
        let js_name = js_stream(meta.epoch, shard.0);
        match start {
            StartingPosition::TrimHorizon => {
                Ok(Position::at(sequence::encode(meta.epoch, shard, 0)))
            }
            StartingPosition::Latest => {
                let last = read::last_sequence(&self.js, &js_name).await?;
                Ok(Position::after(sequence::encode(meta.epoch, shard, last)))
            }
            StartingPosition::AtSequence(seq) => {
                sequence::decode_own(meta.epoch, shard, seq)?;
                Ok(Position::at(seq))
            }
            StartingPosition::AfterSequence(seq) => {
                sequence::decode_own(meta.epoch, shard, seq)?;
                Ok(Position::after(seq))
            }
            StartingPosition::AtTimestamp(time) => {
                let js = read::first_at_or_after(&self.js, &js_name, time).await?;
                Ok(Position::at(sequence::encode(meta.epoch, shard, js)))
            }
        }
    }

    async fn read(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        let (meta, shard_meta) = self.with_shard(name, shard).await?;
        self.readers
            .read(meta.epoch, shard, shard_meta.closed_at, from, limit)
            .await
    }

    async fn wait_for_records(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        let (meta, shard_meta) = self.with_shard(name, shard).await?;
        if shard_meta.closed_at.is_some() {
            return Ok(());
        }
        let start = sequence::start_of(meta.epoch, shard, from);
        let mut arrivals = self
            .client
            .subscribe(js_subject(meta.epoch, shard.0))
            .await
            .map_err(storage)?;
        let last = read::last_sequence(&self.js, &js_stream(meta.epoch, shard.0)).await?;
        if last >= start {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout, arrivals.next()).await;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StreamError> {
        let (meta, _) = self.with_shard(name, shard).await?;
        leases::acquire(&self.leases, &meta, group, shard, owner, ttl).await
    }

    async fn checkpoint(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        owner: &str,
        position: Position,
    ) -> Result<(), StreamError> {
        let (meta, _) = self.with_shard(name, shard).await?;
        leases::checkpoint(&self.leases, &meta, group, shard, owner, position).await
    }

    async fn leases(&self, name: &str, group: &str) -> Result<Vec<Lease>, StreamError> {
        let meta = self.cached(name).await?;
        leases::list(&self.leases, &meta, group).await
    }

    async fn steal_lease(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        current: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StreamError> {
        let (meta, _) = self.with_shard(name, shard).await?;
        leases::steal(&self.leases, &meta, group, shard, current, owner, ttl).await
    }

    async fn checkpoint_of(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
    ) -> Result<Option<Position>, StreamError> {
        let (meta, _) = self.with_shard(name, shard).await?;
        leases::checkpoint_of(&self.leases, &meta, group, shard).await
    }
}
