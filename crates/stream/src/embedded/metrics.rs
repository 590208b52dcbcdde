//! The embedded backend's metrics, registered once so the writer increments cached handles.
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms).

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

/// Cached metric handles of the writer thread.
pub struct StreamMetrics {
    records: Counter,
    bytes: Counter,
    batches: Counter,
    batch_records: Histogram,
    commit_seconds: Histogram,
    failed_batches: Counter,
    expired_segments: Counter,
}

impl StreamMetrics {
    /// Registers the metrics with the global recorder (no-ops when there is none).
    pub fn register() -> StreamMetrics {
        StreamMetrics {
            records: counter!("fleetcore_stream_records_appended_total"),
            bytes: counter!("fleetcore_stream_bytes_appended_total"),
            batches: counter!("fleetcore_stream_commit_batches_total"),
            batch_records: histogram!("fleetcore_stream_commit_batch_records"),
            commit_seconds: histogram!("fleetcore_stream_commit_seconds"),
            failed_batches: counter!("fleetcore_stream_commit_failures_total"),
            expired_segments: counter!("fleetcore_stream_segments_expired_total"),
        }
    }

    /// A batch of `records` records (`bytes` frame bytes) encoded, written and made durable in
    /// `took`.
    pub fn committed(&self, records: usize, bytes: usize, took: Duration) {
        self.records.increment(records as u64);
        self.bytes.increment(bytes as u64);
        self.batches.increment(1);
        self.batch_records.record(records as f64);
        self.commit_seconds.record(took.as_secs_f64());
    }

    /// A batch that could not be written or synced (already logged by the caller).
    pub fn failed(&self) {
        self.failed_batches.increment(1);
    }

    /// Segments deleted by retention.
    pub fn expired(&self, segments: usize) {
        self.expired_segments.increment(segments as u64);
    }
}
