//! The durable queues of persistent sessions: every QoS 1/2 message queued for a session that
//! outlives its connection is written here before the publisher is acknowledged, and removed once
//! the subscriber acknowledged it (PUBACK, PUBCOMP), it expired, or the session ended.
//!
//! Writes are group-committed: callers enqueue them without blocking and get a ticket; one
//! writer task commits everything pending in one store transaction (one fsync) and then moves
//! the durable watermark to the last ticket of the batch. A connection holds a publisher's
//! acknowledgement until the watermark passes the ticket, exactly as for the ingest log
//! (`ingest.rs`). Writes that nobody waits for (inflight markers, deletes) ride along in the
//! next batch.
//!
//! Records, in table [`QUEUE_TABLE`], keyed `u16 length | client id | u64 sequence | kind`
//! (big-endian, so a session's records scan in queue order):
//! - kind 0, the message: the delivery as `persist::encode_delivery` writes it;
//! - kind 1, the inflight marker: `stage (1: awaiting PUBACK/PUBREC, 2: awaiting PUBCOMP) |
//!   u16 packet id`. A QoS 2 message whose PUBREC came keeps only its marker (stage 2).
//!
//! Pending writes are coalesced by key: a message acknowledged before its batch was committed
//! (a fast online subscriber) costs no disk write at all, and an ended session's pending writes
//! are discarded. A failed commit stops the watermark for good (logged, counted in
//! `fleetcore_store_errors_total`): acknowledgements that depend on it are never sent, because
//! their messages are not known to be on disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use metrics::Counter;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

/// Table of the messages queued or in flight for persistent sessions.
pub const QUEUE_TABLE: &str = "mqtt_session_queue";

const KIND_MESSAGE: u8 = 0;
const KIND_INFLIGHT: u8 = 1;

/// Marker stage: sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
pub const STAGE_AWAITING_ACK: u8 = 1;
/// Marker stage: PUBREL sent, waiting for PUBCOMP.
pub const STAGE_AWAITING_COMP: u8 = 2;

/// The key prefix of every record of `client_id`.
fn session_prefix(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len() + 9);
    // Client ids are at most 65535 bytes (an MQTT string), so the length always fits.
    key.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key
}

fn record_key(client_id: &str, seq: u64, kind: u8) -> Vec<u8> {
    let mut key = session_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key.push(kind);
    key
}

/// The records of one session by sequence number (queue order): the encoded message, if still
/// stored, and the inflight marker (stage, packet id), if it was sent.
pub type SessionRecords = BTreeMap<u64, (Option<Vec<u8>>, Option<(u8, u16)>)>;

#[derive(Default)]
struct Pending {
    /// Puts (`Some`) and deletes (`None`) by key; the latest wins.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Session prefixes to delete, applied before `writes` in the same commit.
    ended: Vec<Vec<u8>>,
    /// Ticket of the last write enqueued.
    ticket: u64,
}

/// Group-committing writer of the persistent sessions' queues.
pub struct QueueStore {
    store: Arc<dyn KvStore>,
    pending: Mutex<Pending>,
    wake: Notify,
    durable: watch::Sender<u64>,
    next_seq: AtomicU64,
    /// Messages handed to the store (`fleetcore_mqtt_durable_queue_messages_total`).
    stored: Counter,
    /// Group commits (`fleetcore_mqtt_durable_queue_commits_total`).
    commits: Counter,
}

impl QueueStore {
    /// A writer over `store`; call [`QueueStore::run`] on a task.
    pub fn new(store: Arc<dyn KvStore>) -> Arc<QueueStore> {
        Arc::new(QueueStore {
            store,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            durable: watch::channel(0).0,
            next_seq: AtomicU64::new(1),
            stored: metrics::counter!("fleetcore_mqtt_durable_queue_messages_total"),
            commits: metrics::counter!("fleetcore_mqtt_durable_queue_commits_total"),
        })
    }

    /// Reads every stored record, grouped by client id, and makes new sequence numbers follow
    /// the highest one found. Records with an unreadable key are deleted.
    pub fn load(&self) -> Result<BTreeMap<String, SessionRecords>, StoreError> {
        self.load_prefix(b"")
    }

    /// Reads the stored records of one session (taken over from another node), and makes new
    /// sequence numbers follow its highest one.
    pub fn load_session(&self, client_id: &str) -> Result<SessionRecords, StoreError> {
        Ok(self
            .load_prefix(&session_prefix(client_id))?
            .remove(client_id)
            .unwrap_or_default())
    }

