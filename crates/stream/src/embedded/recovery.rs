//! Opening a streams directory: its lock, the catalog, every shard's recovered log, the commit
//! journal's replay, and a fresh reservation of sequence numbers per stream.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::catalog::{Catalog, RESERVATION, StreamMeta, sync_dir};
use super::journal::{Journal, Replayed};
use super::segment::{INDEX_INTERVAL, IndexEntry, Segment};
use super::shard_log::ShardLog;
use super::writer::Cursor;
use super::{EmbeddedConfig, Shared, storage};
use crate::StreamError;

pub type Recovered = (Shared, HashMap<u64, Cursor>, Journal, File);

type Logs = HashMap<(u64, u32), Arc<ShardLog>>;

/// Opens the directory: takes its lock, loads the catalog, recovers every shard's log, replays
/// the commit journal into them and reserves a fresh range of sequence numbers for each stream.
pub fn recover(dir: PathBuf, config: EmbeddedConfig) -> Result<Recovered, StreamError> {
    let fail = |error: std::io::Error| storage(&format!("opening {}", dir.display()), error);
    fs::create_dir_all(&dir).map_err(fail)?;
    let lock = File::create(dir.join("LOCK")).map_err(fail)?;
    lock.try_lock().map_err(|_| {
        StreamError::Storage(format!("{} is in use by another process", dir.display()))
    })?;
    let catalog = Catalog::open(&dir).map_err(fail)?;
    let streams = catalog.read(|data| data.streams.clone());
    let mut logs = HashMap::new();
    for stream in streams.values() {
        for shard in &stream.shards {
            let shard_dir = dir.join(stream.dir_name()).join(shard.dir_name());
            let log = ShardLog::open(shard_dir, shard.ending_sequence.is_some()).map_err(fail)?;
            logs.insert((stream.epoch, shard.id), Arc::new(log));
        }
    }
    let (mut journal, replayed) = Journal::open(&dir, config.journal_bytes).map_err(fail)?;
    replay(&logs, replayed).map_err(fail)?;
    journal.checkpoint().map_err(fail)?;
    let mut cursors = HashMap::new();
    for stream in streams.values() {
        let mut cursor = Cursor {
            next: stream.reserved,
            last_arrival_ms: 0,
        };
        for shard in &stream.shards {
            let Some(log) = logs.get(&(stream.epoch, shard.id)) else {
                continue;
            };
            let tip = log.tip();
            if let Some(last) = tip.last_sequence
                && last >> 64 == u128::from(stream.epoch)
            {
                cursor.next = cursor.next.max(last as u64 + 1);
            }
            cursor.last_arrival_ms = cursor.last_arrival_ms.max(tip.last_arrival_ms);
        }
        cursors.insert(stream.epoch, cursor);
    }
    catalog.change(|data| {
        for stream in data.streams.values_mut() {
            if let Some(cursor) = cursors.get(&stream.epoch) {
                stream.reserved = cursor.next + RESERVATION;
            }
        }
        Ok(((), true))
    })?;
    remove_leftovers(&dir, &streams).map_err(fail)?;
    let shared = Shared {
        dir,
        config,
        catalog,
        logs: RwLock::new(logs),
    };
    Ok((shared, cursors, journal, lock))
}

/// Appends to each shard's newest segment the journal's records it lost (those past its tip, in
/// journal order) and syncs them. Records of streams or shards that no longer exist are dropped.
fn replay(logs: &Logs, replayed: Vec<Replayed>) -> io::Result<()> {
    let mut order = Vec::new();
    let mut by_log: HashMap<(u64, u32), Vec<Replayed>> = HashMap::new();
    for entry in replayed {
        let key = (entry.epoch, entry.shard);
        by_log
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(entry);
    }
    for key in order {
        let (Some(log), Some(entries)) = (logs.get(&key), by_log.remove(&key)) else {
            continue;
        };
        let tip = log.tip().last_sequence;
        let lost: Vec<Replayed> = entries
            .into_iter()
            .filter(|entry| tip.is_none_or(|tip| entry.record.sequence > tip))
            .collect();
        if let Some(first) = lost.first() {
            restore(log, first.record.sequence, &lost)?;
            tracing::warn!(dir = %log.dir().display(), records = lost.len(), "restored records from the commit journal");
        }
    }
    Ok(())
}

/// Appends `lost` (whose first record has sequence number `first`) to the newest segment of
/// `log`, makes them durable and publishes them.
fn restore(log: &ShardLog, first: u128, lost: &[Replayed]) -> io::Result<()> {
    let segment = match log.active() {
        Some(segment) => segment,
        None => {
            let segment = Arc::new(Segment::create(log.dir(), first)?);
            sync_dir(log.dir())?;
            log.push_segment(Arc::clone(&segment));
            segment
        }
    };
    let start = segment.len();
    let mut bytes = Vec::new();
    let mut index = Vec::new();
    let mut last_index = segment.last_index_offset();
    let mut previous = segment.last_sequence();
    let mut last_arrival_ms = segment.last_arrival_ms();
    for entry in lost {
        let record = &entry.record;
        if record.sequence < segment.base || previous.is_some_and(|p| record.sequence <= p) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the commit journal holds record {} out of order for {}",
                    record.sequence,
                    log.dir().display()
                ),
            ));
        }
        let offset = start + bytes.len() as u64;
        if last_index.is_none_or(|last| offset - last >= INDEX_INTERVAL) {
            index.push(IndexEntry {
                sequence: record.sequence,
                arrival_ms: record.arrival_ms,
                offset,
            });
            last_index = Some(offset);
        }
        bytes.extend_from_slice(&entry.frame);
        previous = Some(record.sequence);
        last_arrival_ms = record.arrival_ms;
    }
    let Some(last) = previous else {
        return Ok(());
    };
    segment.write_at(start, &bytes)?;
    segment.sync()?;
    segment.commit(start + bytes.len() as u64, &index, last, last_arrival_ms);
    log.advance(last, last_arrival_ms);
    Ok(())
}

/// Removes directories of streams and shards the catalog no longer names (a crash during a
/// delete or an expiry leaves them).
fn remove_leftovers(dir: &Path, streams: &BTreeMap<String, StreamMeta>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match streams.values().find(|stream| stream.dir_name() == name) {
            None => fs::remove_dir_all(entry.path())?,
            Some(stream) => {
                for shard_dir in fs::read_dir(entry.path())? {
                    let shard_dir = shard_dir?;
                    let shard_name = shard_dir.file_name().to_string_lossy().into_owned();
                    if !stream.shards.iter().any(|s| s.dir_name() == shard_name) {
                        fs::remove_dir_all(shard_dir.path())?;
                    }
                }
            }
        }
    }
    Ok(())
}
