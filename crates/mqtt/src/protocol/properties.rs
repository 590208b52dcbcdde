//! MQTT 5 properties (§2.2.2): every identifier is read and range-checked here once, generically;
//! each packet then only says which identifiers it accepts and where they go.
//!
//! Value rules that do not depend on the packet live here too: a 0/1 flag outside 0..=1, a
//! Receive Maximum, Maximum Packet Size or Subscription Identifier of 0 are protocol errors and a
//! Topic Alias of 0 is "Topic Alias invalid". Which identifiers may appear in which packet, and
//! which may repeat, is the packets' business ([`set_once`] and [`not_allowed`]).

use bytes::Bytes;

use super::primitives::{Counter, Reader, Sink, malformed, protocol_error};
use super::{DecodeError, UserProperty, Utf8};

/// Property identifiers (MQTT 5 §2.2.2.2).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// One decoded property, its value already range-checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(Utf8),
    ResponseTopic(Utf8),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(Utf8),
    ServerKeepAlive(u16),
    AuthenticationMethod(Utf8),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(Utf8),
    ServerReference(Utf8),
    ReasonString(Utf8),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(u8),
    RetainAvailable(u8),
    User(Utf8, Utf8),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader, what: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(protocol_error(what)),
    }
}

fn nonzero_u16(r: &mut Reader, what: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(protocol_error(what)),
        v => Ok(v),
    }
}

/// Reads one property (identifier and value).
fn read(r: &mut Reader) -> Result<Property, DecodeError> {
    use Property as P;
    // The identifier is a Variable Byte Integer, but every defined one is below 128, so a
    // minimal encoding is one byte and any byte with the high bit set is unknown anyway.
    Ok(match r.u8()? {
        id::PAYLOAD_FORMAT_INDICATOR => {
            P::PayloadFormatIndicator(flag(r, "payload format indicator must be 0 or 1")?)
        }
        id::MESSAGE_EXPIRY_INTERVAL => P::MessageExpiryInterval(r.u32()?),
        id::CONTENT_TYPE => P::ContentType(r.utf8()?),
        id::RESPONSE_TOPIC => {
            let topic = r.utf8()?;
            // [MQTT-3.3.2-13], [MQTT-3.3.2-14]: a topic name, so no wildcards and not empty.
            if topic.is_empty() || crate::topic::has_wildcard(&topic) {
                return Err(protocol_error("response topic is not a valid topic name"));
            }
            P::ResponseTopic(topic)
        }
        id::CORRELATION_DATA => P::CorrelationData(r.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => match r.varint()? {
            0 => return Err(protocol_error("subscription identifier 0")),
            // A varint is at most 268,435,455, which fits.
            v => P::SubscriptionIdentifier(u32::try_from(v).map_err(|_| malformed("varint"))?),
        },
        id::SESSION_EXPIRY_INTERVAL => P::SessionExpiryInterval(r.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => P::AssignedClientIdentifier(r.utf8()?),
        id::SERVER_KEEP_ALIVE => P::ServerKeepAlive(r.u16()?),
        id::AUTHENTICATION_METHOD => P::AuthenticationMethod(r.utf8()?),
        id::AUTHENTICATION_DATA => P::AuthenticationData(r.binary()?),
        id::REQUEST_PROBLEM_INFORMATION => {
            P::RequestProblemInformation(flag(r, "request problem information must be 0 or 1")?)
        }
        id::WILL_DELAY_INTERVAL => P::WillDelayInterval(r.u32()?),
        id::REQUEST_RESPONSE_INFORMATION => {
            P::RequestResponseInformation(flag(r, "request response information must be 0 or 1")?)
        }
        id::RESPONSE_INFORMATION => P::ResponseInformation(r.utf8()?),
        id::SERVER_REFERENCE => P::ServerReference(r.utf8()?),
        id::REASON_STRING => P::ReasonString(r.utf8()?),
        id::RECEIVE_MAXIMUM => P::ReceiveMaximum(nonzero_u16(r, "receive maximum 0")?),
        id::TOPIC_ALIAS_MAXIMUM => P::TopicAliasMaximum(r.u16()?),
        id::TOPIC_ALIAS => match r.u16()? {
            // [MQTT-3.3.2-8]; the receiver answers 0x94, not 0x82.
            0 => return Err(DecodeError::TopicAliasInvalid),
            v => P::TopicAlias(v),
        },
        id::MAXIMUM_QOS => P::MaximumQos(flag(r, "maximum QoS must be 0 or 1")?),
        id::RETAIN_AVAILABLE => P::RetainAvailable(flag(r, "retain available must be 0 or 1")?),
        id::USER_PROPERTY => P::User(r.utf8()?, r.utf8()?),
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => return Err(protocol_error("maximum packet size 0")),
            v => P::MaximumPacketSize(v),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => P::WildcardSubscriptionAvailable(flag(
            r,
            "wildcard subscription available must be 0 or 1",
        )?),
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => P::SubscriptionIdentifierAvailable(flag(
            r,
            "subscription identifier available must be 0 or 1",
        )?),
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            P::SharedSubscriptionAvailable(flag(r, "shared subscription available must be 0 or 1")?)
        }
        _ => return Err(malformed("unknown property identifier")),
    })
}

/// The property block of one packet: a length then that many bytes of properties.
///
/// It reads from the packet's own reader up to the block's end rather than splitting the block
/// off as a separate `Bytes`, which would cost a reference-count round trip per packet.
pub(crate) struct PropertyReader<'r> {
    r: &'r mut Reader,
    /// What `r.remaining()` will be once the block has been read.
    end: usize,
}

