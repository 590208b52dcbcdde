//! The embedded backend: every shard is a directory of append-only segment files under
//! `<data dir>/streams/`, written by one writer thread with group commit, read straight from the
//! files; the metadata lives in `catalog.json` beside them. A commit is made durable by one
//! fdatasync of the commit journal, whatever the number of shards it touched (see `journal`).
//!
//! ```text
//! streams/LOCK                               held while open (one process per directory)
//! streams/catalog.json                       streams, shards, reservations, checkpoints, leases
//! streams/journal                            commit journal: the frames not yet synced in segments
//! streams/s<epoch>/shardId-000000000000/<first sequence, 32 hex digits>.seg   frames
//!                                       .../<same>.idx                         sparse index of a sealed segment
//! ```
//!
//! Sequence numbers are `epoch << 64 | counter`: the epoch is unique per created stream (so a
//! re-created stream never repeats a number), the counter is shared by the stream's shards and
//! reserved ahead in the catalog (so a restart never repeats one either).

mod batch;
mod catalog;
mod frame;
mod journal;
mod metrics;
mod recovery;
mod segment;
mod shard_log;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::catalog::{Catalog, GroupMeta, LeaseMeta, StreamMeta, from_unix_ms, unix_ms};
use self::shard_log::ShardLog;
use self::writer::{Command, Put, Writer};
use crate::routing;
use crate::{
    Lease, MAX_READ_RECORDS, NewRecord, Position, PutOutcome, ReadBatch, Record, ShardId,
    StartingPosition, Stream, StreamError, StreamInfo, StreamMode, StreamSpec,
};

/// Most payload bytes one read returns (Kinesis GetRecords: 10 MiB).
const MAX_READ_BYTES: usize = 10 << 20;

/// The time source of arrival times, retention and leases (tests move it forward).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Tuning of the embedded backend.
#[derive(Clone)]
pub struct EmbeddedConfig {
    /// A segment file is rolled once it would grow past this many bytes.
    pub segment_bytes: u64,
    /// How often segments past retention are looked for.
    pub retention_interval: Duration,
    /// Payload bytes that may wait for the writer; further puts wait for room (back-pressure).
    pub queue_bytes: usize,
    /// Size of the commit journal (zero-filled when created): it is checkpointed (every segment
    /// it covers synced, then overwritten from its start) once a batch would not fit.
    pub journal_bytes: u64,
    /// The time source ([`SystemTime::now`] outside tests).
    pub clock: Clock,
}

impl Default for EmbeddedConfig {
    fn default() -> EmbeddedConfig {
        EmbeddedConfig {
            segment_bytes: 64 << 20,
            retention_interval: Duration::from_secs(60),
            queue_bytes: 64 << 20,
            journal_bytes: 8 << 20,
            clock: Arc::new(SystemTime::now),
        }
    }
}

/// State shared by the API side and the writer thread.
struct Shared {
    dir: PathBuf,
    config: EmbeddedConfig,
    catalog: Catalog,
    logs: RwLock<HashMap<(u64, u32), Arc<ShardLog>>>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        unix_ms((self.config.clock)())
    }

    fn log(&self, epoch: u64, shard: u32) -> Option<Arc<ShardLog>> {
        self.logs.read().get(&(epoch, shard)).cloned()
    }

    /// The stream's epoch and retention, the shard's log, and whether the shard exists.
    fn locate(&self, name: &str, shard: ShardId) -> Result<Located, StreamError> {
        let (epoch, retention_hours, starting, ending) = self.catalog.read(|data| {
            let stream = stream_of(&data.streams, name)?;
            let meta = stream.shard(shard)?;
            Ok::<_, StreamError>((
                stream.epoch,
                stream.retention_hours,
                meta.starting_sequence,
                meta.ending_sequence,
            ))
        })?;
        let log = self
            .log(epoch, shard.0)
            .ok_or_else(|| StreamError::NotFound(format!("shard {shard} not found")))?;
        Ok(Located {
            log,
            retention_ms: u64::from(retention_hours) * 3_600_000,
            shard,
            starting,
            ending,
        })
    }
}

