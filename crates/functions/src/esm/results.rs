//! `LastProcessingResult` of the event source mappings, shared by every node that runs a poller
//! of a mapping: each node writes its own poller's result under `<uuid>/<node>` in [`TABLE`]
//! when it changes (not per batch), and a mapping shows a problem while any node's poller has
//! one, else `OK` once any node processed a batch, else "No records processed". A node's result
//! is removed with its mapping, and by the node when it stops polling a mapping deleted
//! elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use fleetcore_core::{KvStore, WriteBatch};
use parking_lot::Mutex;

/// The store table of results (key: `<uuid>/<node>`; value: the result text).
pub(super) const TABLE: &str = "lambda_event_source_mapping_results";
/// What a mapping no poller has processed a batch of shows.
const NOTHING_YET: &str = "No records processed";
/// What a poller that processed its last batch shows.
pub(super) const OK: &str = "OK";

/// This node's results and the shared table.
pub(super) struct Results {
    store: Arc<dyn KvStore>,
    node: String,
    /// What this node wrote last per mapping (a write happens only on a change).
    written: Mutex<HashMap<String, String>>,
}

/// The keys of a mapping's results (every node's) start with this.
pub(super) fn prefix(uuid: &str) -> Vec<u8> {
    format!("{uuid}/").into_bytes()
}

impl Results {
    /// The results of node `node` in `store`.
    pub(super) fn new(store: Arc<dyn KvStore>, node: &str) -> Results {
        Results {
            store,
            node: node.to_string(),
            written: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, uuid: &str) -> Vec<u8> {
        let mut key = prefix(uuid);
        key.extend_from_slice(self.node.as_bytes());
        key
    }

    /// Records this node's poller's result of mapping `uuid` (stored when it changed).
    pub(super) fn set(&self, uuid: &str, text: &str) {
        if self.written.lock().get(uuid).is_some_and(|t| t == text) {
            return;
        }
        let mut batch = WriteBatch::new();
        batch.put(TABLE, self.key(uuid), text.as_bytes().to_vec());
        match self.store.apply(batch) {
            Ok(()) => {
                self.written
                    .lock()
                    .insert(uuid.to_string(), text.to_string());
            }
            // Tried again at the next batch's result.
            Err(error) => tracing::warn!(%uuid, %error, "could not store a mapping's result"),
        }
    }

    /// The mapping's `LastProcessingResult` over every node's poller.
    pub(super) fn of(&self, uuid: &str) -> String {
        match self.store.scan_prefix(TABLE, &prefix(uuid)) {
            Ok(entries) => combine(
                entries
                    .into_iter()
                    .map(|(_, value)| String::from_utf8_lossy(&value).into_owned()),
            ),
            Err(error) => {
                tracing::warn!(%uuid, %error, "could not read a mapping's results");
                combine(self.written.lock().get(uuid).cloned())
            }
        }
    }

    /// Stops following mapping `uuid` on this node, removing this node's result.
    pub(super) fn forget(&self, uuid: &str) {
        if self.written.lock().remove(uuid).is_none() {
            return;
        }
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, self.key(uuid));
        if let Err(error) = self.store.apply(batch) {
            tracing::warn!(%uuid, %error, "could not remove a mapping's result");
        }
    }
}

/// One result from the nodes' results: a problem wins, then `OK`.
fn combine(results: impl IntoIterator<Item = String>) -> String {
    let mut shown: Option<String> = None;
    for result in results {
        if result != OK {
            return result;
        }
        shown = Some(result);
    }
    shown.unwrap_or_else(|| NOTHING_YET.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;

    #[test]
    fn a_problem_on_any_node_shows_else_ok_else_nothing_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let (a, b) = (
            Results::new(Arc::clone(&store), "a"),
            Results::new(store, "b"),
        );
        assert_eq!(a.of("m"), NOTHING_YET);
        a.set("m", OK);
        assert_eq!(b.of("m"), OK);
        b.set("m", "PROBLEM: Function call failed");
        assert_eq!(a.of("m"), "PROBLEM: Function call failed");
        assert_eq!(a.of("other"), NOTHING_YET);
        b.forget("m");
        assert_eq!(a.of("m"), OK, "b's result went with b's poller");
    }
}
