//! CONNACK (MQTT 3.1.1 §3.2, MQTT 5 §3.2). The struct always holds an MQTT 5 reason code; 3.1.1
//! return codes are mapped on the way in and out.

use super::header::kind;
use super::primitives::{Reader, Sink, malformed, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{ConnAck, ConnAckProperties, DecodeError, Encode, ProtocolVersion, reason};

/// The only Connect Acknowledge Flags bit that is not reserved.
const SESSION_PRESENT: u8 = 0x01;

/// MQTT 5 reason code → 3.1.1 return code (3.1.1 §3.2.2.3). Codes without an equivalent become
/// 3, "server unavailable", the generic refusal.
fn to_v311(code: u8) -> u8 {
    match code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::BAD_USERNAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED => 5,
        _ => 3,
    }
}

/// 3.1.1 return code → MQTT 5 reason code; 6..=255 are reserved.
fn from_v311(code: u8) -> Result<u8, DecodeError> {
    Ok(match code {
        0 => reason::SUCCESS,
        1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        3 => reason::SERVER_UNAVAILABLE,
        4 => reason::BAD_USERNAME_OR_PASSWORD,
        5 => reason::NOT_AUTHORIZED,
        _ => return Err(protocol_error("reserved CONNACK return code")),
    })
}

/// Reason codes CONNACK may carry (MQTT 5 §3.2.2.2).
fn allowed_v5(code: u8) -> bool {
    use reason::*;
    matches!(
        code,
        SUCCESS
            | UNSPECIFIED_ERROR
            | MALFORMED_PACKET
            | PROTOCOL_ERROR
            | IMPLEMENTATION_SPECIFIC_ERROR
            | UNSUPPORTED_PROTOCOL_VERSION
            | CLIENT_IDENTIFIER_NOT_VALID
            | BAD_USERNAME_OR_PASSWORD
            | NOT_AUTHORIZED
            | SERVER_UNAVAILABLE
            | SERVER_BUSY
            | BANNED
            | BAD_AUTHENTICATION_METHOD
            | TOPIC_NAME_INVALID
            | PACKET_TOO_LARGE
            | QUOTA_EXCEEDED
            | PAYLOAD_FORMAT_INVALID
            | RETAIN_NOT_SUPPORTED
            | QOS_NOT_SUPPORTED
            | USE_ANOTHER_SERVER
            | SERVER_MOVED
            | CONNECTION_RATE_EXCEEDED
    )
}

impl ConnAck {
    /// Decodes a CONNACK body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        if flags & !SESSION_PRESENT != 0 {
            return Err(malformed("CONNACK reserved flags are set"));
        }
        let code = r.u8()?;
        let (reason, properties) = match version {
            ProtocolVersion::V311 => (from_v311(code)?, ConnAckProperties::default()),
            ProtocolVersion::V5 if !allowed_v5(code) => {
                return Err(protocol_error("reason code not valid for CONNACK"));
            }
            ProtocolVersion::V5 => (code, ConnAckProperties::decode(&mut r)?),
        };
        let session_present = flags & SESSION_PRESENT != 0;
        if session_present && reason != reason::SUCCESS {
            // [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6] (5)
            return Err(protocol_error("session present on a refused connection"));
        }
        r.end()?;
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }
}

impl Encode for ConnAck {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::CONNACK << 4
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        // Session present is only meaningful, and only allowed, on success.
        s.put_byte(u8::from(
            self.session_present && self.reason == reason::SUCCESS,
        ));
        match version {
            ProtocolVersion::V311 => s.put_byte(to_v311(self.reason)),
            ProtocolVersion::V5 => {
                s.put_byte(self.reason);
                properties::write(&self.properties, s);
            }
        }
    }
}