    fn load_prefix(&self, prefix: &[u8]) -> Result<BTreeMap<String, SessionRecords>, StoreError> {
        let mut out: BTreeMap<String, SessionRecords> = BTreeMap::new();
        let mut max_seq = 0;
        for (key, value) in self.store.scan_prefix(QUEUE_TABLE, prefix)? {
            let Some((client_id, seq, kind)) = parse_key(&key) else {
                tracing::warn!("deleting a queued-message record with an unreadable key");
                self.delete(key);
                continue;
            };
            max_seq = max_seq.max(seq);
            let entry = out
                .entry(client_id.to_string())
                .or_default()
                .entry(seq)
                .or_default();
            match (kind, value.as_slice()) {
                (KIND_MESSAGE, _) => entry.0 = Some(value),
                (KIND_INFLIGHT, [stage, hi, lo]) => {
                    entry.1 = Some((*stage, u16::from_be_bytes([*hi, *lo])))
                }
                _ => {
                    tracing::warn!(client_id, seq, "deleting an unreadable inflight marker");
                    self.delete(key);
                }
            }
        }
        self.next_seq.fetch_max(max_seq + 1, Ordering::AcqRel);
        Ok(out)
    }

    /// A new sequence number: queue order across restarts.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel)
    }

    /// Enqueues the message `seq` of `client_id`; durable once the watermark reaches the ticket
    /// returned. Call it in queue order (under the session's mailbox lock).
    pub fn put_message(&self, client_id: &str, seq: u64, value: Vec<u8>) -> u64 {
        self.stored.increment(1);
        self.write(record_key(client_id, seq, KIND_MESSAGE), Some(value))
    }

    /// Records that message `seq` was sent with `packet_id` and waits at `stage`.
    pub fn put_inflight(&self, client_id: &str, seq: u64, stage: u8, packet_id: u16) {
        let [hi, lo] = packet_id.to_be_bytes();
        self.write(
            record_key(client_id, seq, KIND_INFLIGHT),
            Some(vec![stage, hi, lo]),
        );
    }

    /// Records that QoS 2 message `seq` was received (PUBREC): only its marker is kept.
    pub fn released(&self, client_id: &str, seq: u64, packet_id: u16) {
        let mut pending = self.pending.lock();
        let key = record_key(client_id, seq, KIND_MESSAGE);
        Self::delete_locked(&mut pending, key);
        let [hi, lo] = packet_id.to_be_bytes();
        pending.writes.insert(
            record_key(client_id, seq, KIND_INFLIGHT),
            Some(vec![STAGE_AWAITING_COMP, hi, lo]),
        );
        pending.ticket += 1;
        drop(pending);
        self.wake.notify_one();
    }

    /// Removes message `seq` of `client_id` and its marker: acknowledged, expired or dropped.
    pub fn settle(&self, client_id: &str, seq: u64) {
        let mut pending = self.pending.lock();
        Self::delete_locked(&mut pending, record_key(client_id, seq, KIND_MESSAGE));
        Self::delete_locked(&mut pending, record_key(client_id, seq, KIND_INFLIGHT));
        pending.ticket += 1;
        drop(pending);
        self.wake.notify_one();
    }

    /// Removes every record of `client_id` (the session ended, or its queue was cleared).
    pub fn end_session(&self, client_id: &str) {
        let prefix = session_prefix(client_id);
        let mut pending = self.pending.lock();
        let doomed: Vec<Vec<u8>> = pending
            .writes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            pending.writes.remove(&k);
        }
        pending.ended.push(prefix);
        pending.ticket += 1;
        drop(pending);
        self.wake.notify_one();
    }

    fn delete(&self, key: Vec<u8>) {
        let mut pending = self.pending.lock();
        Self::delete_locked(&mut pending, key);
        pending.ticket += 1;
        drop(pending);
        self.wake.notify_one();
    }

    /// A delete of a put still pending cancels both: the record never reaches the disk.
    fn delete_locked(pending: &mut Pending, key: Vec<u8>) {
        match pending.writes.get(&key) {
            Some(Some(_)) => {
                pending.writes.remove(&key);
            }
            _ => {
                pending.writes.insert(key, None);
            }
        }
    }

    fn write(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> u64 {
        let mut pending = self.pending.lock();
        pending.writes.insert(key, value);
        pending.ticket += 1;
        let ticket = pending.ticket;
        drop(pending);
        self.wake.notify_one();
        ticket
    }

    /// The highest ticket that is durable.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Waits until everything enqueued so far is committed (graceful shutdown). Fails if the
    /// writer has stopped after a failed commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.pending.lock().ticket;
        let mut durable = self.durable.subscribe();
        self.wake.notify_one();
        match durable.wait_for(|d| *d >= target).await {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::Backend {
                operation: "commit queued messages",
                message: "the queue writer stopped after a failed commit".into(),
            }),
        }
    }

    fn take_batch(&self) -> (WriteBatch, u64) {
        let (writes, ended, ticket) = {
            let mut pending = self.pending.lock();
            // Ticket numbering continues across batches: only the writes are taken.
            (
                std::mem::take(&mut pending.writes),
                std::mem::take(&mut pending.ended),
                pending.ticket,
            )
        };
        let mut batch = WriteBatch::new();
        for prefix in ended {
            batch.delete_prefix(QUEUE_TABLE, prefix);
        }
        for (key, value) in writes {
            match value {
                Some(v) => batch.put(QUEUE_TABLE, key, v),
                None => batch.delete(QUEUE_TABLE, key),
            }
        }
        (batch, ticket)
    }

    /// Commits pending writes in groups until the task is dropped or a commit fails.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let (batch, ticket) = self.take_batch();
            if !batch.is_empty() {
                let store = Arc::clone(&self.store);
                let committed = match tokio::task::spawn_blocking(move || store.apply(batch)).await
                {
                    Ok(result) => result,
                    Err(join) => Err(StoreError::Backend {
                        operation: "commit queued messages",
                        message: join.to_string(),
                    }),
                };
                if let Err(e) = committed {
                    tracing::error!(error = %e, "could not commit queued messages of persistent sessions; their publishers are no longer acknowledged");
                    metrics::counter!("fleetcore_store_errors_total").increment(1);
                    return;
                }
                self.commits.increment(1);
            }
            self.durable.send_if_modified(|d| {
                let moved = ticket > *d;
                *d = (*d).max(ticket);
                moved
            });
        }
    }
}

