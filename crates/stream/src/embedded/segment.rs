//! One segment file of a shard: an append-only run of frames, with a sparse in-memory index for
//! seeks by sequence number and by arrival time.
//!
//! Only the writer thread appends; readers read with positional reads up to the committed length
//! (the part a finished fsync covers), so they never see a record that is not durable. A sealed
//! segment's index is kept beside it (`<base>.idx`) so opening a large log does not rescan it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::RwLock;

use super::frame::{self, Decoded, StoredRecord};

/// A sparse index entry is kept at least this many bytes after the previous one.
pub const INDEX_INTERVAL: u64 = 64 * 1024;

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 1 << 20;

/// One sparse index entry: the frame at `offset` has this sequence number and arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub sequence: u128,
    pub arrival_ms: u64,
    pub offset: u64,
}

/// What is known about the committed part of a segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentState {
    /// Committed (durable) length in bytes.
    pub len: u64,
    /// Sparse index, by offset.
    pub index: Vec<IndexEntry>,
    /// Sequence number of the last committed record.
    pub last_sequence: Option<u128>,
    /// Arrival time of the last committed record.
    pub last_arrival_ms: u64,
}

/// One segment file.
pub struct Segment {
    /// Lowest sequence number the segment may hold (its file name).
    pub base: u128,
    path: PathBuf,
    file: File,
    state: RwLock<SegmentState>,
}

/// How a scan of frames ended.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last valid frame visited.
    pub end: u64,
    /// Why the frames stopped before the end of the range, if they did.
    pub damage: Option<&'static str>,
}

impl Segment {
    /// The file name of the segment starting at `base`.
    pub fn file_name(base: u128) -> String {
        format!("{base:032x}.seg")
    }

    /// The base sequence number of a segment file name, if it is one.
    pub fn parse_file_name(name: &str) -> Option<u128> {
        let hex = name.strip_suffix(".seg")?;
        (hex.len() == 32)
            .then(|| u128::from_str_radix(hex, 16).ok())
            .flatten()
    }

    /// Creates an empty segment file (the caller makes the directory entry durable).
    pub fn create(dir: &Path, base: u128) -> io::Result<Segment> {
        let path = dir.join(Segment::file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Segment {
            base,
            path,
            file,
            state: RwLock::new(SegmentState::default()),
        })
    }

