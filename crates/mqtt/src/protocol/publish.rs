//! PUBLISH (MQTT 5 §3.3): the hot path. Decoding slices the topic and payload out of the receive
//! buffer and leaves the property vectors unallocated when there are none; encoding writes
//! straight from a borrowed [`Publish`] so forwarding never clones one into a [`Packet`].

use bytes::BytesMut;

use super::header::{check_packet_id, kind};
use super::primitives::{Reader, Sink, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{
    DecodeError, Encode, Packet, ProtocolVersion, Publish, PublishProperties, QoS, encode_with,
    len_with,
};

impl Publish {
    /// Decodes a PUBLISH body; `dup`, `qos` and `retain` come from the validated fixed header.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
        dup: bool,
        qos: QoS,
        retain: bool,
    ) -> Result<Publish, DecodeError> {
        let topic = r.utf8()?;
        // QoS 0 has no packet identifier on the wire; 0 stands for "none" in the struct.
        let packet_id = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => check_packet_id(r.u16()?)?,
        };
        let properties = match version {
            ProtocolVersion::V5 => PublishProperties::decode(&mut r)?,
            ProtocolVersion::V311 => PublishProperties::default(),
        };
        if topic.is_empty() {
            match version {
                // [MQTT-4.7.3-1]: topic names are at least one character long.
                ProtocolVersion::V311 => {
                    return Err(DecodeError::TopicNameInvalid("empty topic name"));
                }
                // An alias stands in for the topic (§3.3.2.1); without one it is a protocol error.
                ProtocolVersion::V5 if properties.topic_alias.is_none() => {
                    return Err(protocol_error("empty topic name without a topic alias"));
                }
                ProtocolVersion::V5 => {}
            }
        } else if crate::topic::has_wildcard(&topic) {
            // [MQTT-3.3.2-2]
            return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
        }
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// Appends this PUBLISH encoded for `version` to `buf`, without building a [`Packet`].
    ///
    /// DUP is written as 0 for QoS 0 ([MQTT-3.3.1-2]); properties are dropped for 3.1.1.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        encode_with(self, version, buf);
    }

    /// Exact number of bytes [`Publish::encode`] would append.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        len_with(self, version)
    }
}

impl Encode for Publish {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        let dup = self.dup && self.qos != QoS::AtMostOnce;
        kind::PUBLISH << 4 | u8::from(dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.put_utf8(&self.topic);
        if self.qos != QoS::AtMostOnce {
            s.put_two(self.packet_id);
        }
        if version == ProtocolVersion::V5 {
            properties::write(&self.properties, s);
        }
        s.put_bytes(&self.payload);
    }
}

impl From<Publish> for Packet {
    fn from(p: Publish) -> Packet {
        Packet::Publish(p)
    }
}

