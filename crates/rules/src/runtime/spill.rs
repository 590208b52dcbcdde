//! The overflow of one action lane, in a file: when a destination is slower than the
//! messages arriving for it, what its queue cannot hold waits here instead of holding up the
//! partition reader, so the other actions of every rule keep going (a slow destination
//! delays only itself). The file is scratch space, not a durable log: the ingest log is, and
//! a record whose outputs are still queued or spilled keeps its partition's checkpoint
//! behind it, so after a crash it is read and delivered again.
//!
//! Entries are appended at the end and taken from the front, in order; once the file is
//! empty it is truncated and reused. It is created on the first overflow and removed with
//! the lane.
//!
//! Full-policy: at most `limit` bytes wait in the file; beyond that (or if the file cannot be
//! written) the reader waits for room in the lane's queue, as it does without a spill.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use super::lane::{Origin, Pending};
use crate::actions::Prepared;

/// Bytes read from the file at once when taking entries back.
const READ_CHUNK: usize = 1 << 20;

/// One lane's overflow file.
pub(crate) struct Spill {
    path: PathBuf,
    file: Option<File>,
    /// End of the written entries.
    write_at: u64,
    /// Start of the first entry not taken back yet.
    read_at: u64,
    /// Entries in the file.
    entries: usize,
    /// Most bytes waiting in the file.
    limit: u64,
    /// The lane's rule (every entry's `Origin::rule`).
    rule: Option<Arc<str>>,
}

impl Spill {
    /// An overflow kept at `path` (not created until needed), holding at most `limit` bytes.
    pub(crate) fn new(path: PathBuf, limit: u64) -> Spill {
        Spill {
            path,
            file: None,
            write_at: 0,
            read_at: 0,
            entries: 0,
            limit,
            rule: None,
        }
    }

    /// True if nothing waits in the file.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Moves entries from the front of `batch` to the end of the file while they fit under
    /// the limit; returns how many it took.
    pub(crate) fn append(&mut self, batch: &mut VecDeque<Pending>) -> io::Result<usize> {
        let mut buffer = Vec::new();
        let mut taken = 0;
        let waiting = self.write_at - self.read_at;
        for pending in batch.iter() {
            let before = buffer.len();
            encode(pending, &mut buffer);
            if waiting + buffer.len() as u64 > self.limit {
                buffer.truncate(before);
                break;
            }
            taken += 1;
        }
        if taken == 0 {
            return Ok(0);
        }
        let at = self.write_at;
        self.open()?.write_all_at(&buffer, at)?;
        self.write_at += buffer.len() as u64;
        self.entries += taken;
        if self.rule.is_none() {
            self.rule = batch.front().map(|p| Arc::clone(&p.origin.rule));
        }
        batch.drain(..taken);
        Ok(taken)
    }

    /// Takes up to `max` entries from the front of the file, in order. If the file cannot be
    /// read back, what it held is dropped (those records stay owed in their partition's
    /// progress, so the checkpoint stays at them and a restart delivers them again).
    pub(crate) fn take(&mut self, max: usize, into: &mut VecDeque<Pending>) -> io::Result<()> {
        let result = self.read_into(max, into);
        if result.is_err() {
            self.entries = 0;
        }
        if self.entries == 0 {
            // Empty: start again from the beginning of the file.
            self.read_at = 0;
            self.write_at = 0;
            if let Some(file) = &self.file {
                file.set_len(0)?;
            }
        }
        result
    }

