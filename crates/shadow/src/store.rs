//! Shadow records in the shared [`KvStore`]: table `shadows`, key `thing 0x00 shadow-name`
//! (empty name for the classic shadow), value the document as JSON. A deleted shadow leaves a
//! tombstone with its version, so a shadow re-created within 48 hours continues the count, as
//! AWS does.

use std::sync::Arc;

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::document::ShadowDocument;
use crate::topic::ShadowId;

/// The table of shadow records.
pub const SHADOWS_TABLE: &str = "shadows";

/// How long a deleted shadow's version is remembered, in seconds.
pub const VERSION_MEMORY_SECS: u64 = 48 * 3600;

/// A stored shadow: a live document, or the tombstone of a deleted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// The document (for a tombstone: only its version matters).
    #[serde(flatten)]
    pub document: ShadowDocument,
    /// When it was deleted (epoch seconds); `None` for a live shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
}

impl ShadowRecord {
    /// The live document, if this is not a tombstone.
    pub fn live(&self) -> Option<&ShadowDocument> {
        match self.deleted_at {
            None => Some(&self.document),
            Some(_) => None,
        }
    }
}

/// The key of a shadow's record.
pub fn key(id: &ShadowId) -> Vec<u8> {
    let name = id.name.as_deref().unwrap_or("");
    let mut key = Vec::with_capacity(id.thing.len() + 1 + name.len());
    key.extend_from_slice(id.thing.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Reads and writes shadow records.
#[derive(Clone)]
pub struct ShadowStore {
    store: Arc<dyn KvStore>,
}

impl ShadowStore {
    /// Shadows in `store`.
    pub fn new(store: Arc<dyn KvStore>) -> ShadowStore {
        ShadowStore { store }
    }

    /// The record of `id` (live or tombstone).
    pub fn load(&self, id: &ShadowId) -> Result<Option<ShadowRecord>, StoreError> {
        Ok(self.load_stored(id)?.map(|(record, _)| record))
    }

    /// The record of `id` and its stored bytes (what a compare-and-set expects).
    pub fn load_stored(
        &self,
        id: &ShadowId,
    ) -> Result<Option<(ShadowRecord, Vec<u8>)>, StoreError> {
        let Some(bytes) = self.store.get(SHADOWS_TABLE, &key(id))? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Some((record, bytes))),
            Err(e) => Err(StoreError::Backend {
                operation: "decode shadow",
                message: format!("{}: {e}", String::from_utf8_lossy(&key(id))),
            }),
        }
    }

    /// The stored form of `record`.
    pub fn encode(record: &ShadowRecord) -> Vec<u8> {
        // Serializing plain JSON values cannot fail.
        serde_json::to_vec(record).unwrap_or_default()
    }

    /// Adds the write of `record` to `batch`.
    pub fn put(batch: &mut WriteBatch, id: &ShadowId, record: &ShadowRecord) {
        batch.put(SHADOWS_TABLE, key(id), ShadowStore::encode(record));
    }

    /// Writes `record` only if the stored bytes are still `expected` (`None`: absent); false
    /// when another writer (another node) changed the shadow since it was read.
    pub fn replace(
        &self,
        id: &ShadowId,
        expected: Option<&[u8]>,
        record: &ShadowRecord,
    ) -> Result<bool, StoreError> {
        self.store.compare_and_set(
            SHADOWS_TABLE,
            &key(id),
            expected,
            ShadowStore::encode(record),
        )
    }

    /// Commits `batch` (one durable transaction).
    pub fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.store.apply(batch)
    }

    /// Names of the live named shadows of `thing`, sorted, starting after `after`.
    pub fn named_shadows(
        &self,
        thing: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let mut prefix = thing.as_bytes().to_vec();
        prefix.push(0);
        let mut names = Vec::new();
        let mut more = false;
        for (k, v) in self.store.scan_prefix(SHADOWS_TABLE, &prefix)? {
            let Ok(name) = std::str::from_utf8(&k[prefix.len()..]) else {
                continue;
            };
            if name.is_empty() || after.is_some_and(|a| name <= a) {
                continue;
            }
            let live = serde_json::from_slice::<ShadowRecord>(&v)
                .map(|r| r.deleted_at.is_none())
                .unwrap_or(false);
            if !live {
                continue;
            }
            if names.len() == limit {
                more = true;
                break;
            }
            names.push(name.to_string());
        }
        Ok((names, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;

    #[test]
    fn records_round_trip_and_list_only_live_named_shadows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("open"));
        let store = ShadowStore::new(kv);
        let mut batch = WriteBatch::new();
        let live = ShadowRecord {
            document: ShadowDocument {
                version: 3,
                ..ShadowDocument::default()
            },
            deleted_at: None,
        };
        let gone = ShadowRecord {
            deleted_at: Some(5),
            ..live.clone()
        };
        for (thing, name, record) in [
            ("t", None, &live),
            ("t", Some("b"), &live),
            ("t", Some("a"), &live),
            ("t", Some("c"), &gone),
            ("t2", Some("z"), &live),
        ] {
            let id = ShadowId::new(thing, name).expect("id");
            ShadowStore::put(&mut batch, &id, record);
        }
        store.commit(batch).expect("commit");
        let id = ShadowId::new("t", Some("a")).expect("id");
        assert_eq!(store.load(&id).expect("load"), Some(live));
        assert_eq!(
            store.named_shadows("t", None, 10).expect("list"),
            (vec!["a".to_string(), "b".to_string()], false)
        );
        assert_eq!(
            store.named_shadows("t", None, 1).expect("list"),
            (vec!["a".to_string()], true)
        );
        assert_eq!(
            store.named_shadows("t", Some("a"), 1).expect("list"),
            (vec!["b".to_string()], false)
        );
    }
}
