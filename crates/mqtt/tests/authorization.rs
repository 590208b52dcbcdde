//! The broker enforces what a connection's grant allows: refused PUBLISH and SUBSCRIBE get
//! reason 0x87 over MQTT 5 (3.1.1 publishers are disconnected, as AWS IoT does), deliveries the
//! grant does not allow are not sent, and a grant that fails revalidation ends its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetcore_core::RedbStore;
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_mqtt::broker::{Broker, BrokerConfig, ListenerKind};
use fleetcore_mqtt::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions, Utf8, reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Denies publishing and subscribing under `secret/`, receiving under `hidden/`, and fails
/// revalidation once `revoked` is set.
struct TestGrant {
    revoked: Arc<AtomicBool>,
}

impl ConnectionGrant for TestGrant {
    fn allows(&self, action: MqttAction, resource: &str) -> bool {
        match action {
            MqttAction::Publish | MqttAction::RetainPublish | MqttAction::Subscribe => {
                !resource.starts_with("secret/")
            }
            MqttAction::Receive => !resource.starts_with("hidden/"),
        }
    }

    fn revalidate(&self) -> Result<(), String> {
        if self.revoked.load(Ordering::SeqCst) {
            Err("certificate revoked".into())
        } else {
            Ok(())
        }
    }
}

struct TestAuthenticator {
    revoked: Arc<AtomicBool>,
}

impl Authenticator for TestAuthenticator {
    fn authenticate(&self, c: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: c.client_id.to_string(),
            grant: Arc::new(TestGrant {
                revoked: Arc::clone(&self.revoked),
            }),
        }
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

const DEADLINE: Duration = Duration::from_secs(5);

fn utf8(s: &str) -> Utf8 {
    Utf8::new(s).expect("valid string")
}

impl Client {
    async fn connect(addr: SocketAddr, id: &str, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            version,
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 30,
            client_id: utf8(id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, reason::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        protocol::encode(&packet, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet, or `None` when the broker closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(p) = protocol::decode(&mut self.buf, self.version, 1 << 20)
                    .expect("broker sent a valid packet")
                {
                    return Some(p);
                }
                if self.stream.read_buf(&mut self.buf).await.expect("read") == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("broker answered within the deadline")
    }

    async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16) {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: utf8(topic),
            packet_id,
            properties: PublishProperties::default(),
            payload: Bytes::from_static(b"x"),
        }))
        .await;
    }

    async fn subscribe(&mut self, filter: &str, packet_id: u16) -> u8 {
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: utf8(filter),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack.reasons[0],
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

async fn start() -> (tempfile::TempDir, Broker, SocketAddr, Arc<AtomicBool>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let revoked = Arc::new(AtomicBool::new(false));
    let authenticator = Arc::new(TestAuthenticator {
        revoked: Arc::clone(&revoked),
    });
    let (broker, _) = Broker::start(BrokerConfig::default(), store, authenticator).expect("broker");
    let addr = broker
        .listen("127.0.0.1:0".parse().expect("addr"), ListenerKind::Tcp)
        .await
        .expect("listen");
    (dir, broker, addr, revoked)
}

#[tokio::test]
async fn denied_publish_and_subscribe_get_0x87_over_mqtt5() {
    let (_dir, _broker, addr, _) = start().await;
    let mut c = Client::connect(addr, "c5", ProtocolVersion::V5).await;
    c.publish("secret/a", QoS::AtLeastOnce, 1).await;
    match c.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    c.publish("secret/a", QoS::ExactlyOnce, 2).await;
    match c.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!(rec.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    assert_eq!(c.subscribe("secret/#", 3).await, reason::NOT_AUTHORIZED);
    // Still connected and allowed elsewhere.
    assert_eq!(c.subscribe("open/#", 4).await, 1);
    c.publish("open/a", QoS::AtLeastOnce, 5).await;
    let mut saw_ack = false;
    let mut saw_message = false;
    while !(saw_ack && saw_message) {
        match c.recv().await {
            Some(Packet::PubAck(ack)) if ack.packet_id == 5 => {
                assert_eq!(ack.reason, reason::SUCCESS);
                saw_ack = true;
            }
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic.as_str(), "open/a");
                saw_message = true;
                c.send(Packet::PubAck(protocol::PubAck {
                    packet_id: p.packet_id,
                    ..Default::default()
                }))
                .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn denied_publish_disconnects_a_311_client_and_denied_subscribe_gets_0x80() {
    let (_dir, _broker, addr, _) = start().await;
    let mut c = Client::connect(addr, "c3", ProtocolVersion::V311).await;
    assert_eq!(c.subscribe("secret/#", 1).await, 0x80);
    c.publish("secret/a", QoS::AtLeastOnce, 2).await;
    assert_eq!(c.recv().await, None, "a 3.1.1 client is disconnected");
}

#[tokio::test]
async fn deliveries_the_grant_does_not_allow_are_not_sent() {
    let (_dir, _broker, addr, _) = start().await;
    let mut sub = Client::connect(addr, "sub", ProtocolVersion::V5).await;
    assert_eq!(sub.subscribe("#", 1).await, 1);
    let mut publisher = Client::connect(addr, "pub", ProtocolVersion::V5).await;
    publisher.publish("hidden/a", QoS::AtMostOnce, 0).await;
    publisher.publish("shown/a", QoS::AtMostOnce, 0).await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "shown/a"),
        other => panic!("expected the allowed message only, got {other:?}"),
    }
}

#[tokio::test]
async fn failed_revalidation_ends_live_connections_with_0x87() {
    let (_dir, broker, addr, revoked) = start().await;
    let mut c = Client::connect(addr, "victim", ProtocolVersion::V5).await;
    revoked.store(true, Ordering::SeqCst);
    broker.router().revalidate_all();
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
}
