//! SUBACK (MQTT 3.1.1 §3.9, MQTT 5 §3.9): one reason code per requested filter, in order.

use super::header::{check_packet_id, kind};
use super::primitives::{Reader, Sink, protocol_error};
use super::properties;
use super::{AckProperties, DecodeError, Encode, ProtocolVersion, SubAck, reason};

/// The one failure code 3.1.1 has.
const V311_FAILURE: u8 = 0x80;

/// Reason codes SUBACK may carry (MQTT 5 §3.9.3).
fn allowed(code: u8, version: ProtocolVersion) -> bool {
    use reason::*;
    match version {
        ProtocolVersion::V311 => matches!(
            code,
            GRANTED_QOS_0 | GRANTED_QOS_1 | GRANTED_QOS_2 | V311_FAILURE
        ),
        ProtocolVersion::V5 => matches!(
            code,
            GRANTED_QOS_0
                | GRANTED_QOS_1
                | GRANTED_QOS_2
                | UNSPECIFIED_ERROR
                | IMPLEMENTATION_SPECIFIC_ERROR
                | NOT_AUTHORIZED
                | TOPIC_FILTER_INVALID
                | PACKET_IDENTIFIER_IN_USE
                | QUOTA_EXCEEDED
                | SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                | SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
                | WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        ),
    }
}

impl SubAck {
    /// Decodes a SUBACK body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = check_packet_id(r.u16()?)?;
        let properties = match version {
            ProtocolVersion::V5 => AckProperties::decode(&mut r)?,
            ProtocolVersion::V311 => AckProperties::default(),
        };
        let reasons = r.rest().to_vec();
        if reasons.is_empty() {
            return Err(protocol_error("SUBACK without reason codes"));
        }
        if !reasons.iter().all(|&code| allowed(code, version)) {
            return Err(protocol_error("reason code not valid for SUBACK"));
        }
        Ok(SubAck {
            packet_id,
            reasons,
            properties,
        })
    }
}

impl Encode for SubAck {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::SUBACK << 4
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.put_two(self.packet_id);
        match version {
            ProtocolVersion::V5 => {
                properties::write(&self.properties, s);
                s.put_bytes(&self.reasons);
            }
            ProtocolVersion::V311 => {
                for &code in &self.reasons {
                    // Every MQTT 5 failure code collapses to 3.1.1's single failure code.
                    s.put_byte(if code >= V311_FAILURE {
                        V311_FAILURE
                    } else {
                        code
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn suback(reasons: &[u8]) -> SubAck {
        SubAck {
            packet_id: 3,
            reasons: reasons.to_vec(),
            properties: AckProperties::default(),
        }
    }

    #[test]
    fn v311_maps_failures_to_0x80() {
        let p = Packet::SubAck(SubAck {
            properties: AckProperties {
                reason_string: Some(s("no")),
                user_properties: vec![],
            },
            ..suback(&[0, 1, 2, 0x87, 0xA2])
        });
        let bytes = to_bytes(&p, V311);
        assert_eq!(&bytes[..], &[0x90, 0x07, 0x00, 0x03, 0, 1, 2, 0x80, 0x80]);
        assert_eq!(
            decode_one(&bytes, V311),
            Ok(Packet::SubAck(suback(&[0, 1, 2, 0x80, 0x80])))
        );
    }

    #[test]
    fn v5_round_trip() {
        let mut sa = suback(&[0, 0x8F, 0x9E, 0xA1, 2]);
        sa.properties.user_properties = vec![(s("x"), s("y"))];
        let p = Packet::SubAck(sa);
        assert_eq!(round_trip(&p, V5), p);
    }

    #[test]
    fn invalid_codes_and_empty() {
        assert!(matches!(
            decode_one(&[0x90, 0x03, 0x00, 0x01, 0x87], V311),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            decode_one(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x03], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(&[0x90, 0x02, 0x00, 0x01], V311),
            Err(protocol_error("SUBACK without reason codes"))
        );
        assert_eq!(
            decode_one(&[0x90, 0x03, 0x00, 0x01, 0x00], V5),
            Err(protocol_error("SUBACK without reason codes"))
        );
        assert_eq!(
            decode_one(&[0x90, 0x03, 0x00, 0x00, 0x00], V311),
            Err(protocol_error("packet identifier 0"))
        );
    }
}