impl PublishProperties {
    fn decode(r: &mut Reader) -> Result<PublishProperties, DecodeError> {
        let mut out = PublishProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::PayloadFormatIndicator(v) => {
                    set_once(&mut out.payload_format_indicator, v)?
                }
                Property::MessageExpiryInterval(v) => {
                    set_once(&mut out.message_expiry_interval, v)?
                }
                Property::TopicAlias(v) => set_once(&mut out.topic_alias, v)?,
                Property::ResponseTopic(v) => set_once(&mut out.response_topic, v)?,
                Property::CorrelationData(v) => set_once(&mut out.correlation_data, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                // One per matching subscription when the server forwards (§3.3.2.3.8).
                Property::SubscriptionIdentifier(v) => out.subscription_identifiers.push(v),
                Property::ContentType(v) => set_once(&mut out.content_type, v)?,
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for PublishProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_u8(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        properties::put_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        properties::put_u16(s, id::TOPIC_ALIAS, self.topic_alias);
        properties::put_utf8(s, id::RESPONSE_TOPIC, self.response_topic.as_ref());
        properties::put_binary(s, id::CORRELATION_DATA, self.correlation_data.as_ref());
        properties::put_user(s, &self.user_properties);
        for &sub_id in &self.subscription_identifiers {
            properties::put_varint(s, id::SUBSCRIPTION_IDENTIFIER, sub_id);
        }
        properties::put_utf8(s, id::CONTENT_TYPE, self.content_type.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn publish(qos: QoS) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: s("a/b"),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 10 },
            properties: PublishProperties::default(),
            payload: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn v311_bytes() {
        let p = Publish {
            retain: true,
            ..publish(QoS::AtLeastOnce)
        };
        let bytes = to_bytes(&Packet::Publish(p.clone()), V311);
        assert_eq!(&bytes[..], b"\x33\x0c\x00\x03a/b\x00\x0ahello");
        assert_eq!(decode_one(&bytes, V311), Ok(Packet::Publish(p)));
    }

    #[test]
    fn qos0_has_no_packet_id() {
        let bytes = to_bytes(&Packet::Publish(publish(QoS::AtMostOnce)), V5);
        assert_eq!(&bytes[..], b"\x30\x0b\x00\x03a/b\x00hello");
    }

    #[test]
    fn full_v5_round_trip() {
        let p = Publish {
            dup: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                topic_alias: Some(3),
                response_topic: Some(s("reply/to")),
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                user_properties: vec![(s("a"), s("1")), (s("a"), s("2"))],
                subscription_identifiers: vec![1, 268_435_455],
                content_type: Some(s("text/plain")),
            },
            ..publish(QoS::ExactlyOnce)
        };
        assert_eq!(
            round_trip(&Packet::Publish(p.clone()), V5),
            Packet::Publish(p.clone())
        );
        let mut direct = BytesMut::new();
        p.encode(V5, &mut direct);
        assert_eq!(direct.len(), p.encoded_len(V5));
        assert_eq!(direct, to_bytes(&Packet::Publish(p), V5));
    }

    #[test]
    fn payload_and_topic_are_zero_copy() {
        let bytes = to_bytes(&Packet::Publish(publish(QoS::AtLeastOnce)), V5);
        let mut buf = bytes.clone();
        let base = buf.as_ptr() as usize;
        let end = base + buf.len();
        let Ok(Some(Packet::Publish(p))) = super::super::decode(&mut buf, V5, 1024) else {
            panic!("no publish");
        };
        for ptr in [
            p.payload.as_ptr() as usize,
            p.topic.as_bytes().as_ptr() as usize,
        ] {
            assert!(
                (base..end).contains(&ptr),
                "field was copied out of the receive buffer"
            );
        }
        assert_eq!(p.properties.user_properties.capacity(), 0);
        assert_eq!(p.properties.subscription_identifiers.capacity(), 0);
    }

    #[test]
    fn packet_id_zero_for_qos1_is_a_protocol_error() {
        assert_eq!(
            decode_one(b"\x32\x05\x00\x01a\x00\x00", V311),
            Err(DecodeError::ProtocolError("packet identifier 0"))
        );
    }

    #[test]
    fn topic_rules() {
        assert_eq!(
            decode_one(b"\x30\x04\x00\x01+x", V311),
            Err(DecodeError::TopicNameInvalid("wildcard in topic name"))
        );
        assert_eq!(
            decode_one(b"\x30\x05\x00\x01#\x00x", V5),
            Err(DecodeError::TopicNameInvalid("wildcard in topic name"))
        );
        assert_eq!(
            decode_one(b"\x30\x02\x00\x00", V311),
            Err(DecodeError::TopicNameInvalid("empty topic name"))
        );
        assert_eq!(
            decode_one(b"\x30\x03\x00\x00\x00", V5),
            Err(DecodeError::ProtocolError(
                "empty topic name without a topic alias"
            ))
        );
        // An empty topic with an alias is how v5 clients save bandwidth.
        let aliased = decode_one(b"\x30\x06\x00\x00\x03\x23\x00\x05", V5);
        assert!(
            matches!(aliased, Ok(Packet::Publish(Publish { ref topic, .. })) if topic.is_empty())
        );
        assert_eq!(
            decode_one(b"\x30\x06\x00\x00\x03\x23\x00\x00", V5),
            Err(DecodeError::TopicAliasInvalid)
        );
    }

    #[test]
    fn invalid_utf8_topic_is_malformed() {
        assert!(matches!(
            decode_one(b"\x30\x04\x00\x02\xC0\xAF", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(b"\x30\x03\x00\x01\x00", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn property_rules() {
        // Subscription identifier may repeat, topic alias may not.
        assert!(decode_one(b"\x30\x08\x00\x01a\x04\x0B\x01\x0B\x02", V5).is_ok());
        assert!(matches!(
            decode_one(b"\x30\x0a\x00\x01a\x06\x23\x00\x01\x23\x00\x02", V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(b"\x30\x06\x00\x01a\x02\x0B\x00", V5),
            Err(DecodeError::ProtocolError("subscription identifier 0"))
        );
        // Session expiry interval is a CONNECT/CONNACK/DISCONNECT property.
        assert_eq!(
            decode_one(b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01", V5),
            Err(not_allowed())
        );
        assert!(matches!(
            decode_one(b"\x30\x06\x00\x01a\x02\x01\x02", V5),
            Err(DecodeError::ProtocolError(_))
        ));
        // Property length runs past the packet.
        assert!(matches!(
            decode_one(b"\x30\x05\x00\x01a\x09\x01", V5),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn truncated_publish_is_malformed() {
        assert!(matches!(
            decode_one(b"\x32\x04\x00\x01a\x00", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(b"\x30\x01\x00", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
