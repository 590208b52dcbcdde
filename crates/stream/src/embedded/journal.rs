//! The commit journal: one file for the whole streams directory that makes a group commit
//! durable with a single fdatasync, however many shards (and streams) the batch touched.
//!
//! A batch's frames are written to their shards' segment files as before, and the same frames
//! are written once more, tagged with their stream epoch and shard, to the journal; the batch is
//! acknowledged once the journal is synced. The segment files are synced later, all together, at
//! a checkpoint: when the journal is full, before a layout change (delete, reshard, retention),
//! after a failed batch and at a clean shutdown. A checkpoint then starts a new journal
//! *generation* and the journal is overwritten from its start, in place (the file is zero-filled
//! when created, so a sync writes the data only, no file metadata).
//!
//! Opening replays the current generation: every record a shard's recovered segments do not
//! hold (its sequence number is past the shard's tip) is appended to the shard's newest segment.
//! A torn or damaged journal tail ends the replay; frames of older generations are never replayed.
//!
//! ```text
//! offset 0 and 512: header slots   magic "FCJRNL01" | u64 LE generation | u32 LE CRC32 of both
//! offset 1024...:    frames         u32 LE body length | u32 LE CRC32 of the body's first 28 bytes
//!                                    body: u64 LE generation | u64 LE stream epoch | u32 LE shard
//!                                          | the record's segment frame (see `frame`)
//! ```
//!
//! The journal CRC covers the generation, epoch, shard and the segment frame's header (its length
//! and CRC); the segment frame's own CRC covers the rest, so a record is checksummed once.
//!
//! A new generation is written to the slot the current one is not in, so a torn header write
//! leaves the previous generation readable (whose frames are all in synced segments by then).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::catalog::sync_dir;
use super::frame::{self, Decoded, StoredRecord};
use super::segment::Segment;

/// The journal's file name in the streams directory.
pub const FILE_NAME: &str = "journal";

const MAGIC: &[u8; 8] = b"FCJRNL01";
const SLOT_BYTES: u64 = 512;
/// Where the first frame goes.
pub const FRAMES_START: u64 = 2 * SLOT_BYTES;
/// Bytes of a journal frame around the segment frame: length, CRC, generation, epoch, shard.
const OVERHEAD: usize = 4 + 4 + 8 + 8 + 4;
/// End of what the journal CRC covers, from a frame's start: up to the segment frame's CRC.
const COVERED: usize = OVERHEAD + frame::HEADER_BYTES;

/// Journal bytes of a record whose segment frame is `frame_len` bytes.
pub fn frame_len(frame_len: usize) -> usize {
    OVERHEAD + frame_len
}

/// The journal frames of one batch, encoded for the journal's current generation.
pub struct Entries {
    generation: u64,
    bytes: Vec<u8>,
}

