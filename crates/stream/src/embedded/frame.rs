//! The on-disk frame of one record in a segment file.
//!
//! ```text
//! u32 LE  body length
//! u32 LE  CRC32 (crc32fast, IEEE) of the body
//! body:   u128 LE sequence | u64 LE arrival ms | u16 LE key length | key (UTF-8) | data
//! ```
//!
//! A frame is accepted only whole: a length outside the possible range, a body running past the
//! end of the file, a CRC mismatch or a key that is not UTF-8 all end the valid part of a segment.

use bytes::Bytes;

use crate::{MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES};

/// Bytes before the body: length and CRC.
pub const HEADER_BYTES: usize = 8;

/// Bytes of the body before the key: sequence, arrival, key length.
const BODY_FIXED_BYTES: usize = 16 + 8 + 2;

/// The largest body a valid record can have (a key of 256 four-byte characters, 1 MiB of data).
pub const MAX_BODY_BYTES: usize = BODY_FIXED_BYTES + MAX_PARTITION_KEY_CHARS * 4 + MAX_RECORD_BYTES;

/// A record as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Sequence number.
    pub sequence: u128,
    /// Arrival time, milliseconds since the Unix epoch.
    pub arrival_ms: u64,
    /// Partition key.
    pub partition_key: String,
    /// Payload.
    pub data: Bytes,
}

/// Size of the frame of a record with this key and payload.
pub fn frame_len(partition_key: &str, data_len: usize) -> usize {
    HEADER_BYTES + BODY_FIXED_BYTES + partition_key.len() + data_len
}

/// Appends the frame of one record to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    sequence: u128,
    arrival_ms: u64,
    partition_key: &str,
    data: &[u8],
) {
    let body_len = BODY_FIXED_BYTES + partition_key.len() + data.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.extend_from_slice(&(partition_key.len() as u16).to_le_bytes());
    out.extend_from_slice(partition_key.as_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid frame of this many bytes.
    Frame(StoredRecord, usize),
    /// The buffer ends inside a plausible frame that needs this many bytes in all.
    Incomplete(usize),
    /// The bytes are not a valid frame.
    Corrupt(&'static str),
}

/// The body length announced by a frame header, if plausible.
fn body_len(header: &[u8]) -> Result<usize, &'static str> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(BODY_FIXED_BYTES..=MAX_BODY_BYTES).contains(&len) {
        return Err("frame length out of range");
    }
    Ok(len)
}

/// Decodes the frame at `start` in `chunk` (a shared read buffer, so payloads are slices of it,
/// not copies).
pub fn decode(chunk: &Bytes, start: usize) -> Decoded {
    let buf = &chunk[start.min(chunk.len())..];
    if buf.len() < HEADER_BYTES {
        return Decoded::Incomplete(HEADER_BYTES);
    }
    let len = match body_len(&buf[..HEADER_BYTES]) {
        Ok(len) => len,
        Err(why) => return Decoded::Corrupt(why),
    };
    let total = HEADER_BYTES + len;
    if buf.len() < total {
        return Decoded::Incomplete(total);
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[HEADER_BYTES..total];
    if crc32fast::hash(body) != crc {
        return Decoded::Corrupt("CRC mismatch");
    }
    let mut sequence = [0; 16];
    sequence.copy_from_slice(&body[..16]);
    let mut arrival = [0; 8];
    arrival.copy_from_slice(&body[16..24]);
    let key_len = u16::from_le_bytes([body[24], body[25]]) as usize;
    let key_end = BODY_FIXED_BYTES + key_len;
    if key_end > len {
        return Decoded::Corrupt("key longer than the frame");
    }
    let Ok(partition_key) = std::str::from_utf8(&body[BODY_FIXED_BYTES..key_end]) else {
        return Decoded::Corrupt("key is not UTF-8");
    };
    Decoded::Frame(
        StoredRecord {
            sequence: u128::from_le_bytes(sequence),
            arrival_ms: u64::from_le_bytes(arrival),
            partition_key: partition_key.to_owned(),
            data: chunk.slice(start + HEADER_BYTES + key_end..start + total),
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(
            &mut out,
            7 << 64 | 3,
            1_700_000_000_123,
            "key-é",
            b"payload",
        );
        assert_eq!(out.len(), frame_len("key-é", 7));
        let Decoded::Frame(record, used) = decode(&Bytes::from(out.clone()), 0) else {
            panic!("not decoded");
        };
        assert_eq!(used, out.len());
        assert_eq!(record.sequence, 7 << 64 | 3);
        assert_eq!(record.arrival_ms, 1_700_000_000_123);
        assert_eq!(record.partition_key, "key-é");
        assert_eq!(&record.data[..], b"payload");
        // A second frame right after the first decodes at its offset.
        encode(&mut out, 8, 9, "k2", b"second");
        let Decoded::Frame(second, _) = decode(&Bytes::from(out), used) else {
            panic!("second frame not decoded");
        };
        assert_eq!((second.sequence, &second.data[..]), (8, &b"second"[..]));
    }

    #[test]
    fn truncated_and_damaged_frames_are_not_accepted() {
        let mut out = Vec::new();
        encode(&mut out, 1, 2, "k", b"data");
        let whole = out.len();
        for cut in 0..whole {
            assert!(matches!(
                decode(&Bytes::copy_from_slice(&out[..cut]), 0),
                Decoded::Incomplete(_)
            ));
        }
        out[whole - 1] ^= 1;
        assert_eq!(
            decode(&Bytes::from(out), 0),
            Decoded::Corrupt("CRC mismatch")
        );
        let huge = (MAX_BODY_BYTES as u32 + 1).to_le_bytes();
        let mut header = huge.to_vec();
        header.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode(&Bytes::from(header), 0),
            Decoded::Corrupt(_)
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(bytes), 0);
        }

        #[test]
        fn any_flipped_byte_is_detected(
            key in "[a-z]{1,16}",
            data in proptest::collection::vec(any::<u8>(), 0..128),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..,
        ) {
            let mut out = Vec::new();
            encode(&mut out, 42, 43, &key, &data);
            let at = at.index(out.len());
            out[at] ^= flip;
            prop_assert!(!matches!(decode(&Bytes::from(out), 0), Decoded::Frame(..)));
        }
    }
}
