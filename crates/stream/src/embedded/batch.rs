//! One group-commit batch: routing records to shards and numbering them, encoding them into one
//! buffer per touched segment (and once more into the commit journal), writing those and making
//! the batch durable with one journal sync, then publishing them to readers or rolling them back.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use super::Shared;
use super::catalog::{ShardMeta, StreamMeta, sync_dir};
use super::frame;
use super::journal::{self, Entries, Journal};
use super::segment::{INDEX_INTERVAL, IndexEntry, Segment};
use super::shard_log::ShardLog;
use super::writer::{Cursor, Put};
use crate::routing;
use crate::{NewRecord, ShardId, StreamError};

fn storage(context: &str, error: io::Error) -> StreamError {
    StreamError::Storage(format!("{context}: {error}"))
}

/// Records of one batch bound for one segment.
pub struct Chunk {
    segment: Arc<Segment>,
    /// Created by this batch (not yet visible to readers).
    created: bool,
    start_len: u64,
    bytes: Vec<u8>,
    index: Vec<IndexEntry>,
    last_index_offset: Option<u64>,
    last_sequence: u128,
    last_arrival_ms: u64,
}

/// Records of one batch bound for one shard.
pub struct ShardAppend {
    log: Arc<ShardLog>,
    chunks: Vec<Chunk>,
}

/// Where each record of a put goes.
pub struct Route {
    pub log_key: (u64, u32),
    pub shard: ShardId,
    pub sequence: u128,
    pub arrival_ms: u64,
}

/// Encodes, writes and syncs the accepted puts. On failure returns what was touched, so it
/// can be rolled back.
#[allow(clippy::type_complexity)]
pub fn append(
    shared: &Shared,
    accepted: &[(Put, Vec<Route>)],
    journal: &mut Journal,
) -> Result<Vec<ShardAppend>, (Vec<ShardAppend>, StreamError)> {
    let journal_len: usize = accepted
        .iter()
        .flat_map(|(put, _)| &put.records)
        .map(|record| {
            journal::frame_len(frame::frame_len(&record.partition_key, record.data.len()))
        })
        .sum();
    let mut entries = match journal.make_room(journal_len as u64) {
        Ok(fits) => fits.then(|| journal.entries(journal_len)),
        Err(error) => {
            return Err((
                Vec::new(),
                storage("checkpointing the commit journal", error),
            ));
        }
    };
    let mut appends: HashMap<(u64, u32), ShardAppend> = HashMap::new();
    let mut order = Vec::new();
    let segment_bytes = shared.config.segment_bytes;
    for (put, routes) in accepted {
        for (record, route) in put.records.iter().zip(routes) {
            let append = match appends.get_mut(&route.log_key) {
                Some(append) => append,
                None => {
                    let log = shared.logs.read().get(&route.log_key).cloned();
                    let Some(log) = log else {
                        let touched = order.iter().filter_map(|k| appends.remove(k)).collect();
                        let error = StreamError::NotFound(format!("{} not found", route.shard));
                        return Err((touched, error));
                    };
                    order.push(route.log_key);
                    appends.entry(route.log_key).or_insert(ShardAppend {
                        log,
                        chunks: Vec::new(),
                    })
                }
            };
            let size = frame::frame_len(&record.partition_key, record.data.len()) as u64;
            if let Err(error) = append.reserve(size, route.sequence, segment_bytes) {
                let touched = order.iter().filter_map(|k| appends.remove(k)).collect();
                return Err((touched, storage("creating a segment", error)));
            }
            append.push(route, record, entries.as_mut());
        }
    }
    let appends: Vec<ShardAppend> = order.iter().filter_map(|k| appends.remove(k)).collect();
    match write_and_sync(&appends, journal, entries.as_ref()) {
        Ok(()) => Ok(appends),
        Err(error) => Err((appends, storage("appending records", error))),
    }
}

/// Bytes a batch writes.
pub fn bytes(appends: &[ShardAppend]) -> usize {
    appends
        .iter()
        .flat_map(|append| &append.chunks)
        .map(|chunk| chunk.bytes.len())
        .sum()
}

/// The hash keys of a put's records (computed before the catalog is locked).
pub fn hash_keys(records: &[NewRecord]) -> Vec<u128> {
    records.iter().map(routing::routing_key).collect()
}

/// Picks the shard and sequence number of every record of one put, by its hash key.
pub fn route(
    stream: &StreamMeta,
    cursor: &mut Cursor,
    keys: &[u128],
    now_ms: u64,
) -> Result<Vec<Route>, StreamError> {
    let open: Vec<&ShardMeta> = stream
        .shards
        .iter()
        .filter(|s| s.ending_sequence.is_none())
        .collect();
    let arrival_ms = now_ms.max(cursor.last_arrival_ms);
    cursor.last_arrival_ms = arrival_ms;
    keys.iter()
        .map(|&key| {
            let shard = open
                .iter()
                .find(|s| s.hash_start <= key && key <= s.hash_end)
                .ok_or_else(|| {
                    StreamError::Storage(format!("no open shard holds hash key {key}"))
                })?;
            let sequence = stream.sequence(cursor.next);
            cursor.next += 1;
            Ok(Route {
                log_key: (stream.epoch, shard.id),
                shard: ShardId(shard.id),
                sequence,
                arrival_ms,
            })
        })
        .collect()
}

