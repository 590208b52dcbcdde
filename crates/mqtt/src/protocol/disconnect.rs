//! DISCONNECT (MQTT 3.1.1 §3.14, MQTT 5 §3.14). Empty in 3.1.1. In MQTT 5 the reason code and
//! properties may be left out: remaining length 0 means "normal disconnection".

use super::header::kind;
use super::primitives::{Reader, Sink, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{DecodeError, Disconnect, DisconnectProperties, Encode, ProtocolVersion, reason};

/// Reason codes DISCONNECT may carry (MQTT 5 §3.14.2.1).
fn allowed(code: u8) -> bool {
    use reason::*;
    matches!(
        code,
        NORMAL_DISCONNECTION
            | DISCONNECT_WITH_WILL
            | UNSPECIFIED_ERROR
            | MALFORMED_PACKET
            | PROTOCOL_ERROR
            | IMPLEMENTATION_SPECIFIC_ERROR
            | NOT_AUTHORIZED
            | SERVER_BUSY
            | SERVER_SHUTTING_DOWN
            | KEEP_ALIVE_TIMEOUT
            | SESSION_TAKEN_OVER
            | TOPIC_FILTER_INVALID
            | TOPIC_NAME_INVALID
            | RECEIVE_MAXIMUM_EXCEEDED
            | TOPIC_ALIAS_INVALID
            | PACKET_TOO_LARGE
            | MESSAGE_RATE_TOO_HIGH
            | QUOTA_EXCEEDED
            | ADMINISTRATIVE_ACTION
            | PAYLOAD_FORMAT_INVALID
            | RETAIN_NOT_SUPPORTED
            | QOS_NOT_SUPPORTED
            | USE_ANOTHER_SERVER
            | SERVER_MOVED
            | SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            | CONNECTION_RATE_EXCEEDED
            | MAXIMUM_CONNECT_TIME
            | SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
            | WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
    )
}

impl Disconnect {
    /// Decodes a DISCONNECT body.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut out = Disconnect::default();
        if version == ProtocolVersion::V5 && !r.is_empty() {
            out.reason = r.u8()?;
            if !allowed(out.reason) {
                return Err(protocol_error("reason code not valid for DISCONNECT"));
            }
            // "If the Remaining Length is less than 2, a value of 0 is used" for the properties.
            if !r.is_empty() {
                out.properties = DisconnectProperties::decode(&mut r)?;
            }
        }
        r.end()?;
        Ok(out)
    }
}

impl Encode for Disconnect {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::DISCONNECT << 4
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        if version == ProtocolVersion::V311 {
            return;
        }
        let props_len = self.properties.wire_len();
        if self.reason == reason::NORMAL_DISCONNECTION && props_len == 0 {
            return;
        }
        s.put_byte(self.reason);
        if props_len > 0 {
            properties::write(&self.properties, s);
        }
    }
}

impl DisconnectProperties {
    fn decode(r: &mut Reader) -> Result<DisconnectProperties, DecodeError> {
        let mut out = DisconnectProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::SessionExpiryInterval(v) => {
                    set_once(&mut out.session_expiry_interval, v)?
                }
                Property::ReasonString(v) => set_once(&mut out.reason_string, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                Property::ServerReference(v) => set_once(&mut out.server_reference, v)?,
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for DisconnectProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        properties::put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        properties::put_user(s, &self.user_properties);
        properties::put_utf8(s, id::SERVER_REFERENCE, self.server_reference.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    #[test]
    fn short_forms() {
        let normal = Packet::Disconnect(Disconnect::default());
        assert_eq!(&to_bytes(&normal, V5)[..], &[0xE0, 0x00]);
        assert_eq!(decode_one(&[0xE0, 0x00], V5), Ok(normal));
        let with_will = Packet::Disconnect(Disconnect {
            reason: 0x04,
            ..Disconnect::default()
        });
        assert_eq!(&to_bytes(&with_will, V5)[..], &[0xE0, 0x01, 0x04]);
        assert_eq!(decode_one(&[0xE0, 0x01, 0x04], V5), Ok(with_will));
        assert_eq!(
            decode_one(&[0xE0, 0x02, 0x00, 0x00], V5),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn v5_round_trip_and_v311_drop() {
        let p = Packet::Disconnect(Disconnect {
            reason: reason::SERVER_MOVED,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some(s("moving")),
                user_properties: vec![(s("a"), s("b"))],
                server_reference: Some(s("elsewhere")),
            },
        });
        assert_eq!(round_trip(&p, V5), p);
        assert_eq!(&to_bytes(&p, V311)[..], &[0xE0, 0x00]);
    }

    #[test]
    fn rules() {
        assert!(matches!(
            decode_one(&[0xE0, 0x01, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0xE0, 0x01, 0x05], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(&[0xE0, 0x04, 0x00, 0x02, 0x24, 0x01], V5),
            Err(not_allowed())
        );
        assert!(matches!(
            decode_one(&[0xE0, 0x03, 0x00, 0x00, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0xE1, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