impl Entries {
    /// Adds the segment frame `frame` of a record of shard `shard` of the stream `epoch`.
    pub fn push(&mut self, epoch: u64, shard: u32, frame: &[u8]) {
        let start = self.bytes.len();
        let body_len = (OVERHEAD - 8 + frame.len()) as u32;
        self.bytes.extend_from_slice(&body_len.to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]);
        self.bytes.extend_from_slice(&self.generation.to_le_bytes());
        self.bytes.extend_from_slice(&epoch.to_le_bytes());
        self.bytes.extend_from_slice(&shard.to_le_bytes());
        self.bytes.extend_from_slice(frame);
        let crc = crc32fast::hash(&self.bytes[start + 8..start + COVERED]);
        self.bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A record found in the journal when it was opened.
pub struct Replayed {
    /// The stream's epoch.
    pub epoch: u64,
    /// The shard's id.
    pub shard: u32,
    /// The record, decoded.
    pub record: StoredRecord,
    /// Its segment frame, as it goes into the segment file.
    pub frame: Bytes,
}

/// The open journal (owned by the writer thread).
pub struct Journal {
    path: PathBuf,
    file: File,
    generation: u64,
    /// Where the next frame goes.
    end: u64,
    /// A checkpoint is due once the journal would grow past this.
    capacity: u64,
    /// Segments holding frames that only the journal has made durable, by address.
    dirty: HashMap<usize, Arc<Segment>>,
    /// A write failed part-way: no frame is written before a checkpoint starts a new generation.
    needs_checkpoint: bool,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and returns it with the records of its current
    /// generation, in the order they were committed. The caller applies them, syncs the segments
    /// it appended to, then calls [`Journal::checkpoint`].
    pub fn open(dir: &Path, capacity: u64) -> io::Result<(Journal, Vec<Replayed>)> {
        let path = dir.join(FILE_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                let mut header = vec![0; FRAMES_START as usize];
                header[..slot_len()].copy_from_slice(&slot(0));
                file.write_all_at(&header, 0)?;
                preallocate(&file, capacity, &path)?;
                file.sync_all()?;
                sync_dir(dir)?;
                file
            }
            Err(error) => return Err(error),
        };
        let bytes = Bytes::from(std::fs::read(&path)?);
        let generation = current_generation(&bytes).unwrap_or_else(|| {
            tracing::warn!(journal = %path.display(), "the commit journal has no readable header; nothing to replay");
            0
        });
        let (replayed, end) = scan(&bytes, generation);
        if !replayed.is_empty() {
            tracing::info!(journal = %path.display(), records = replayed.len(), "replaying the commit journal");
        }
        let journal = Journal {
            path,
            file,
            generation,
            end,
            capacity: capacity.max(FRAMES_START + 1),
            dirty: HashMap::new(),
            // Whatever follows the replayed frames must never be read as this generation's.
            needs_checkpoint: true,
        };
        Ok((journal, replayed))
    }

    /// Makes room for a batch of `len` journal bytes: checkpoints first if the journal is full
    /// or a failed write left it unusable. False if the batch is larger than the whole journal
    /// (the caller then syncs the batch's segments itself).
    pub fn make_room(&mut self, len: u64) -> io::Result<bool> {
        if self.needs_checkpoint || (self.end + len > self.capacity && self.end > FRAMES_START) {
            self.checkpoint()?;
        }
        Ok(self.end + len <= self.capacity)
    }

