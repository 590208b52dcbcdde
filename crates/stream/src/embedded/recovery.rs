//! Opening a streams directory: its lock, the catalog, every shard's recovered log, and a fresh
//! reservation of sequence numbers per stream.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::catalog::{Catalog, RESERVATION, StreamMeta};
use super::shard_log::ShardLog;
use super::writer::Cursor;
use super::{EmbeddedConfig, Shared, storage};
use crate::StreamError;

pub type Recovered = (Shared, HashMap<u64, Cursor>, File);

/// Opens the directory: takes its lock, loads the catalog, recovers every shard's log and
/// reserves a fresh range of sequence numbers for each stream.
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
    let mut cursors = HashMap::new();
    for stream in streams.values() {
        let mut cursor = Cursor {
            next: stream.reserved,
            last_arrival_ms: 0,
        };
        for shard in &stream.shards {
            let shard_dir = dir.join(stream.dir_name()).join(shard.dir_name());
            let log = ShardLog::open(shard_dir, shard.ending_sequence.is_some()).map_err(fail)?;
            let tip = log.tip();
            if let Some(last) = tip.last_sequence
                && last >> 64 == u128::from(stream.epoch)
            {
                cursor.next = cursor.next.max(last as u64 + 1);
            }
            cursor.last_arrival_ms = cursor.last_arrival_ms.max(tip.last_arrival_ms);
            logs.insert((stream.epoch, shard.id), Arc::new(log));
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
    Ok((shared, cursors, lock))
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
