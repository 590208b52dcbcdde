//! The fixed header (MQTT 5 §2.1): packet type, per-type flag bits and the Remaining Length.
//!
//! The first byte is validated as soon as it arrives so that garbage is rejected without
//! waiting for (and buffering) a body whose length it announces.

use super::primitives::{Sink, malformed, peek_varint, protocol_error};
use super::{DecodeError, ProtocolVersion, QoS};

/// Packet type numbers (MQTT 5 §2.1.2).
pub(crate) mod kind {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
    pub(crate) const AUTH: u8 = 15;
}

/// The flag nibble PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry (MQTT 5 §2.1.3).
pub(crate) const FLAGS_0010: u8 = 0b0010;

/// A packet type with its flags checked; PUBLISH keeps its flags since they are data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketType {
    Connect,
    ConnAck,
    Publish { dup: bool, qos: QoS, retain: bool },
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

impl PacketType {
    /// Parses and validates the first byte of a packet.
    pub(crate) fn parse(byte: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
        let flags = byte & 0x0F;
        let expected = match byte >> 4 {
            kind::PUBLISH => return parse_publish_flags(flags),
            kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => FLAGS_0010,
            _ => 0,
        };
        if flags != expected {
            return Err(malformed(
                "reserved fixed header flags have the wrong value",
            ));
        }
        Ok(match byte >> 4 {
            kind::CONNECT => PacketType::Connect,
            kind::CONNACK => PacketType::ConnAck,
            kind::PUBACK => PacketType::PubAck,
            kind::PUBREC => PacketType::PubRec,
            kind::PUBREL => PacketType::PubRel,
            kind::PUBCOMP => PacketType::PubComp,
            kind::SUBSCRIBE => PacketType::Subscribe,
            kind::SUBACK => PacketType::SubAck,
            kind::UNSUBSCRIBE => PacketType::Unsubscribe,
            kind::UNSUBACK => PacketType::UnsubAck,
            kind::PINGREQ => PacketType::PingReq,
            kind::PINGRESP => PacketType::PingResp,
            kind::DISCONNECT => PacketType::Disconnect,
            // Type 15 is reserved in 3.1.1 (§2.2.1) and AUTH only exists in 5.0.
            kind::AUTH if version == ProtocolVersion::V5 => PacketType::Auth,
            kind::AUTH => return Err(malformed("packet type 15 is reserved in MQTT 3.1.1")),
            _ => return Err(malformed("packet type 0 is reserved")),
        })
    }
}

fn parse_publish_flags(flags: u8) -> Result<PacketType, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or_else(|| malformed("PUBLISH with QoS 3"))?;
    if qos == QoS::AtMostOnce && dup {
        // [MQTT-3.3.1-2]. Rejected here, before the body arrives, like the other flag errors.
        return Err(malformed("PUBLISH with QoS 0 and DUP set"));
    }
    Ok(PacketType::Publish { dup, qos, retain })
}

/// A fixed header read from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub(crate) packet_type: PacketType,
    /// Length of the body that follows the header.
    pub(crate) remaining_len: usize,
    /// Length of the header itself (2 to 5 bytes).
    pub(crate) header_len: usize,
}

impl FixedHeader {
    /// Reads a fixed header from the front of `buf` without consuming anything; `Ok(None)`
    /// when the Remaining Length is not complete yet.
    pub(crate) fn peek(
        buf: &[u8],
        version: ProtocolVersion,
    ) -> Result<Option<FixedHeader>, DecodeError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let packet_type = PacketType::parse(first, version)?;
        Ok(peek_varint(rest)?.map(|(remaining_len, used)| FixedHeader {
            packet_type,
            remaining_len,
            header_len: 1 + used,
        }))
    }
}

/// Writes a fixed header.
pub(crate) fn write<S: Sink>(s: &mut S, first_byte: u8, remaining_len: usize) {
    s.put_byte(first_byte);
    s.put_varint(remaining_len);
}

/// Rejects packet identifier 0 where one is required ([MQTT-2.2.1-3]); acknowledgements echo
/// such an identifier, so 0 is never valid in them either.
pub(crate) fn check_packet_id(id: u16) -> Result<u16, DecodeError> {
    if id == 0 {
        Err(protocol_error("packet identifier 0"))
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::{V5, V311};

    #[test]
    fn flags_must_match_the_type() {
        for t in [1u8, 2, 4, 5, 7, 9, 11, 12, 13, 14, 15] {
            for flags in 1..16u8 {
                assert!(
                    matches!(
                        PacketType::parse(t << 4 | flags, V5),
                        Err(DecodeError::MalformedPacket(_))
                    ),
                    "type {t} flags {flags}"
                );
            }
        }
        for t in [6u8, 8, 10] {
            for flags in (0..16u8).filter(|f| *f != 0b0010) {
                assert!(matches!(
                    PacketType::parse(t << 4 | flags, V311),
                    Err(DecodeError::MalformedPacket(_))
                ));
            }
            assert!(PacketType::parse(t << 4 | 0b0010, V311).is_ok());
        }
    }

    #[test]
    fn reserved_types() {
        assert!(matches!(
            PacketType::parse(0x00, V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            PacketType::parse(0xF0, V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert_eq!(PacketType::parse(0xF0, V5), Ok(PacketType::Auth));
    }

    #[test]
    fn publish_flags() {
        assert!(matches!(
            PacketType::parse(0x36, V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            PacketType::parse(0x38, V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert_eq!(
            PacketType::parse(0x3D, V5),
            Ok(PacketType::Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true
            })
        );
    }

    #[test]
    fn packet_id_zero_is_a_protocol_error() {
        assert_eq!(
            check_packet_id(0),
            Err(DecodeError::ProtocolError("packet identifier 0"))
        );
        assert_eq!(check_packet_id(7), Ok(7));
    }
}
