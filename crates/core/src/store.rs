//! The storage trait every capability persists through, and the embedded redb implementation.
//!
//! The trait is deliberately small: named tables of byte keys and byte values, prefix scans, and
//! atomic, durable batches. Capabilities own their encodings; the store owns durability. The
//! scale-out PostgreSQL implementation (`fleetcore-postgres`) sits behind the same trait.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed to open, read or commit; the message names what it was doing.
    #[error("store {operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
    },
}

impl StoreError {
    fn backend(operation: &'static str, err: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            operation,
            message: err.to_string(),
        }
    }
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace `key`.
    Put {
        table: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete { table: &'static str, key: Vec<u8> },
    /// Remove every key starting with `prefix`.
    DeletePrefix {
        table: &'static str,
        prefix: Vec<u8>,
    },
}

/// Key-value pairs returned by a scan, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes applied atomically and durably by [`KvStore::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds an insert-or-replace.
    pub fn put(&mut self, table: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete {
            table,
            key: key.into(),
        });
    }

    /// Adds a delete of every key with `prefix`.
    pub fn delete_prefix(&mut self, table: &'static str, prefix: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::DeletePrefix {
            table,
            prefix: prefix.into(),
        });
    }

    /// Appends all writes of `other`, keeping their order.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// True when the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The writes, in order, taken out of the batch (no copy).
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

/// Key-value storage shared by every capability. Calls block (they may fsync); async callers use
/// `spawn_blocking` or a dedicated writer task.
pub trait KvStore: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, table: &'static str, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// Applies all writes atomically; when it returns Ok they are on disk.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Writes `new` under `key` only if its value is `expected` now (`None`: absent), atomically
    /// with that check; returns whether it wrote. Stores that cannot do it refuse with an error.
    fn compare_and_set(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let _ = (table, key, expected, new);
        Err(StoreError::Backend {
            operation: "compare and set",
            message: "this store cannot compare and set".into(),
        })
    }
}

/// The embedded store: one redb file in the data dir.
pub struct RedbStore {
    db: redb::Database,
}

/// An open table of the store: byte keys to byte values.
type BytesTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Database::create(path).map_err(|e| StoreError::backend("open", e))?;
        Ok(RedbStore { db })
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such key
/// exists (the prefix is all 0xFF). Backends use it to turn a prefix into a key range.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvStore for RedbStore {
    fn compare_and_set(
        &self,
        name: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::backend("begin write", e))?;
        {
            let mut t = txn
                .open_table(table(name))
                .map_err(|e| StoreError::backend("open table", e))?;
            let current = t
                .get(key)
                .map_err(|e| StoreError::backend("get", e))?
                .map(|v| v.value().to_vec());
            if current.as_deref() != expected {
                return Ok(false);
            }
            t.insert(key, new.as_slice())
                .map_err(|e| StoreError::backend("insert", e))?;
        }
        txn.commit().map_err(|e| StoreError::backend("commit", e))?;
        Ok(true)
    }

    fn get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::backend("read", e))?;
        let t = match txn.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreError::backend("open table", e)),
        };
        let value = t.get(key).map_err(|e| StoreError::backend("get", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(&self, name: &'static str, prefix: &[u8]) -> Result<Entries, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::backend("read", e))?;
        let t = match txn.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::backend("open table", e)),
        };
        let end = prefix_end(prefix);
        let range = match &end {
            Some(end) => t.range::<&[u8]>(prefix..end.as_slice()),
            None => t.range::<&[u8]>(prefix..),
        }
        .map_err(|e| StoreError::backend("scan", e))?;
        let mut out = Vec::new();
        for entry in range {
            let (k, v) = entry.map_err(|e| StoreError::backend("scan", e))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::backend("begin write", e))?;
        {
            // A table stays open while consecutive writes go to it: a batch of many records
            // opens its table once, not once per record.
            let mut open: Option<(&'static str, BytesTable<'_>)> = None;
            for op in batch.ops {
                let name = match &op {
                    WriteOp::Put { table, .. }
                    | WriteOp::Delete { table, .. }
                    | WriteOp::DeletePrefix { table, .. } => *table,
                };
                let t = match &mut open {
                    Some((open_name, t)) if *open_name == name => t,
                    _ => {
                        open = None;
                        let t = txn
                            .open_table(table(name))
                            .map_err(|e| StoreError::backend("open table", e))?;
                        &mut open.insert((name, t)).1
                    }
                };
                match op {
                    WriteOp::Put { key, value, .. } => {
                        t.insert(key.as_slice(), value.as_slice())
                            .map_err(|e| StoreError::backend("insert", e))?;
                    }
                    WriteOp::Delete { key, .. } => {
                        t.remove(key.as_slice())
                            .map_err(|e| StoreError::backend("remove", e))?;
                    }
                    WriteOp::DeletePrefix { prefix, .. } => {
                        let end = prefix_end(&prefix);
                        match &end {
                            Some(end) => t.retain_in::<&[u8], _>(
                                prefix.as_slice()..end.as_slice(),
                                |_, _| false,
                            ),
                            None => t.retain_in::<&[u8], _>(prefix.as_slice().., |_, _| false),
                        }
                        .map_err(|e| StoreError::backend("delete prefix", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| StoreError::backend("commit", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("open");
        (dir, store)
    }

    #[test]
    fn reads_from_missing_table_are_empty() {
        let (_dir, s) = store();
        assert_eq!(s.get("nothing", b"k").expect("get"), None);
        assert!(s.scan_prefix("nothing", b"").expect("scan").is_empty());
    }

    #[test]
    fn batch_puts_deletes_and_prefix_deletes_atomically() {
        let (_dir, s) = store();
        let mut b = WriteBatch::new();
        b.put("t", b"a/1".to_vec(), b"1".to_vec());
        b.put("t", b"a/2".to_vec(), b"2".to_vec());
        b.put("t", b"b/1".to_vec(), b"3".to_vec());
        s.apply(b).expect("apply");
        assert_eq!(s.scan_prefix("t", b"a/").expect("scan").len(), 2);

        let mut b = WriteBatch::new();
        b.delete_prefix("t", b"a/".to_vec());
        b.delete("t", b"missing".to_vec());
        s.apply(b).expect("apply");
        let rest = s.scan_prefix("t", b"").expect("scan");
        assert_eq!(rest, vec![(b"b/1".to_vec(), b"3".to_vec())]);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        {
            let s = RedbStore::open(&path).expect("open");
            let mut b = WriteBatch::new();
            b.put("t", b"k".to_vec(), b"v".to_vec());
            s.apply(b).expect("apply");
        }
        let s = RedbStore::open(&path).expect("reopen");
        assert_eq!(s.get("t", b"k").expect("get"), Some(b"v".to_vec()));
    }

    #[test]
    fn prefix_end_handles_all_ff() {
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
