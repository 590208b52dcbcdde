//! Group commit of the registry's writes: callers that change rules at the same time share one
//! store transaction (one fsync). The first caller to find no commit running becomes the leader:
//! it applies everything queued, in order, then the next lot, until the queue is empty; the
//! others wait until the lot holding their write is durable and get its outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Writes waiting for the next lot, with their lot number.
    queued: WriteBatch,
    /// Number of the lot being filled.
    filling: u64,
    /// Lots committed so far (lot `n` is done once `done > n`).
    done: u64,
    /// Recent lots whose transaction failed, with the error.
    failed: BTreeMap<u64, String>,
    leading: bool,
}

/// Serialises writes into shared transactions.
pub(super) struct GroupCommit {
    store: Arc<dyn KvStore>,
    state: Mutex<State>,
    finished: Condvar,
}

impl GroupCommit {
    pub(super) fn new(store: Arc<dyn KvStore>) -> GroupCommit {
        GroupCommit {
            store,
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
        }
    }

    /// The store written to.
    pub(super) fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Applies `batch` durably, in one transaction with whatever other callers queue meanwhile.
    pub(super) fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let lot = state.filling;
        state.queued.extend(batch);
        if state.leading {
            while state.done <= lot {
                self.finished.wait(&mut state);
            }
        } else {
            state.leading = true;
            while state.done <= lot || !state.queued.is_empty() {
                let writes = std::mem::take(&mut state.queued);
                let number = state.filling;
                state.filling += 1;
                let outcome =
                    parking_lot::MutexGuard::unlocked(&mut state, || self.store.apply(writes));
                state.done = number + 1;
                if let Err(error) = outcome {
                    state.failed.insert(number, error.to_string());
                    // Waiters read theirs at once; keep only the recent ones.
                    state.failed = state.failed.split_off(&number.saturating_sub(1024));
                }
                self.finished.notify_all();
            }
            state.leading = false;
        }
        match state.failed.get(&lot) {
            Some(message) => Err(StoreError::Backend {
                operation: "commit",
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetcore_core::RedbStore;

    use super::*;

    #[test]
    fn concurrent_writes_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let commit = Arc::new(GroupCommit::new(Arc::clone(&store)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let commit = Arc::clone(&commit);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let mut batch = WriteBatch::new();
                        batch.put("t", format!("{t}-{i}"), vec![1]);
                        commit.apply(batch).expect("apply");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        assert_eq!(store.scan_prefix("t", b"").expect("scan").len(), 400);
    }
}
