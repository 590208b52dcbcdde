//! The values that cross the [`crate::Stream`] trait.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;

/// A record's place in its shard: a decimal string on the wire, only growing within a shard,
/// never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber(pub u128);

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<SequenceNumber, StreamError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StreamError::InvalidArgument(format!(
                "sequence number {s:?} is not a decimal number"
            )));
        }
        s.parse::<u128>().map(SequenceNumber).map_err(|_| {
            StreamError::InvalidArgument(format!("sequence number {s:?} is out of range"))
        })
    }
}

/// Where a read starts: the first record whose sequence number is at least this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u128);

impl Position {
    /// The checkpoint a consumer group writes once it has processed every record of a closed
    /// shard (KCL's `SHARD_END`): its children may be read from then on.
    pub const SHARD_END: Position = Position(u128::MAX);

    /// The position of the record `sequence` itself.
    pub fn at(sequence: SequenceNumber) -> Position {
        Position(sequence.0)
    }

    /// The position just past the record `sequence`.
    pub fn after(sequence: SequenceNumber) -> Position {
        Position(sequence.0.saturating_add(1))
    }
}

/// A shard's id; shown as Kinesis shows it, `shardId-000000000007`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shardId-{:012}", self.0)
    }
}

impl FromStr for ShardId {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<ShardId, StreamError> {
        s.strip_prefix("shardId-")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .map(ShardId)
            .ok_or_else(|| StreamError::InvalidArgument(format!("{s:?} is not a shard id")))
    }
}

/// An inclusive range of 128-bit hash keys (MD5 of the partition key, big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKeyRange {
    /// First hash key of the range.
    pub start: u128,
    /// Last hash key of the range.
    pub end: u128,
}

impl HashKeyRange {
    /// The whole key space.
    pub const ALL: HashKeyRange = HashKeyRange {
        start: 0,
        end: u128::MAX,
    };

    /// True if `key` falls in the range.
    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }
}

/// How a stream's capacity is managed (Kinesis `StreamModeDetails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// A fixed shard count, changed by UpdateShardCount.
    Provisioned,
    /// Capacity managed by the server (starts with 4 shards, as Kinesis does).
    OnDemand,
}

/// Lifecycle state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Being created.
    Creating,
    /// Readable and writable.
    Active,
    /// Being resharded or having its retention changed.
    Updating,
    /// Being deleted.
    Deleting,
}

/// What CreateStream asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (`[a-zA-Z0-9_.-]+`, 1..=128).
    pub name: String,
    /// Capacity mode.
    pub mode: StreamMode,
    /// Open shards to start with (ignored for on-demand).
    pub shard_count: u32,
    /// Retention in hours (Kinesis default 24).
    pub retention_hours: u32,
}

/// One shard as DescribeStream / ListShards show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard's id.
    pub id: ShardId,
    /// The shard it was split from or merged from.
    pub parent: Option<ShardId>,
    /// The second parent of a merge.
    pub adjacent_parent: Option<ShardId>,
    /// The hash keys it owns.
    pub hash_range: HashKeyRange,
    /// The first sequence number the shard can hand out.
    pub starting_sequence: SequenceNumber,
    /// The last sequence number it handed out, once closed; `None` while open.
    pub ending_sequence: Option<SequenceNumber>,
}

impl ShardInfo {
    /// True while the shard takes new records.
    pub fn is_open(&self) -> bool {
        self.ending_sequence.is_none()
    }
}

/// A stream as DescribeStream shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Lifecycle state.
    pub status: StreamStatus,
    /// Capacity mode.
    pub mode: StreamMode,
    /// Retention in hours.
    pub retention_hours: u32,
    /// When the stream was created.
    pub created_at: SystemTime,
    /// Every shard still retained, open and closed, by id.
    pub shards: Vec<ShardInfo>,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Hashed with MD5 to pick the shard (1..=256 Unicode characters).
    pub partition_key: String,
    /// Overrides the hash of the partition key.
    pub explicit_hash_key: Option<u128>,
    /// The payload (at most [`crate::MAX_RECORD_BYTES`]).
    pub data: Bytes,
}

/// Where an appended record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The shard it was appended to.
    pub shard: ShardId,
    /// Its sequence number there.
    pub sequence: SequenceNumber,
}

/// Why one record of a batch was not appended (Kinesis' per-record `ErrorCode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFailure {
    /// `ProvisionedThroughputExceededException`: the shard is over its write quota.
    ThroughputExceeded(String),
    /// `InternalFailure`: the server could not store it (e.g. the disk is full).
    Internal(String),
}

/// The outcome of one record of a put.
pub type PutOutcome = Result<Appended, RecordFailure>;

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number in its shard.
    pub sequence: SequenceNumber,
    /// When the server accepted it (millisecond precision).
    pub arrival: SystemTime,
    /// The partition key it was put with.
    pub partition_key: String,
    /// The payload.
    pub data: Bytes,
}

/// A consumer group's lease of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased shard.
    pub shard: ShardId,
    /// Who holds it.
    pub owner: String,
    /// When it lapses unless renewed.
    pub expires: SystemTime,
}

impl Lease {
    /// True while the lease has not lapsed at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.expires > now
    }
}

/// Kinesis' shard iterator types, before resolution to a [`Position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest retained record.
    TrimHorizon,
    /// Just past the newest record.
    Latest,
    /// The record with this sequence number (or the next one, if it is gone).
    AtSequence(SequenceNumber),
    /// The first record after this sequence number.
    AfterSequence(SequenceNumber),
    /// The first record that arrived at or after this time.
    AtTimestamp(SystemTime),
}

/// What one read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// Records in sequence order (may be empty).
    pub records: Vec<Record>,
    /// Where the next read continues.
    pub next: Position,
    /// True once the shard is closed and every record of it has been read: there is no next read.
    pub end_of_shard: bool,
    /// How far the last returned record is behind the newest one of the shard (0 when caught up).
    pub millis_behind_latest: u64,
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No stream (or shard) by that name.
    #[error("{0}")]
    NotFound(String),
    /// A stream by that name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The stream is not ACTIVE (being created, updated or deleted).
    #[error("{0}")]
    ResourceInUse(String),
    /// A limit (shard count, retention range, record size, batch size) is exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// A request value is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The consumer's lease of the shard was taken by another owner.
    #[error("lease of {shard} for group {group} is held by another consumer")]
    LeaseLost {
        /// The consumer group.
        group: String,
        /// The shard.
        shard: ShardId,
    },
    /// The storage failed (I/O error, disk full, backend unreachable); nothing was half-written.
    #[error("stream storage failed: {0}")]
    Storage(String),
}
