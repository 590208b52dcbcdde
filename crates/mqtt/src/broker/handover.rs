//! Persistent sessions that resume on any node of a cluster.
//!
//! With [`SessionPlacement::Shared`], the session tables (records, durable queues) are shared
//! by the nodes, keyed by client id, and each session has an owner record in
//! [`OWNERS_TABLE`]: the id of the node that holds it in memory. The owner record changes only
//! by compare-and-set, so two nodes never both own a session. A CONNECT for a session this
//! node does not hold (clean start = false, or a session expiry > 0) first makes this node the
//! owner: a live owner is asked to release the session (over the cluster, see
//! [`SessionRelease`]: it sends its connection away, forgets the session and flushes its
//! writes), a dead one (SIGKILLed, not a cluster member any more) is simply replaced; then the
//! session is loaded from what is durable, which includes every message that was PUBACKed for
//! it. A node starting up loads only the sessions it owns.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleetcore_core::{KvStore, StoreError};

/// Table of the persistent sessions' owners in a cluster, keyed by client id: the owner's
/// node id.
pub const OWNERS_TABLE: &str = "mqtt_session_owner";

/// The tables a cluster shares so that a persistent session resumes on any node: the session
/// records, their durable queues and their owners.
pub const SESSION_TABLES: [&str; 3] = [
    super::persist::SESSIONS_TABLE,
    super::queue_store::QUEUE_TABLE,
    OWNERS_TABLE,
];

/// Where a broker's persistent sessions live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionPlacement {
    /// On this node only (its own store).
    #[default]
    Local,
    /// In session tables shared by the nodes of a cluster; this node is `node_id`.
    Shared {
        /// This node's id, as written in the owner records.
        node_id: String,
    },
}

/// A future the cluster answers a release request with.
pub type ReleaseFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How a node asks a session's owner to let go of it: implemented by the cluster.
pub trait SessionRelease: Send + Sync {
    /// True while `node` is a live member of the cluster.
    fn is_live(&self, node: &str) -> bool;
    /// Asks `node` to release the session of `client_id` (see [`super::Router::release`]);
    /// resolves once the node answered that its writes are durable.
    fn release(&self, node: &str, client_id: &str) -> ReleaseFuture;
}

/// Why a session could not be taken over from its owner: the CONNECT is refused with 0x88
/// (Server unavailable), never answered with a half-loaded session.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The shared store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has not joined its cluster yet, so it cannot ask the owner.
    #[error("the session is owned by node {0} and this node has not joined the cluster yet")]
    NoCluster(String),
    /// The owner is alive and did not release the session in time.
    #[error("node {node} did not release the session: {message}")]
    Release { node: String, message: String },
    /// Other nodes kept changing the owner record.
    #[error("the session's owner kept changing")]
    Contended,
}

/// Who owned a session before this node took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Previous {
    /// No owner record: no stored session.
    Nobody,
    /// This node already (a session it forgot, or it restarted).
    Here,
    /// Another node.
    Node(String),
}

/// This node's side of the owner records.
pub(crate) struct Owners {
    node_id: String,
    store: Arc<dyn KvStore>,
    release: OnceLock<Arc<dyn SessionRelease>>,
}

/// Attempts of the compare-and-set before giving up.
const ATTEMPTS: usize = 5;

impl Owners {
    pub(crate) fn new(node_id: String, store: Arc<dyn KvStore>) -> Owners {
        Owners {
            node_id,
            store,
            release: OnceLock::new(),
        }
    }

    pub(crate) fn set_release(&self, release: Arc<dyn SessionRelease>) {
        let _ = self.release.set(release);
    }

