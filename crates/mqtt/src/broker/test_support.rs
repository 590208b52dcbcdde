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

/// A clean, offline session of `capacity` deliveries and `bytes` bytes whose publishers wait
/// `patience` for it when it is stuck, backed by no store.
pub fn clean_session(
    id: &str,
    capacity: usize,
    bytes: usize,
    patience: std::time::Duration,
) -> std::sync::Arc<super::session::SessionHandle> {
    let limits = super::session::SessionLimits::new(
        capacity,
        bytes,
        super::session::Patience {
            stuck: patience,
            give_up: patience,
        },
        super::queue_store::QueueStore::new(std::sync::Arc::new(NoStore)),
    );
    super::session::SessionHandle::new(
        std::sync::Arc::from(id),
        &limits,
        super::session::SessionState::new(0, crate::protocol::ProtocolVersion::V5),
    )
}