impl<'r> PropertyReader<'r> {
    /// Reads the Property Length and checks the block fits in the packet.
    pub(crate) fn new(r: &'r mut Reader) -> Result<PropertyReader<'r>, DecodeError> {
        let len = r.varint()?;
        let end = r
            .remaining()
            .checked_sub(len)
            .ok_or_else(|| malformed("property length exceeds the packet"))?;
        Ok(PropertyReader { r, end })
    }

    /// The next property, or `None` at the end of the block. A property whose value runs past
    /// the block is malformed.
    pub(crate) fn next(&mut self) -> Result<Option<Property>, DecodeError> {
        if self.r.remaining() <= self.end {
            return Ok(None);
        }
        let p = read(self.r)?;
        if self.r.remaining() < self.end {
            return Err(malformed("property runs past the property length"));
        }
        Ok(Some(p))
    }
}

/// Stores a property that may appear at most once; a second one is a protocol error.
pub(crate) fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(protocol_error("property appears more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// The error for an identifier that exists but is not valid in this packet (MQTT 5 §2.2.2.2).
pub(crate) fn not_allowed() -> DecodeError {
    malformed("property not valid for this packet type")
}

/// A packet's property set, written field by field into any [`Sink`].
pub(crate) trait PropertySet {
    /// Writes every present property (without the Property Length).
    fn write_to<S: Sink>(&self, s: &mut S);

    /// Size of the properties without the Property Length.
    fn wire_len(&self) -> usize {
        let mut c = Counter(0);
        self.write_to(&mut c);
        c.0
    }
}

/// Writes a Property Length then the properties.
pub(crate) fn write<P: PropertySet, S: Sink>(props: &P, s: &mut S) {
    s.put_varint(props.wire_len());
    props.write_to(s);
}

/// Writes a byte property if present.
pub(crate) fn put_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_byte(id);
        s.put_byte(v);
    }
}

/// Writes a Two Byte Integer property if present.
pub(crate) fn put_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_byte(id);
        s.put_two(v);
    }
}

/// Writes a Four Byte Integer property if present.
pub(crate) fn put_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_byte(id);
        s.put_four(v);
    }
}

/// Writes a Variable Byte Integer property.
pub(crate) fn put_varint<S: Sink>(s: &mut S, id: u8, v: u32) {
    s.put_byte(id);
    // u32 always fits usize on the platforms we build for (16-bit targets are out of scope).
    s.put_varint(v as usize);
}

