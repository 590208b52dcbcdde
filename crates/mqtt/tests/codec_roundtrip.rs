//! Property tests of the MQTT codec: arbitrary packets survive encode → decode (exactly for
//! MQTT 5, after normalisation for 3.1.1), `encoded_len` is exact, streaming input decodes the
//! same packets whatever the chunking, and arbitrary or corrupted bytes never panic the decoder
//! nor make it consume more than one packet's bytes.

use bytes::{Bytes, BytesMut};
use fleetcore_mqtt::protocol::*;
use proptest::prelude::*;

use ProtocolVersion::{V5, V311};

// ---------------------------------------------------------------------------------------------
// Generators. They only build packets a conforming peer may send, since the decoder rightly
// refuses the others; the decoder's refusals are covered by the unit tests.
// ---------------------------------------------------------------------------------------------

fn utf8() -> impl Strategy<Value = Utf8> {
    "[^\u{0}]{0,6}".prop_map(|s| Utf8::new(s).unwrap_or_default())
}

fn topic_name() -> impl Strategy<Value = Utf8> {
    "[^\u{0}+#]{1,8}".prop_map(|s| Utf8::new(s).unwrap_or_default())
}

fn filter() -> impl Strategy<Value = Utf8> {
    prop_oneof![
        utf8(),
        "(\\+|#|[a-z$/]{0,4}){1,3}".prop_map(|s| Utf8::new(s).unwrap_or_default())
    ]
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    prop::collection::vec((utf8(), utf8()), 0..3)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    prop::option::of(0u8..=1)
}

fn nonzero_u16() -> impl Strategy<Value = Option<u16>> {
    prop::option::of(1u16..)
}

fn nonzero_u32() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(1u32..)
}

fn sub_id() -> impl Strategy<Value = u32> {
    1u32..=268_435_455
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1u16..
}

fn reason_of(codes: &'static [u8]) -> impl Strategy<Value = u8> {
    prop::sample::select(codes)
}

const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (prop::option::of(utf8()), user_properties()).prop_map(|(reason_string, user_properties)| {
        AckProperties {
            reason_string,
            user_properties,
        }
    })
}

fn will() -> impl Strategy<Value = LastWill> {
    let props = (
        prop::option::of(any::<u32>()),
        flag(),
        prop::option::of(any::<u32>()),
        prop::option::of(utf8()),
        prop::option::of(topic_name()),
        prop::option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(delay, pfi, expiry, content_type, response_topic, correlation, user)| {
                WillProperties {
                    will_delay_interval: delay,
                    payload_format_indicator: pfi,
                    message_expiry_interval: expiry,
                    content_type,
                    response_topic,
                    correlation_data: correlation,
                    user_properties: user,
                }
            },
        );
    (topic_name(), binary(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

fn connect(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = (
        prop::option::of(any::<u32>()),
        nonzero_u16(),
        nonzero_u32(),
        prop::option::of(any::<u16>()),
        flag(),
        flag(),
        user_properties(),
        prop::option::of(utf8()),
        prop::option::of(binary()),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, user, method, data)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: user,
                // Authentication data needs a method.
                authentication_data: data.filter(|_| method.is_some()),
                authentication_method: method,
            },
        );
    (
        any::<bool>(),
        any::<u16>(),
        utf8(),
        prop::option::of(will()),
        prop::option::of(utf8()),
        prop::option::of(binary()),
        props,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 forbids a password without a user name.
                let password = password.filter(|_| protocol == V5 || username.is_some());
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack() -> impl Strategy<Value = Packet> {
    let props_a = (
        prop::option::of(any::<u32>()),
        nonzero_u16(),
        flag(),
        flag(),
        nonzero_u32(),
        prop::option::of(utf8()),
        prop::option::of(any::<u16>()),
        prop::option::of(utf8()),
        user_properties(),
    );
    let props_b = (
        flag(),
        flag(),
        flag(),
        prop::option::of(any::<u16>()),
        prop::option::of(utf8()),
        prop::option::of(utf8()),
        prop::option::of(utf8()),
        prop::option::of(binary()),
    );
    (any::<bool>(), reason_of(CONNACK_REASONS), props_a, props_b).prop_map(
        |(session_present, reason, a, b)| {
            Packet::ConnAck(ConnAck {
                session_present: session_present && reason == 0,
                reason,
                properties: ConnAckProperties {
                    session_expiry_interval: a.0,
                    receive_maximum: a.1,
                    maximum_qos: a.2,
                    retain_available: a.3,
                    maximum_packet_size: a.4,
                    assigned_client_identifier: a.5,
                    topic_alias_maximum: a.6,
                    reason_string: a.7,
                    user_properties: a.8,
                    wildcard_subscription_available: b.0,
                    subscription_identifiers_available: b.1,
                    shared_subscription_available: b.2,
                    server_keep_alive: b.3,
                    response_information: b.4,
                    server_reference: b.5,
                    authentication_method: b.6,
                    authentication_data: b.7,
                },
            })
        },
    )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Publish> {
    let props = (
        flag(),
        prop::option::of(any::<u32>()),
        nonzero_u16(),
        prop::option::of(topic_name()),
        prop::option::of(binary()),
        user_properties(),
        prop::collection::vec(sub_id(), 0..3),
        prop::option::of(utf8()),
    )
        .prop_map(
            |(pfi, expiry, alias, rt, cd, user, ids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: rt,
                correlation_data: cd,
                user_properties: user,
                subscription_identifiers: ids,
                content_type: ct,
            },
        );
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        props,
        binary(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, drop_topic, pid, properties, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                // MQTT 5 may leave the topic empty when an alias stands in for it.
                let use_alias = version == V5 && drop_topic && properties.topic_alias.is_some();
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic: if use_alias { Utf8::default() } else { topic },
                    packet_id: if qos0 { 0 } else { pid },
                    properties,
                    payload,
                }
            },
        )
}

fn pub_ack(reasons: &'static [u8]) -> impl Strategy<Value = PubAck> {
    (packet_id(), reason_of(reasons), ack_properties()).prop_map(
        |(packet_id, reason, properties)| PubAck {
            packet_id,
            reason,
            properties,
        },
    )
}

fn subscribe() -> impl Strategy<Value = Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(qos, nl, rap, rh)| {
        SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: match rh {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscription,
                _ => RetainHandling::Never,
            },
        }
    });
    let entry = (filter(), options).prop_map(|(filter, mut options)| {
        // No Local on a shared subscription is a protocol error.
        options.no_local &= !filter.starts_with("$share/");
        SubscribeFilter { filter, options }
    });
    (
        packet_id(),
        prop::collection::vec(entry, 1..4),
        prop::option::of(sub_id()),
        user_properties(),
    )
        .prop_map(|(packet_id, filters, sid, user)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties: SubscribeProperties {
                    subscription_identifier: sid,
                    user_properties: user,
                },
            })
        })
}

fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(),
        publish(version).prop_map(Packet::Publish),
        pub_ack(PUBACK_REASONS).prop_map(Packet::PubAck),
        pub_ack(PUBACK_REASONS).prop_map(Packet::PubRec),
        pub_ack(PUBREL_REASONS).prop_map(Packet::PubRel),
        pub_ack(PUBREL_REASONS).prop_map(Packet::PubComp),
        subscribe(),
        (
            packet_id(),
            prop::collection::vec(reason_of(SUBACK_REASONS), 1..4),
            ack_properties()
        )
            .prop_map(|(packet_id, reasons, properties)| Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties
            })),
        (
            packet_id(),
            prop::collection::vec(filter(), 1..4),
            user_properties()
        )
            .prop_map(|(packet_id, filters, user_properties)| Packet::Unsubscribe(
                Unsubscribe {
                    packet_id,
                    filters,
                    user_properties
                }
            )),
        (
            packet_id(),
            prop::collection::vec(reason_of(UNSUBACK_REASONS), 1..4),
            ack_properties()
        )
            .prop_map(
                |(packet_id, reasons, properties)| Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons,
                    properties
                })
            ),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (
            reason_of(DISCONNECT_REASONS),
            prop::option::of(any::<u32>()),
            ack_properties(),
            prop::option::of(utf8())
        )
            .prop_map(|(reason, sei, ack, server_reference)| Packet::Disconnect(
                Disconnect {
                    reason,
                    properties: DisconnectProperties {
                        session_expiry_interval: sei,
                        reason_string: ack.reason_string,
                        user_properties: ack.user_properties,
                        server_reference,
                    },
                }
            )),
    ];
    match version {
        // AUTH does not exist in 3.1.1.
        V311 => common.boxed(),
        V5 => prop_oneof![
            10 => common,
            1 => (reason_of(AUTH_REASONS), prop::option::of(utf8()), prop::option::of(binary()), ack_properties())
                .prop_map(|(reason, method, data, ack)| Packet::Auth(Auth {
                    reason,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: data,
                        reason_string: ack.reason_string,
                        user_properties: ack.user_properties,
                    },
                })),
        ]
        .boxed(),
    }
}

/// What a packet looks like after a trip through 3.1.1: MQTT 5-only fields take their defaults
/// and reason codes go through the 3.1.1 mapping.
fn normalize_v311(packet: Packet) -> Packet {
    fn ack(a: PubAck) -> PubAck {
        PubAck {
            packet_id: a.packet_id,
            ..PubAck::default()
        }
    }
    match packet {
        Packet::Connect(mut c) => {
            c.properties = ConnectProperties::default();
            if let Some(w) = c.will.as_mut() {
                w.properties = WillProperties::default();
            }
            Packet::Connect(c)
        }
        Packet::ConnAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            reason: match c.reason {
                0x00 | 0x84 | 0x85 | 0x86 | 0x87 => c.reason,
                _ => reason::SERVER_UNAVAILABLE,
            },
            properties: ConnAckProperties::default(),
        }),
        Packet::Publish(p) => Packet::Publish(Publish {
            properties: PublishProperties::default(),
            ..p
        }),
        Packet::PubAck(a) => Packet::PubAck(ack(a)),
        Packet::PubRec(a) => Packet::PubRec(ack(a)),
        Packet::PubRel(a) => Packet::PubRel(ack(a)),
        Packet::PubComp(a) => Packet::PubComp(ack(a)),
        Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.packet_id,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    options: SubscriptionOptions {
                        qos: f.options.qos,
                        ..Default::default()
                    },
                    filter: f.filter,
                })
                .collect(),
            properties: SubscribeProperties::default(),
        }),
        Packet::SubAck(s) => Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reasons: s
                .reasons
                .into_iter()
                .map(|r| if r >= 0x80 { 0x80 } else { r })
                .collect(),
            properties: AckProperties::default(),
        }),
        Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            user_properties: vec![],
            ..u
        }),
        Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons: vec![],
            properties: AckProperties::default(),
        }),
        Packet::Disconnect(_) => Packet::Disconnect(Disconnect::default()),
        other => other,
    }
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf);
    buf
}

