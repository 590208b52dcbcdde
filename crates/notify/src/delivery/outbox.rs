//! The outbox: every delivery a lane holds is on disk from before `Publish` answers until it is
//! delivered, refused, given up or dropped, so a SIGKILL loses none (at least once: a delivery
//! that was sent just before a crash may be sent again at restart).
//!
//! One writer thread owns the store's `sns.outbox` table and commits in lots (group commit):
//! every caller waiting to record deliveries, and every finished delivery to forget, shares one
//! transaction. Recording waits for its lot; forgetting does not (a finished delivery still on
//! disk at a crash is sent again, which at-least-once allows), so finished ones are written at
//! most every [`FORGET_EVERY`] together with the next lot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::message::Published;

const TABLE: &str = "sns.outbox";
/// How long finished deliveries wait to be forgotten when nothing else is written.
const FORGET_EVERY: Duration = Duration::from_millis(50);

/// A stored delivery: the subscription and the message (none: the subscription's
/// confirmation).
#[derive(Serialize)]
struct Entry<'a> {
    subscription: &'a str,
    message: Option<&'a Published>,
}

#[derive(Deserialize)]
struct StoredEntry {
    subscription: String,
    message: Option<Published>,
}

/// A delivery found in the outbox at start.
pub struct Recovered {
    /// Its outbox id.
    pub id: u64,
    /// The subscription's ARN.
    pub subscription: String,
    /// The message; `None` for a SubscriptionConfirmation.
    pub message: Option<Published>,
}

#[derive(Default)]
struct Lots {
    puts: Vec<(u64, Vec<u8>)>,
    forgets: Vec<u64>,
    /// The lot being filled.
    filling: u64,
    /// Lots committed (lot `n` is done once `committed > n`).
    committed: u64,
    /// Recent lots that failed, with the error.
    failed: BTreeMap<u64, String>,
    stopping: bool,
}

struct Shared {
    store: Arc<dyn KvStore>,
    lots: Mutex<Lots>,
    work: Condvar,
    done: Condvar,
}

