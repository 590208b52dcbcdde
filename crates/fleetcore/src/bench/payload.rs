//! The bench payload header: the first 16 bytes of every message the bench publishes, from which
//! a subscriber measures latency and detects loss, duplicates and reordering.
//!
//! Layout (big-endian):
//!
//! | bytes  | field                                                                       |
//! |--------|-----------------------------------------------------------------------------|
//! | 0..8   | send time, ns since the process-wide [`now_ns`] base                         |
//! | 8..16  | stream sequence: publisher index in the top 24 bits, per-publisher sequence in the low 40 |
//!
//! The rest of the payload is filler. Publisher and subscriber live in the same process, so the
//! send time needs no clock synchronisation.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes at the front of every payload taken by the header; the smallest allowed `--size`.
pub(crate) const HEADER_LEN: usize = 16;

/// Bits of the stream sequence that count messages of one publisher.
const SEQ_BITS: u32 = 40;

/// Publishers a run may have: the index must fit in the 24 bits above the sequence.
pub(crate) const MAX_PUBLISHERS: u32 = 1 << (64 - SEQ_BITS);

/// Messages one publisher may send before its sequence would wrap (about 10^12).
pub(crate) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// Nanoseconds since the process-wide base instant, fixed on first use.
pub(crate) fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years.
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a bench message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// When the publisher encoded it, from [`now_ns`].
    pub sent_ns: u64,
    /// Index of the publisher, `0..publishers`.
    pub publisher: u32,
    /// Position in that publisher's stream, from 0.
    pub seq: u64,
}

impl Stamp {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
    ///
    /// The caller keeps `publisher < MAX_PUBLISHERS` and `seq <= MAX_SEQ` (argument validation
    /// and the publisher loop do); out-of-range bits are masked rather than spilled.
    pub(crate) fn write(&self, payload: &mut [u8]) {
        let stream = (u64::from(self.publisher) << SEQ_BITS) | (self.seq & MAX_SEQ);
        payload[..8].copy_from_slice(&self.sent_ns.to_be_bytes());
        payload[8..HEADER_LEN].copy_from_slice(&stream.to_be_bytes());
    }

    /// Reads the header of a received payload; `None` if it is too short to carry one.
    pub(crate) fn read(payload: &[u8]) -> Option<Stamp> {
        let sent: [u8; 8] = payload.get(..8)?.try_into().ok()?;
        let stream: [u8; 8] = payload.get(8..HEADER_LEN)?.try_into().ok()?;
        let stream = u64::from_be_bytes(stream);
        Some(Stamp {
            sent_ns: u64::from_be_bytes(sent),
            publisher: u32::try_from(stream >> SEQ_BITS).unwrap_or(u32::MAX),
            seq: stream & MAX_SEQ,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let stamp = Stamp {
            sent_ns: 0x0102_0304_0506_0708,
            publisher: 0xAB_CDEF,
            seq: 0x12_3456_789A,
        };
        let mut payload = [0u8; 32];
        stamp.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        // The filler after the header is untouched.
        assert!(payload[HEADER_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn layout_is_big_endian_with_publisher_in_top_bits() {
        let mut payload = [0u8; HEADER_LEN];
        Stamp {
            sent_ns: 1,
            publisher: 2,
            seq: 3,
        }
        .write(&mut payload);
        assert_eq!(payload, [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 3]);
    }

    #[test]
    fn extremes() {
        let stamp = Stamp {
            sent_ns: u64::MAX,
            publisher: MAX_PUBLISHERS - 1,
            seq: MAX_SEQ,
        };
        let mut payload = [0u8; HEADER_LEN];
        stamp.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(payload, [0xFF; HEADER_LEN]);
    }

    #[test]
    fn short_payload_has_no_stamp() {
        assert_eq!(Stamp::read(&[0u8; HEADER_LEN - 1]), None);
        assert_eq!(Stamp::read(&[]), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
