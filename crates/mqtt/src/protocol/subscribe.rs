//! SUBSCRIBE (MQTT 3.1.1 §3.8, MQTT 5 §3.8).
//!
//! Topic filters are only checked to be strings here: in MQTT 5 an invalid filter is refused per
//! filter with reason 0x8F in the SUBACK, not by closing the connection, so filter syntax is the
//! session's business (see `crate::topic`).

use super::header::{FLAGS_0010, check_packet_id, kind};
use super::primitives::{Reader, Sink, malformed, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{
    DecodeError, Encode, ProtocolVersion, QoS, RetainHandling, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions,
};

/// Subscription option bits (MQTT 5 §3.8.3.1).
mod opt {
    pub(super) const QOS: u8 = 0b0000_0011;
    pub(super) const NO_LOCAL: u8 = 0b0000_0100;
    pub(super) const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
    pub(super) const RETAIN_HANDLING_SHIFT: u8 = 4;
    pub(super) const RESERVED_V5: u8 = 0b1100_0000;
}

/// Prefix of a shared subscription's filter (MQTT 5 §4.8.2).
const SHARED_PREFIX: &str = "$share/";

impl SubscriptionOptions {
    fn decode(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        if version == ProtocolVersion::V311 {
            // [MQTT-3.8.3-4]: upper six bits reserved, QoS 3 invalid; both malformed.
            if byte & !opt::QOS != 0 {
                return Err(malformed("requested QoS byte has reserved bits set"));
            }
            let qos = QoS::from_u8(byte).ok_or_else(|| malformed("requested QoS 3"))?;
            return Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            });
        }
        if byte & opt::RESERVED_V5 != 0 {
            return Err(malformed("subscription options reserved bits set")); // [MQTT-3.8.3-5]
        }
        // §3.8.3.1 classes both of these as protocol errors in MQTT 5.
        let qos = QoS::from_u8(byte & opt::QOS)
            .ok_or_else(|| protocol_error("subscription maximum QoS 3"))?;
        let retain_handling = match (byte >> opt::RETAIN_HANDLING_SHIFT) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(protocol_error("retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & opt::NO_LOCAL != 0,
            retain_as_published: byte & opt::RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn encode(&self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        match version {
            ProtocolVersion::V311 => qos,
            ProtocolVersion::V5 => {
                let mut byte = qos | (self.retain_handling as u8) << opt::RETAIN_HANDLING_SHIFT;
                if self.no_local {
                    byte |= opt::NO_LOCAL;
                }
                if self.retain_as_published {
                    byte |= opt::RETAIN_AS_PUBLISHED;
                }
                byte
            }
        }
    }
}

impl Subscribe {
    /// Decodes a SUBSCRIBE body.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = check_packet_id(r.u16()?)?;
        let properties = match version {
            ProtocolVersion::V5 => SubscribeProperties::decode(&mut r)?,
            ProtocolVersion::V311 => SubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.utf8()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            if options.no_local && filter.starts_with(SHARED_PREFIX) {
                return Err(protocol_error("no local on a shared subscription")); // [MQTT-3.8.3-4]
            }
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(protocol_error("SUBSCRIBE without topic filters")); // [MQTT-3.8.3-2]
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }
}

impl Encode for Subscribe {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::SUBSCRIBE << 4 | FLAGS_0010
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.put_two(self.packet_id);
        if version == ProtocolVersion::V5 {
            properties::write(&self.properties, s);
        }
        for f in &self.filters {
            s.put_utf8(&f.filter);
            s.put_byte(f.options.encode(version));
        }
    }
}

impl SubscribeProperties {
    fn decode(r: &mut Reader) -> Result<SubscribeProperties, DecodeError> {
        let mut out = SubscribeProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                // Unlike in PUBLISH, a SUBSCRIBE carries at most one identifier.
                Property::SubscriptionIdentifier(v) => {
                    set_once(&mut out.subscription_identifier, v)?
                }
                Property::User(k, v) => out.user_properties.push((k, v)),
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for SubscribeProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        if let Some(sub_id) = self.subscription_identifier {
            properties::put_varint(s, id::SUBSCRIPTION_IDENTIFIER, sub_id);
        }
        properties::put_user(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{DecodeError, Packet};
    use super::*;
    use ProtocolVersion::{V5, V311};

    fn sub(filters: &[(&str, SubscriptionOptions)]) -> Subscribe {
        Subscribe {
            packet_id: 1,
            filters: filters
                .iter()
                .map(|(f, options)| SubscribeFilter {
                    filter: s(f),
                    options: *options,
                })
                .collect(),
            properties: SubscribeProperties::default(),
        }
    }

    #[test]
    fn v311_bytes() {
        let qos1 = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        let p = Packet::Subscribe(sub(&[("a/+", qos1)]));
        let bytes = to_bytes(&p, V311);
        assert_eq!(&bytes[..], b"\x82\x08\x00\x01\x00\x03a/+\x01");
        assert_eq!(decode_one(&bytes, V311), Ok(p));
    }

    #[test]
    fn v5_round_trip() {
        let opts = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::Never,
        };
        let mut s5 = sub(&[
            ("a/#", opts),
            ("$share/g/x", SubscriptionOptions::default()),
        ]);
        s5.properties.subscription_identifier = Some(268_435_455);
        s5.properties.user_properties = vec![(s("k"), s("v"))];
        let p = Packet::Subscribe(s5);
        assert_eq!(round_trip(&p, V5), p);
    }

    #[test]
    fn no_filters_is_a_protocol_error() {
        let err = Err(protocol_error("SUBSCRIBE without topic filters"));
        assert_eq!(decode_one(b"\x82\x02\x00\x01", V311), err);
        assert_eq!(decode_one(b"\x82\x03\x00\x01\x00", V5), err);
    }

    #[test]
    fn option_bits() {
        // v3.1.1: anything above the QoS bits is malformed, as is QoS 3.
        assert!(matches!(
            decode_one(b"\x82\x06\x00\x01\x00\x01a\x04", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(b"\x82\x06\x00\x01\x00\x01a\x03", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        // v5: reserved bits 7-6 malformed, retain handling 3 and QoS 3 protocol errors.
        assert!(matches!(
            decode_one(b"\x82\x07\x00\x01\x00\x00\x01a\x40", V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(b"\x82\x07\x00\x01\x00\x00\x01a\x80", V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert_eq!(
            decode_one(b"\x82\x07\x00\x01\x00\x00\x01a\x30", V5),
            Err(protocol_error("retain handling 3"))
        );
        assert!(matches!(
            decode_one(b"\x82\x07\x00\x01\x00\x00\x01a\x03", V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(decode_one(b"\x82\x07\x00\x01\x00\x00\x01a\x2e", V5).is_ok());
    }

    #[test]
    fn no_local_on_shared_subscription() {
        assert_eq!(
            decode_one(b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04", V5),
            Err(protocol_error("no local on a shared subscription"))
        );
    }

    #[test]
    fn packet_id_zero_and_truncation() {
        assert_eq!(
            decode_one(b"\x82\x06\x00\x00\x00\x01a\x00", V311),
            Err(protocol_error("packet identifier 0"))
        );
        // Filter without its options byte.
        assert!(matches!(
            decode_one(b"\x82\x05\x00\x01\x00\x01a", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn property_rules() {
        // Two subscription identifiers.
        assert!(matches!(
            decode_one(b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00", V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", V5),
            Err(protocol_error("subscription identifier 0"))
        );
        assert_eq!(
            decode_one(b"\x82\x09\x00\x01\x02\x01\x00\x00\x01a\x00", V5),
            Err(not_allowed())
        );
    }
}
