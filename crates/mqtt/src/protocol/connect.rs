//! CONNECT (MQTT 3.1.1 §3.1, MQTT 5 §3.1). Self-describing: the protocol level in the packet,
//! not the caller's idea of the version, picks the layout, both when decoding and encoding.

use super::header::kind;
use super::primitives::{Reader, Sink, malformed, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{
    Connect, ConnectProperties, DecodeError, Encode, LastWill, ProtocolVersion, QoS, WillProperties,
};

const PROTOCOL_NAME: &[u8] = b"MQTT";
/// MQTT 3.1's name: recognised only to answer "unsupported protocol version" rather than
/// dropping the connection.
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";
const LEVEL_V311: u8 = 4;
const LEVEL_V5: u8 = 5;

/// Connect flag bits (MQTT 5 §3.1.2.3).
mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const CLEAN_START: u8 = 0x02;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USERNAME: u8 = 0x80;
}

impl Connect {
    /// Decodes a CONNECT body whatever version the connection is assumed to speak.
    pub(crate) fn decode(mut r: Reader) -> Result<Connect, DecodeError> {
        // The name is compared as bytes: only two values mean anything, so there is no need to
        // validate it as a string first.
        let name = r.binary()?;
        let level = r.u8()?;
        let protocol = match (&name[..], level) {
            (PROTOCOL_NAME, LEVEL_V311) => ProtocolVersion::V311,
            (PROTOCOL_NAME, LEVEL_V5) => ProtocolVersion::V5,
            (PROTOCOL_NAME | PROTOCOL_NAME_V31, _) => {
                return Err(DecodeError::UnsupportedProtocolVersion(level));
            }
            // [MQTT-3.1.2-1]: not MQTT at all, so no CONNACK is owed.
            _ => return Err(malformed("unknown protocol name")),
        };
        let v5 = protocol == ProtocolVersion::V5;

        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(malformed("CONNECT reserved flag is set")); // [MQTT-3.1.2-3]
        }
        let has_will = flags & flag::WILL != 0;
        let will_qos = QoS::from_u8((flags >> flag::WILL_QOS_SHIFT) & 0b11)
            .ok_or_else(|| malformed("will QoS 3"))?;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]
            return Err(malformed("will QoS or retain set without a will"));
        }
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        if !v5 && has_password && !has_username {
            // [MQTT-3.1.2-22]; MQTT 5 allows a password alone.
            return Err(malformed("password without user name"));
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            ConnectProperties::decode(&mut r)?
        } else {
            ConnectProperties::default()
        };

        let client_id = r.utf8()?;
        let will = if has_will {
            let properties = if v5 {
                WillProperties::decode(&mut r)?
            } else {
                WillProperties::default()
            };
            let topic = r.utf8()?;
            if topic.is_empty() || crate::topic::has_wildcard(&topic) {
                return Err(DecodeError::TopicNameInvalid(
                    "will topic is empty or has a wildcard",
                ));
            }
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username { Some(r.utf8()?) } else { None };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.end()?;

        Ok(Connect {
            protocol,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= flag::WILL | (will.qos as u8) << flag::WILL_QOS_SHIFT;
            if will.retain {
                flags |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= flag::USERNAME;
        }
        if self.password.is_some() {
            flags |= flag::PASSWORD;
        }
        flags
    }
}

impl Encode for Connect {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::CONNECT << 4
    }

    /// Writes the layout of `self.protocol`; the version argument is ignored (self-describing).
    fn write_body<S: Sink>(&self, _: ProtocolVersion, s: &mut S) {
        let v5 = self.protocol == ProtocolVersion::V5;
        s.put_binary(PROTOCOL_NAME);
        s.put_byte(if v5 { LEVEL_V5 } else { LEVEL_V311 });
        s.put_byte(self.flags());
        s.put_two(self.keep_alive);
        if v5 {
            properties::write(&self.properties, s);
        }
        s.put_utf8(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                properties::write(&will.properties, s);
            }
            s.put_utf8(&will.topic);
            s.put_binary(&will.payload);
        }
        if let Some(username) = &self.username {
            s.put_utf8(username);
        }
        if let Some(password) = &self.password {
            s.put_binary(password);
        }
    }
}