    /// The client ids of the sessions this node owns (read once, at start).
    pub(crate) fn owned(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .store
            .scan_prefix(OWNERS_TABLE, b"")?
            .into_iter()
            .filter(|(_, owner)| owner.as_slice() == self.node_id.as_bytes())
            .filter_map(|(key, _)| String::from_utf8(key).ok())
            .collect())
    }

    /// Makes this node the owner of `client_id`'s session, asking a live previous owner to
    /// release it first (waiting up to `timeout`).
    pub(crate) async fn acquire(
        &self,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Previous, HandoverError> {
        let own = self.node_id.as_bytes().to_vec();
        for _ in 0..ATTEMPTS {
            let current = self.blocking_get(client_id).await?;
            let previous = match &current {
                None => Previous::Nobody,
                Some(owner) if *owner == own => return Ok(Previous::Here),
                Some(owner) => Previous::Node(String::from_utf8_lossy(owner).into_owned()),
            };
            if let Previous::Node(node) = &previous {
                let release = self
                    .release
                    .get()
                    .ok_or_else(|| HandoverError::NoCluster(node.clone()))?;
                if release.is_live(node) {
                    let asked = tokio::time::timeout(timeout, release.release(node, client_id));
                    match asked.await {
                        Ok(Ok(())) => {}
                        Ok(Err(message)) => {
                            return Err(HandoverError::Release {
                                node: node.clone(),
                                message,
                            });
                        }
                        Err(_) => {
                            return Err(HandoverError::Release {
                                node: node.clone(),
                                message: format!("no answer within {timeout:?}"),
                            });
                        }
                    }
                }
            }
            let store = Arc::clone(&self.store);
            let (key, new) = (client_id.as_bytes().to_vec(), own.clone());
            let swapped = tokio::task::spawn_blocking(move || {
                store.compare_and_set(OWNERS_TABLE, &key, current.as_deref(), new)
            })
            .await
            .map_err(|e| StoreError::Backend {
                operation: "compare and set",
                message: e.to_string(),
            })??;
            if swapped {
                return Ok(previous);
            }
        }
        Err(HandoverError::Contended)
    }

    async fn blocking_get(&self, client_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let store = Arc::clone(&self.store);
        let key = client_id.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || store.get(OWNERS_TABLE, &key))
            .await
            .map_err(|e| StoreError::Backend {
                operation: "get",
                message: e.to_string(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;
    use parking_lot::Mutex;

    struct Fake {
        live: bool,
        asked: Mutex<Vec<(String, String)>>,
    }

    impl SessionRelease for Fake {
        fn is_live(&self, _: &str) -> bool {
            self.live
        }
        fn release(&self, node: &str, client_id: &str) -> ReleaseFuture {
            self.asked.lock().push((node.into(), client_id.into()));
            Box::pin(async { Ok(()) })
        }
    }

    fn store(dir: &tempfile::TempDir) -> Arc<dyn KvStore> {
        Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"))
    }

    #[tokio::test]
    async fn a_session_moves_by_compare_and_set_asking_only_a_live_owner() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let a = Owners::new("a".into(), Arc::clone(&store));
        let b = Owners::new("b".into(), Arc::clone(&store));
        let t = Duration::from_secs(1);
        assert_eq!(a.acquire("dev", t).await.expect("a"), Previous::Nobody);
        assert_eq!(a.acquire("dev", t).await.expect("a"), Previous::Here);
        // b cannot ask anyone before it joined its cluster.
        assert!(matches!(
            b.acquire("dev", t).await,
            Err(HandoverError::NoCluster(n)) if n == "a"
        ));
        let dead = Arc::new(Fake {
            live: false,
            asked: Mutex::default(),
        });
        b.set_release(Arc::clone(&dead) as Arc<dyn SessionRelease>);
        assert_eq!(
            b.acquire("dev", t).await.expect("b"),
            Previous::Node("a".into())
        );
        assert!(dead.asked.lock().is_empty(), "a dead owner is not asked");
        assert!(b.owned().expect("owned").contains("dev"));
        assert!(!a.owned().expect("owned").contains("dev"));
        let live = Arc::new(Fake {
            live: true,
            asked: Mutex::default(),
        });
        a.set_release(Arc::clone(&live) as Arc<dyn SessionRelease>);
        assert_eq!(
            a.acquire("dev", t).await.expect("a again"),
            Previous::Node("b".into())
        );
        assert_eq!(*live.asked.lock(), [("b".to_owned(), "dev".to_owned())]);
    }

    #[test]
    fn compare_and_set_writes_only_over_the_expected_value() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        assert!(
            store
                .compare_and_set("t", b"k", None, b"a".to_vec())
                .expect("cas")
        );
        assert!(
            !store
                .compare_and_set("t", b"k", None, b"b".to_vec())
                .expect("cas")
        );
        assert!(
            !store
                .compare_and_set("t", b"k", Some(b"x"), b"b".to_vec())
                .expect("cas")
        );
        assert!(
            store
                .compare_and_set("t", b"k", Some(b"a"), b"b".to_vec())
                .expect("cas")
        );
        assert_eq!(
            store.get("t", b"k").expect("get").as_deref(),
            Some(&b"b"[..])
        );
    }
}