impl ConnAckProperties {
    fn decode(r: &mut Reader) -> Result<ConnAckProperties, DecodeError> {
        let mut out = ConnAckProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::SessionExpiryInterval(v) => {
                    set_once(&mut out.session_expiry_interval, v)?
                }
                Property::ReceiveMaximum(v) => set_once(&mut out.receive_maximum, v)?,
                Property::MaximumQos(v) => set_once(&mut out.maximum_qos, v)?,
                Property::RetainAvailable(v) => set_once(&mut out.retain_available, v)?,
                Property::MaximumPacketSize(v) => set_once(&mut out.maximum_packet_size, v)?,
                Property::AssignedClientIdentifier(v) => {
                    set_once(&mut out.assigned_client_identifier, v)?;
                }
                Property::TopicAliasMaximum(v) => set_once(&mut out.topic_alias_maximum, v)?,
                Property::ReasonString(v) => set_once(&mut out.reason_string, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                Property::WildcardSubscriptionAvailable(v) => {
                    set_once(&mut out.wildcard_subscription_available, v)?;
                }
                Property::SubscriptionIdentifierAvailable(v) => {
                    set_once(&mut out.subscription_identifiers_available, v)?;
                }
                Property::SharedSubscriptionAvailable(v) => {
                    set_once(&mut out.shared_subscription_available, v)?;
                }
                Property::ServerKeepAlive(v) => set_once(&mut out.server_keep_alive, v)?,
                Property::ResponseInformation(v) => set_once(&mut out.response_information, v)?,
                Property::ServerReference(v) => set_once(&mut out.server_reference, v)?,
                Property::AuthenticationMethod(v) => set_once(&mut out.authentication_method, v)?,
                Property::AuthenticationData(v) => set_once(&mut out.authentication_data, v)?,
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for ConnAckProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        use properties::{put_binary, put_u8, put_u16, put_u32, put_user, put_utf8};
        put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_u8(s, id::MAXIMUM_QOS, self.maximum_qos);
        put_u8(s, id::RETAIN_AVAILABLE, self.retain_available);
        put_u32(s, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_utf8(
            s,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_ref(),
        );
        put_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        put_user(s, &self.user_properties);
        put_u8(
            s,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_u8(
            s,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_u8(
            s,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(s, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_utf8(
            s,
            id::RESPONSE_INFORMATION,
            self.response_information.as_ref(),
        );
        put_utf8(s, id::SERVER_REFERENCE, self.server_reference.as_ref());
        put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn refused(code: u8) -> Packet {
        Packet::ConnAck(ConnAck {
            reason: code,
            ..ConnAck::default()
        })
    }

    #[test]
    fn v311_return_code_mapping() {
        for (v5, v3) in [
            (0x00, 0),
            (0x84, 1),
            (0x85, 2),
            (0x86, 4),
            (0x87, 5),
            (0x88, 3),
            (0x89, 3),
            (0x80, 3),
            (0x9F, 3),
        ] {
            let bytes = to_bytes(&refused(v5), V311);
            assert_eq!(&bytes[..], &[0x20, 0x02, 0x00, v3], "reason {v5:#x}");
        }
        assert_eq!(
            decode_one(&[0x20, 0x02, 0x00, 0x03], V311),
            Ok(refused(0x88))
        );
        assert_eq!(
            decode_one(&[0x20, 0x02, 0x00, 0x01], V311),
            Ok(refused(0x84))
        );
        assert!(matches!(
            decode_one(&[0x20, 0x02, 0x00, 0x06], V311),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn session_present_rules() {
        let ok = Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        });
        assert_eq!(&to_bytes(&ok, V311)[..], &[0x20, 0x02, 0x01, 0x00]);
        assert_eq!(round_trip(&ok, V5), ok);
        assert!(matches!(
            decode_one(&[0x20, 0x02, 0x01, 0x05], V311),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            decode_one(&[0x20, 0x03, 0x01, 0x87, 0x00], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            decode_one(&[0x20, 0x02, 0x02, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        // The encoder never claims a session on refusal.
        let bad = Packet::ConnAck(ConnAck {
            session_present: true,
            reason: 0x87,
            ..ConnAck::default()
        });
        assert_eq!(&to_bytes(&bad, V5)[..], &[0x20, 0x03, 0x00, 0x87, 0x00]);
    }

    #[test]
    fn v5_round_trip_with_all_properties() {
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: reason::BANNED,
            properties: ConnAckProperties {
                session_expiry_interval: Some(1),
                receive_maximum: Some(2),
                maximum_qos: Some(1),
                retain_available: Some(0),
                maximum_packet_size: Some(3),
                assigned_client_identifier: Some(s("auto-1")),
                topic_alias_maximum: Some(4),
                reason_string: Some(s("go away")),
                user_properties: vec![(s("a"), s("b"))],
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(1),
                server_keep_alive: Some(5),
                response_information: Some(s("resp")),
                server_reference: Some(s("other:1883")),
                authentication_method: Some(s("m")),
                authentication_data: Some(Bytes::from_static(b"d")),
            },
        });
        assert_eq!(round_trip(&p, V5), p);
        assert_eq!(&to_bytes(&p, V311)[..], &[0x20, 0x02, 0x00, 0x03]);
    }

    #[test]
    fn v5_rules() {
        assert!(matches!(
            decode_one(&[0x20, 0x03, 0x00, 0x01, 0x00], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(decode_one(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x00], V5).is_ok());
        assert!(matches!(
            decode_one(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x01, 0x00], V5),
            Err(not_allowed())
        );
        assert!(matches!(
            decode_one(&[0x20, 0x02, 0x00, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0x20, 0x04, 0x00, 0x00, 0x00, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
