//! Packets that arrive together are answered together: the broker handles every complete packet
//! it has read before it writes, so the answers of a burst leave in one write. What a client
//! sees must not change: every acknowledgement, in the order of its PUBLISH, and the answers
//! to packets before a DISCONNECT still sent before the close.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetcore_core::RedbStore;
use fleetcore_mqtt::broker::{Broker, BrokerConfig, ListenerKind};
use fleetcore_mqtt::protocol::{
    self, AckProperties, Disconnect, DisconnectProperties, Packet, ProtocolVersion, PubAck,
    Publish, PublishProperties, QoS, Utf8, reason,
};
use support::{Anyone, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Utf8::new(topic).expect("topic"),
        packet_id,
        properties: PublishProperties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

async fn start(config: BrokerConfig) -> (Broker, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let (broker, _) = Broker::start(config, store, Arc::new(Anyone)).expect("broker");
    let addr = broker
        .listen("127.0.0.1:0".parse().expect("addr"), ListenerKind::Tcp)
        .await
        .expect("listen");
    (broker, addr, dir)
}

/// Writes `packets` to the broker in one write call.
async fn write_all_at_once(stream: &mut TcpStream, packets: &[Packet]) {
    let mut out = BytesMut::new();
    for p in packets {
        protocol::encode(p, ProtocolVersion::V5, &mut out);
    }
    stream.write_all(&out).await.expect("write");
}

#[tokio::test]
async fn a_burst_of_publishes_is_acknowledged_in_order_and_delivered_in_order() {
    // A small write batch, so the burst's answers span several batches.
    let config = BrokerConfig {
        write_buffer_bytes: 64,
        ..BrokerConfig::default()
    };
    let (_broker, addr, _dir) = start(config).await;
    let mut sub = Client::connect(addr, "sub").await;
    sub.subscribe("burst/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "pub").await;
    let mut burst: Vec<Packet> = (1..=100u16)
        .map(|id| publish("burst/a", QoS::AtLeastOnce, id, &id.to_be_bytes()))
        .collect();
    burst.push(Packet::PingReq);
    write_all_at_once(publisher.stream(), &burst).await;

    for id in 1..=100u16 {
        match publisher.recv(WAIT).await {
            Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.reason), (id, reason::SUCCESS)),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    assert!(matches!(publisher.recv(WAIT).await, Some(Packet::PingResp)));

    // The subscriber acknowledges in bursts too; every message arrives once, in order.
    let mut next = 1u16;
    let mut acks = Vec::new();
    while next <= 100 {
        match sub.recv(WAIT).await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], next.to_be_bytes(), "in publish order");
                acks.push(Packet::PubAck(PubAck {
                    packet_id: p.packet_id,
                    reason: reason::SUCCESS,
                    properties: AckProperties::default(),
                }));
                next += 1;
                if acks.len() == 16 || next > 100 {
                    write_all_at_once(sub.stream(), &acks).await;
                    acks.clear();
                }
            }
            other => panic!("expected delivery {next}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn answers_to_packets_before_a_disconnect_are_sent_before_the_close() {
    let (_broker, addr, _dir) = start(BrokerConfig::default()).await;
    let mut c = Client::connect(addr, "leaving").await;
    let mut packets: Vec<Packet> = (1..=5u16)
        .map(|id| publish("t", QoS::AtLeastOnce, id, b"x"))
        .collect();
    packets.push(Packet::Disconnect(Disconnect {
        reason: reason::SUCCESS,
        properties: DisconnectProperties::default(),
    }));
    write_all_at_once(c.stream(), &packets).await;
    for id in 1..=5u16 {
        match c.recv(WAIT).await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    assert!(
        c.closed_within(WAIT).await,
        "the broker closes after DISCONNECT"
    );
}

#[tokio::test]
async fn a_malformed_packet_after_publishes_still_gets_their_acknowledgements() {
    let (_broker, addr, _dir) = start(BrokerConfig::default()).await;
    let mut c = Client::connect(addr, "clumsy").await;
    let mut out = BytesMut::new();
    for id in 1..=3u16 {
        protocol::encode(
            &publish("t", QoS::AtLeastOnce, id, b"x"),
            ProtocolVersion::V5,
            &mut out,
        );
    }
    // A PUBLISH with an empty topic and no alias: a protocol error.
    protocol::encode(
        &publish("", QoS::AtLeastOnce, 4, b"x"),
        ProtocolVersion::V5,
        &mut out,
    );
    c.stream().write_all(&out).await.expect("write");
    for id in 1..=3u16 {
        match c.recv(WAIT).await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    match c.recv(WAIT).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
}