impl ShardAppend {
    /// Makes room for a frame of `size` bytes whose record has `sequence`: starts the first
    /// chunk, or a new segment when the current one would grow past `segment_bytes`.
    fn reserve(&mut self, size: u64, sequence: u128, segment_bytes: u64) -> io::Result<()> {
        let current = match self.chunks.last() {
            Some(chunk) => Some((
                chunk.start_len + chunk.bytes.len() as u64,
                chunk.segment.clone(),
            )),
            None => self.log.active().map(|segment| (segment.len(), segment)),
        };
        let segment = match current {
            Some((len, segment)) if len == 0 || len + size <= segment_bytes => {
                if self.chunks.is_empty() {
                    self.chunks.push(Chunk::new(segment, false));
                }
                return Ok(());
            }
            _ => Segment::create(self.log.dir(), sequence)?,
        };
        self.chunks.push(Chunk::new(Arc::new(segment), true));
        Ok(())
    }

    /// Encodes a record into the last chunk (after [`ShardAppend::reserve`]) and into the
    /// batch's journal entries, if it goes through the journal.
    fn push(&mut self, route: &Route, record: &NewRecord, entries: Option<&mut Entries>) {
        let Some(chunk) = self.chunks.last_mut() else {
            return;
        };
        let (sequence, arrival_ms) = (route.sequence, route.arrival_ms);
        let offset = chunk.start_len + chunk.bytes.len() as u64;
        if chunk
            .last_index_offset
            .is_none_or(|last| offset - last >= INDEX_INTERVAL)
        {
            chunk.index.push(IndexEntry {
                sequence,
                arrival_ms,
                offset,
            });
            chunk.last_index_offset = Some(offset);
        }
        let start = chunk.bytes.len();
        frame::encode(
            &mut chunk.bytes,
            sequence,
            arrival_ms,
            &record.partition_key,
            &record.data,
        );
        if let Some(entries) = entries {
            entries.push(route.log_key.0, route.log_key.1, &chunk.bytes[start..]);
        }
        chunk.last_sequence = sequence;
        chunk.last_arrival_ms = arrival_ms;
    }
}

/// Writes every chunk, then makes the batch durable with one fdatasync of the journal, whatever
/// the number of shards it touched; the segments it wrote are synced at the journal's next
/// checkpoint. A shard that rolled to a new segment in this batch syncs its previous and new
/// segments and its directory before the journal (so a replay only ever appends to a shard's
/// newest segment); a batch too large for the journal (`entries` is `None`) syncs its segments
/// instead. Those syncs come first, so a batch that fails leaves no durable journal frame.
fn write_and_sync(
    appends: &[ShardAppend],
    journal: &mut Journal,
    entries: Option<&Entries>,
) -> io::Result<()> {
    for chunk in appends.iter().flat_map(|append| &append.chunks) {
        chunk.segment.write_at(chunk.start_len, &chunk.bytes)?;
    }
    for append in appends {
        let rolled = append.chunks.iter().any(|chunk| chunk.created);
        if entries.is_some() && !rolled {
            continue;
        }
        if rolled
            && let Some(previous) = append.log.active()
            && !append
                .chunks
                .iter()
                .any(|chunk| Arc::ptr_eq(&chunk.segment, &previous))
        {
            previous.sync()?;
        }
        for chunk in &append.chunks {
            chunk.segment.sync()?;
        }
        if rolled {
            sync_dir(append.log.dir())?;
        }
    }
    let Some(entries) = entries else {
        return Ok(());
    };
    journal.commit(entries)?;
    for append in appends {
        for chunk in &append.chunks {
            journal.dirty(&chunk.segment);
        }
    }
    Ok(())
}

impl Chunk {
    fn new(segment: Arc<Segment>, created: bool) -> Chunk {
        let start_len = segment.len();
        let last_index_offset = segment.last_index_offset();
        Chunk {
            segment,
            created,
            start_len,
            bytes: Vec::new(),
            index: Vec::new(),
            last_index_offset,
            last_sequence: 0,
            last_arrival_ms: 0,
        }
    }
}

/// Shows durable appends to readers and wakes waiters.
pub fn publish(appends: Vec<ShardAppend>) {
    for append in appends {
        let mut tip = None;
        for chunk in &append.chunks {
            if chunk.bytes.is_empty() {
                continue;
            }
            if chunk.created {
                if let Some(previous) = append.log.active()
                    && let Err(error) = previous.seal()
                {
                    tracing::warn!(%error, "could not write a segment index");
                }
                append.log.push_segment(chunk.segment.clone());
            }
            chunk.segment.commit(
                chunk.start_len + chunk.bytes.len() as u64,
                &chunk.index,
                chunk.last_sequence,
                chunk.last_arrival_ms,
            );
            tip = Some((chunk.last_sequence, chunk.last_arrival_ms));
        }
        if let Some((sequence, arrival_ms)) = tip {
            append.log.advance(sequence, arrival_ms);
        }
    }
}

/// Cuts every touched segment back to its length before the batch; removes new segments.
pub fn roll_back(appends: Vec<ShardAppend>) {
    for append in appends {
        for chunk in &append.chunks {
            let result = if chunk.created {
                chunk.segment.remove_files()
            } else {
                chunk.segment.truncate(chunk.start_len)
            };
            if let Err(error) = result {
                tracing::error!(%error, dir = %append.log.dir().display(), "could not roll back a failed append; the shard refuses appends until restart");
                append.log.poison();
            }
        }
    }
}
