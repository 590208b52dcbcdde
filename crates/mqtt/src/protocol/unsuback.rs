//! UNSUBACK (MQTT 3.1.1 §3.11, MQTT 5 §3.11). 3.1.1 has no payload; MQTT 5 has one reason code
//! per filter.

use super::header::{check_packet_id, kind};
use super::primitives::{Reader, Sink, protocol_error};
use super::properties;
use super::{AckProperties, DecodeError, Encode, ProtocolVersion, UnsubAck, reason};

/// Reason codes UNSUBACK may carry (MQTT 5 §3.11.3).
fn allowed(code: u8) -> bool {
    use reason::*;
    matches!(
        code,
        SUCCESS
            | NO_SUBSCRIPTION_EXISTED
            | UNSPECIFIED_ERROR
            | IMPLEMENTATION_SPECIFIC_ERROR
            | NOT_AUTHORIZED
            | TOPIC_FILTER_INVALID
            | PACKET_IDENTIFIER_IN_USE
    )
}

impl UnsubAck {
    /// Decodes an UNSUBACK body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        let packet_id = check_packet_id(r.u16()?)?;
        if version == ProtocolVersion::V311 {
            r.end()?;
            return Ok(UnsubAck {
                packet_id,
                reasons: Vec::new(),
                properties: AckProperties::default(),
            });
        }
        let properties = AckProperties::decode(&mut r)?;
        let reasons = r.rest().to_vec();
        if reasons.is_empty() {
            return Err(protocol_error("UNSUBACK without reason codes"));
        }
        if !reasons.iter().all(|&code| allowed(code)) {
            return Err(protocol_error("reason code not valid for UNSUBACK"));
        }
        Ok(UnsubAck {
            packet_id,
            reasons,
            properties,
        })
    }
}

impl Encode for UnsubAck {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::UNSUBACK << 4
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.put_two(self.packet_id);
        if version == ProtocolVersion::V5 {
            properties::write(&self.properties, s);
            s.put_bytes(&self.reasons);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    #[test]
    fn v311_has_no_payload() {
        let p = Packet::UnsubAck(UnsubAck {
            packet_id: 5,
            reasons: vec![0x11],
            properties: AckProperties {
                reason_string: Some(s("r")),
                user_properties: vec![],
            },
        });
        let bytes = to_bytes(&p, V311);
        assert_eq!(&bytes[..], &[0xB0, 0x02, 0x00, 0x05]);
        assert_eq!(
            decode_one(&bytes, V311),
            Ok(Packet::UnsubAck(UnsubAck {
                packet_id: 5,
                reasons: vec![],
                properties: AckProperties::default()
            }))
        );
        assert_eq!(round_trip(&p, V5), p);
        assert!(matches!(
            decode_one(&[0xB0, 0x03, 0x00, 0x05, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn v5_rules() {
        assert_eq!(
            decode_one(&[0xB0, 0x03, 0x00, 0x05, 0x00], V5),
            Err(protocol_error("UNSUBACK without reason codes"))
        );
        assert!(matches!(
            decode_one(&[0xB0, 0x04, 0x00, 0x05, 0x00, 0x01], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(decode_one(&[0xB0, 0x05, 0x00, 0x05, 0x00, 0x00, 0x91], V5).is_ok());
    }
}
