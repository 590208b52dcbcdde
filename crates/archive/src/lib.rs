//! The archive: Firehose-like delivery streams that buffer records, compress or convert them
//! to Parquet, and write them as date-partitioned objects into the data lake (a local folder or
//! an S3-compatible store).

pub mod config;
mod encode;
pub mod error;
pub mod lake;
pub mod parquet;
pub mod prefix;
pub mod query;

pub use error::ArchiveError;