impl ConnectProperties {
    fn decode(r: &mut Reader) -> Result<ConnectProperties, DecodeError> {
        let mut out = ConnectProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::SessionExpiryInterval(v) => {
                    set_once(&mut out.session_expiry_interval, v)?
                }
                Property::ReceiveMaximum(v) => set_once(&mut out.receive_maximum, v)?,
                Property::MaximumPacketSize(v) => set_once(&mut out.maximum_packet_size, v)?,
                Property::TopicAliasMaximum(v) => set_once(&mut out.topic_alias_maximum, v)?,
                Property::RequestResponseInformation(v) => {
                    set_once(&mut out.request_response_information, v)?;
                }
                Property::RequestProblemInformation(v) => {
                    set_once(&mut out.request_problem_information, v)?;
                }
                Property::User(k, v) => out.user_properties.push((k, v)),
                Property::AuthenticationMethod(v) => set_once(&mut out.authentication_method, v)?,
                Property::AuthenticationData(v) => set_once(&mut out.authentication_data, v)?,
                _ => return Err(not_allowed()),
            }
        }
        if out.authentication_data.is_some() && out.authentication_method.is_none() {
            // §3.1.2.11.10
            return Err(protocol_error(
                "authentication data without authentication method",
            ));
        }
        Ok(out)
    }
}

