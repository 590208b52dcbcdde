//! The log of one shard: its segment files in sequence order, and the tip readers wait on.

use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use tokio::sync::watch;

use super::frame::StoredRecord;
use super::segment::{Segment, remove_if_present};

/// The newest state of a shard, as readers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tip {
    /// Sequence number of the newest durable record.
    pub last_sequence: Option<u128>,
    /// Its arrival time (ms since the Unix epoch).
    pub last_arrival_ms: u64,
    /// The shard takes no more records.
    pub closed: bool,
}

/// What one read of a shard found.
pub struct ShardRead {
    /// Live records in sequence order.
    pub records: Vec<StoredRecord>,
    /// Where the next read continues: past every record looked at, expired ones included.
    pub next: u128,
}

/// The segment files of one shard.
pub struct ShardLog {
    dir: PathBuf,
    segments: RwLock<Vec<Arc<Segment>>>,
    tip: watch::Sender<Tip>,
    /// Set when a failed append could not be rolled back: the shard refuses appends until the
    /// next open, whose recovery scan repairs the tail.
    poisoned: AtomicBool,
}

impl ShardLog {
    /// Opens (or creates) the shard's directory and recovers its tail segment.
    pub fn open(dir: PathBuf, closed: bool) -> io::Result<ShardLog> {
        fs::create_dir_all(&dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = Segment::parse_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                remove_if_present(&dir.join(name.as_ref()))?;
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        for (i, base) in bases.iter().enumerate() {
            let tail = i + 1 == bases.len();
            let path = dir.join(Segment::file_name(*base));
            segments.push(Arc::new(Segment::open(path, *base, tail)?));
        }
        let mut tip = Tip {
            closed,
            ..Tip::default()
        };
        if let Some(newest) = segments.iter().rev().find(|s| s.last_sequence().is_some()) {
            tip.last_sequence = newest.last_sequence();
            tip.last_arrival_ms = newest.last_arrival_ms();
        }
        Ok(ShardLog {
            dir,
            segments: RwLock::new(segments),
            tip: watch::Sender::new(tip),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest durable state.
    pub fn tip(&self) -> Tip {
        *self.tip.borrow()
    }

    /// A receiver that sees every tip change.
    pub fn watch(&self) -> watch::Receiver<Tip> {
        self.tip.subscribe()
    }

    /// The segment appends go to, if any.
    pub fn active(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }

    /// Makes `segment` the one appends go to (after its directory entry is durable).
    pub fn push_segment(&self, segment: Arc<Segment>) {
        self.segments.write().push(segment);
    }

    /// Publishes a new newest record to readers and waiters.
    pub fn advance(&self, last_sequence: u128, last_arrival_ms: u64) {
        self.tip.send_modify(|tip| {
            tip.last_sequence = Some(last_sequence);
            tip.last_arrival_ms = last_arrival_ms;
        });
    }

    /// Marks the shard closed (wakes waiters) and seals its last segment.
    pub fn close(&self) {
        self.tip.send_modify(|tip| tip.closed = true);
        if let Some(active) = self.active()
            && let Err(error) = active.seal()
        {
            tracing::warn!(%error, dir = %self.dir.display(), "could not write a segment index");
        }
    }

    /// True if appends are refused until the next open.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Refuses appends until the next open.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Reads up to `limit` records (and about `max_bytes` of payload) with sequence number at
    /// least `from`, skipping those that arrived before `cutoff_ms` (past retention).
    pub fn read(
        &self,
        from: u128,
        cutoff_ms: u64,
        limit: usize,
        max_bytes: usize,
    ) -> io::Result<ShardRead> {
        let segments = self.segments.read().clone();
        let first = segments
            .partition_point(|segment| segment.base <= from)
            .saturating_sub(1);
        let mut read = ShardRead {
            records: Vec::new(),
            next: from,
        };
        let mut bytes = 0usize;
        for segment in &segments[first.min(segments.len())..] {
            if let Some(last) = segment.last_sequence()
                && segment.last_arrival_ms() < cutoff_ms
            {
                read.next = read.next.max(last + 1);
                continue;
            }
            let mut full = false;
            segment.read(from, |record| {
                read.next = read.next.max(record.sequence + 1);
                if record.arrival_ms < cutoff_ms {
                    return ControlFlow::Continue(());
                }
                bytes += record.data.len();
                read.records.push(record);
                full = read.records.len() >= limit || bytes >= max_bytes;
                if full {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if full {
                break;
            }
        }
        Ok(read)
    }

    /// The first record that arrived at or after `at_ms`, if any.
    pub fn seek_time(&self, at_ms: u64) -> io::Result<Option<u128>> {
        let segments = self.segments.read().clone();
        // Not a binary search: an empty segment (rolled by retention) breaks the order.
        for segment in segments.iter().filter(|s| s.last_arrival_ms() >= at_ms) {
            if let Some(found) = segment.seek_time(at_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Deletes the segments whose newest record arrived before `cutoff_ms`, except the one
    /// appends go to while the shard is open. Returns how many remain.
    pub fn remove_expired(&self, cutoff_ms: u64) -> io::Result<usize> {
        let closed = self.tip().closed;
        let expired: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let keep_last = usize::from(!closed);
            let deletable = segments.len().saturating_sub(keep_last);
            let count = segments[..deletable]
                .iter()
                .take_while(|segment| segment.last_arrival_ms() < cutoff_ms)
                .count();
            segments.drain(..count).collect()
        };
        for segment in &expired {
            segment.remove_files()?;
        }
        Ok(self.segments.read().len())
    }

    /// Deletes the whole shard directory (its stream was deleted or it aged out).
    pub fn remove_all(&self) -> io::Result<()> {
        self.segments.write().clear();
        match fs::remove_dir_all(&self.dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}
