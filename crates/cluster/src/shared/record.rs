//! Which nodes read each shared group, cluster-wide: one record per group and filter in the
//! JetStream key-value bucket `<prefix>_shared`, changed only by compare-and-set (the bucket's
//! revision), so every change sees the one before it.
//!
//! The record names the nodes reading the group (each with its boot stamp) and the
//! *generation* of the group's JetStream consumers: a node that starts reading while no live
//! node reads the group starts a new generation (new consumers, delivering new messages only),
//! and the node whose leaving empties the record deletes the generation's consumers. So a
//! group without members keeps no consumer, and nothing published while it had none reaches a
//! later member (MQTT drops what a group without members gets). Under races:
//!
//! - two nodes' last members leave at once: the later compare-and-set sees no reader left and
//!   deletes the consumers (both may try; a second delete finds nothing);
//! - a join during a leave: if the leave's write comes first, the join finds no reader, starts
//!   a new generation and reads consumers the leaver never deletes (it deletes the older
//!   generation's); if the join's write comes first, the leaver finds a reader and keeps them;
//! - a node that died reading a group (SIGKILL) stays in the record: it counts as a reader only
//!   while its heartbeat is heard (and this node's own entry only with this boot's stamp), so
//!   the next node to join starts a new generation and deletes the dead one's consumers.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One group's readers and the generation of its consumers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// The generation of the group's consumers; a new one starts with nothing held.
    pub generation: u64,
    /// The nodes reading the group, by node id, with the boot stamp of the reading process.
    pub readers: BTreeMap<String, u64>,
}

/// How a node tells which readers of a record are alive.
pub(super) struct Liveness<'a> {
    /// This node's id and boot stamp.
    pub own: &'a str,
    pub boot: u64,
    /// True while another node is heard from.
    pub is_live: &'a (dyn Fn(&str) -> bool + Send + Sync),
}

impl Liveness<'_> {
    fn alive(&self, node: &str, boot: u64) -> bool {
        if node == self.own {
            boot == self.boot
        } else {
            (self.is_live)(node)
        }
    }
}

impl Record {
    /// The record once this node reads the group (dead readers dropped), and the older
    /// generation whose consumers are stale when this node starts a new one.
    pub fn join(&self, live: &Liveness<'_>) -> (Record, Option<u64>) {
        let mut readers: BTreeMap<String, u64> = self
            .readers
            .iter()
            .filter(|(node, boot)| node.as_str() != live.own && live.alive(node, **boot))
            .map(|(node, boot)| (node.clone(), *boot))
            .collect();
        let first = readers.is_empty();
        readers.insert(live.own.to_owned(), live.boot);
        let generation = self.generation + u64::from(first);
        let stale = (first && self.generation > 0).then_some(self.generation);
        (
            Record {
                generation,
                readers,
            },
            stale,
        )
    }

    /// The record once this node stops reading the group, and the generation whose consumers
    /// are to be deleted when no live reader is left.
    pub fn leave(&self, live: &Liveness<'_>) -> (Record, Option<u64>) {
        let readers: BTreeMap<String, u64> = self
            .readers
            .iter()
            .filter(|(node, boot)| node.as_str() != live.own && live.alive(node, **boot))
            .map(|(node, boot)| (node.clone(), *boot))
            .collect();
        let last = readers.is_empty();
        (
            Record {
                generation: self.generation,
                readers,
            },
            (last && self.generation > 0).then_some(self.generation),
        )
    }
}

/// The longest pause between two attempts when NATS does not answer.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Applies `change` to the record under `key` by compare-and-set, reading it again and again
/// while another node changed it in between, and retrying (with a pause doubling up to 2 s)
/// while NATS fails. Returns what `change` returned for the record that was written.
pub(super) async fn change<T>(
    bucket: &kv::Store,
    key: &str,
    change: impl Fn(&Record) -> (Record, T),
) -> (Record, T) {
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt(bucket, key, &change).await {
            Ok(Some(done)) => return done,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, key, "cannot update a shared group's readers: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// One compare-and-set: `None` when another node's write came in between.
async fn attempt<T>(
    bucket: &kv::Store,
    key: &str,
    change: &impl Fn(&Record) -> (Record, T),
) -> Result<Option<(Record, T)>, String> {
    let entry = bucket.entry(key).await.map_err(|e| e.to_string())?;
    let (revision, current) = match entry {
        Some(e) if e.operation == Operation::Put => (
            Some(e.revision),
            serde_json::from_slice(&e.value).unwrap_or_else(|err| {
                tracing::warn!(error = %err, key, "unreadable shared group record: starting over");
                Record::default()
            }),
        ),
        _ => (None, Record::default()),
    };
    let (next, out) = change(&current);
    let value = Bytes::from(serde_json::to_vec(&next).map_err(|e| e.to_string())?);
    let written = match revision {
        Some(revision) => match bucket.update(key, value, revision).await {
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(None),
            other => other.map(|_| ()).map_err(|e| e.to_string()),
        },
        None => match bucket.create(key, value).await {
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => return Ok(None),
            other => other.map(|_| ()).map_err(|e| e.to_string()),
        },
    };
    written.map(|()| Some((next, out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live<'a>(own: &'a str, alive: &'a (dyn Fn(&str) -> bool + Send + Sync)) -> Liveness<'a> {
        Liveness {
            own,
            boot: 7,
            is_live: alive,
        }
    }

    const ALL: &(dyn Fn(&str) -> bool + Send + Sync) = &|_| true;

    #[test]
    fn the_first_reader_starts_a_generation_the_next_ones_share_it() {
        let (a, stale) = Record::default().join(&live("a", ALL));
        assert_eq!((a.generation, stale), (1, None));
        let (ab, stale) = a.join(&live("b", ALL));
        assert_eq!((ab.generation, stale), (1, None));
        assert_eq!(ab.readers.len(), 2);
    }

    #[test]
    fn the_last_leaver_deletes_the_generation_and_a_later_join_starts_another() {
        let (a, _) = Record::default().join(&live("a", ALL));
        let (ab, _) = a.join(&live("b", ALL));
        // Two nodes leaving at once: the writes are serialized, the second one sees nobody.
        let (b, delete) = ab.leave(&live("a", ALL));
        assert_eq!(delete, None);
        let (empty, delete) = b.leave(&live("b", ALL));
        assert_eq!(delete, Some(1));
        let (c, stale) = empty.join(&live("c", ALL));
        assert_eq!((c.generation, stale), (2, Some(1)));
    }

    #[test]
    fn a_join_written_before_the_leave_keeps_the_consumers() {
        let (a, _) = Record::default().join(&live("a", ALL));
        let (ab, stale) = a.join(&live("b", ALL));
        assert_eq!(stale, None);
        let (b, delete) = ab.leave(&live("a", ALL));
        assert_eq!((b.generation, delete), (1, None));
    }

    #[test]
    fn dead_readers_and_an_earlier_boot_of_this_node_do_not_count() {
        let dead: &(dyn Fn(&str) -> bool + Send + Sync) = &|node| node != "gone";
        let record = Record {
            generation: 3,
            readers: BTreeMap::from([("gone".into(), 1), ("a".into(), 6)]),
        };
        let (joined, stale) = record.join(&live("a", dead));
        assert_eq!((joined.generation, stale), (4, Some(3)));
        assert_eq!(joined.readers, BTreeMap::from([("a".into(), 7)]));
        let (left, delete) = record.leave(&live("a", dead));
        assert_eq!((left.readers.len(), delete), (0, Some(3)));
    }
}