impl PropertySet for ConnectProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        properties::put_u16(s, id::RECEIVE_MAXIMUM, self.receive_maximum);
        properties::put_u32(s, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        properties::put_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        properties::put_u8(
            s,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        properties::put_u8(
            s,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        properties::put_user(s, &self.user_properties);
        properties::put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        properties::put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
    }
}

impl WillProperties {
    fn decode(r: &mut Reader) -> Result<WillProperties, DecodeError> {
        let mut out = WillProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::WillDelayInterval(v) => set_once(&mut out.will_delay_interval, v)?,
                Property::PayloadFormatIndicator(v) => {
                    set_once(&mut out.payload_format_indicator, v)?
                }
                Property::MessageExpiryInterval(v) => {
                    set_once(&mut out.message_expiry_interval, v)?
                }
                Property::ContentType(v) => set_once(&mut out.content_type, v)?,
                Property::ResponseTopic(v) => set_once(&mut out.response_topic, v)?,
                Property::CorrelationData(v) => set_once(&mut out.correlation_data, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for WillProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_u32(s, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        properties::put_u8(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        properties::put_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        properties::put_utf8(s, id::CONTENT_TYPE, self.content_type.as_ref());
        properties::put_utf8(s, id::RESPONSE_TOPIC, self.response_topic.as_ref());
        properties::put_binary(s, id::CORRELATION_DATA, self.correlation_data.as_ref());
        properties::put_user(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn minimal(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: s("c1"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    /// A v3.1.1 CONNECT with the given flags and payload.
    fn v311(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = b"\x00\x04MQTT\x04".to_vec();
        body.push(flags);
        body.extend_from_slice(&[0x00, 0x3C]);
        body.extend_from_slice(payload);
        let mut out = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
        out.extend(body);
        out
    }

    #[test]
    fn v311_minimal_bytes() {
        let bytes = to_bytes(&Packet::Connect(Box::new(minimal(V311))), V5);
        assert_eq!(
            &bytes[..],
            b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"
        );
        // Decoded as 3.1.1 even though the caller assumed v5.
        assert_eq!(
            decode_one(&bytes, V5),
            Ok(Packet::Connect(Box::new(minimal(V311))))
        );
    }

    #[test]
    fn full_round_trips() {
        let c = Connect {
            clean_start: false,
            will: Some(LastWill {
                topic: s("status/c1"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: WillProperties {
                    will_delay_interval: Some(5),
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(10),
                    content_type: Some(s("text/plain")),
                    response_topic: Some(s("r")),
                    correlation_data: Some(Bytes::from_static(b"x")),
                    user_properties: vec![(s("w"), s("1"))],
                },
            }),
            username: Some(s("u")),
            password: Some(Bytes::from_static(b"\x00\xffpw")),
            properties: ConnectProperties {
                session_expiry_interval: Some(u32::MAX),
                receive_maximum: Some(10),
                maximum_packet_size: Some(1 << 20),
                topic_alias_maximum: Some(0),
                request_response_information: Some(1),
                request_problem_information: Some(0),
                user_properties: vec![(s("k"), s("v"))],
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"data")),
            },
            ..minimal(V5)
        };
        let p = Packet::Connect(Box::new(c.clone()));
        assert_eq!(
            round_trip(&p, V311),
            p,
            "CONNECT is encoded for its own protocol level"
        );
        // The same connect as 3.1.1 loses the properties only.
        let mut old = c;
        old.protocol = V311;
        let decoded = round_trip(&Packet::Connect(Box::new(old.clone())), V5);
        old.properties = ConnectProperties::default();
        if let Some(w) = old.will.as_mut() {
            w.properties = WillProperties::default();
        }
        assert_eq!(decoded, Packet::Connect(Box::new(old)));
    }

    #[test]
    fn unsupported_levels() {
        let mqtt3 = b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c";
        assert_eq!(
            decode_one(mqtt3, V5),
            Err(DecodeError::UnsupportedProtocolVersion(3))
        );
        let level6 = b"\x10\x0a\x00\x04MQTT\x06\x02\x00\x3c";
        assert_eq!(
            decode_one(level6, V5),
            Err(DecodeError::UnsupportedProtocolVersion(6))
        );
        let level3 = b"\x10\x0a\x00\x04MQTT\x03\x02\x00\x3c";
        assert_eq!(
            decode_one(level3, V311),
            Err(DecodeError::UnsupportedProtocolVersion(3))
        );
        assert_eq!(
            DecodeError::UnsupportedProtocolVersion(3).reason_code(),
            0x84
        );
        let http = b"\x10\x0a\x00\x04HTTP\x04\x02\x00\x3c";
        assert_eq!(
            decode_one(http, V5),
            Err(malformed("unknown protocol name"))
        );
    }

    #[test]
    fn reserved_flag_is_malformed() {
        assert_eq!(
            decode_one(&v311(0x03, b"\x00\x00"), V5),
            Err(malformed("CONNECT reserved flag is set"))
        );
    }

    #[test]
    fn will_flags_must_be_consistent() {
        let no_will = Err(malformed("will QoS or retain set without a will"));
        assert_eq!(decode_one(&v311(0x02 | 0x08, b"\x00\x00"), V5), no_will);
        assert_eq!(decode_one(&v311(0x02 | 0x20, b"\x00\x00"), V5), no_will);
        assert_eq!(
            decode_one(&v311(0x02 | 0x04 | 0x18, b"\x00\x00\x00\x01t\x00\x00"), V5),
            Err(malformed("will QoS 3"))
        );
        let ok = decode_one(&v311(0x04 | 0x10, b"\x00\x00\x00\x01t\x00\x01m"), V5);
        assert!(
            matches!(ok, Ok(Packet::Connect(c)) if c.will.as_ref().map(|w| w.qos) == Some(QoS::ExactlyOnce))
        );
        assert!(matches!(
            decode_one(&v311(0x04, b"\x00\x00\x00\x01#\x00\x00"), V5),
            Err(DecodeError::TopicNameInvalid(_))
        ));
    }

    #[test]
    fn password_without_username() {
        assert_eq!(
            decode_one(&v311(0x40, b"\x00\x00\x00\x02pw"), V5),
            Err(malformed("password without user name"))
        );
        // MQTT 5 allows it.
        let c = Connect {
            password: Some(Bytes::from_static(b"pw")),
            ..minimal(V5)
        };
        let p = Packet::Connect(Box::new(c));
        assert_eq!(round_trip(&p, V5), p);
    }

    #[test]
    fn trailing_and_truncated() {
        assert_eq!(
            decode_one(&v311(0x02, b"\x00\x00\x00"), V5),
            Err(malformed("trailing bytes after the packet's fields"))
        );
        assert!(matches!(
            decode_one(&v311(0x82, b"\x00\x00"), V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(b"\x10\x03\x00\x04M", V5),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn v5_property_rules() {
        // Flags 0x02, keep alive 60, properties, empty client id.
        let v5 = |props: &[u8]| {
            let mut body = b"\x00\x04MQTT\x05\x02\x00\x3c".to_vec();
            body.push(u8::try_from(props.len()).unwrap_or(0));
            body.extend_from_slice(props);
            body.extend_from_slice(b"\x00\x00");
            let mut out = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
            out.extend(body);
            decode_one(&out, V311)
        };
        assert!(v5(b"\x21\x00\x01\x27\x00\x00\x00\x01").is_ok());
        assert_eq!(
            v5(b"\x21\x00\x00"),
            Err(protocol_error("receive maximum 0"))
        );
        assert_eq!(
            v5(b"\x27\x00\x00\x00\x00"),
            Err(protocol_error("maximum packet size 0"))
        );
        assert!(matches!(
            v5(b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01"),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            v5(b"\x19\x02"),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            v5(b"\x17\x02"),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(v5(b"\x23\x00\x01"), Err(not_allowed()));
        assert_eq!(
            v5(b"\x16\x00\x00"),
            Err(protocol_error(
                "authentication data without authentication method"
            ))
        );
        assert!(v5(b"\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01v").is_ok());
        // A property block longer than the packet.
        assert!(matches!(
            v5(b"\x11\x00"),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
