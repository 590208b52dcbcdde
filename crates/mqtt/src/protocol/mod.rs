//! The MQTT 3.1.1 + 5.0 packet codec: [`decode`] turns untrusted bytes into a [`Packet`] or a
//! [`DecodeError`] that maps to an MQTT 5 reason code, [`encode`] and [`encoded_len`] go back.
//!
//! One file per packet, sharing the fixed header (`header.rs`), the wire primitives
//! (`primitives.rs`) and a generic property reader/writer (`properties.rs`). Parsing is pure so
//! it can be fuzzed and property-tested without a socket. Decoded strings and payloads are
//! slices of the receive buffer: decoding a PUBLISH copies nothing.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod header;
mod ping;
mod primitives;
mod properties;
mod puback;
mod publish;
pub mod reason;
mod suback;
mod subscribe;
mod types;
mod unsuback;
mod unsubscribe;

pub use types::*;

use bytes::{Buf, BytesMut};

use header::{FixedHeader, PacketType};
use primitives::{Counter, Reader, Sink, varint_len};
use puback::{Ack, AckKind};

/// The largest packet MQTT can frame: one type byte, a four-byte Remaining Length and
/// 268,435,455 bytes of body. Pass it to [`decode`] to mean "no limit of our own".
pub const MAX_PACKET_SIZE: usize = 1 + 4 + primitives::VARINT_MAX;

/// Why bytes from a peer could not be decoded. Every variant maps to the MQTT 5 reason code a
/// server or client sends before closing ([`DecodeError::reason_code`]); for 3.1.1 peers the
/// connection is simply closed, except [`DecodeError::UnsupportedProtocolVersion`] on CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes cannot be parsed as the packet they claim to be (reason 0x81).
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// The packet parses but breaks a rule of the protocol (reason 0x82).
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// The fixed header announces a packet larger than we accept (reason 0x95). Raised before
    /// the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge {
        /// Announced size of the whole packet, fixed header included.
        size: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// CONNECT names a protocol level other than 4 (3.1.1) or 5, such as MQIsdp level 3 (reason
    /// 0x84; a 3.1.1 server answers CONNACK return code 1 in 3.1.1 encoding).
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocolVersion(u8),
    /// A PUBLISH or will topic is empty (where not allowed) or contains a wildcard (reason 0x90).
    #[error("topic name invalid: {0}")]
    TopicNameInvalid(&'static str),
    /// A Topic Alias of 0 (reason 0x94; aliases above the negotiated maximum are the session's
    /// to detect).
    #[error("topic alias 0 is invalid")]
    TopicAliasInvalid,
}

impl DecodeError {
    /// The MQTT 5 reason code to report this error with (CONNACK or DISCONNECT).
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::MalformedPacket(_) => reason::MALFORMED_PACKET,
            DecodeError::ProtocolError(_) => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid(_) => reason::TOPIC_NAME_INVALID,
            DecodeError::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: more bytes are needed; `buf` is untouched.
/// - `Ok(Some(packet))`: exactly the packet's bytes were split off `buf` (`split_to().freeze()`),
///   and its topics, strings and payload are slices of them, not copies.
/// - `Err(_)`: the stream cannot be resynchronised and the connection must be closed. Errors
///   found in the fixed header leave `buf` untouched; errors in the body leave the packet's
///   bytes consumed. Nothing beyond the announced packet is ever consumed.
///
/// CONNECT is self-describing and decoded whatever `version` says (pass V5 before CONNECT).
/// `max_packet_size` bounds the whole packet: once the fixed header is readable and announces
/// more, [`DecodeError::PacketTooLarge`] is returned without waiting for the body, so the caller's
/// buffer never has to grow past the limit.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::peek(buf, version)? else {
        return Ok(None);
    };
    let size = header.header_len + header.remaining_len;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    buf.advance(header.header_len);
    let r = Reader::new(buf.split_to(header.remaining_len).freeze());
    Ok(Some(match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(r, version)?),
        PacketType::Publish { dup, qos, retain } => {
            Packet::Publish(Publish::decode(r, version, dup, qos, retain)?)
        }
        PacketType::PubAck => Packet::PubAck(PubAck::decode(r, version, AckKind::PubAck)?),
        PacketType::PubRec => Packet::PubRec(PubAck::decode(r, version, AckKind::PubRec)?),
        PacketType::PubRel => Packet::PubRel(PubAck::decode(r, version, AckKind::PubRel)?),
        PacketType::PubComp => Packet::PubComp(PubAck::decode(r, version, AckKind::PubComp)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        PacketType::PingReq => {
            ping::decode(r)?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            ping::decode(r)?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(r, version)?),
        // The header already refused type 15 for 3.1.1.
        PacketType::Auth => Packet::Auth(Auth::decode(r)?),
    }))
}