    /// An empty batch for the current generation.
    pub fn entries(&self, capacity: usize) -> Entries {
        Entries {
            generation: self.generation,
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// Writes a batch's frames and makes them durable (one fdatasync). On failure the journal
    /// takes nothing more until a checkpoint succeeds.
    pub fn commit(&mut self, entries: &Entries) -> io::Result<()> {
        if self.needs_checkpoint || entries.generation != self.generation {
            return Err(io::Error::other(format!(
                "the commit journal {} needs a checkpoint",
                self.path.display()
            )));
        }
        let outcome = self.write_and_sync(&entries.bytes);
        match outcome {
            Ok(()) => self.end += entries.bytes.len() as u64,
            Err(_) => self.needs_checkpoint = true,
        }
        outcome
    }

    fn write_and_sync(&self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if super::segment::faults::disk_full(&self.path) {
            self.file
                .write_all_at(&bytes[..bytes.len() / 2], self.end)?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.file.write_all_at(bytes, self.end)?;
        #[cfg(test)]
        super::segment::faults::count_sync(&self.path);
        self.file.sync_data()
    }

    /// Notes that `segment` holds frames only the journal has made durable.
    pub fn dirty(&mut self, segment: &Arc<Segment>) {
        self.dirty
            .entry(Arc::as_ptr(segment) as usize)
            .or_insert_with(|| Arc::clone(segment));
    }

    /// Syncs every segment the journal covers, then starts a new generation from the journal's
    /// start. Until it succeeds, no batch is committed through the journal.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        if !self.needs_checkpoint && self.dirty.is_empty() && self.end == FRAMES_START {
            // Nothing written since the last one (an idle store's retention pass).
            return Ok(());
        }
        self.needs_checkpoint = true;
        for segment in self.dirty.values() {
            segment.sync()?;
        }
        self.dirty.clear();
        let next = self.generation + 1;
        let at = (next % 2) * SLOT_BYTES;
        self.file.write_all_at(&slot(next), at)?;
        #[cfg(test)]
        super::segment::faults::count_sync(&self.path);
        self.file.sync_data()?;
        self.generation = next;
        self.end = FRAMES_START;
        self.needs_checkpoint = false;
        Ok(())
    }
}

/// Fills the journal with zeros up to `capacity`, so that appends overwrite allocated blocks and
/// their fdatasync writes no file metadata (size, extents). Where the disk has no room for that,
/// the journal grows as it is written instead.
fn preallocate(file: &File, capacity: u64, path: &Path) -> io::Result<()> {
    let zeros = vec![0; 1 << 20];
    let mut at = FRAMES_START;
    while at < capacity {
        let len = (capacity - at).min(zeros.len() as u64) as usize;
        if let Err(error) = file.write_all_at(&zeros[..len], at) {
            tracing::warn!(%error, journal = %path.display(), "could not preallocate the commit journal; it grows as it is written");
            return file.set_len(FRAMES_START);
        }
        at += len as u64;
    }
    Ok(())
}

fn slot_len() -> usize {
    MAGIC.len() + 8 + 4
}

/// A header slot naming `generation`.
fn slot(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(slot_len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The newest generation of the two header slots that are intact.
fn current_generation(bytes: &[u8]) -> Option<u64> {
    [0, SLOT_BYTES as usize]
        .into_iter()
        .filter_map(|at| {
            let slot = bytes.get(at..at + slot_len())?;
            let (body, crc) = slot.split_at(slot_len() - 4);
            let crc = u32::from_le_bytes(crc.try_into().ok()?);
            if !body.starts_with(MAGIC) || crc32fast::hash(body) != crc {
                return None;
            }
            Some(u64::from_le_bytes(body[MAGIC.len()..].try_into().ok()?))
        })
        .max()
}

/// The frames of `generation` from the start of the frames to the first frame that is torn,
/// damaged or of another generation; and where that is.
fn scan(bytes: &Bytes, generation: u64) -> (Vec<Replayed>, u64) {
    let mut replayed = Vec::new();
    let mut at = FRAMES_START as usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let largest = OVERHEAD - 8 + frame::HEADER_BYTES + frame::MAX_BODY_BYTES;
        if !(COVERED - 8..=largest).contains(&body_len) {
            break;
        }
        let Some(body) = bytes.get(at + 8..at + 8 + body_len) else {
            break;
        };
        if crc32fast::hash(&body[..COVERED - 8]) != crc {
            break;
        }
        let number = |range: std::ops::Range<usize>| {
            let mut out = [0; 8];
            out[..range.len()].copy_from_slice(&body[range]);
            u64::from_le_bytes(out)
        };
        if number(0..8) != generation {
            break;
        }
        let (epoch, shard) = (number(8..16), number(16..20) as u32);
        let inner = bytes.slice(at + OVERHEAD..at + 8 + body_len);
        match frame::decode(&inner, 0) {
            Decoded::Frame(record, used) if used == inner.len() => replayed.push(Replayed {
                epoch,
                shard,
                record,
                frame: inner,
            }),
            _ => break,
        }
        at += 8 + body_len;
    }
    (replayed, at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_frame(sequence: u128, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode(&mut out, sequence, 7, "key", data);
        out
    }

    #[test]
    fn committed_frames_of_the_current_generation_are_replayed_up_to_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, replayed) = Journal::open(dir.path(), 1 << 20).expect("open");
        assert!(replayed.is_empty());
        let file_len = || {
            std::fs::metadata(dir.path().join(FILE_NAME))
                .expect("meta")
                .len()
        };
        assert_eq!(file_len(), 1 << 20, "preallocated");
        assert!(journal.make_room(10_000).expect("room"));
        let mut entries = journal.entries(1024);
        entries.push(5, 0, &segment_frame(1, b"one"));
        entries.push(5, 3, &segment_frame(2, b"two"));
        journal.commit(&entries).expect("commit");
        let mut torn = journal.entries(1024);
        torn.push(5, 1, &segment_frame(3, b"three, torn"));
        // Half of the next batch reaches the disk before the crash.
        let half = &torn.bytes[..torn.bytes.len() / 2];
        journal.file.write_all_at(half, journal.end).expect("write");
        drop(journal);
        assert_eq!(file_len(), 1 << 20, "written in place");

        let (mut journal, replayed) = Journal::open(dir.path(), 1 << 20).expect("reopen");
        let found: Vec<(u64, u32, u128, &[u8])> = replayed
            .iter()
            .map(|r| (r.epoch, r.shard, r.record.sequence, &r.record.data[..]))
            .collect();
        assert_eq!(found, [(5, 0, 1, &b"one"[..]), (5, 3, 2, &b"two"[..])]);
        assert_eq!(&replayed[1].frame[..], &segment_frame(2, b"two")[..]);
        // After the checkpoint, the old generation's frames are never replayed again, even
        // where the new generation has not overwritten them.
        journal.checkpoint().expect("checkpoint");
        drop(journal);
        let (_, replayed) = Journal::open(dir.path(), 1 << 20).expect("reopen");
        assert!(replayed.is_empty());
    }

    #[test]
    fn a_damaged_record_ends_the_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        assert!(journal.make_room(1000).expect("room"));
        let mut entries = journal.entries(1024);
        entries.push(1, 0, &segment_frame(1, b"kept"));
        entries.push(1, 0, &segment_frame(2, b"damaged"));
        entries.push(1, 0, &segment_frame(3, b"after"));
        let second = FRAMES_START as usize + frame_len(segment_frame(1, b"kept").len());
        journal.commit(&entries).expect("commit");
        drop(journal);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        // The last byte of the second record's data (covered by the segment frame's CRC only).
        let at = second + frame_len(segment_frame(2, b"damaged").len()) - 1;
        bytes[at] ^= 0x20;
        std::fs::write(&path, bytes).expect("write");
        let (_, replayed) = Journal::open(dir.path(), 1 << 20).expect("reopen");
        let sequences: Vec<u128> = replayed.iter().map(|r| r.record.sequence).collect();
        assert_eq!(sequences, [1]);
    }