/// Decodes a whole stream, checking the framing invariants on the way.
fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Vec<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(&mut buf, version, MAX_PACKET_SIZE)? {
            Some(p) => out.push(p),
            None => return Err(DecodeError::MalformedPacket("stream ends inside a packet")),
        }
    }
    Ok(out)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn v5_round_trip_is_exact(p in packet(V5)) {
        let bytes = encoded(&p, V5);
        prop_assert_eq!(bytes.len(), encoded_len(&p, V5));
        prop_assert_eq!(decode_all(&bytes, V5), Ok(vec![p]));
    }

    #[test]
    fn v311_round_trip_is_normalized(p in packet(V311)) {
        let bytes = encoded(&p, V311);
        prop_assert_eq!(bytes.len(), encoded_len(&p, V311));
        let normalized = normalize_v311(p);
        prop_assert_eq!(decode_all(&bytes, V311), Ok(vec![normalized.clone()]));
        // Normalisation is a fixed point: the normalised packet round-trips exactly.
        prop_assert_eq!(&encoded(&normalized, V311), &bytes);
    }

    #[test]
    fn publish_fast_path_matches_packet_path(p in publish(V5), v5 in any::<bool>()) {
        let version = if v5 { V5 } else { V311 };
        let mut direct = BytesMut::new();
        p.encode(version, &mut direct);
        prop_assert_eq!(direct.len(), p.encoded_len(version));
        prop_assert_eq!(direct, encoded(&Packet::Publish(p), version));
    }

    #[test]
    fn streaming_any_chunking_gives_the_same_packets(
        packets in prop::collection::vec(packet(V5), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            encode(p, V5, &mut stream);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut out = Vec::new();
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                let before = buf.clone();
                match decode(&mut buf, V5, MAX_PACKET_SIZE) {
                    Ok(Some(p)) => out.push(p),
                    Ok(None) => {
                        prop_assert_eq!(&buf, &before, "Ok(None) must leave the buffer untouched");
                        break;
                    }
                    Err(e) => prop_assert!(false, "valid stream rejected: {}", e),
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn every_strict_prefix_needs_more(p in packet(V5)) {
        let bytes = encoded(&p, V5);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut buf, V5, MAX_PACKET_SIZE), Ok(None));
            prop_assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_over_consume(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        v5 in any::<bool>(),
        max in 0usize..400,
    ) {
        check_stream(&bytes, if v5 { V5 } else { V311 }, max)?;
    }

    #[test]
    fn corrupted_packets_never_panic_nor_over_consume(
        p in packet(V5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        v5 in any::<bool>(),
    ) {
        let version = if v5 { V5 } else { V311 };
        let mut bytes = encoded(&p, version).to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        check_stream(&bytes, version, MAX_PACKET_SIZE)?;
    }
}

/// Decodes `bytes` as a stream: each step consumes nothing (need more / header error) or exactly
/// one whole frame, and whatever decodes re-encodes to something that decodes to the same packet.
fn check_stream(bytes: &[u8], version: ProtocolVersion, max: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max) {
            Ok(Some(p)) => {
                let consumed = before - buf.len();
                prop_assert!(consumed >= 2 && consumed <= max);
                let again = encoded(&p, version);
                prop_assert_eq!(again.len(), encoded_len(&p, version));
                prop_assert_eq!(decode_all(&again, version), Ok(vec![p]));
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before);
                return Ok(());
            }
            Err(_) => {
                prop_assert!(buf.len() <= before);
                return Ok(());
            }
        }
    }
}

#[test]
fn back_to_back_publishes_share_one_buffer() {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Utf8::new("t").unwrap_or_default(),
        packet_id: 1,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(&[7; 64]),
    };
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        p.encode(V311, &mut buf);
    }
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let mut n = 0;
    while let Ok(Some(Packet::Publish(got))) = decode(&mut buf, V311, 1024) {
        assert!(range.contains(&(got.payload.as_ptr() as usize)));
        assert_eq!(got, p);
        n += 1;
    }
    assert_eq!(n, 100);
    assert!(buf.is_empty());
}
