//! The embedded time-series store, `<data>/metrics/metrics.redb`.
//!
//! Why redb: it is already in the tree (no new build cost), it is crash-safe (a committed
//! transaction survives kill -9), and a series' buckets are one ordered key range
//! `(series id, bucket start)`, so a query is one range scan. Points are pre-aggregated into
//! statistic sets (count, sum, min, max: 32 bytes a bucket) twice: into the raw table at the
//! configured resolution (1 s for high-resolution puts) and into the hourly table. The pruner
//! deletes raw buckets older than the raw retention and hourly ones older than theirs, so the
//! file is bounded by (series x retention / resolution x 48 bytes).
//!
//! Writes go through one writer thread that commits everything queued in one transaction
//! (group commit: one fsync for many PutMetricData calls and the sampler). Its queue is bounded
//! ([`QUEUE_DEPTH`]); when it is full the caller waits (backpressure, nothing is dropped).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use crate::error::ObserveError;
use crate::series::{SeriesKey, StatSet};

/// Canonical series text to id.
const SERIES: TableDefinition<&str, u64> = TableDefinition::new("series");
/// Series id to its key and unit (JSON).
const SERIES_INFO: TableDefinition<u64, &[u8]> = TableDefinition::new("series_info");
/// `(series, bucket start in epoch seconds)` to a statistic set, at full resolution.
const RAW: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("raw");
/// The same, one bucket per hour.
const HOURLY: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("hourly");

/// How many write batches may wait for the writer before callers block.
pub const QUEUE_DEPTH: usize = 256;

const HOUR: i64 = 3600;

/// How the store buckets and keeps data.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Bucket width of standard-resolution points, seconds (60 by default).
    pub resolution: i64,
    /// How long full-resolution buckets are kept, seconds (15 days by default).
    pub raw: i64,
    /// How long hourly buckets are kept, seconds (455 days by default, as CloudWatch).
    pub hourly: i64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            resolution: 60,
            raw: 15 * 86_400,
            hourly: 455 * 86_400,
        }
    }
}

/// One point to store.
#[derive(Debug, Clone)]
pub struct Point {
    /// Its series.
    pub series: SeriesKey,
    /// Its unit (`Count`, `Seconds`, `None`, ...).
    pub unit: Option<String>,
    /// When, epoch seconds.
    pub timestamp: f64,
    /// The values it stands for.
    pub stats: StatSet,
    /// True for a high-resolution (1 s) point.
    pub high_resolution: bool,
}

/// A stored series as ListMetrics shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeriesInfo {
    /// Its key.
    pub key: SeriesKey,
    /// The unit of its last put.
    pub unit: Option<String>,
}

struct Batch {
    points: Vec<Point>,
    done: oneshot::Sender<Result<(), ObserveError>>,
}

/// The store: query from any thread, write through [`MetricStore::write`].
pub struct MetricStore {
    db: Arc<Database>,
    retention: Retention,
    /// `None` only while dropping: closing it stops the writer.
    queue: Option<SyncSender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    ids: Arc<RwLock<HashMap<String, u64>>>,
}