/// Appends the encoding of `packet` for `version` to `buf`.
///
/// Fields 3.1.1 cannot carry (properties, most reason codes) are dropped for V311, and reason
/// codes are mapped to their 3.1.1 equivalents. CONNECT is written for its own `protocol`, like
/// it is decoded. AUTH does not exist in 3.1.1: for V311 nothing is written.
///
/// Strings and binary fields above 65,535 bytes and packets above [`MAX_PACKET_SIZE`] cannot be
/// represented; the caller keeps within them (anything decoded already does).
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(p) => encode_with(p.as_ref(), version, buf),
        Packet::ConnAck(p) => encode_with(p, version, buf),
        Packet::Publish(p) => encode_with(p, version, buf),
        Packet::PubAck(p) => encode_with(&Ack(AckKind::PubAck, p), version, buf),
        Packet::PubRec(p) => encode_with(&Ack(AckKind::PubRec, p), version, buf),
        Packet::PubRel(p) => encode_with(&Ack(AckKind::PubRel, p), version, buf),
        Packet::PubComp(p) => encode_with(&Ack(AckKind::PubComp, p), version, buf),
        Packet::Subscribe(p) => encode_with(p, version, buf),
        Packet::SubAck(p) => encode_with(p, version, buf),
        Packet::Unsubscribe(p) => encode_with(p, version, buf),
        Packet::UnsubAck(p) => encode_with(p, version, buf),
        Packet::PingReq => encode_with(&ping::Ping::Req, version, buf),
        Packet::PingResp => encode_with(&ping::Ping::Resp, version, buf),
        Packet::Disconnect(p) => encode_with(p, version, buf),
        Packet::Auth(_) if version == ProtocolVersion::V311 => {}
        Packet::Auth(p) => encode_with(p, version, buf),
    }
}

/// Exact number of bytes [`encode`] would append, used to honour a peer's Maximum Packet Size
/// before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(p) => len_with(p.as_ref(), version),
        Packet::ConnAck(p) => len_with(p, version),
        Packet::Publish(p) => len_with(p, version),
        Packet::PubAck(p) => len_with(&Ack(AckKind::PubAck, p), version),
        Packet::PubRec(p) => len_with(&Ack(AckKind::PubRec, p), version),
        Packet::PubRel(p) => len_with(&Ack(AckKind::PubRel, p), version),
        Packet::PubComp(p) => len_with(&Ack(AckKind::PubComp, p), version),
        Packet::Subscribe(p) => len_with(p, version),
        Packet::SubAck(p) => len_with(p, version),
        Packet::Unsubscribe(p) => len_with(p, version),
        Packet::UnsubAck(p) => len_with(p, version),
        Packet::PingReq => len_with(&ping::Ping::Req, version),
        Packet::PingResp => len_with(&ping::Ping::Resp, version),
        Packet::Disconnect(p) => len_with(p, version),
        Packet::Auth(_) if version == ProtocolVersion::V311 => 0,
        Packet::Auth(p) => len_with(p, version),
    }
}

/// How one packet type writes itself; the fixed header and lengths are derived generically.
pub(crate) trait Encode {
    /// First byte of the fixed header (type and flags).
    fn first_byte(&self, version: ProtocolVersion) -> u8;

    /// Writes everything after the fixed header.
    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S);
}

fn body_len<E: Encode + ?Sized>(packet: &E, version: ProtocolVersion) -> usize {
    let mut c = Counter(0);
    packet.write_body(version, &mut c);
    c.0
}

/// Encodes any packet type: measure the body, write the header, write the body.
pub(crate) fn encode_with<E: Encode + ?Sized>(
    packet: &E,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    let body = body_len(packet, version);
    // One reservation up front so the body never reallocates midway.
    buf.reserve(1 + varint_len(body) + body);
    header::write(buf, packet.first_byte(version), body);
    packet.write_body(version, buf);
}