    fn read_into(&mut self, max: usize, into: &mut VecDeque<Pending>) -> io::Result<()> {
        let (Some(file), Some(rule)) = (&self.file, &self.rule) else {
            return Ok(());
        };
        let mut taken = 0;
        while taken < max && self.entries > 0 {
            let available = self.write_at - self.read_at;
            let chunk = available.min(READ_CHUNK as u64) as usize;
            let mut bytes = vec![0; chunk];
            file.read_exact_at(&mut bytes, self.read_at)?;
            let mut bytes = Bytes::from(bytes);
            let mut consumed = 0;
            while taken < max && bytes.remaining() >= 4 {
                let length = (&bytes[..4]).get_u32() as usize;
                if bytes.remaining() < 4 + length {
                    break;
                }
                bytes.advance(4);
                let entry = bytes.split_to(length);
                into.push_back(decode(entry, rule).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a damaged lane spill entry")
                })?);
                consumed += 4 + length;
                taken += 1;
                self.entries -= 1;
            }
            if consumed == 0 {
                // The next entry is larger than a chunk: read exactly it.
                let mut length = [0; 4];
                file.read_exact_at(&mut length, self.read_at)?;
                let length = u32::from_be_bytes(length) as usize;
                let mut entry = vec![0; length];
                file.read_exact_at(&mut entry, self.read_at + 4)?;
                into.push_back(decode(Bytes::from(entry), rule).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a damaged lane spill entry")
                })?);
                consumed = 4 + length;
                taken += 1;
                self.entries -= 1;
            }
            self.read_at += consumed as u64;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)?;
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `length | partition | position | body | params | record | error params`, each bytes
/// field length-prefixed, each list count-prefixed (error params: count + 1, 0 for none).
fn encode(pending: &Pending, out: &mut Vec<u8>) {
    let start = out.len();
    out.put_u32(0);
    out.put_u32(pending.origin.partition as u32);
    out.put_u128(pending.origin.position);
    put_bytes(out, &pending.item.body);
    put_strings(out, Some(&pending.item.params));
    put_bytes(out, &pending.origin.record);
    put_strings(out, pending.origin.error_params.as_deref());
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

fn decode(mut entry: Bytes, rule: &Arc<str>) -> Option<Pending> {
    if entry.remaining() < 20 {
        return None;
    }
    let partition = entry.get_u32() as usize;
    let position = entry.get_u128();
    let body = get_bytes(&mut entry)?;
    let params = get_strings(&mut entry)?.unwrap_or_default();
    let record = get_bytes(&mut entry)?;
    let error_params = get_strings(&mut entry)?.map(Arc::from);
    Some(Pending {
        item: Prepared { body, params },
        origin: Origin {
            rule: Arc::clone(rule),
            partition,
            position,
            record,
            error_params,
        },
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn put_strings(out: &mut Vec<u8>, strings: Option<&[String]>) {
    match strings {
        None => out.put_u32(0),
        Some(strings) => {
            out.put_u32(strings.len() as u32 + 1);
            for s in strings {
                put_bytes(out, s.as_bytes());
            }
        }
    }
}

fn get_bytes(entry: &mut Bytes) -> Option<Bytes> {
    if entry.remaining() < 4 {
        return None;
    }
    let length = entry.get_u32() as usize;
    (entry.remaining() >= length).then(|| entry.split_to(length))
}

fn get_strings(entry: &mut Bytes) -> Option<Option<Vec<String>>> {
    if entry.remaining() < 4 {
        return None;
    }
    let count = entry.get_u32() as usize;
    if count == 0 {
        return Some(None);
    }
    let mut strings = Vec::with_capacity((count - 1).min(64));
    for _ in 1..count {
        strings.push(String::from_utf8(get_bytes(entry)?.to_vec()).ok()?);
    }
    Some(Some(strings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(
        position: u128,
        body: &str,
        params: Vec<String>,
        errors: Option<&[&str]>,
    ) -> Pending {
        Pending {
            item: Prepared {
                body: Bytes::copy_from_slice(body.as_bytes()),
                params,
            },
            origin: Origin {
                rule: "r".into(),
                partition: 3,
                position,
                record: Bytes::from(format!("record {position}")),
                error_params: errors.map(|e| e.iter().map(|s| s.to_string()).collect()),
            },
        }
    }

    fn summary(p: &Pending) -> (u128, usize, Bytes, Vec<String>, Bytes, Option<Vec<String>>) {
        (
            p.origin.position,
            p.origin.partition,
            p.item.body.clone(),
            p.item.params.clone(),
            p.origin.record.clone(),
            p.origin.error_params.as_deref().map(<[String]>::to_vec),
        )
    }

    #[test]
    fn entries_come_back_in_order_with_every_field_and_the_file_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path().join("lane.spill"), 1 << 20);
        let make = |n: u128| {
            let errors = n.is_multiple_of(2).then_some(&["e1", "e2"][..]);
            pending(
                n,
                &format!("body {n}"),
                vec![format!("p{n}"), String::new()],
                errors,
            )
        };
        let want: Vec<_> = (0..10).map(|n| summary(&make(n))).collect();
        let mut batch: VecDeque<Pending> = (0..10).map(make).collect();
        assert_eq!(spill.append(&mut batch).unwrap(), 10);
        assert!(batch.is_empty());
        let mut back = VecDeque::new();
        spill.take(4, &mut back).unwrap();
        assert_eq!(back.len(), 4);
        assert!(!spill.is_empty());
        spill.take(100, &mut back).unwrap();
        assert!(spill.is_empty());
        let got: Vec<_> = back.iter().map(summary).collect();
        assert_eq!(got, want);
        assert_eq!(
            std::fs::metadata(dir.path().join("lane.spill"))
                .unwrap()
                .len(),
            0
        );
        drop(spill);
        assert!(
            !dir.path().join("lane.spill").exists(),
            "removed with the lane"
        );
    }

    #[test]
    fn the_limit_stops_appending_and_an_entry_larger_than_a_read_chunk_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(READ_CHUNK + 10);
        let mut spill = Spill::new(dir.path().join("lane.spill"), (READ_CHUNK * 3) as u64);
        let mut batch: VecDeque<Pending> =
            (0..5).map(|n| pending(n, &big, Vec::new(), None)).collect();
        assert_eq!(
            spill.append(&mut batch).unwrap(),
            2,
            "two fit under the limit"
        );
        assert_eq!(batch.len(), 3, "the rest stays with the caller");
        let mut back = VecDeque::new();
        spill.take(10, &mut back).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].item.body.len(), big.len());
        assert_eq!(back[1].origin.position, 1);
    }
}
