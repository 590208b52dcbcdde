//! Backend-independent rules every [`crate::Stream`] implementation applies the same way: request
//! validation, partition-key hashing, and the uniform hash-key ranges of a reshard.

use md5::{Digest, Md5};

use crate::{
    HashKeyRange, MAX_PARTITION_KEY_CHARS, MAX_PUT_BYTES, MAX_PUT_RECORDS, MAX_RECORD_BYTES,
    NewRecord, ShardInfo, StreamError,
};

/// Most open shards a stream may have.
pub const MAX_SHARDS: u32 = 1024;

/// Open shards an on-demand stream starts with (as Kinesis).
pub const ON_DEMAND_SHARDS: u32 = 4;

/// Shortest and longest retention, in hours (Kinesis: 24 hours to 365 days).
pub const RETENTION_HOURS: std::ops::RangeInclusive<u32> = 24..=8760;

/// The 128-bit hash key of a partition key: MD5, read big-endian (as Kinesis).
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The hash key that routes `record`: its explicit hash key, or the hash of its partition key.
pub fn routing_key(record: &NewRecord) -> u128 {
    record
        .explicit_hash_key
        .unwrap_or_else(|| hash_key(&record.partition_key))
}

/// The open shard whose range holds `key`.
pub fn open_shard_for(shards: &[ShardInfo], key: u128) -> Option<&ShardInfo> {
    shards
        .iter()
        .find(|shard| shard.is_open() && shard.hash_range.contains(key))
}

/// `count` ranges of (nearly) equal width that cover the key space in order.
pub fn uniform_ranges(count: u32) -> Vec<HashKeyRange> {
    if count <= 1 {
        return vec![HashKeyRange::ALL];
    }
    let count = u128::from(count);
    // 2^128 = count * width + extra, computed without overflowing u128.
    let (mut width, mut extra) = (u128::MAX / count, u128::MAX % count + 1);
    if extra == count {
        width += 1;
        extra = 0;
    }
    let start = |i: u128| i * width + i.min(extra);
    (0..count)
        .map(|i| HashKeyRange {
            start: start(i),
            end: if i + 1 == count {
                u128::MAX
            } else {
                start(i + 1) - 1
            },
        })
        .collect()
}

/// Checks a stream name: `[a-zA-Z0-9_.-]`, 1 to 128 characters.
pub fn validate_stream_name(name: &str) -> Result<(), StreamError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
        return Err(StreamError::InvalidArgument(format!(
            "stream name {name:?} must be 1 to 128 characters of [a-zA-Z0-9_.-]"
        )));
    }
    Ok(())
}

/// Checks a retention period in hours.
pub fn validate_retention(hours: u32) -> Result<(), StreamError> {
    if !RETENTION_HOURS.contains(&hours) {
        return Err(StreamError::InvalidArgument(format!(
            "retention of {hours} hours is outside {}..={}",
            RETENTION_HOURS.start(),
            RETENTION_HOURS.end()
        )));
    }
    Ok(())
}

/// Checks an open-shard count for CreateStream.
pub fn validate_shard_count(count: u32) -> Result<(), StreamError> {
    if count == 0 {
        return Err(StreamError::InvalidArgument(
            "shard count must be at least 1".into(),
        ));
    }
    if count > MAX_SHARDS {
        return Err(StreamError::LimitExceeded(format!(
            "shard count {count} is above the limit of {MAX_SHARDS}"
        )));
    }
    Ok(())
}

/// Checks an UpdateShardCount target against the current open-shard count: as Kinesis, at most
/// double and at least half of it.
pub fn validate_reshard(current: u32, target: u32) -> Result<(), StreamError> {
    validate_shard_count(target)?;
    if u64::from(target) > 2 * u64::from(current) || 2 * u64::from(target) < u64::from(current) {
        return Err(StreamError::InvalidArgument(format!(
            "target shard count {target} must be between half and double the current {current}"
        )));
    }
    Ok(())
}

/// Checks one record: payload at most [`MAX_RECORD_BYTES`], partition key 1 to
/// [`MAX_PARTITION_KEY_CHARS`] characters.
pub fn validate_record(record: &NewRecord) -> Result<(), StreamError> {
    if record.data.len() > MAX_RECORD_BYTES {
        return Err(StreamError::InvalidArgument(format!(
            "record data of {} bytes is larger than {MAX_RECORD_BYTES}",
            record.data.len()
        )));
    }
    let key_chars = record.partition_key.chars().count();
    if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
        return Err(StreamError::InvalidArgument(format!(
            "partition key of {key_chars} characters is outside 1..={MAX_PARTITION_KEY_CHARS}"
        )));
    }
    Ok(())
}

/// Checks a whole put: 1 to [`MAX_PUT_RECORDS`] valid records of at most [`MAX_PUT_BYTES`].
pub fn validate_put(records: &[NewRecord]) -> Result<(), StreamError> {
    if records.is_empty() || records.len() > MAX_PUT_RECORDS {
        return Err(StreamError::InvalidArgument(format!(
            "a put takes 1 to {MAX_PUT_RECORDS} records, not {}",
            records.len()
        )));
    }
    let mut total = 0usize;
    for record in records {
        validate_record(record)?;
        total += record.data.len() + record.partition_key.len();
    }
    if total > MAX_PUT_BYTES {
        return Err(StreamError::InvalidArgument(format!(
            "a put of {total} bytes is larger than {MAX_PUT_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn hash_key_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn uniform_ranges_cover_the_key_space_without_gaps() {
        for count in [1, 2, 3, 4, 5, 7, 1024] {
            let ranges = uniform_ranges(count);
            assert_eq!(ranges.len(), count as usize);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().map(|r| r.end), Some(u128::MAX));
            for pair in ranges.windows(2) {
                assert!(pair[0].start <= pair[0].end);
                assert_eq!(pair[0].end + 1, pair[1].start);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn every_key_falls_in_exactly_one_uniform_range(count in 1u32..=MAX_SHARDS, key: u128) {
            let ranges = uniform_ranges(count);
            proptest::prop_assert_eq!(ranges.iter().filter(|r| r.contains(key)).count(), 1);
            let widths: Vec<u128> = ranges.iter().map(|r| r.end - r.start).collect();
            let (min, max) = (widths.iter().min(), widths.iter().max());
            proptest::prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
        }
    }

    #[test]
    fn record_limits() {
        let record = |key: &str, len: usize| NewRecord {
            partition_key: key.into(),
            explicit_hash_key: None,
            data: Bytes::from(vec![0; len]),
        };
        assert!(validate_record(&record("k", MAX_RECORD_BYTES)).is_ok());
        assert!(validate_record(&record("k", MAX_RECORD_BYTES + 1)).is_err());
        assert!(validate_record(&record("", 1)).is_err());
        assert!(validate_record(&record(&"é".repeat(256), 1)).is_ok());
        assert!(validate_record(&record(&"é".repeat(257), 1)).is_err());
        assert!(validate_put(&[]).is_err());
        assert!(validate_put(&vec![record("k", 1); 501]).is_err());
    }

    #[test]
    fn reshard_bounds() {
        assert!(validate_reshard(4, 8).is_ok());
        assert!(validate_reshard(4, 2).is_ok());
        assert!(validate_reshard(4, 9).is_err());
        assert!(validate_reshard(4, 1).is_err());
        assert!(validate_reshard(3, 2).is_ok());
    }
}
