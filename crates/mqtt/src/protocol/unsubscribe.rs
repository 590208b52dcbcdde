//! UNSUBSCRIBE (MQTT 3.1.1 §3.10, MQTT 5 §3.10). As with SUBSCRIBE, filter syntax is left to the
//! session, which answers per filter in the UNSUBACK.

use super::header::{FLAGS_0010, check_packet_id, kind};
use super::primitives::{Reader, Sink, protocol_error};
use super::properties::{self, Property, PropertyReader, not_allowed};
use super::{DecodeError, Encode, ProtocolVersion, Unsubscribe, UserProperty};

impl Unsubscribe {
    /// Decodes an UNSUBSCRIBE body.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = check_packet_id(r.u16()?)?;
        let mut user_properties = Vec::new();
        if version == ProtocolVersion::V5 {
            let mut props = PropertyReader::new(&mut r)?;
            while let Some(p) = props.next()? {
                match p {
                    Property::User(k, v) => user_properties.push((k, v)),
                    _ => return Err(not_allowed()),
                }
            }
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.utf8()?);
        }
        if filters.is_empty() {
            return Err(protocol_error("UNSUBSCRIBE without topic filters")); // [MQTT-3.10.3-2]
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            user_properties,
        })
    }
}

/// The UNSUBSCRIBE property block: user properties only.
struct UnsubscribeProperties<'a>(&'a [UserProperty]);

impl properties::PropertySet for UnsubscribeProperties<'_> {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_user(s, self.0);
    }
}

impl Encode for Unsubscribe {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::UNSUBSCRIBE << 4 | FLAGS_0010
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.put_two(self.packet_id);
        if version == ProtocolVersion::V5 {
            properties::write(&UnsubscribeProperties(&self.user_properties), s);
        }
        for f in &self.filters {
            s.put_utf8(f);
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
    fn bytes_and_round_trips() {
        let u = Unsubscribe {
            packet_id: 2,
            filters: vec![s("a/#"), s("")],
            user_properties: vec![(s("k"), s("v"))],
        };
        let p = Packet::Unsubscribe(u.clone());
        assert_eq!(round_trip(&p, V5), p);
        let bytes = to_bytes(&p, V311);
        assert_eq!(&bytes[..], b"\xa2\x09\x00\x02\x00\x03a/#\x00\x00");
        let plain = Unsubscribe {
            user_properties: vec![],
            ..u
        };
        assert_eq!(decode_one(&bytes, V311), Ok(Packet::Unsubscribe(plain)));
    }

    #[test]
    fn rules() {
        let none = Err(protocol_error("UNSUBSCRIBE without topic filters"));
        assert_eq!(decode_one(b"\xa2\x02\x00\x01", V311), none);
        assert_eq!(decode_one(b"\xa2\x03\x00\x01\x00", V5), none);
        assert_eq!(
            decode_one(b"\xa2\x05\x00\x00\x00\x01a", V311),
            Err(protocol_error("packet identifier 0"))
        );
        assert_eq!(
            decode_one(b"\xa2\x09\x00\x01\x03\x1f\x00\x00\x00\x01a", V5),
            Err(not_allowed())
        );
        assert!(matches!(
            decode_one(b"\xa2\x05\x00\x01\x00\x05a", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        // Wrong fixed header flags.
        assert!(matches!(
            decode_one(b"\xa0\x05\x00\x01\x00\x01a", V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