impl Drop for MetricStore {
    /// Stops the writer (after its current commit) so the file is released on return.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl MetricStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<MetricStore, ObserveError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("metrics.redb"))?;
        let mut ids = HashMap::new();
        {
            let txn = db.begin_write()?;
            txn.open_table(SERIES)?;
            txn.open_table(SERIES_INFO)?;
            txn.open_table(RAW)?;
            txn.open_table(HOURLY)?;
            txn.commit()?;
        }
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(SERIES)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                ids.insert(k.value().to_string(), v.value());
            }
        }
        let db = Arc::new(db);
        let ids = Arc::new(RwLock::new(ids));
        let (queue, receiver) = sync_channel(QUEUE_DEPTH);
        let writer = Writer {
            db: Arc::clone(&db),
            ids: Arc::clone(&ids),
            retention,
        };
        let writer = std::thread::Builder::new()
            .name("metric-store".into())
            .spawn(move || writer.run(receiver))?;
        Ok(MetricStore {
            db,
            retention,
            queue: Some(queue),
            writer: Some(writer),
            ids,
        })
    }

    /// The store's bucketing and retention.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Stores `points`; returns once they are committed to disk.
    pub async fn write(&self, points: Vec<Point>) -> Result<(), ObserveError> {
        if points.is_empty() {
            return Ok(());
        }
        let (done, committed) = oneshot::channel();
        let mut batch = Batch { points, done };
        let queue = self.queue.as_ref().ok_or(ObserveError::Stopped)?;
        loop {
            match queue.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(ObserveError::Stopped),
            }
        }
        committed.await.map_err(|_| ObserveError::Stopped)?
    }

    /// The series whose namespace and name match (when given), in key order.
    pub fn series(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<(u64, SeriesInfo)>, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SERIES_INFO)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, info) = entry?;
            let info: SeriesInfo = serde_json::from_slice(info.value())?;
            if namespace.is_some_and(|n| n != info.key.namespace)
                || name.is_some_and(|n| n != info.key.name)
            {
                continue;
            }
            out.push((id.value(), info));
        }
        out.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        Ok(out)
    }

    /// The id of `key`'s series, if it has data.
    pub fn id(&self, key: &SeriesKey) -> Option<u64> {
        self.ids.read().get(&key.canonical()).copied()
    }

    /// The buckets of series `id` that start in `[start, end)`, from the raw table when
    /// `start` is within its retention, else from the hourly table.
    pub fn buckets(
        &self,
        id: u64,
        start: i64,
        end: i64,
        now: i64,
    ) -> Result<Vec<(i64, StatSet)>, ObserveError> {
        let txn = self.db.begin_read()?;
        let definition = if start >= now - self.retention.raw {
            RAW
        } else {
            HOURLY
        };
        let table = txn.open_table(definition)?;
        let mut out = Vec::new();
        for entry in table.range((id, start)..(id, end))? {
            let (k, v) = entry?;
            if let Some(stats) = StatSet::from_bytes(v.value()) {
                out.push((k.value().1, stats));
            }
        }
        Ok(out)
    }

    /// Deletes buckets older than their retention (as of `now`); returns how many.
    pub fn prune(&self, now: i64) -> Result<usize, ObserveError> {
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        let ids: Vec<u64> = self.ids.read().values().copied().collect();
        for (definition, keep) in [(RAW, self.retention.raw), (HOURLY, self.retention.hourly)] {
            let mut table = txn.open_table(definition)?;
            for &id in &ids {
                let old: Vec<i64> = table
                    .range((id, i64::MIN)..(id, now - keep))?
                    .map(|e| e.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for ts in old {
                    table.remove((id, ts))?;
                    removed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

struct Writer {
    db: Arc<Database>,
    ids: Arc<RwLock<HashMap<String, u64>>>,
    retention: Retention,
}

impl Writer {
    fn run(self, receiver: Receiver<Batch>) {
        while let Ok(first) = receiver.recv() {
            let mut batches = vec![first];
            while let Ok(more) = receiver.try_recv() {
                batches.push(more);
                if batches.len() >= 64 {
                    break;
                }
            }
            let result = self.commit(&batches);
            for batch in batches {
                let _ = batch.done.send(result.clone());
            }
        }
    }

    fn commit(&self, batches: &[Batch]) -> Result<(), ObserveError> {
        let txn = self.db.begin_write()?;
        let mut new_ids = Vec::new();
        {
            let mut series = txn.open_table(SERIES)?;
            let mut info = txn.open_table(SERIES_INFO)?;
            let mut raw = txn.open_table(RAW)?;
            let mut hourly = txn.open_table(HOURLY)?;
            let mut next = series.len()? + 1;
            for point in batches.iter().flat_map(|b| &b.points) {
                let canonical = point.series.canonical();
                let known = self.ids.read().get(&canonical).copied();
                let id = match known.or_else(|| {
                    new_ids
                        .iter()
                        .find(|(c, _)| *c == canonical)
                        .map(|(_, id)| *id)
                }) {
                    Some(id) => id,
                    None => {
                        let id = next;
                        next += 1;
                        series.insert(canonical.as_str(), id)?;
                        new_ids.push((canonical, id));
                        id
                    }
                };
                let entry = SeriesInfo {
                    key: point.series.clone(),
                    unit: point.unit.clone(),
                };
                if known.is_none() || point.unit.is_some() {
                    info.insert(id, serde_json::to_vec(&entry)?.as_slice())?;
                }
                let ts = point.timestamp.floor() as i64;
                let width = if point.high_resolution {
                    1
                } else {
                    self.retention.resolution
                };
                for (table, bucket) in [
                    (&mut raw, ts.div_euclid(width) * width),
                    (&mut hourly, ts.div_euclid(HOUR) * HOUR),
                ] {
                    let mut stats = point.stats;
                    if let Some(old) = table.get((id, bucket))?
                        && let Some(old) = StatSet::from_bytes(old.value())
                    {
                        stats.merge(&old);
                    }
                    table.insert((id, bucket), stats.to_bytes().as_slice())?;
                }
            }
        }
        txn.commit()?;
        let mut ids = self.ids.write();
        ids.extend(new_ids);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, ts: f64, v: f64) -> Point {
        Point {
            series: SeriesKey::new("ns", name, [("d".into(), "x".into())]),
            unit: Some("Count".into()),
            timestamp: ts,
            stats: StatSet::one(v),
            high_resolution: false,
        }
    }

    #[tokio::test]
    async fn points_aggregate_per_bucket_survive_reopen_and_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let retention = Retention {
            resolution: 60,
            raw: 3600,
            hourly: 7200,
        };
        {
            let store = MetricStore::open(dir.path(), retention).expect("open");
            store
                .write(vec![
                    point("m", 60.0, 1.0),
                    point("m", 90.0, 2.0),
                    point("m", 120.0, 4.0),
                ])
                .await
                .expect("write");
            let id = store.id(&point("m", 0.0, 0.0).series).expect("id");
            let buckets = store.buckets(id, 0, 3600, 100).expect("read");
            assert_eq!(buckets.len(), 2);
            assert_eq!(buckets[0].0, 60);
            assert_eq!(buckets[0].1.sum, 3.0);
            assert_eq!(buckets[1].1.count, 1.0);
        }
        let store = MetricStore::open(dir.path(), retention).expect("reopen");
        let id = store.id(&point("m", 0.0, 0.0).series).expect("id");
        assert_eq!(store.buckets(id, 0, 3600, 100).expect("read").len(), 2);
        // after the raw retention the hourly bucket still has all three
        let hourly = store.buckets(id, 0, 3600, 5000).expect("hourly");
        assert_eq!(hourly.len(), 1);
        assert_eq!(hourly[0].1.sum, 7.0);
        assert_eq!(store.prune(3600 + 200).expect("prune"), 2);
        assert!(store.buckets(id, 0, 3600, 100).expect("read").is_empty());
        assert_eq!(store.series(Some("ns"), None).expect("series").len(), 1);
    }
}