/// The deliveries not finished yet, on disk.
pub struct Outbox {
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Outbox {
    /// Opens the outbox of `store` and starts its writer; returns it with the deliveries it
    /// still holds, oldest first.
    pub fn open(store: Arc<dyn KvStore>) -> Result<(Arc<Outbox>, Vec<Recovered>), StoreError> {
        let mut recovered = Vec::new();
        let mut last = 0;
        let mut unreadable = WriteBatch::new();
        for (k, value) in store.scan_prefix(TABLE, b"")? {
            let Ok(bytes) = <[u8; 8]>::try_from(k.as_slice()) else {
                unreadable.delete(TABLE, k);
                continue;
            };
            let id = u64::from_be_bytes(bytes);
            last = last.max(id);
            match serde_json::from_slice::<StoredEntry>(&value) {
                Ok(entry) => recovered.push(Recovered {
                    id,
                    subscription: entry.subscription,
                    message: entry.message,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an unreadable SNS delivery");
                    unreadable.delete(TABLE, k);
                }
            }
        }
        if !unreadable.is_empty() {
            store.apply(unreadable)?;
        }
        let shared = Arc::new(Shared {
            store,
            lots: Mutex::new(Lots::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sns-outbox".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend {
                operation: "starting the SNS outbox writer",
                message: e.to_string(),
            })?;
        metrics::gauge!("fleetcore_sns_outbox_deliveries").set(recovered.len() as f64);
        if !recovered.is_empty() {
            tracing::info!(
                deliveries = recovered.len(),
                "SNS deliveries pending from before the restart"
            );
        }
        let outbox = Arc::new(Outbox {
            shared,
            next_id: AtomicU64::new(last + 1),
        });
        Ok((outbox, recovered))
    }

    /// Records one delivery per subscription ARN of `message` (none: a confirmation) and
    /// returns their ids once they are on disk.
    pub fn record(
        &self,
        subscriptions: &[&str],
        message: Option<&Published>,
    ) -> Result<Vec<u64>, StoreError> {
        let mut puts = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            let entry = Entry {
                subscription,
                message,
            };
            let value = serde_json::to_vec(&entry).map_err(|e| StoreError::Backend {
                operation: "encoding an SNS delivery",
                message: e.to_string(),
            })?;
            puts.push((self.next_id.fetch_add(1, Ordering::Relaxed), value));
        }
        let ids = puts.iter().map(|(id, _)| *id).collect();
        let mut lots = self.shared.lots.lock();
        let lot = lots.filling;
        lots.puts.extend(puts);
        self.shared.work.notify_one();
        while lots.committed <= lot {
            self.shared.done.wait(&mut lots);
        }
        match lots.failed.get(&lot) {
            Some(message) => Err(StoreError::Backend {
                operation: "recording SNS deliveries",
                message: message.clone(),
            }),
            None => Ok(ids),
        }
    }

    /// Forgets a finished delivery (written with a later lot).
    pub fn forget(&self, id: u64) {
        self.shared.lots.lock().forgets.push(id);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.lots.lock().stopping = true;
        self.shared.work.notify_one();
    }
}

impl Shared {
    fn run(&self) {
        let mut lots = self.lots.lock();
        loop {
            if lots.puts.is_empty() {
                if lots.stopping {
                    break;
                }
                // Finished deliveries alone can wait a little to share a transaction.
                self.work.wait_for(&mut lots, FORGET_EVERY);
                if lots.puts.is_empty() && lots.forgets.is_empty() {
                    continue;
                }
            }
            let mut batch = WriteBatch::new();
            let (forgets, puts) = (lots.forgets.len(), lots.puts.len());
            for id in std::mem::take(&mut lots.forgets) {
                batch.delete(TABLE, key(id));
            }
            for (id, value) in std::mem::take(&mut lots.puts) {
                batch.put(TABLE, key(id), value);
            }
            let lot = lots.filling;
            lots.filling += 1;
            let outcome = parking_lot::MutexGuard::unlocked(&mut lots, || self.store.apply(batch));
            lots.committed = lot + 1;
            if let Err(error) = outcome {
                metrics::counter!("fleetcore_sns_outbox_failures_total").increment(1);
                tracing::error!(%error, "SNS deliveries could not be written");
                lots.failed.insert(lot, error.to_string());
                lots.failed = lots.failed.split_off(&lot.saturating_sub(1024));
            } else {
                let gauge = metrics::gauge!("fleetcore_sns_outbox_deliveries");
                gauge.increment(puts as f64);
                gauge.decrement(forgets as f64);
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetcore_core::RedbStore;

    use super::*;

    fn message(text: &str) -> Published {
        Published::new(
            "arn:aws:sns:us-east-1:000000000000:t",
            text,
            Some("s"),
            None,
            BTreeMap::new(),
        )
        .expect("message")
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn recorded_deliveries_come_back_until_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let (outbox, recovered) = Outbox::open(Arc::clone(&store)).expect("open");
        assert!(recovered.is_empty());
        let hello = message("hello");
        let ids = outbox.record(&["a", "b"], Some(&hello)).expect("record");
        let confirmation = outbox.record(&["c"], None).expect("record");
        // concurrent callers all land
        std::thread::scope(|s| {
            for t in 0..4 {
                let outbox = &outbox;
                s.spawn(move || {
                    let m = message(&format!("m{t}"));
                    outbox.record(&["d"], Some(&m)).expect("record");
                });
            }
        });
        outbox.forget(ids[0]);
        wait_until("the forgotten delivery is gone", || {
            store.scan_prefix(TABLE, b"").expect("scan").len() == 6
        });
        drop(outbox);

        let (outbox, recovered) = Outbox::open(Arc::clone(&store)).expect("reopen");
        assert_eq!(recovered.len(), 6);
        assert_eq!(recovered[0].id, ids[1]);
        assert_eq!(recovered[0].subscription, "b");
        let m = recovered[0].message.as_ref().expect("a message");
        assert_eq!(
            (m.message.as_str(), m.message_id.as_str()),
            ("hello", hello.message_id.as_str())
        );
        assert_eq!(recovered[1].id, confirmation[0]);
        assert!(recovered[1].message.is_none());
        // ids go on after the ones stored
        let next = outbox.record(&["e"], None).expect("record");
        assert!(next[0] > recovered.iter().map(|r| r.id).max().unwrap_or(0));
    }
}
