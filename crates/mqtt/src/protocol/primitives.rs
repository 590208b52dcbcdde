//! Wire primitives shared by every packet (MQTT 5 §1.5): two- and four-byte integers, the
//! Variable Byte Integer, length-prefixed binary data and UTF-8 strings.
//!
//! Decoding goes through [`Reader`], a cursor over one packet's `Bytes` whose every read is
//! bounds-checked and whose string and binary reads are zero-copy slices of the receive buffer.
//! Encoding goes through [`Sink`], implemented both by `BytesMut` (writes) and by [`Counter`]
//! (counts), so a length is always computed by the very code that writes the bytes it measures.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, Utf8};

/// Largest value a Variable Byte Integer can carry: four bytes of seven bits (MQTT 5 §1.5.5).
pub(crate) const VARINT_MAX: usize = 268_435_455;

/// Shorthand for the most common decode error.
pub(crate) fn malformed(what: &'static str) -> DecodeError {
    DecodeError::MalformedPacket(what)
}

/// Shorthand for errors in packets that parse but break a protocol rule.
pub(crate) fn protocol_error(what: &'static str) -> DecodeError {
    DecodeError::ProtocolError(what)
}

/// Number of bytes the Variable Byte Integer encoding of `v` takes.
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a Variable Byte Integer from the front of `bytes`, which may hold only part of it.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((value, bytes_used)))` otherwise.
/// Rejects a fifth byte and non-minimal encodings ([MQTT-1.5.5-1]): both are malformed, and
/// rejecting them keeps one value to one encoding, which the round-trip tests rely on.
pub(crate) fn peek_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A multi-byte integer whose last byte is zero could have been written shorter.
            if i > 0 && b == 0 {
                return Err(malformed("variable byte integer is not minimally encoded"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(malformed("variable byte integer is longer than 4 bytes"))
    } else {
        Ok(None)
    }
}

/// A bounds-checked cursor over the bytes of one packet.
///
/// It owns a `Bytes` so that strings and binary fields are returned as shared slices of the
/// receive buffer rather than copies.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Wraps the body (or a sub-range, such as a property block) of a packet.
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True once every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn truncated() -> DecodeError {
        malformed("packet ends inside a field")
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let v = *self.buf.first().ok_or_else(Self::truncated)?;
        self.buf.advance(1);
        Ok(v)
    }

    /// A big-endian Two Byte Integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let v = match self.buf.get(..2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => return Err(Self::truncated()),
        };
        self.buf.advance(2);
        Ok(v)
    }

    /// A big-endian Four Byte Integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let v = match self.buf.get(..4) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => return Err(Self::truncated()),
        };
        self.buf.advance(4);
        Ok(v)
    }

    /// A Variable Byte Integer.
    pub(crate) fn varint(&mut self) -> Result<usize, DecodeError> {
        match peek_varint(&self.buf)? {
            Some((v, used)) => {
                self.buf.advance(used);
                Ok(v)
            }
            None => Err(Self::truncated()),
        }
    }

    /// The next `n` bytes, shared with the receive buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(Self::truncated());
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary Data: a two-byte length then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A UTF-8 Encoded String: valid UTF-8 without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
    pub(crate) fn utf8(&mut self) -> Result<Utf8, DecodeError> {
        Utf8::from_bytes(self.binary()?).ok_or_else(|| malformed("string is not valid MQTT UTF-8"))
    }

    /// Everything not read yet (the payload of PUBLISH, for example).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails if bytes are left: a packet longer than its fields is malformed.
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed("trailing bytes after the packet's fields"))
        }
    }
}

/// Where encoders put bytes: a real buffer, or a [`Counter`] that only measures.
pub(crate) trait Sink {
    /// One byte.
    fn put_byte(&mut self, v: u8);

    /// Raw bytes.
    fn put_bytes(&mut self, s: &[u8]);

    /// A big-endian Two Byte Integer.
    fn put_two(&mut self, v: u16) {
        self.put_bytes(&v.to_be_bytes());
    }

    /// A big-endian Four Byte Integer.
    fn put_four(&mut self, v: u32) {
        self.put_bytes(&v.to_be_bytes());
    }

    /// A Variable Byte Integer. Values above [`VARINT_MAX`] cannot be represented; callers keep
    /// within it (every length decoded from the wire does).
    fn put_varint(&mut self, v: usize) {
        debug_assert!(v <= VARINT_MAX, "variable byte integer {v} out of range");
        let mut v = v;
        loop {
            // Truncation is the point: the low seven bits go into this byte.
            let mut byte = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                byte |= 0x80;
            }
            self.put_byte(byte);
            if v == 0 {
                break;
            }
        }
    }

    /// Binary Data. More than 65,535 bytes cannot be represented: the excess is cut off so the
    /// length prefix still agrees with what follows and the stream stays parseable.
    fn put_binary(&mut self, b: &[u8]) {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        debug_assert!(b.len() <= usize::from(u16::MAX), "binary field too long");
        self.put_two(len);
        self.put_bytes(b.get(..usize::from(len)).unwrap_or(b));
    }

    /// A UTF-8 Encoded String (same length limit as [`Sink::put_binary`]).
    fn put_utf8(&mut self, s: &Utf8) {
        self.put_binary(s.as_bytes());
    }
}

impl Sink for BytesMut {
    fn put_byte(&mut self, v: u8) {
        self.put_u8(v);
    }

    fn put_bytes(&mut self, s: &[u8]) {
        self.put_slice(s);
    }
}

/// A [`Sink`] that counts the bytes it would have written.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_byte(&mut self, _: u8) {
        self.0 += 1;
    }

    fn put_bytes(&mut self, s: &[u8]) {
        self.0 += s.len();
    }

    fn put_two(&mut self, _: u16) {
        self.0 += 2;
    }

    fn put_four(&mut self, _: u32) {
        self.0 += 4;
    }

    fn put_varint(&mut self, v: usize) {
        self.0 += varint_len(v);
    }

    fn put_binary(&mut self, b: &[u8]) {
        self.0 += 2 + b.len().min(usize::from(u16::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut buf = BytesMut::new();
            buf.put_varint(v);
            assert_eq!(buf.len(), varint_len(v));
            let mut c = Counter(0);
            c.put_varint(v);
            assert_eq!(c.0, buf.len());
            assert_eq!(peek_varint(&buf), Ok(Some((v, buf.len()))));
        }
    }

    #[test]
    fn varint_incomplete_needs_more() {
        assert_eq!(peek_varint(&[]), Ok(None));
        assert_eq!(peek_varint(&[0x80]), Ok(None));
        assert_eq!(peek_varint(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn varint_fifth_byte_is_malformed() {
        assert!(matches!(
            peek_varint(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            peek_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn varint_non_minimal_is_malformed() {
        assert!(matches!(
            peek_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            peek_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn reader_bounds_are_checked() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert!(matches!(r.utf8(), Err(DecodeError::MalformedPacket(_))));
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert!(r.u16().is_err());
        assert!(Reader::new(Bytes::from_static(&[1, 2, 3])).u32().is_err());
        assert!(Reader::new(Bytes::new()).u8().is_err());
        assert!(Reader::new(Bytes::from_static(&[0x80])).varint().is_err());
    }

    #[test]
    fn strings_reject_nul_and_invalid_utf8() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert_eq!(r.utf8(), Err(malformed("string is not valid MQTT UTF-8")));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]));
        assert!(matches!(r.utf8(), Err(DecodeError::MalformedPacket(_))));
        // Surrogate halves (U+D800) encoded as UTF-8 are not valid UTF-8 either.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert!(matches!(r.utf8(), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn strings_share_the_buffer() {
        let body = Bytes::from_static(b"\x00\x03abcrest");
        let mut r = Reader::new(body.clone());
        let s = r.utf8().unwrap_or_default();
        assert_eq!(s.as_str(), "abc");
        assert_eq!(s.as_bytes().as_ptr(), body[2..].as_ptr());
        assert_eq!(&r.rest()[..], b"rest");
    }
}
