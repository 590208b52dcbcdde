//! How a record is stored in a JetStream message: a version byte, the partition key (u16
//! length, UTF-8) and the payload. The arrival time is the message's server timestamp.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// Bytes a record adds to its payload in JetStream.
pub(super) const OVERHEAD: usize = 3 + crate::MAX_PARTITION_KEY_CHARS * 4;

/// The message payload of a record.
pub(super) fn encode(partition_key: &str, data: &[u8]) -> Bytes {
    let key = partition_key.as_bytes();
    let mut out = BytesMut::with_capacity(3 + key.len() + data.len());
    out.put_u8(VERSION);
    out.put_u16(key.len() as u16);
    out.put_slice(key);
    out.put_slice(data);
    out.freeze()
}

/// The partition key and payload of a message; `None` if it is not a record of ours.
pub(super) fn decode(payload: &Bytes) -> Option<(String, Bytes)> {
    let (&version, rest) = payload.split_first()?;
    if version != VERSION || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let key = rest.get(2..2 + len)?;
    let key = std::str::from_utf8(key).ok()?.to_string();
    Some((key, payload.slice(3 + len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_payloads_are_refused() {
        let stored = encode("clé-1", b"payload");
        assert_eq!(
            decode(&stored),
            Some(("clé-1".to_string(), Bytes::from_static(b"payload")))
        );
        assert_eq!(decode(&encode("k", b"")), Some(("k".into(), Bytes::new())));
        assert_eq!(decode(&Bytes::from_static(b"")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x02\x00\x00")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01\x00\x09ab")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01\x00\x02\xff\xfe")), None);
    }
}