    /// Opens an existing segment. A `tail` segment (or one without a usable index file) is
    /// scanned frame by frame and cut back to its last valid frame; records past damage are
    /// never served.
    pub fn open(path: PathBuf, base: u128, tail: bool) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let segment = Segment {
            base,
            path,
            file,
            state: RwLock::new(SegmentState::default()),
        };
        if !tail && let Some(state) = segment.load_index(file_len) {
            *segment.state.write() = state;
            return Ok(segment);
        }
        let mut state = SegmentState::default();
        let mut previous = None::<u128>;
        let scan = segment.scan(0, file_len, |record, offset| {
            if previous.is_some_and(|p| record.sequence <= p) || record.sequence < base {
                return ControlFlow::Break(Some("sequence out of order"));
            }
            previous = Some(record.sequence);
            note_frame(&mut state, &record, offset);
            ControlFlow::Continue(())
        })?;
        state.len = scan.end;
        if scan.end < file_len {
            tracing::warn!(
                segment = %segment.path.display(),
                valid = scan.end,
                length = file_len,
                reason = scan.damage.unwrap_or("torn write"),
                "cutting a damaged segment back to its last valid record"
            );
            segment.file.set_len(scan.end)?;
            segment.file.sync_all()?;
        }
        *segment.state.write() = state;
        Ok(segment)
    }

    /// Committed length.
    pub fn len(&self) -> u64 {
        self.state.read().len
    }

    /// Sequence number of the last committed record.
    pub fn last_sequence(&self) -> Option<u128> {
        self.state.read().last_sequence
    }

    /// Arrival time of the last committed record (0 if empty).
    pub fn last_arrival_ms(&self) -> u64 {
        self.state.read().last_arrival_ms
    }

    /// Where the next sparse index entry is due (for the writer).
    pub fn last_index_offset(&self) -> Option<u64> {
        self.state.read().index.last().map(|entry| entry.offset)
    }

    /// Writes `bytes` at `offset` (not yet durable).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if faults::disk_full(&self.path) {
            // Half the bytes land, then the disk is full.
            self.file.write_all_at(&bytes[..bytes.len() / 2], offset)?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.file.write_all_at(bytes, offset)
    }

    /// Makes every written byte durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        faults::count_sync(&self.path);
        self.file.sync_data()
    }

    /// Cuts the file back to `len` bytes and makes that durable (after a failed append).
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    /// Publishes appended, durable frames to readers.
    pub fn commit(
        &self,
        len: u64,
        index: &[IndexEntry],
        last_sequence: u128,
        last_arrival_ms: u64,
    ) {
        let mut state = self.state.write();
        state.len = len;
        state.index.extend_from_slice(index);
        state.last_sequence = Some(last_sequence);
        state.last_arrival_ms = last_arrival_ms;
    }

    /// Deletes the segment's files.
    pub fn remove_files(&self) -> io::Result<()> {
        remove_if_present(&self.index_path())?;
        remove_if_present(&self.path)
    }

    /// Reads records with sequence number at least `from` until `visit` breaks. Only the
    /// committed part is read; damage there is an error.
    pub fn read(
        &self,
        from: u128,
        mut visit: impl FnMut(StoredRecord) -> ControlFlow<()>,
    ) -> io::Result<()> {
        let state = self.state.read();
        let len = state.len;
        let start = match state.index.partition_point(|entry| entry.sequence <= from) {
            0 => 0,
            after => state.index[after - 1].offset,
        };
        drop(state);
        let scan = self.scan(start, len, |record, _| {
            if record.sequence < from {
                return ControlFlow::Continue(());
            }
            match visit(record) {
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
                ControlFlow::Break(()) => ControlFlow::Break(None),
            }
        })?;
        match scan.damage {
            Some(why) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment {} is damaged at offset {}: {why}",
                    self.path.display(),
                    scan.end
                ),
            )),
            None => Ok(()),
        }
    }

    /// The first record that arrived at or after `at_ms`, if this segment has one.
    pub fn seek_time(&self, at_ms: u64) -> io::Result<Option<u128>> {
        let state = self.state.read();
        if state.last_sequence.is_none() || state.last_arrival_ms < at_ms {
            return Ok(None);
        }
        let (len, start) = (
            state.len,
            match state
                .index
                .partition_point(|entry| entry.arrival_ms < at_ms)
            {
                0 => 0,
                after => state.index[after - 1].offset,
            },
        );
        drop(state);
        let mut found = None;
        let scan = self.scan(start, len, |record, _| {
            if record.arrival_ms >= at_ms {
                found = Some(record.sequence);
                return ControlFlow::Break(None);
            }
            ControlFlow::Continue(())
        })?;
        if let Some(why) = scan.damage {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Ok(found)
    }

    /// Visits the valid frames in `start..end` with their offsets. Stops at the first damaged
    /// or incomplete frame, or when `visit` breaks (with a damage reason or `None`).
    fn scan(
        &self,
        start: u64,
        end: u64,
        mut visit: impl FnMut(StoredRecord, u64) -> ControlFlow<Option<&'static str>>,
    ) -> io::Result<ScanEnd> {
        let mut offset = start;
        let mut want = READ_CHUNK;
        while offset < end {
            let size = (want as u64).min(end - offset) as usize;
            let mut buf = vec![0; size];
            self.file.read_exact_at(&mut buf, offset)?;
            let chunk = Bytes::from(buf);
            let mut pos = 0;
            want = READ_CHUNK;
            while pos < chunk.len() {
                match frame::decode(&chunk, pos) {
                    Decoded::Frame(record, used) => {
                        if let ControlFlow::Break(damage) = visit(record, offset + pos as u64) {
                            return Ok(ScanEnd {
                                end: offset + pos as u64,
                                damage,
                            });
                        }
                        pos += used;
                    }
                    Decoded::Incomplete(needed) => {
                        if offset + (pos + needed) as u64 > end {
                            return Ok(ScanEnd {
                                end: offset + pos as u64,
                                damage: Some("torn write"),
                            });
                        }
                        want = want.max(needed);
                        break;
                    }
                    Decoded::Corrupt(why) => {
                        return Ok(ScanEnd {
                            end: offset + pos as u64,
                            damage: Some(why),
                        });
                    }
                }
            }
            offset += pos as u64;
        }
        Ok(ScanEnd {
            end: offset,
            damage: None,
        })
    }

    fn index_path(&self) -> PathBuf {
        self.path.with_extension("idx")
    }

    /// Writes the index file of a segment that takes no more appends. Not fsynced: a lost or
    /// damaged index file only means a rescan at the next open.
    pub fn seal(&self) -> io::Result<()> {
        let state = self.state.read();
        let mut out = Vec::with_capacity(64 + state.index.len() * 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&state.len.to_le_bytes());
        out.extend_from_slice(&state.last_sequence.unwrap_or(0).to_le_bytes());
        out.push(u8::from(state.last_sequence.is_some()));
        out.extend_from_slice(&state.last_arrival_ms.to_le_bytes());
        out.extend_from_slice(&(state.index.len() as u32).to_le_bytes());
        for entry in &state.index {
            out.extend_from_slice(&entry.sequence.to_le_bytes());
            out.extend_from_slice(&entry.arrival_ms.to_le_bytes());
            out.extend_from_slice(&entry.offset.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        drop(state);
        let temp = self.path.with_extension("idx.tmp");
        fs::write(&temp, &out)?;
        fs::rename(&temp, self.index_path())
    }

    /// The state from the index file, if it is intact and matches the segment's length.
    fn load_index(&self, file_len: u64) -> Option<SegmentState> {
        let bytes = fs::read(self.index_path()).ok()?;
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut cursor = body.strip_prefix(INDEX_MAGIC)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = cursor.split_at_checked(n)?;
            cursor = rest;
            Some(head)
        };
        let len = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let last = u128::from_le_bytes(take(16)?.try_into().ok()?);
        let has_last = take(1)?[0] == 1;
        let last_arrival_ms = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut index = Vec::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            index.push(IndexEntry {
                sequence: u128::from_le_bytes(take(16)?.try_into().ok()?),
                arrival_ms: u64::from_le_bytes(take(8)?.try_into().ok()?),
                offset: u64::from_le_bytes(take(8)?.try_into().ok()?),
            });
        }
        (len == file_len).then_some(SegmentState {
            len,
            index,
            last_sequence: has_last.then_some(last),
            last_arrival_ms,
        })
    }
}

