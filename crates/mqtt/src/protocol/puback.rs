//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5 §3.4–§3.7): one shape, four packet types.
//!
//! MQTT 5 lets the reason code and property length be left out ("short forms"): remaining
//! length 2 means reason 0 without properties, 3 means a reason without properties. The encoder
//! writes the shortest form; the decoder accepts all of them. 3.1.1 carries the packet id only.
//! Also home of [`AckProperties`], shared by the acknowledgements of SUBSCRIBE and UNSUBSCRIBE.

use super::header::{FLAGS_0010, check_packet_id, kind};
use super::primitives::{Reader, Sink, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{AckProperties, DecodeError, Encode, ProtocolVersion, PubAck, reason};

/// Which of the four acknowledgements a [`PubAck`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants are the packets' names"
)]
pub(crate) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

impl AckKind {
    fn first_byte(self) -> u8 {
        match self {
            AckKind::PubAck => kind::PUBACK << 4,
            AckKind::PubRec => kind::PUBREC << 4,
            AckKind::PubRel => kind::PUBREL << 4 | FLAGS_0010,
            AckKind::PubComp => kind::PUBCOMP << 4,
        }
    }

    /// Reason codes each packet may carry (MQTT 5 §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1).
    fn allows(self, code: u8) -> bool {
        match self {
            AckKind::PubAck | AckKind::PubRec => matches!(
                code,
                reason::SUCCESS
                    | reason::NO_MATCHING_SUBSCRIBERS
                    | reason::UNSPECIFIED_ERROR
                    | reason::IMPLEMENTATION_SPECIFIC_ERROR
                    | reason::NOT_AUTHORIZED
                    | reason::TOPIC_NAME_INVALID
                    | reason::PACKET_IDENTIFIER_IN_USE
                    | reason::QUOTA_EXCEEDED
                    | reason::PAYLOAD_FORMAT_INVALID
            ),
            AckKind::PubRel | AckKind::PubComp => {
                matches!(code, reason::SUCCESS | reason::PACKET_IDENTIFIER_NOT_FOUND)
            }
        }
    }
}

/// A [`PubAck`] together with the packet type it is sent as.
pub(crate) struct Ack<'a>(pub(crate) AckKind, pub(crate) &'a PubAck);

impl PubAck {
    /// Decodes the body of one of the four acknowledgements.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
        kind: AckKind,
    ) -> Result<PubAck, DecodeError> {
        let mut ack = PubAck {
            packet_id: check_packet_id(r.u16()?)?,
            ..PubAck::default()
        };
        if version == ProtocolVersion::V5 && !r.is_empty() {
            ack.reason = r.u8()?;
            if !kind.allows(ack.reason) {
                return Err(protocol_error("reason code not valid for this packet type"));
            }
            // "If the Remaining Length is less than 4 there is no Property Length".
            if !r.is_empty() {
                ack.properties = AckProperties::decode(&mut r)?;
            }
        }
        r.end()?;
        Ok(ack)
    }
}

impl Encode for Ack<'_> {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        self.0.first_byte()
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        let Ack(_, ack) = self;
        s.put_two(ack.packet_id);
        if version == ProtocolVersion::V311 {
            return;
        }
        let props_len = ack.properties.wire_len();
        if ack.reason == reason::SUCCESS && props_len == 0 {
            return;
        }
        s.put_byte(ack.reason);
        if props_len > 0 {
            properties::write(&ack.properties, s);
        }
    }
}

impl AckProperties {
    /// Reads a property block allowed to hold only a reason string and user properties.
    pub(crate) fn decode(r: &mut Reader) -> Result<AckProperties, DecodeError> {
        let mut out = AckProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::ReasonString(v) => set_once(&mut out.reason_string, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for AckProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        properties::put_user(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{DecodeError, Packet};
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn full() -> PubAck {
        PubAck {
            packet_id: 0x1234,
            reason: reason::QUOTA_EXCEEDED,
            properties: AckProperties {
                reason_string: Some(s("full")),
                user_properties: vec![(s("k"), s("v")), (s("k"), s("v2"))],
            },
        }
    }

    #[test]
    fn short_forms() {
        let ok = PubAck {
            packet_id: 7,
            ..PubAck::default()
        };
        assert_eq!(
            &to_bytes(&Packet::PubAck(ok.clone()), V5)[..],
            &[0x40, 0x02, 0x00, 0x07]
        );
        assert_eq!(
            &to_bytes(&Packet::PubRel(ok.clone()), V5)[..],
            &[0x62, 0x02, 0x00, 0x07]
        );
        let nf = PubAck {
            packet_id: 7,
            reason: reason::PACKET_IDENTIFIER_NOT_FOUND,
            ..PubAck::default()
        };
        assert_eq!(
            &to_bytes(&Packet::PubComp(nf.clone()), V5)[..],
            &[0x70, 0x03, 0x00, 0x07, 0x92]
        );
        assert_eq!(
            decode_one(&[0x70, 0x03, 0x00, 0x07, 0x92], V5),
            Ok(Packet::PubComp(nf))
        );
        // Reason and an empty property block, the long way round.
        assert_eq!(
            decode_one(&[0x50, 0x04, 0x00, 0x07, 0x00, 0x00], V5),
            Ok(Packet::PubRec(ok.clone()))
        );
        assert_eq!(
            decode_one(&[0x40, 0x02, 0x00, 0x07], V5),
            Ok(Packet::PubAck(ok))
        );
    }

    #[test]
    fn round_trips() {
        for p in [
            Packet::PubAck(full()),
            Packet::PubRec(full()),
            Packet::PubRel(PubAck {
                reason: 0x92,
                ..full()
            }),
            Packet::PubComp(PubAck {
                reason: 0,
                ..full()
            }),
        ] {
            assert_eq!(round_trip(&p, V5), p);
        }
    }

    #[test]
    fn v311_carries_only_the_packet_id() {
        let bytes = to_bytes(&Packet::PubRec(full()), V311);
        assert_eq!(&bytes[..], &[0x50, 0x02, 0x12, 0x34]);
        assert_eq!(
            decode_one(&bytes, V311),
            Ok(Packet::PubRec(PubAck {
                packet_id: 0x1234,
                ..PubAck::default()
            }))
        );
        assert!(matches!(
            decode_one(&[0x40, 0x03, 0x00, 0x01, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn invalid_reason_is_a_protocol_error() {
        assert!(matches!(
            decode_one(&[0x40, 0x03, 0x00, 0x01, 0x92], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            decode_one(&[0x62, 0x03, 0x00, 0x01, 0x10], V5),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn packet_id_zero_is_a_protocol_error() {
        assert_eq!(
            decode_one(&[0x40, 0x02, 0x00, 0x00], V311),
            Err(DecodeError::ProtocolError("packet identifier 0"))
        );
    }

    #[test]
    fn wrong_properties_and_trailing_bytes() {
        // Topic alias (0x23) is not an acknowledgement property.
        assert_eq!(
            decode_one(&[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01], V5),
            Err(not_allowed())
        );
        // Reason string twice.
        assert!(matches!(
            decode_one(
                &[
                    0x40, 0x0A, 0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00
                ],
                V5
            ),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            decode_one(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0x40, 0x01, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
