//! The archive's metrics, one function per event so names and labels stay consistent.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `fleetcore_archive_incoming_records_total{delivery_stream}` | counter | records accepted by PutRecord/PutRecordBatch |
//! | `fleetcore_archive_incoming_bytes_total{delivery_stream}` | counter | their bytes |
//! | `fleetcore_archive_throttled_records_total{delivery_stream}` | counter | records refused with ServiceUnavailableException (backlog full) |
//! | `fleetcore_archive_delivered_records_total{delivery_stream}` | counter | records written to the lake in data objects (counted when the object is written) |
//! | `fleetcore_archive_delivered_bytes_total{delivery_stream}` | counter | their input bytes |
//! | `fleetcore_archive_objects_total{delivery_stream,outcome}` | counter | object writes, `outcome` = `success` / `failure` |
//! | `fleetcore_archive_error_records_total{delivery_stream,error_output_type}` | counter | records written to the error output |
//! | `fleetcore_archive_data_freshness_seconds{delivery_stream}` | gauge | age of the oldest record of the last delivered flush when it was delivered (Firehose's DeliveryToS3.DataFreshness) |
//! | `fleetcore_archive_backlog_bytes{delivery_stream}` | gauge | accepted DirectPut bytes not yet delivered |

use metrics::{counter, gauge};

/// Records accepted by a put.
pub fn incoming(stream: &str, records: usize, bytes: usize) {
    let labels = [("delivery_stream", stream.to_string())];
    counter!("fleetcore_archive_incoming_records_total", &labels).increment(records as u64);
    counter!("fleetcore_archive_incoming_bytes_total", &labels).increment(bytes as u64);
}

/// Records refused because the backlog is full.
pub fn throttled(stream: &str, records: usize) {
    counter!("fleetcore_archive_throttled_records_total", "delivery_stream" => stream.to_string())
        .increment(records as u64);
}

/// One object written or failed.
pub fn object(stream: &str, success: bool) {
    counter!(
        "fleetcore_archive_objects_total",
        "delivery_stream" => stream.to_string(),
        "outcome" => if success { "success" } else { "failure" }
    )
    .increment(1);
}

/// A data object of `records` records and `bytes` input bytes was written.
pub fn delivered(stream: &str, records: usize, bytes: usize) {
    let labels = [("delivery_stream", stream.to_string())];
    counter!("fleetcore_archive_delivered_records_total", &labels).increment(records as u64);
    counter!("fleetcore_archive_delivered_bytes_total", &labels).increment(bytes as u64);
}

/// A flush completed; its oldest record had arrived `seconds` ago.
pub fn freshness(stream: &str, seconds: f64) {
    gauge!("fleetcore_archive_data_freshness_seconds", "delivery_stream" => stream.to_string())
        .set(seconds);
}

/// Records written to the error output.
pub fn error_records(stream: &str, error_output_type: &'static str, records: usize) {
    counter!(
        "fleetcore_archive_error_records_total",
        "delivery_stream" => stream.to_string(),
        "error_output_type" => error_output_type
    )
    .increment(records as u64);
}

/// The undelivered DirectPut backlog.
pub fn backlog(stream: &str, bytes: usize) {
    gauge!("fleetcore_archive_backlog_bytes", "delivery_stream" => stream.to_string())
        .set(bytes as f64);
}
