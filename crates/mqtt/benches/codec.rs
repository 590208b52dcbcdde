//! Codec hot-path benchmarks: decoding and encoding PUBLISH, alone and as a stream.
//!
//! Run with `cargo bench -p fleetcore-mqtt --bench codec`. Inputs are built outside the timed
//! region; receive buffers are pre-shared (as a connection's read buffer is after its first
//! packet) so the numbers are steady-state rather than first-packet costs.

use bytes::{Bytes, BytesMut};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use fleetcore_mqtt::protocol::{
    MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, PublishProperties, QoS, Utf8, decode,
};

fn main() {
    divan::main();
}

const PAYLOAD_LEN: usize = 256;

fn utf8(s: &str) -> Utf8 {
    Utf8::new(s).unwrap_or_default()
}

/// A telemetry-shaped QoS 1 PUBLISH; for v5 with a message expiry, a content type and a user
/// property, the properties devices typically set.
fn sample(version: ProtocolVersion, packet_id: u16) -> Publish {
    let properties = match version {
        ProtocolVersion::V311 => PublishProperties::default(),
        ProtocolVersion::V5 => PublishProperties {
            message_expiry_interval: Some(3600),
            content_type: Some(utf8("application/json")),
            user_properties: vec![(utf8("trace-id"), utf8("4bf92f3577b34da6"))],
            ..PublishProperties::default()
        },
    };
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: utf8("fleet/tenant-42/device-000123/telemetry"),
        packet_id,
        properties,
        payload: Bytes::from(vec![b'x'; PAYLOAD_LEN]),
    }
}

/// A receive buffer holding `bytes`, already in the shared representation a connection's read
/// buffer reaches after its first decoded packet.
fn receive_buffer(bytes: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(bytes.len());
    buf.extend_from_slice(bytes);
    drop(buf.split_to(0));
    buf
}

fn decode_one(bencher: Bencher, version: ProtocolVersion) {
    let mut bytes = BytesMut::new();
    sample(version, 1).encode(version, &mut bytes);
    bencher
        .counter(BytesCount::new(bytes.len()))
        .with_inputs(|| receive_buffer(&bytes))
        .bench_local_values(|mut buf| {
            let packet = decode(&mut buf, version, MAX_PACKET_SIZE);
            // Returned so that dropping happens outside the timed region.
            (buf, packet)
        });
}

#[divan::bench]
fn decode_publish_v311(bencher: Bencher) {
    decode_one(bencher, ProtocolVersion::V311);
}

#[divan::bench]
fn decode_publish_v5(bencher: Bencher) {
    decode_one(bencher, ProtocolVersion::V5);
}

fn encode_one(bencher: Bencher, version: ProtocolVersion) {
    let publish = sample(version, 1);
    // The connection's write buffer is reused, so its growth is not part of the steady state.
    let mut buf = BytesMut::with_capacity(4096);
    bencher
        .counter(BytesCount::new(publish.encoded_len(version)))
        .bench_local(|| {
            buf.clear();
            black_box(&publish).encode(version, &mut buf);
            black_box(buf.len())
        });
}

#[divan::bench]
fn encode_publish_v311(bencher: Bencher) {
    encode_one(bencher, ProtocolVersion::V311);
}

#[divan::bench]
fn encode_publish_v5(bencher: Bencher) {
    encode_one(bencher, ProtocolVersion::V5);
}

const STREAM_LEN: u16 = 1000;

fn decode_stream(bencher: Bencher, version: ProtocolVersion) {
    let mut bytes = BytesMut::new();
    for id in 1..=STREAM_LEN {
        sample(version, id).encode(version, &mut bytes);
    }
    bencher
        .counter(ItemsCount::new(STREAM_LEN))
        .with_inputs(|| receive_buffer(&bytes))
        .bench_local_values(|mut buf| {
            let mut n = 0u32;
            while let Ok(Some(packet)) = decode(&mut buf, version, MAX_PACKET_SIZE) {
                // Each packet is dropped in the loop, as a router does once it has fanned out.
                if let Packet::Publish(p) = black_box(packet) {
                    n += u32::from(p.packet_id != 0);
                }
            }
            assert_eq!(n, u32::from(STREAM_LEN));
            buf
        });
}

#[divan::bench]
fn decode_1000_qos1_publish_v311(bencher: Bencher) {
    decode_stream(bencher, ProtocolVersion::V311);
}

#[divan::bench]
fn decode_1000_qos1_publish_v5(bencher: Bencher) {
    decode_stream(bencher, ProtocolVersion::V5);
}

/// Anchor, measured in the same run: copying the bytes of one encoded v3.1.1 PUBLISH into a
/// fresh buffer, the least a decoder that copies (instead of slicing) would do. The decode
/// figures are read against it, so the machine's speed cancels out.
#[divan::bench]
fn anchor_copy_publish_bytes_v311(bencher: Bencher) {
    let mut bytes = BytesMut::new();
    sample(ProtocolVersion::V311, 1).encode(ProtocolVersion::V311, &mut bytes);
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench_local(|| BytesMut::from(black_box(&bytes[..])));
}
