//! Sequence numbers of the JetStream backend: each shard is one JetStream stream whose own
//! sequence (1, 2, 3, ...) is the low 64 bits; above it sit the shard id (24 bits) and the
//! fleetcore stream's epoch (40 bits, the metadata revision at creation). A re-created stream
//! gets a higher epoch, so its numbers never repeat those of the stream it replaced, and the
//! numbers of different shards never collide.

use crate::{Position, SequenceNumber, ShardId, StreamError};

/// Largest shard id the layout can hold.
pub(super) const MAX_SHARD_ID: u32 = (1 << 24) - 1;

/// Largest epoch the layout can hold.
pub(super) const MAX_EPOCH: u64 = (1 << 40) - 1;

/// The (epoch, shard) a sequence number belongs to, as its high 64 bits.
fn prefix(epoch: u64, shard: ShardId) -> u128 {
    (u128::from(epoch) << 88) | (u128::from(shard.0) << 64)
}

/// The sequence number of JetStream sequence `js` in `shard` of a stream of `epoch`.
pub(super) fn encode(epoch: u64, shard: ShardId, js: u64) -> SequenceNumber {
    SequenceNumber(prefix(epoch, shard) | u128::from(js))
}

/// Where a read of `shard` from `position` starts in the shard's JetStream stream: positions
/// before the shard's range start at its first record, positions after it at `u64::MAX`
/// (nothing there, ever).
pub(super) fn start_of(epoch: u64, shard: ShardId, position: Position) -> u64 {
    let own = prefix(epoch, shard);
    match (position.0 & !u128::from(u64::MAX)).cmp(&own) {
        std::cmp::Ordering::Less => 1,
        std::cmp::Ordering::Greater => u64::MAX,
        std::cmp::Ordering::Equal => (position.0 as u64).max(1),
    }
}

/// The JetStream sequence of `sequence`, which must belong to `shard` of epoch `epoch`.
pub(super) fn decode_own(
    epoch: u64,
    shard: ShardId,
    sequence: SequenceNumber,
) -> Result<u64, StreamError> {
    if sequence.0 & !u128::from(u64::MAX) != prefix(epoch, shard) {
        return Err(StreamError::InvalidArgument(format!(
            "sequence number {sequence} does not belong to {shard} of this stream"
        )));
    }
    Ok(sequence.0 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_order_by_epoch_then_shard_then_sequence() {
        let a = encode(1, ShardId(5), 99);
        let b = encode(2, ShardId(0), 1);
        let c = encode(2, ShardId(0), 2);
        let d = encode(2, ShardId(1), 1);
        assert!(a < b && b < c && c < d);
        assert_eq!(decode_own(2, ShardId(0), c), Ok(2));
        assert!(decode_own(2, ShardId(1), c).is_err());
        assert!(decode_own(1, ShardId(0), c).is_err());
    }

    #[test]
    fn positions_outside_the_shard_clamp() {
        let shard = ShardId(3);
        assert_eq!(start_of(7, shard, Position(0)), 1);
        assert_eq!(start_of(7, shard, Position::at(encode(7, shard, 0))), 1);
        assert_eq!(
            start_of(7, shard, Position::after(encode(7, shard, 41))),
            42
        );
        assert_eq!(
            start_of(7, shard, Position::at(encode(7, ShardId(4), 1))),
            u64::MAX
        );
        assert_eq!(
            start_of(7, shard, Position::at(encode(8, ShardId(0), 1))),
            u64::MAX
        );
        assert_eq!(
            start_of(7, shard, Position::at(encode(6, ShardId(9), 5))),
            1
        );
    }
}
