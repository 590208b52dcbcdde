//! The writer thread: the one place that appends to segment files and changes the shard layout.
//!
//! Group commit: the thread takes every command waiting in its queue, appends the records of all
//! waiting puts (one positional write per touched segment, one to the commit journal), makes them
//! durable with one fdatasync of the journal (see `journal`), and only then publishes them to
//! readers and answers the callers. While it syncs, new puts queue up and form the next batch. A
//! failed write or sync cuts every touched segment back to where the batch began, fails the whole
//! batch and checkpoints the journal (so none of the batch's frames is ever replayed).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::Shared;
use super::batch::{self, Route};
use super::catalog::{RESERVATION, ShardMeta, StreamMeta, sync_dir};
use super::journal::Journal;
use super::metrics::StreamMetrics;
use super::segment::Segment;
use super::shard_log::ShardLog;
use crate::routing::{self, uniform_ranges};
use crate::{
    Appended, NewRecord, PutOutcome, SequenceNumber, ShardId, StreamError, StreamInfo, StreamSpec,
};

/// Most commands taken into one batch.
const MAX_BATCH_COMMANDS: usize = 256;

/// Where the next sequence number of a stream comes from.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    /// Low 64 bits of the next sequence number.
    pub next: u64,
    /// Arrival time of the newest record (arrival times never go backwards within a stream).
    pub last_arrival_ms: u64,
}

/// A put waiting for the writer.
pub struct Put {
    pub stream: String,
    pub records: Vec<NewRecord>,
    pub reply: oneshot::Sender<Result<Vec<PutOutcome>, StreamError>>,
    /// Holds the put's share of the bounded write queue until it is answered.
    pub _permit: OwnedSemaphorePermit,
}

/// What the writer thread is asked to do.
pub enum Command {
    Put(Put),
    Create(StreamSpec, oneshot::Sender<Result<StreamInfo, StreamError>>),
    Delete(String, oneshot::Sender<Result<(), StreamError>>),
    Reshard(
        String,
        u32,
        oneshot::Sender<Result<StreamInfo, StreamError>>,
    ),
    /// Apply retention (sent periodically, or on demand with a reply when done).
    Retain(Option<oneshot::Sender<()>>),
}

/// The writer thread's state.
pub struct Writer {
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    cursors: HashMap<u64, Cursor>,
    /// The catalog in memory reserves more sequence numbers than the file does.
    reservation_unsaved: bool,
    metrics: StreamMetrics,
    /// Makes each batch durable with one sync.
    journal: Journal,
}