/// Writes a string property if present.
pub(crate) fn put_utf8<S: Sink>(s: &mut S, id: u8, v: Option<&Utf8>) {
    if let Some(v) = v {
        s.put_byte(id);
        s.put_utf8(v);
    }
}

/// Writes a binary property if present.
pub(crate) fn put_binary<S: Sink>(s: &mut S, id: u8, v: Option<&Bytes>) {
    if let Some(v) = v {
        s.put_byte(id);
        s.put_binary(v);
    }
}

/// Writes the user properties in order.
pub(crate) fn put_user<S: Sink>(s: &mut S, props: &[UserProperty]) {
    for (k, v) in props {
        s.put_byte(id::USER_PROPERTY);
        s.put_utf8(k);
        s.put_utf8(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &'static [u8]) -> Result<Vec<Property>, DecodeError> {
        let mut r = Reader::new(Bytes::from_static(bytes));
        let mut props = PropertyReader::new(&mut r)?;
        let mut out = Vec::new();
        while let Some(p) = props.next()? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn property_length_beyond_packet_is_malformed() {
        assert_eq!(
            read_all(&[0x05, 0x01, 0x00]),
            Err(malformed("property length exceeds the packet"))
        );
    }

    #[test]
    fn value_running_past_block_is_malformed() {
        // Block of 2 bytes holds a four-byte integer property.
        assert!(matches!(
            read_all(&[0x02, id::MESSAGE_EXPIRY_INTERVAL, 0x00, 0x00, 0x00, 0x00]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn unknown_identifier_is_malformed() {
        assert_eq!(
            read_all(&[0x02, 0x04, 0x00]),
            Err(malformed("unknown property identifier"))
        );
        assert!(matches!(
            read_all(&[0x02, 0x81, 0x01]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn range_rules() {
        assert!(matches!(
            read_all(&[0x02, id::PAYLOAD_FORMAT_INDICATOR, 2]),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            read_all(&[0x02, id::REQUEST_PROBLEM_INFORMATION, 2]),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            read_all(&[0x02, id::REQUEST_RESPONSE_INFORMATION, 7]),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            read_all(&[0x03, id::RECEIVE_MAXIMUM, 0, 0]),
            Err(DecodeError::ProtocolError("receive maximum 0"))
        ));
        assert!(matches!(
            read_all(&[0x05, id::MAXIMUM_PACKET_SIZE, 0, 0, 0, 0]),
            Err(DecodeError::ProtocolError("maximum packet size 0"))
        ));
        assert!(matches!(
            read_all(&[0x02, id::SUBSCRIPTION_IDENTIFIER, 0]),
            Err(DecodeError::ProtocolError("subscription identifier 0"))
        ));
        assert_eq!(
            read_all(&[0x03, id::TOPIC_ALIAS, 0, 0]),
            Err(DecodeError::TopicAliasInvalid)
        );
        assert!(matches!(
            read_all(&[0x02, id::MAXIMUM_QOS, 2]),
            Err(DecodeError::ProtocolError(_))
        ));
        assert!(matches!(
            read_all(&[0x04, id::RESPONSE_TOPIC, 0, 1, b'#']),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn reads_values() {
        assert_eq!(
            read_all(&[
                0x08,
                id::SUBSCRIPTION_IDENTIFIER,
                0x80,
                0x01,
                id::TOPIC_ALIAS,
                0,
                9,
                0x01,
                1
            ]),
            Ok(vec![
                Property::SubscriptionIdentifier(128),
                Property::TopicAlias(9),
                Property::PayloadFormatIndicator(1)
            ])
        );
    }

    #[test]
    fn duplicate_detection() {
        let mut slot = None;
        assert_eq!(set_once(&mut slot, 1), Ok(()));
        assert_eq!(
            set_once(&mut slot, 2),
            Err(protocol_error("property appears more than once"))
        );
    }
}
