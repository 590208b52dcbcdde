//! Streams: Kinesis-like durable, sharded, ordered logs of records.
//!
//! Every internal producer (the rules engine's stream action, the Kinesis API) and consumer (the
//! archive, analytics, detectors, the Kinesis API's GetRecords) goes through the [`Stream`] trait,
//! so the embedded segment log and the NATS JetStream backend are interchangeable.
//!
//! The model is Kinesis': a stream has shards; a record's partition key is hashed with MD5 into a
//! 128-bit hash key, and the record goes to the open shard whose [`HashKeyRange`] contains it. Each
//! shard orders its records by a [`SequenceNumber`] that only ever grows and is never reused, even
//! across shard splits, merges and the re-creation of a deleted stream of the same name. A read
//! starts at a [`Position`] ("the first record whose sequence number is at least this"), so a
//! position is all a reader has to remember; Kinesis' iterator types resolve to one through
//! [`Stream::resolve`].

pub mod consumer;
pub mod embedded;
mod jetstream;
pub mod routing;
mod types;

pub use consumer::{ConsumerBatch, ConsumerConfig, ConsumerGroup, Unconsumed, unconsumed};
pub use embedded::{EmbeddedConfig, EmbeddedStreams};
pub use types::{
    Appended, HashKeyRange, Lease, NewRecord, Position, PutOutcome, ReadBatch, Record,
    RecordFailure, SequenceNumber, ShardId, ShardInfo, StartingPosition, StreamError, StreamInfo,
    StreamMode, StreamSpec, StreamStatus,
};

pub use jetstream::{JetStreamStreams, MAX_SHARDS_PER_STREAM};

use std::time::Duration;

use async_trait::async_trait;

/// Names of the streams fleetcore keeps for itself (a DirectPut delivery stream's buffer) start
/// with this. The Kinesis API neither lists nor serves them, and refuses to create one.
pub const INTERNAL_STREAM_PREFIX: &str = "__";

/// True for a stream fleetcore keeps for itself.
pub fn is_internal_stream(name: &str) -> bool {
    name.starts_with(INTERNAL_STREAM_PREFIX)
}

/// Largest record payload (Kinesis: 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Longest partition key, in Unicode characters (Kinesis: 256).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Most records in one `put_records` call (Kinesis PutRecords: 500).
pub const MAX_PUT_RECORDS: usize = 500;

/// Most bytes (payloads plus partition keys) in one `put_records` call (Kinesis: 10 MiB).
pub const MAX_PUT_BYTES: usize = 10 << 20;

/// Most records one `read` returns (Kinesis GetRecords: 10,000); larger limits are clamped.
pub const MAX_READ_RECORDS: usize = 10_000;

/// A durable sharded stream store: stream management, appends, reads, and the checkpoints and
/// leases consumer groups keep.
///
/// Every method that changes state returns only once the change is durable (for the embedded
/// backend: fsynced, with many concurrent callers sharing one fsync).
#[async_trait]
pub trait Stream: Send + Sync + 'static {
    /// Creates a stream; ACTIVE on return. `AlreadyExists` if the name is taken.
    async fn create_stream(&self, spec: StreamSpec) -> Result<StreamInfo, StreamError>;

    /// Deletes a stream and its records.
    async fn delete_stream(&self, name: &str) -> Result<(), StreamError>;

    /// The stream's current description, shards included (closed ones too, while retained).
    async fn describe_stream(&self, name: &str) -> Result<StreamInfo, StreamError>;

    /// Names of every stream, sorted.
    async fn list_streams(&self) -> Result<Vec<String>, StreamError>;

    /// Changes the retention period (hours, 24..=8760).
    async fn set_retention(&self, name: &str, hours: u32) -> Result<StreamInfo, StreamError>;

    /// Reshards to `target` open shards with uniform scaling: open shards close and children
    /// take over their hash ranges (splits and merges, as Kinesis' UpdateShardCount).
    async fn update_shard_count(&self, name: &str, target: u32) -> Result<StreamInfo, StreamError>;

    /// Appends records, routing each by its partition key (or explicit hash key). One outcome
    /// per record, in order; a failed record does not fail the others. Durable on return.
    async fn put_records(
        &self,
        name: &str,
        records: Vec<NewRecord>,
    ) -> Result<Vec<PutOutcome>, StreamError>;

    /// Turns a starting position into a concrete [`Position`] in `shard`. `Latest` resolves to
    /// just past the newest record at the time of the call.
    async fn resolve(
        &self,
        name: &str,
        shard: ShardId,
        start: StartingPosition,
    ) -> Result<Position, StreamError>;

    /// Reads up to `limit` records of `shard` from `from` (records past retention are skipped).
    async fn read(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        limit: usize,
    ) -> Result<ReadBatch, StreamError>;

    /// Waits until `shard` has a record at or after `from`, the shard is closed, or `timeout`
    /// passes, whichever comes first. Lets consumers tail without polling in a loop.
    async fn wait_for_records(
        &self,
        name: &str,
        shard: ShardId,
        from: Position,
        timeout: Duration,
    ) -> Result<(), StreamError>;

    /// Takes or renews the lease of `shard` for consumer group `group` as `owner`, for `ttl`.
    /// True if `owner` holds it afterwards; false while another owner's lease is live.
    async fn acquire_lease(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StreamError>;

    /// Records that `group` has processed `shard` up to (excluding) `position`, if `owner` still
    /// holds the lease (`LeaseLost` otherwise). Durable on return.
    async fn checkpoint(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        owner: &str,
        position: Position,
    ) -> Result<(), StreamError>;

    /// Every lease `group` holds or held on the stream's shards, live or expired (consumers use
    /// it to see how many owners share the work).
    async fn leases(&self, name: &str, group: &str) -> Result<Vec<Lease>, StreamError>;

    /// Takes the lease of `shard` from `current` (live or expired) for `owner`, for `ttl`, so
    /// consumers can even out the load. False if `current` no longer holds it.
    async fn steal_lease(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
        current: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StreamError>;

    /// Where `group` resumes reading `shard`: its last checkpoint, if any.
    async fn checkpoint_of(
        &self,
        name: &str,
        group: &str,
        shard: ShardId,
    ) -> Result<Option<Position>, StreamError>;
}
