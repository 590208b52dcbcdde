//! The archive: Firehose-like delivery streams that buffer records, compress or convert them
//! to Parquet, and write them as date-partitioned objects into the data lake (a local folder or
//! an S3-compatible store).

pub mod config;
mod delivery;
pub mod encode;
pub mod error;
pub mod lake;
mod metrics;
mod objects;
pub mod parquet;
pub mod prefix;
pub mod query;
mod service;
pub mod transform;

pub use error::ArchiveError;
pub use service::{
    Archive, ArchiveSettings, CreateDeliveryStream, DESTINATION_ID, DeliveryStream,
    MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_RECORD_BYTES, RecordRefusal, Source,
    TABLE as DELIVERY_STREAMS_TABLE, UpdateDestination, internal_stream_name,
};
