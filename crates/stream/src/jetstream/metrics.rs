//! The JetStream backend's metrics, under the same names as the embedded backend's where they
//! mean the same (one backend runs per process), registered once as cached handles.

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

/// Cached metric handles of the put path.
pub(super) struct PutMetrics {
    records: Counter,
    bytes: Counter,
    failed: Counter,
    commit_seconds: Histogram,
}

impl PutMetrics {
    /// Registers the metrics with the global recorder (no-ops when there is none).
    pub fn register() -> PutMetrics {
        PutMetrics {
            records: counter!("fleetcore_stream_records_appended_total"),
            bytes: counter!("fleetcore_stream_bytes_appended_total"),
            failed: counter!("fleetcore_stream_records_failed_total"),
            commit_seconds: histogram!("fleetcore_stream_commit_seconds"),
        }
    }

    /// A put whose records JetStream acknowledged (`stored`, `bytes` payload bytes) or
    /// refused (`failed`), all answered within `took`.
    pub fn put(&self, stored: usize, bytes: usize, failed: usize, took: Duration) {
        self.records.increment(stored as u64);
        self.bytes.increment(bytes as u64);
        self.failed.increment(failed as u64);
        self.commit_seconds.record(took.as_secs_f64());
    }
}