struct Located {
    log: Arc<ShardLog>,
    retention_ms: u64,
    shard: ShardId,
    starting: u128,
    ending: Option<u128>,
}

impl Located {
    /// Refuses a sequence number the shard can never have held (as Kinesis'
    /// GetShardIterator does).
    fn check(&self, sequence: crate::SequenceNumber) -> Result<(), StreamError> {
        if sequence.0 < self.starting || self.ending.is_some_and(|end| sequence.0 > end) {
            return Err(StreamError::InvalidArgument(format!(
                "sequence number {sequence} is not in {}",
                self.shard
            )));
        }
        Ok(())
    }
}

fn stream_of<'a>(
    streams: &'a std::collections::BTreeMap<String, StreamMeta>,
    name: &str,
) -> Result<&'a StreamMeta, StreamError> {
    streams
        .get(name)
        .ok_or_else(|| StreamError::NotFound(format!("stream {name} not found")))
}

/// The stream `name`, to change.
fn stream_of_mut<'a>(
    streams: &'a mut std::collections::BTreeMap<String, StreamMeta>,
    name: &str,
) -> Result<&'a mut StreamMeta, StreamError> {
    streams
        .get_mut(name)
        .ok_or_else(|| StreamError::NotFound(format!("stream {name} not found")))
}

/// The consumer group `group` of stream `name` (created if new), once `shard` is known to exist.
fn group_of<'a>(
    streams: &'a mut std::collections::BTreeMap<String, StreamMeta>,
    name: &str,
    group: String,
    shard: ShardId,
) -> Result<&'a mut GroupMeta, StreamError> {
    let stream = stream_of_mut(streams, name)?;
    stream.shard(shard)?;
    Ok(stream.groups.entry(group).or_default())
}

/// Gives `shard`'s lease to `owner` until `expires_ms`.
fn grant(
    leases: &mut std::collections::BTreeMap<u32, LeaseMeta>,
    shard: ShardId,
    owner: String,
    expires_ms: u64,
) {
    leases.insert(shard.0, LeaseMeta { owner, expires_ms });
}

fn storage(context: &str, error: impl std::fmt::Display) -> StreamError {
    StreamError::Storage(format!("{context}: {error}"))
}

/// The embedded, single-node [`Stream`] backend.
pub struct EmbeddedStreams {
    shared: Arc<Shared>,
    commands: Option<mpsc::Sender<Command>>,
    queue: Arc<Semaphore>,
    writer: Option<JoinHandle<()>>,
    retention: tokio::task::JoinHandle<()>,
    _lock: File,
}

impl EmbeddedStreams {
    /// Opens (or creates) the streams directory, recovers every shard's tail and starts the
    /// writer thread and the retention timer. Needs a tokio runtime.
    pub async fn open(
        dir: impl Into<PathBuf>,
        config: EmbeddedConfig,
    ) -> Result<EmbeddedStreams, StreamError> {
        let dir = dir.into();
        let (shared, cursors, journal, lock) =
            tokio::task::spawn_blocking(move || recovery::recover(dir, config))
                .await
                .map_err(|error| storage("opening streams", error))??;
        let shared = Arc::new(shared);
        let (commands, receiver) = mpsc::channel(1024);
        let writer = Writer::new(shared.clone(), receiver, cursors, journal);
        let writer = std::thread::Builder::new()
            .name("stream-writer".into())
            .spawn(move || writer.run())
            .map_err(|error| storage("starting the stream writer", error))?;
        let retention = tokio::spawn(retention_timer(
            commands.downgrade(),
            shared.config.retention_interval,
        ));
        let queue = Arc::new(Semaphore::new(shared.config.queue_bytes));
        Ok(EmbeddedStreams {
            shared,
            commands: Some(commands),
            queue,
            writer: Some(writer),
            retention,
            _lock: lock,
        })
    }

