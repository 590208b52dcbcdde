//! What the broker's unit tests share.

use fleetcore_core::store::Entries;
use fleetcore_core::{KvStore, StoreError, WriteBatch};

/// A store that holds nothing, for sessions that never touch the disk (clean sessions).
pub struct NoStore;

impl KvStore for NoStore {
    fn get(&self, _: &'static str, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    fn scan_prefix(&self, _: &'static str, _: &[u8]) -> Result<Entries, StoreError> {
        Ok(Vec::new())
    }

    fn apply(&self, _: WriteBatch) -> Result<(), StoreError> {
        Ok(())
    }
}