const INDEX_MAGIC: &[u8; 8] = b"FCSIDX01";

/// Adds a frame at `offset` to a state being rebuilt by a scan.
fn note_frame(state: &mut SegmentState, record: &StoredRecord, offset: u64) {
    if state
        .index
        .last()
        .is_none_or(|entry| offset - entry.offset >= INDEX_INTERVAL)
    {
        state.index.push(IndexEntry {
            sequence: record.sequence,
            arrival_ms: record.arrival_ms,
            offset,
        });
    }
    state.last_sequence = Some(record.sequence);
    state.last_arrival_ms = record.arrival_ms;
}

/// Deletes a file; a file that is already gone is fine.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Fault injection and sync counting for the unit tests, by directory.
#[cfg(test)]
pub mod faults {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use parking_lot::Mutex;

    static DISK_FULL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static SYNCS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

    /// The next write to a segment under `dir` fails half-way with ENOSPC.
    pub fn fill_disk_once(dir: &Path) {
        DISK_FULL.lock().push(dir.to_path_buf());
    }

    pub(in crate::embedded) fn disk_full(path: &Path) -> bool {
        let mut armed = DISK_FULL.lock();
        let hit = armed.iter().position(|dir| path.starts_with(dir));
        hit.map(|i| armed.remove(i)).is_some()
    }

    pub(in crate::embedded) fn count_sync(path: &Path) {
        let mut syncs = SYNCS.lock();
        let syncs = syncs.get_or_insert_with(HashMap::new);
        for (dir, count) in syncs.iter_mut() {
            if path.starts_with(dir) {
                *count += 1;
            }
        }
    }

    /// Starts counting segment syncs under `dir`.
    pub fn count_syncs_under(dir: &Path) {
        SYNCS
            .lock()
            .get_or_insert_with(HashMap::new)
            .insert(dir.to_path_buf(), 0);
    }

    /// Segment syncs under `dir` since counting started.
    pub fn syncs_under(dir: &Path) -> usize {
        SYNCS
            .lock()
            .as_ref()
            .and_then(|syncs| syncs.get(dir).copied())
            .unwrap_or(0)
    }
}