    /// Applies retention now (the timer does it every `retention_interval`).
    pub async fn apply_retention(&self) -> Result<(), StreamError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Retain(Some(reply))).await?;
        done.await
            .map_err(|_| StreamError::Storage("the stream writer stopped".into()))
    }

    async fn send(&self, command: Command) -> Result<(), StreamError> {
        let commands = self
            .commands
            .as_ref()
            .ok_or_else(|| StreamError::Storage("the stream writer is stopped".into()))?;
        commands
            .send(command)
            .await
            .map_err(|_| StreamError::Storage("the stream writer is stopped".into()))
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StreamError>>) -> Command,
    ) -> Result<T, StreamError> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        answer
            .await
            .map_err(|_| StreamError::Storage("the stream writer stopped".into()))?
    }

    /// Runs a catalog change that writes the catalog file off the async threads.
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut catalog::CatalogData) -> Result<(T, bool), StreamError> + Send + 'static,
    ) -> Result<T, StreamError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.catalog.change(f))
            .await
            .map_err(|error| storage("updating the stream catalog", error))?
    }
}

impl Drop for EmbeddedStreams {
    fn drop(&mut self) {
        self.retention.abort();
        // The writer finishes what is queued, then stops; joining it releases its files before
        // the directory lock goes, so the directory can be opened again right away.
        self.commands = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Sends a retention pass to the writer every `interval` while the backend is open.
async fn retention_timer(commands: mpsc::WeakSender<Command>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(commands) = commands.upgrade() else {
            return;
        };
        let _ = commands.try_send(Command::Retain(None));
    }
}

fn to_record(record: frame::StoredRecord) -> Record {
    Record {
        sequence: crate::SequenceNumber(record.sequence),
        arrival: from_unix_ms(record.arrival_ms),
        partition_key: record.partition_key,
        data: record.data,
    }
}

#[async_trait]
impl Stream for EmbeddedStreams {
    async fn create_stream(&self, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        routing::validate_stream_name(&spec.name)?;
        routing::validate_retention(spec.retention_hours)?;
        if spec.mode == StreamMode::Provisioned {
            routing::validate_shard_count(spec.shard_count)?;
        }
        self.ask(|reply| Command::Create(spec, reply)).await
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        routing::validate_stream_name(name)?;
        self.ask(|reply| Command::Delete(name.to_owned(), reply))
            .await
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamInfo, StreamError> {
        self.shared
            .catalog
            .read(|data| stream_of(&data.streams, name).map(|stream| stream.info(name)))
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        Ok(self
            .shared
            .catalog
            .read(|data| data.streams.keys().cloned().collect()))
    }

    async fn set_retention(&self, name: &str, hours: u32) -> Result<StreamInfo, StreamError> {
        routing::validate_retention(hours)?;
        let name = name.to_owned();
        self.change(move |data| {
            let stream = stream_of_mut(&mut data.streams, &name)?;
            stream.retention_hours = hours;
            Ok((stream.info(&name), true))
        })
        .await
    }

    async fn update_shard_count(&self, name: &str, target: u32) -> Result<StreamInfo, StreamError> {
        self.ask(|reply| Command::Reshard(name.to_owned(), target, reply))
            .await
    }

    async fn put_records(
        &self,
        name: &str,
        records: Vec<NewRecord>,
    ) -> Result<Vec<PutOutcome>, StreamError> {
        routing::validate_put(&records)?;
        let bytes: usize = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .sum();
        let permits = bytes.clamp(1, self.shared.config.queue_bytes) as u32;
        let permit = self
            .queue
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| StreamError::Storage("the stream writer is stopped".into()))?;
        self.ask(|reply| {
            Command::Put(Put {
                stream: name.to_owned(),
                records,
                reply,
                _permit: permit,
            })
        })
        .await
    }

    async fn resolve(
        &self,
        name: &str,
        shard: ShardId,
        start: StartingPosition,
    ) -> Result<Position, StreamError> {
        let located = self.shared.locate(name, shard)?;
        let latest = || {
            Position(
                located
                    .log
                    .tip()
                    .last_sequence
                    .map_or(located.starting, |last| last + 1),
            )
        };
        Ok(match start {
            StartingPosition::TrimHorizon => Position(located.starting),
            StartingPosition::Latest => latest(),
            StartingPosition::AtSequence(sequence) => {
                located.check(sequence)?;
                Position::at(sequence)
            }
            StartingPosition::AfterSequence(sequence) => {
                located.check(sequence)?;
                Position::after(sequence)
            }
            StartingPosition::AtTimestamp(time) => {
                let log = located.log.clone();
                let at_ms = unix_ms(time);
                let found = tokio::task::spawn_blocking(move || log.seek_time(at_ms))
                    .await
                    .map_err(|error| storage("seeking", error))?
                    .map_err(|error| storage("seeking", error))?;
                found.map_or_else(latest, Position)
            }
        })
    }