fn storage(context: &str, error: io::Error) -> StreamError {
    StreamError::Storage(format!("{context}: {error}"))
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        cursors: HashMap<u64, Cursor>,
        journal: Journal,
    ) -> Writer {
        Writer {
            shared,
            commands,
            cursors,
            reservation_unsaved: false,
            metrics: StreamMetrics::register(),
            journal,
        }
    }

    /// Runs until every sender is gone.
    pub fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut puts = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Put(put) => puts.push(put),
                    other => {
                        self.flush(std::mem::take(&mut puts));
                        self.execute(other);
                    }
                }
                if puts.len() < MAX_BATCH_COMMANDS {
                    next = self.commands.try_recv().ok();
                }
            }
            self.flush(puts);
        }
        // A clean shutdown leaves nothing to replay.
        if let Err(error) = self.journal.checkpoint() {
            tracing::error!(%error, "could not checkpoint the stream commit journal at shutdown; the next open replays it");
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Put(put) => self.flush(vec![put]),
            Command::Create(spec, reply) => {
                let _ = reply.send(self.create(spec));
            }
            Command::Delete(name, reply) => {
                let _ = reply.send(self.delete(&name));
            }
            Command::Reshard(name, target, reply) => {
                let _ = reply.send(self.reshard(&name, target));
            }
            Command::Retain(done) => {
                self.retain();
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Appends, syncs and answers a batch of puts.
    fn flush(&mut self, puts: Vec<Put>) {
        if puts.is_empty() {
            return;
        }
        let now_ms = self.shared.now_ms();
        let keys: Vec<Vec<u128>> = puts
            .iter()
            .map(|put| batch::hash_keys(&put.records))
            .collect();
        let cursors = &mut self.cursors;
        // A reservation that moved but was not written yet is written with this batch.
        let mut changed = self.reservation_unsaved;
        let planned = self.shared.catalog.update(|data| {
            let routes: Vec<Result<Vec<Route>, StreamError>> = puts
                .iter()
                .zip(&keys)
                .map(|(put, keys)| {
                    let stream = data.streams.get_mut(&put.stream).ok_or_else(|| {
                        StreamError::NotFound(format!("stream {} not found", put.stream))
                    })?;
                    let cursor = cursors.entry(stream.epoch).or_insert(Cursor {
                        next: stream.reserved,
                        last_arrival_ms: 0,
                    });
                    let routes = batch::route(stream, cursor, keys, now_ms)?;
                    if cursor.next >= stream.reserved {
                        stream.reserved = cursor.next + RESERVATION;
                        changed = true;
                    }
                    Ok(routes)
                })
                .collect();
            Ok((routes, changed))
        });
        let (routes, snapshot) = match planned {
            Ok(planned) => planned,
            Err(error) => {
                for put in puts {
                    let _ = put.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let mut accepted = Vec::with_capacity(puts.len());
        for (put, routes) in puts.into_iter().zip(routes) {
            let routes = routes.and_then(|routes| {
                let logs = self.shared.logs.read();
                for route in &routes {
                    match logs.get(&route.log_key) {
                        Some(log) if log.is_poisoned() => {
                            return Err(StreamError::Storage(format!(
                                "{} could not roll back a failed write and refuses appends until restart",
                                route.shard
                            )));
                        }
                        Some(_) => {}
                        None => {
                            return Err(StreamError::NotFound(format!("{} not found", route.shard)));
                        }
                    }
                }
                Ok(routes)
            });
            match routes {
                Ok(routes) => accepted.push((put, routes)),
                Err(error) => {
                    let _ = put.reply.send(Err(error));
                }
            }
        }
        self.reservation_unsaved = snapshot.is_some();
        if accepted.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let result = batch::append(&self.shared, &accepted, &mut self.journal).and_then(
            |appends| match self.shared.catalog.persist(snapshot) {
                Ok(()) => Ok(appends),
                Err(error) => Err((appends, error)),
            },
        );
        if result.is_ok() {
            self.reservation_unsaved = false;
        }
        match result {
            Ok(appends) => {
                let records = accepted.iter().map(|(_, routes)| routes.len()).sum();
                self.metrics
                    .committed(records, batch::bytes(&appends), started.elapsed());
                batch::publish(appends);
                for (put, routes) in accepted {
                    let outcomes = routes
                        .iter()
                        .map(|route| {
                            Ok(Appended {
                                shard: route.shard,
                                sequence: SequenceNumber(route.sequence),
                            })
                        })
                        .collect();
                    let _ = put.reply.send(Ok(outcomes));
                }
            }
            Err((appends, error)) => {
                tracing::error!(%error, "appending to streams failed; the batch was rolled back");
                self.metrics.failed();
                batch::roll_back(appends);
                if let Err(error) = self.journal.checkpoint() {
                    tracing::error!(%error, "could not checkpoint the stream commit journal after a failed batch; appends wait for it");
                }
                for (put, _) in accepted {
                    let _ = put.reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn create(&mut self, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        let shard_count = match spec.mode {
            crate::StreamMode::OnDemand => routing::ON_DEMAND_SHARDS,
            crate::StreamMode::Provisioned => spec.shard_count,
        };
        let now_ms = self.shared.now_ms();
        let (name, stream) = self.shared.catalog.change(|data| {
            if data.streams.contains_key(&spec.name) {
                return Err(StreamError::AlreadyExists(format!(
                    "stream {} already exists",
                    spec.name
                )));
            }
            let epoch = data.next_epoch.max(now_ms);
            data.next_epoch = epoch + 1;
            let mut stream = StreamMeta {
                epoch,
                on_demand: spec.mode == crate::StreamMode::OnDemand,
                retention_hours: spec.retention_hours,
                created_ms: now_ms,
                reserved: RESERVATION,
                next_shard: shard_count,
                shards: Vec::new(),
                groups: Default::default(),
            };
            stream.shards = uniform_ranges(shard_count)
                .into_iter()
                .enumerate()
                .map(|(id, range)| ShardMeta {
                    id: id as u32,
                    parent: None,
                    adjacent_parent: None,
                    hash_start: range.start,
                    hash_end: range.end,
                    starting_sequence: stream.sequence(0),
                    ending_sequence: None,
                    closed_ms: None,
                })
                .collect();
            data.streams.insert(spec.name.clone(), stream.clone());
            Ok(((spec.name.clone(), stream), true))
        })?;
        self.cursors.insert(
            stream.epoch,
            Cursor {
                next: 0,
                last_arrival_ms: 0,
            },
        );
        self.open_logs(&stream, &stream.shards)?;
        Ok(stream.info(&name))
    }

    /// Creates the logs of new shards and makes their directories durable.
    fn open_logs(&self, stream: &StreamMeta, shards: &[ShardMeta]) -> Result<(), StreamError> {
        let stream_dir = self.shared.dir.join(stream.dir_name());
        for shard in shards {
            let log = ShardLog::open(stream_dir.join(shard.dir_name()), false)
                .map_err(|error| storage("creating a shard", error))?;
            self.shared
                .logs
                .write()
                .insert((stream.epoch, shard.id), Arc::new(log));
        }
        sync_dir(&stream_dir)
            .and_then(|()| sync_dir(&self.shared.dir))
            .map_err(|error| storage("creating a shard", error))
    }

    fn delete(&mut self, name: &str) -> Result<(), StreamError> {
        let stream = self.shared.catalog.change(|data| {
            let stream = data
                .streams
                .remove(name)
                .ok_or_else(|| StreamError::NotFound(format!("stream {name} not found")))?;
            Ok((stream, true))
        })?;
        self.cursors.remove(&stream.epoch);
        let logs: Vec<Arc<ShardLog>> = {
            let mut logs = self.shared.logs.write();
            stream
                .shards
                .iter()
                .filter_map(|shard| logs.remove(&(stream.epoch, shard.id)))
                .collect()
        };
        for log in &logs {
            log.close();
        }
        let dir = self.shared.dir.join(stream.dir_name());
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                // The catalog no longer names the stream, so the next open removes the rest.
                tracing::warn!(%error, dir = %dir.display(), "could not remove a deleted stream's files");
            }
            _ => {}
        }
        Ok(())
    }

    fn reshard(&mut self, name: &str, target: u32) -> Result<StreamInfo, StreamError> {
        let now_ms = self.shared.now_ms();
        let cursors = &mut self.cursors;
        let logs = self.shared.logs.read().clone();
        let (closed, opened, stream) = self.shared.catalog.change(|data| {
            let stream = data
                .streams
                .get_mut(name)
                .ok_or_else(|| StreamError::NotFound(format!("stream {name} not found")))?;
            let open: Vec<usize> = (0..stream.shards.len())
                .filter(|&i| stream.shards[i].ending_sequence.is_none())
                .collect();
            routing::validate_reshard(open.len() as u32, target)?;
            let cursor = cursors.entry(stream.epoch).or_insert(Cursor {
                next: stream.reserved,
                last_arrival_ms: 0,
            });
            // The number between the parents' last and the children's first sequence number
            // is never handed out; an empty parent ends on it.
            let boundary = stream.sequence(cursor.next);
            cursor.next += 1;
            if cursor.next >= stream.reserved {
                stream.reserved = cursor.next + RESERVATION;
            }
            let children_start = stream.sequence(cursor.next);
            let mut closed = Vec::new();
            for &i in &open {
                let shard = &mut stream.shards[i];
                let last = logs
                    .get(&(stream.epoch, shard.id))
                    .and_then(|log| log.tip().last_sequence);
                shard.ending_sequence = Some(last.unwrap_or(boundary));
                shard.closed_ms = Some(now_ms);
                closed.push(shard.id);
            }
            let parents: Vec<ShardMeta> = open.iter().map(|&i| stream.shards[i].clone()).collect();
            let mut opened = Vec::new();
            for range in uniform_ranges(target) {
                let overlapping: Vec<u32> = parents
                    .iter()
                    .filter(|p| p.hash_start <= range.end && range.start <= p.hash_end)
                    .map(|p| p.id)
                    .collect();
                let child = ShardMeta {
                    id: stream.next_shard,
                    parent: overlapping.first().copied(),
                    adjacent_parent: overlapping.get(1).copied(),
                    hash_start: range.start,
                    hash_end: range.end,
                    starting_sequence: children_start,
                    ending_sequence: None,
                    closed_ms: None,
                };
                stream.next_shard += 1;
                opened.push(child.clone());
                stream.shards.push(child);
            }
            Ok(((closed, opened, stream.clone()), true))
        })?;
        for id in closed {
            if let Some(log) = logs.get(&(stream.epoch, id)) {
                log.close();
            }
        }
        self.open_logs(&stream, &opened)?;
        Ok(stream.info(name))
    }

    /// Deletes segments past retention; forgets closed shards with nothing left.
    fn retain(&mut self) {
        // Every segment synced first: rolling an active segment below must leave nothing the
        // journal would replay into the segment after it.
        if let Err(error) = self.journal.checkpoint() {
            tracing::warn!(%error, "retention skipped: the stream commit journal could not checkpoint");
            return;
        }
        let now_ms = self.shared.now_ms();
        let streams = self.shared.catalog.read(|data| data.streams.clone());
        for (name, stream) in streams {
            let cutoff = now_ms.saturating_sub(u64::from(stream.retention_hours) * 3_600_000);
            let mut emptied = Vec::new();
            for shard in &stream.shards {
                let Some(log) = self.shared.log(stream.epoch, shard.id) else {
                    continue;
                };
                if let Err(error) = self.retain_shard(&stream, shard, &log, cutoff) {
                    tracing::warn!(%error, stream = %name, shard = %ShardId(shard.id), "retention failed");
                    continue;
                }
                if shard.closed_ms.is_some_and(|closed| closed < cutoff) && log_is_empty(&log) {
                    emptied.push((shard.id, log));
                }
            }
            if emptied.is_empty() {
                continue;
            }
            let forgotten = self.shared.catalog.change(|data| {
                let Some(meta) = data.streams.get_mut(&name) else {
                    return Ok((false, false));
                };
                if meta.epoch != stream.epoch {
                    return Ok((false, false));
                }
                meta.shards
                    .retain(|s| !emptied.iter().any(|(id, _)| *id == s.id));
                for group in meta.groups.values_mut() {
                    for (id, _) in &emptied {
                        group.checkpoints.remove(id);
                        group.leases.remove(id);
                    }
                }
                Ok((true, true))
            });
            if let Ok(true) = forgotten {
                for (id, log) in emptied {
                    self.shared.logs.write().remove(&(stream.epoch, id));
                    if let Err(error) = log.remove_all() {
                        tracing::warn!(%error, "could not remove an expired shard's directory");
                    }
                }
            }
        }
    }

    fn retain_shard(
        &mut self,
        stream: &StreamMeta,
        shard: &ShardMeta,
        log: &ShardLog,
        cutoff: u64,
    ) -> io::Result<()> {
        if shard.ending_sequence.is_none()
            && let Some(active) = log.active()
            && active.last_sequence().is_some()
            && active.last_arrival_ms() < cutoff
        {
            // Roll an expired active segment so it can go; the new one starts at the next
            // sequence number the stream hands out.
            let next = self
                .cursors
                .get(&stream.epoch)
                .map_or(stream.reserved, |c| c.next);
            let segment = Segment::create(log.dir(), stream.sequence(next))?;
            sync_dir(log.dir())?;
            active.seal()?;
            log.push_segment(Arc::new(segment));
        }
        let removed = log.remove_expired(cutoff)?;
        self.metrics.expired(removed);
        Ok(())
    }
}

fn log_is_empty(log: &ShardLog) -> bool {
    log.active().is_none()
}
