//! Shard layout: which shard a record goes to, and how uniform scaling splits the key space.

use md5::{Digest, Md5};

use crate::HashKeyRange;

/// The 128-bit hash key of a partition key (MD5, big-endian), as Kinesis computes it.
pub(super) fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The key space cut into `count` ranges of (nearly) equal size, in order.
pub(super) fn uniform_ranges(count: u32) -> Vec<HashKeyRange> {
    let n = u128::from(count.max(1));
    // 2^128 = n * q + (r + 1), so range i starts at floor(i * 2^128 / n).
    let q = u128::MAX / n;
    let r_plus_1 = u128::MAX % n + 1;
    let start = |i: u128| i * q + (i * r_plus_1) / n;
    (0..n)
        .map(|i| HashKeyRange {
            start: start(i),
            end: if i + 1 == n {
                u128::MAX
            } else {
                start(i + 1) - 1
            },
        })
        .collect()
}

/// True if two ranges share a key.
pub(super) fn overlaps(a: &HashKeyRange, b: &HashKeyRange) -> bool {
    a.start <= b.end && b.start <= a.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_are_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn uniform_ranges_tile_the_key_space() {
        for count in [1u32, 2, 3, 4, 5, 7, 10, 500] {
            let ranges = uniform_ranges(count);
            assert_eq!(ranges.len(), count as usize);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[ranges.len() - 1].end, u128::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end + 1, pair[1].start, "{count}");
            }
        }
        assert_eq!(uniform_ranges(2)[1].start, 1 << 127);
    }
}
