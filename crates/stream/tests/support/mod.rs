//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod nats;

use bytes::Bytes;
use fleetcore_stream::{NewRecord, StreamMode, StreamSpec};

/// A provisioned stream `name` with `shards` shards and the default 24 h retention.
pub fn spec(name: &str, shards: u32) -> StreamSpec {
    StreamSpec {
        name: name.into(),
        mode: StreamMode::Provisioned,
        shard_count: shards,
        retention_hours: 24,
    }
}

/// A record with partition key `key` and payload `data`.
pub fn record(key: &str, data: &str) -> NewRecord {
    NewRecord {
        partition_key: key.into(),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}