/// Whole encoded size of any packet type.
pub(crate) fn len_with<E: Encode + ?Sized>(packet: &E, version: ProtocolVersion) -> usize {
    let body = body_len(packet, version);
    1 + varint_len(body) + body
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the per-packet unit tests.

    use super::*;

    /// Decodes `bytes` as a complete stream holding exactly one packet.
    pub(crate) fn decode_one(
        bytes: &[u8],
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        match decode(&mut buf, version, MAX_PACKET_SIZE)? {
            Some(p) => {
                assert!(buf.is_empty(), "decode left {} bytes", buf.len());
                Ok(p)
            }
            None => Err(DecodeError::MalformedPacket("test input is incomplete")),
        }
    }

    /// Encodes `packet`, checks `encoded_len`, decodes it back.
    pub(crate) fn round_trip(packet: &Packet, version: ProtocolVersion) -> Packet {
        let bytes = to_bytes(packet, version);
        match decode_one(&bytes, version) {
            Ok(p) => p,
            Err(e) => panic!("{packet:?} did not decode: {e}"),
        }
    }

    /// Encodes `packet` and checks `encoded_len` agrees.
    pub(crate) fn to_bytes(packet: &Packet, version: ProtocolVersion) -> BytesMut {
        let mut buf = BytesMut::new();
        encode(packet, version, &mut buf);
        assert_eq!(buf.len(), encoded_len(packet, version));
        buf
    }

    /// Shorthand for a string known to be valid.
    pub(crate) fn s(v: &str) -> Utf8 {
        Utf8::new(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    #[test]
    fn reason_codes() {
        assert_eq!(DecodeError::MalformedPacket("x").reason_code(), 0x81);
        assert_eq!(DecodeError::ProtocolError("x").reason_code(), 0x82);
        assert_eq!(
            DecodeError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
            0x95
        );
        assert_eq!(
            DecodeError::UnsupportedProtocolVersion(3).reason_code(),
            0x84
        );
        assert_eq!(DecodeError::TopicNameInvalid("x").reason_code(), 0x90);
        assert_eq!(DecodeError::TopicAliasInvalid.reason_code(), 0x94);
    }

    #[test]
    fn incomplete_input_leaves_buffer_untouched() {
        let bytes = to_bytes(
            &Packet::PubAck(PubAck {
                packet_id: 9,
                ..PubAck::default()
            }),
            V5,
        );
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode(&mut buf, V5, MAX_PACKET_SIZE), Ok(None));
            assert_eq!(&buf[..], &bytes[..cut]);
        }
    }

    #[test]
    fn consumes_exactly_one_packet() {
        let mut buf = BytesMut::new();
        encode(&Packet::PingReq, V311, &mut buf);
        encode(&Packet::PingResp, V311, &mut buf);
        buf.extend_from_slice(&[0x30]);
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PingReq)));
        assert_eq!(buf.len(), 3);
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, V311, 100), Ok(None));
        assert_eq!(&buf[..], &[0x30]);
    }

    #[test]
    fn too_large_is_reported_before_the_body_arrives() {
        // PUBLISH announcing 16,384 bytes of body, of which none has arrived.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
        assert_eq!(
            decode(&mut buf, V5, 1024),
            Err(DecodeError::PacketTooLarge {
                size: 4 + 16_384,
                max: 1024
            })
        );
        assert_eq!(buf.len(), 4);
        // The limit counts the fixed header: 2 + 3 = 5 bytes fits 5, not 4.
        let packet = [0x40, 0x02, 0x00, 0x01];
        assert!(matches!(
            decode(&mut BytesMut::from(&packet[..]), V311, 3),
            Err(DecodeError::PacketTooLarge { size: 4, max: 3 })
        ));
        assert!(decode(&mut BytesMut::from(&packet[..]), V311, 4).is_ok());
    }

    #[test]
    fn remaining_length_over_four_bytes_is_malformed() {
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(
            decode(&mut buf, V5, MAX_PACKET_SIZE),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn bad_first_byte_is_rejected_immediately() {
        for first in [0x00u8, 0x11, 0x60, 0x80, 0xA0, 0xC1, 0x36] {
            let mut buf = BytesMut::from(&[first][..]);
            assert!(
                matches!(
                    decode(&mut buf, V5, MAX_PACKET_SIZE),
                    Err(DecodeError::MalformedPacket(_))
                ),
                "{first:#x}"
            );
        }
        assert!(matches!(
            decode(
                &mut BytesMut::from(&[0xF0, 0x00][..]),
                V311,
                MAX_PACKET_SIZE
            ),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn auth_is_not_encoded_for_311() {
        let auth = Packet::Auth(Auth::default());
        assert_eq!(encoded_len(&auth, V311), 0);
        assert!(to_bytes(&auth, V311).is_empty());
    }

    #[test]
    fn max_packet_size_constant() {
        assert_eq!(MAX_PACKET_SIZE, 268_435_460);
    }
}
