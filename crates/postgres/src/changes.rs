//! Other nodes' changes, heard through LISTEN/NOTIFY on one channel.
//!
//! A committed batch that wrote watched tables carries NOTIFYs (sent by PostgreSQL only when the
//! transaction commits) whose payload is the writing node's id and one line per change:
//! `table TAB k|p|* TAB hex(key or prefix)`. A node ignores its own. Whenever the listening
//! connection is (re)established — the first time included — and whenever the feed's queue was
//! full, the node is told [`Change::Everything`]: it cannot know what it missed, so it refreshes
//! all it caches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetcore_core::sigv4::{hex, unhex};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The NOTIFY channel of every node.
pub(crate) const CHANNEL: &str = "fleetcore_changes";

/// NOTIFY payloads must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7_900;

/// Changes queued for the node before the queue counts as overflowed (then: `Everything`).
const FEED_CAPACITY: usize = 4_096;

/// Pause between attempts to re-establish the listening connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// A change another node committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` of `table` was written or deleted.
    Key { table: String, key: Vec<u8> },
    /// Every key of `table` starting with `prefix` was deleted.
    Prefix { table: String, prefix: Vec<u8> },
    /// Anything may have changed (listening (re)started, or changes were lost to a full queue).
    Everything,
}

impl Change {
    /// The table changed, or `None` for [`Change::Everything`].
    pub fn table(&self) -> Option<&str> {
        match self {
            Change::Key { table, .. } | Change::Prefix { table, .. } => Some(table),
            Change::Everything => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ChangeKind {
    Key,
    Prefix,
}

/// The changes other nodes commit, in commit order per node. Bounded: when the node falls more
/// than a few thousand changes behind, they are dropped and it is told [`Change::Everything`].
#[derive(Debug)]
pub struct ChangeFeed {
    rx: mpsc::Receiver<Change>,
    overflowed: Arc<AtomicBool>,
}

impl ChangeFeed {
    /// The next change; `None` once the store is shut down.
    pub async fn recv(&mut self) -> Option<Change> {
        if self.overflowed.swap(false, Ordering::AcqRel) {
            // Drop what is queued: a full refresh covers it.
            while self.rx.try_recv().is_ok() {}
            return Some(Change::Everything);
        }
        self.rx.recv().await
    }
}

/// The NOTIFY payloads announcing `changes` by `node`: as few as fit the size limit.
pub(crate) fn encode_notifications(
    node: &str,
    changes: &[(&'static str, ChangeKind, Vec<u8>)],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut payload = String::new();
    for (table, kind, key) in changes {
        let mut line = match kind {
            ChangeKind::Key => format!("{table}\tk\t{}", hex(key)),
            ChangeKind::Prefix => format!("{table}\tp\t{}", hex(key)),
        };
        if node.len() + line.len() + 2 > MAX_PAYLOAD {
            // A key too long to announce: the whole table is announced instead.
            line = format!("{table}\t*\t");
        }
        if !payload.is_empty() && payload.len() + line.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut payload));
        }
        if payload.is_empty() {
            payload.push_str(node);
        }
        payload.push('\n');
        payload.push_str(&line);
    }
    if !payload.is_empty() {
        out.push(payload);
    }
    out
}

/// The changes in `payload`, or `None` when it is this node's own or not ours at all.
fn decode(payload: &str, own: &str) -> Option<Vec<Change>> {
    let mut lines = payload.split('\n');
    let node = lines.next()?;
    if node == own {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        let mut parts = line.splitn(3, '\t');
        let (Some(table), Some(kind), Some(bytes)) = (parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(line, "ignoring a malformed change notification");
            return Some(vec![Change::Everything]);
        };
        let table = table.to_owned();
        let change = match (kind, unhex(bytes)) {
            ("k", Some(key)) => Change::Key { table, key },
            ("p", Some(prefix)) => Change::Prefix { table, prefix },
            ("*", _) => Change::Prefix {
                table,
                prefix: Vec::new(),
            },
            _ => {
                tracing::warn!(line, "ignoring a malformed change notification");
                return Some(vec![Change::Everything]);
            }
        };
        out.push(change);
    }
    Some(out)
}

/// Starts listening on `handle`'s runtime; runs until the feed is dropped.
pub(crate) fn listen(handle: &Handle, config: Config, node_id: Arc<str>) -> ChangeFeed {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let overflowed = Arc::new(AtomicBool::new(false));
    let feed = ChangeFeed {
        rx,
        overflowed: Arc::clone(&overflowed),
    };
    handle.spawn(async move {
        while !tx.is_closed() {
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let (deliver, node) = (tx.clone(), Arc::clone(&node_id));
                    let flag = Arc::clone(&overflowed);
                    let driver = tokio::spawn(async move {
                        loop {
                            let message =
                                std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                            match message {
                                Some(Ok(AsyncMessage::Notification(n))) => {
                                    for change in decode(n.payload(), &node).unwrap_or_default() {
                                        push(&deliver, &flag, change);
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "PostgreSQL change listener lost its connection");
                                    return;
                                }
                                None => return,
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                        Ok(()) => {
                            tracing::info!("listening for other nodes' changes");
                            push(&tx, &overflowed, Change::Everything);
                            let _ = driver.await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %crate::describe(&e), "PostgreSQL LISTEN failed");
                            driver.abort();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %crate::describe(&e), "PostgreSQL change listener cannot connect"),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    });
    feed
}

fn push(tx: &mpsc::Sender<Change>, overflowed: &AtomicBool, change: Change) {
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(change) {
        overflowed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_round_trip_and_skip_the_own_node() {
        let changes = vec![
            ("iot_cert", ChangeKind::Key, b"abc".to_vec()),
            ("iot_policy", ChangeKind::Prefix, vec![0, 0xff]),
        ];
        let payloads = encode_notifications("node-a", &changes);
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads[0], "node-a"), None);
        assert_eq!(
            decode(&payloads[0], "node-b"),
            Some(vec![
                Change::Key {
                    table: "iot_cert".into(),
                    key: b"abc".to_vec()
                },
                Change::Prefix {
                    table: "iot_policy".into(),
                    prefix: vec![0, 0xff]
                },
            ])
        );
    }

    #[test]
    fn payloads_stay_under_the_limit_and_long_keys_announce_the_table() {
        let many: Vec<_> = (0..2_000u32)
            .map(|i| ("t", ChangeKind::Key, i.to_be_bytes().to_vec()))
            .collect();
        let payloads = encode_notifications("n", &many);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let decoded: usize = payloads
            .iter()
            .map(|p| decode(p, "m").map_or(0, |c| c.len()))
            .sum();
        assert_eq!(decoded, 2_000);

        let long = vec![("t", ChangeKind::Key, vec![7u8; 5_000])];
        let payloads = encode_notifications("n", &long);
        assert_eq!(
            decode(&payloads[0], "m"),
            Some(vec![Change::Prefix {
                table: "t".into(),
                prefix: Vec::new()
            }])
        );
    }

    #[test]
    fn a_malformed_payload_means_everything() {
        assert_eq!(
            decode("other\ngarbage", "me"),
            Some(vec![Change::Everything])
        );
    }
}
