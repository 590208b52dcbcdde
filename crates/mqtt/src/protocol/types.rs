//! Packet types shared by MQTT 3.1.1 and 5.0. One `Packet` type covers both versions; fields that
//! exist only in 5.0 (properties, reason codes) are ignored when encoding for 3.1.1 and take their
//! defaults when decoding 3.1.1.

use bytes::Bytes;

/// The protocol level negotiated in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS field; 3 is not a QoS.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A UTF-8 string that shares the receive buffer instead of copying it.
///
/// Invariant: the bytes are valid UTF-8 and contain no U+0000 (MQTT §1.5.4). Only the
/// constructors below build it, and both check.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Utf8(Bytes);

impl Utf8 {
    /// Validates `bytes` as an MQTT UTF-8 string.
    pub fn from_bytes(bytes: Bytes) -> Option<Utf8> {
        let s = std::str::from_utf8(&bytes).ok()?;
        if s.contains('\0') {
            return None;
        }
        Some(Utf8(bytes))
    }

    /// Builds a string from a static or owned Rust string; `None` if it contains U+0000.
    pub fn new(s: impl Into<String>) -> Option<Utf8> {
        let s: String = s.into();
        if s.contains('\0') {
            return None;
        }
        Some(Utf8(Bytes::from(s)))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: both constructors validate UTF-8 before wrapping, and the inner bytes are never
        // exposed mutably, so the invariant holds for the lifetime of the value.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The raw bytes (shared, no copy).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Utf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for Utf8 {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// A user property (MQTT 5): a name/value pair that may repeat.
pub type UserProperty = (Utf8, Utf8);

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubAck),
    PubRel(PubAck),
    PubComp(PubAck),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: Utf8,
    pub will: Option<LastWill>,
    pub username: Option<Utf8>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// CONNECT properties (MQTT 5 §3.1.2.11).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<u8>,
    pub request_problem_information: Option<u8>,
    pub user_properties: Vec<UserProperty>,
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
}

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct LastWill {
    pub topic: Utf8,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// Will properties (MQTT 5 §3.1.3.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<Utf8>,
    pub response_topic: Option<Utf8>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK. `reason` is always an MQTT 5 reason code; the 3.1.1 encoder maps it to the nearest
/// 3.1.1 return code (0x84 -> 1, 0x85 -> 2, 0x88/0x89 and anything else -> 3, 0x86 -> 4, 0x87 -> 5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: u8,
    pub properties: ConnAckProperties,
}

/// CONNACK properties (MQTT 5 §3.2.2.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<Utf8>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifiers_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<Utf8>,
    pub server_reference: Option<Utf8>,
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH. `packet_id` is 0 for QoS 0 (it is not on the wire then).
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias stands in for it.
    pub topic: Utf8,
    pub packet_id: u16,
    pub properties: PublishProperties,
    pub payload: Bytes,
}

/// PUBLISH properties (MQTT 5 §3.3.2.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub response_topic: Option<Utf8>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
    pub subscription_identifiers: Vec<u32>,
    pub content_type: Option<Utf8>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape. A reason of 0 with no properties is
/// encoded in the short form (MQTT 5 §3.4.2.1); 3.1.1 carries only the packet id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PubAck {
    pub packet_id: u16,
    pub reason: u8,
    pub properties: AckProperties,
}

/// Reason string and user properties, the properties of most acknowledgements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AckProperties {
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<SubscribeFilter>,
    pub properties: SubscribeProperties,
}

/// SUBSCRIBE properties (MQTT 5 §3.8.2.1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscribeProperties {
    pub subscription_identifier: Option<u32>,
    pub user_properties: Vec<UserProperty>,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeFilter {
    pub filter: Utf8,
    pub options: SubscriptionOptions,
}

/// Subscription options (MQTT 5 §3.8.3.1); 3.1.1 carries only `qos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent on subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not already exist.
    OnNewSubscription = 1,
    /// Do not send them.
    Never = 2,
}

/// SUBACK. Reason codes are MQTT 5 codes; the 3.1.1 encoder writes 0x80 for any failure.
#[derive(Debug, Clone, PartialEq)]
pub struct SubAck {
    pub packet_id: u16,
    pub reasons: Vec<u8>,
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<Utf8>,
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBACK. 3.1.1 has no payload, so `reasons` is empty when decoded from 3.1.1.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub reasons: Vec<u8>,
    pub properties: AckProperties,
}

/// DISCONNECT. 3.1.1 has no reason code or properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Disconnect {
    pub reason: u8,
    pub properties: DisconnectProperties,
}

/// DISCONNECT properties (MQTT 5 §3.14.2.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DisconnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
    pub server_reference: Option<Utf8>,
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: AuthProperties,
}

/// AUTH properties (MQTT 5 §3.15.2.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthProperties {
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
}