fn parse_key(key: &[u8]) -> Option<(&str, u64, u8)> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() != len + 9 {
        return None;
    }
    let client_id = std::str::from_utf8(&rest[..len]).ok()?;
    let seq = u64::from_be_bytes(rest[len..len + 8].try_into().ok()?);
    Some((client_id, seq, rest[len + 8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;

    fn open(dir: &tempfile::TempDir) -> Arc<QueueStore> {
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("open");
        QueueStore::new(Arc::new(store))
    }

    #[test]
    fn keys_round_trip_and_sort_in_queue_order() {
        let a = record_key("dev-1", 2, KIND_MESSAGE);
        let b = record_key("dev-1", 10, KIND_MESSAGE);
        assert!(a < b);
        assert!(record_key("dev-1", 2, KIND_INFLIGHT) < b);
        assert_eq!(parse_key(&b), Some(("dev-1", 10, KIND_MESSAGE)));
        assert_eq!(parse_key(&b[..b.len() - 1]), None);
        assert_eq!(parse_key(b"\xff"), None);
    }

    #[tokio::test]
    async fn committed_records_come_back_in_order_and_settled_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(&dir);
        let writer = tokio::spawn(Arc::clone(&q).run());
        let mut durable = q.durable();
        let seqs: Vec<u64> = (0..4).map(|_| q.next_seq()).collect();
        let mut last = 0;
        for (i, seq) in seqs.iter().enumerate() {
            last = q.put_message("dev", *seq, vec![i as u8]);
        }
        q.put_inflight("dev", seqs[0], STAGE_AWAITING_ACK, 7);
        durable
            .wait_for(|d| *d >= last)
            .await
            .expect("writer alive");
        q.settle("dev", seqs[1]);
        q.released("dev", seqs[2], 9);
        q.put_message("other", q.next_seq(), vec![42]);
        q.end_session("other");
        q.flush().await.expect("flush");
        writer.abort();
        let _ = writer.await;
        drop(q);

        let q = open(&dir);
        let loaded = q.load().expect("load");
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["dev"]);
        let dev: Vec<_> = loaded["dev"].iter().map(|(s, r)| (*s, r.clone())).collect();
        assert_eq!(
            dev,
            vec![
                (seqs[0], (Some(vec![0]), Some((STAGE_AWAITING_ACK, 7)))),
                (seqs[2], (None, Some((STAGE_AWAITING_COMP, 9)))),
                (seqs[3], (Some(vec![3]), None)),
            ]
        );
        assert!(q.next_seq() > seqs[3], "sequence numbers are never reused");
    }

    #[tokio::test]
    async fn a_message_settled_before_its_commit_never_reaches_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(&dir);
        let seq = q.next_seq();
        q.put_message("dev", seq, vec![1]);
        q.put_inflight("dev", seq, STAGE_AWAITING_ACK, 1);
        q.settle("dev", seq);
        let (batch, ticket) = q.take_batch();
        assert_eq!(ticket, 3);
        assert!(
            batch.is_empty(),
            "put and delete cancel out: {:?}",
            batch.ops()
        );
        // Tickets keep growing after a batch was taken.
        assert_eq!(q.put_message("dev", q.next_seq(), vec![2]), 4);
    }
}