    #[test]
    fn a_torn_header_write_keeps_the_previous_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), 1 << 20).expect("open");
        journal.checkpoint().expect("checkpoint");
        let generation = journal.generation;
        assert!(journal.make_room(100).expect("room"));
        let mut entries = journal.entries(128);
        entries.push(1, 0, &segment_frame(9, b"x"));
        journal.commit(&entries).expect("commit");
        // The next generation's header is torn: its slot holds garbage.
        let at = ((generation + 1) % 2) * SLOT_BYTES;
        journal.file.write_all_at(&[0xAB; 12], at).expect("write");
        drop(journal);
        let (journal, replayed) = Journal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(journal.generation, generation);
        assert_eq!(replayed.len(), 1);
    }

    #[test]
    fn a_full_journal_asks_for_a_checkpoint_and_a_batch_larger_than_it_goes_around_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let frame = segment_frame(1, &[0; 100]);
        let len = frame_len(frame.len()) as u64;
        let (mut journal, _) = Journal::open(dir.path(), FRAMES_START + 3 * len).expect("open");
        let first = journal.generation;
        for _ in 0..3 {
            assert!(journal.make_room(len).expect("room"));
            let mut entries = journal.entries(256);
            entries.push(1, 0, &frame);
            journal.commit(&entries).expect("commit");
        }
        // A checkpoint happened when the journal was opened (generation + 1) and none since.
        assert_eq!(journal.generation, first + 1);
        assert!(journal.make_room(len).expect("room"));
        assert_eq!(journal.generation, first + 2, "full: a new generation");
        assert_eq!(journal.end, FRAMES_START);
        assert!(!journal.make_room(4 * len).expect("room"), "too large");
    }
}