    async fn read(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        limit: usize,
    ) -> Result<ReadBatch, StreamError> {
        let located = self.shared.locate(name, shard)?;
        let limit = limit.clamp(1, MAX_READ_RECORDS);
        let cutoff = self.shared.now_ms().saturating_sub(located.retention_ms);
        let log = located.log.clone();
        let tip = log.tip();
        let read =
            tokio::task::spawn_blocking(move || log.read(from.0, cutoff, limit, MAX_READ_BYTES))
                .await
                .map_err(|error| storage("reading", error))?
                .map_err(|error| storage("reading", error))?;
        let next = Position(read.next);
        let end_of_shard = tip.closed && tip.last_sequence.is_none_or(|last| next.0 > last);
        let millis_behind_latest = read.records.last().map_or(0, |last| {
            tip.last_arrival_ms.saturating_sub(last.arrival_ms)
        });
        Ok(ReadBatch {
            records: read.records.into_iter().map(to_record).collect(),
            next,
            end_of_shard,
            millis_behind_latest,
        })
    }

    async fn wait_for_records(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        let located = self.shared.locate(name, shard)?;
        let mut tip = located.log.watch();
        let ready = |tip: &shard_log::Tip| {
            tip.closed || tip.last_sequence.is_some_and(|last| last >= from.0)
        };
        let _ = tokio::time::timeout(timeout, tip.wait_for(ready)).await;
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
        let (name, group, owner) = (name.to_owned(), group.to_owned(), owner.to_owned());
        let now = self.shared.now_ms();
        self.change(move |data| {
            let leases = &mut group_of(&mut data.streams, &name, group, shard)?.leases;
            if leases
                .get(&shard.0)
                .is_some_and(|lease| lease.owner != owner && lease.expires_ms > now)
            {
                return Ok((false, false));
            }
            grant(leases, shard, owner, now + ttl.as_millis() as u64);
            Ok((true, true))
        })
        .await
    }

    async fn leases(&self, name: &str, group: &str) -> Result<Vec<Lease>, StreamError> {
        self.shared
            .catalog
            .read(|data| stream_of(&data.streams, name).map(|stream| stream.leases(group)))
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
        let (name, group) = (name.to_owned(), group.to_owned());
        let (current, owner) = (current.to_owned(), owner.to_owned());
        let now = self.shared.now_ms();
        self.change(move |data| {
            let leases = &mut group_of(&mut data.streams, &name, group, shard)?.leases;
            if leases
                .get(&shard.0)
                .is_none_or(|lease| lease.owner != current)
            {
                return Ok((false, false));
            }
            grant(leases, shard, owner, now + ttl.as_millis() as u64);
            Ok((true, true))
        })
        .await
    }

    async fn checkpoint(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        owner: &str,
        position: Position,
    ) -> Result<(), StreamError> {
        let (name, group, owner) = (name.to_owned(), group.to_owned(), owner.to_owned());
        self.change(move |data| {
            let entry = group_of(&mut data.streams, &name, group.clone(), shard)?;
            if entry
                .leases
                .get(&shard.0)
                .is_none_or(|lease| lease.owner != owner)
            {
                return Err(StreamError::LeaseLost { group, shard });
            }
            entry.checkpoints.insert(shard.0, position.0);
            Ok(((), true))
        })
        .await
    }

    async fn checkpoint_of(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
    ) -> Result<Option<Position>, StreamError> {
        self.shared.catalog.read(|data| {
            let stream = stream_of(&data.streams, name)?;
            stream.shard(shard)?;
            Ok(stream
                .groups
                .get(group)
                .and_then(|group| group.checkpoints.get(&shard.0))
                .map(|position| Position(*position)))
        })
    }
}

#[cfg(test)]
mod tests;
