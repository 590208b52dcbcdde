//! The durable ingest seam: with an ingest log installed, a QoS 1 PUBACK (and a QoS 2 PUBREC)
//! is held until the log's durable watermark passes the message's ticket; then the
//! acknowledgements go out in the order of their PUBLISH packets. Messages the log does not want
//! are acknowledged at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetcore_core::RedbStore;
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_mqtt::broker::{
    Broker, BrokerConfig, IngestLog, Ingested, ListenerKind, Message, Publisher,
};
use fleetcore_mqtt::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Utf8, reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

struct AllowAll;

impl ConnectionGrant for AllowAll {
    fn allows(&self, _: MqttAction, _: &str) -> bool {
        true
    }

    fn revalidate(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Anyone;

impl Authenticator for Anyone {
    fn authenticate(&self, c: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: c.client_id.to_string(),
            grant: Arc::new(AllowAll),
        }
    }
}

/// An ingest log whose watermark the test moves by hand; it wants topics under `logged/`.
struct ManualLog {
    next: AtomicU64,
    durable: watch::Sender<u64>,
}

impl IngestLog for ManualLog {
    fn ingest(&self, message: &Arc<Message>, _: Publisher<'_>) -> Ingested {
        if message.topic.as_str().starts_with("logged/") {
            Ingested::Accepted(self.next.fetch_add(1, Ordering::SeqCst) + 1)
        } else {
            Ingested::NotWanted
        }
    }

    fn durable(&self, _: Publisher<'_>) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let mut c = Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 30,
            client_id: Utf8::new("seam").expect("id"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })))
        .await;
        match c.recv(Duration::from_secs(5)).await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, reason::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        protocol::encode(&packet, ProtocolVersion::V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16) {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: Utf8::new(topic).expect("topic"),
            packet_id,
            properties: PublishProperties::default(),
            payload: Bytes::from_static(b"{}"),
        }))
        .await;
    }

    /// The next packet within `wait`, or `None` if none came.
    async fn recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(p) = protocol::decode(&mut self.buf, ProtocolVersion::V5, 1 << 20)
                    .expect("valid packet")
                {
                    return p;
                }
                assert!(
                    self.stream.read_buf(&mut self.buf).await.expect("read") > 0,
                    "the broker closed the connection"
                );
            }
        })
        .await
        .ok()
    }
}

fn ack_id(packet: Option<Packet>) -> (&'static str, u16) {
    match packet {
        Some(Packet::PubAck(a)) => ("puback", a.packet_id),
        Some(Packet::PubRec(r)) => ("pubrec", r.packet_id),
        other => panic!("expected PUBACK or PUBREC, got {other:?}"),
    }
}

#[tokio::test]
async fn acknowledgements_wait_for_the_durable_watermark_and_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let (broker, _) =
        Broker::start(BrokerConfig::default(), store, Arc::new(Anyone)).expect("broker");
    let (durable, _) = watch::channel(0);
    let log = Arc::new(ManualLog {
        next: AtomicU64::new(0),
        durable,
    });
    broker
        .router()
        .set_ingest_log(Arc::clone(&log) as Arc<dyn IngestLog>);
    let addr = broker
        .listen("127.0.0.1:0".parse().expect("addr"), ListenerKind::Tcp)
        .await
        .expect("listen");
    let mut c = Client::connect(addr).await;

    // Not wanted by the log: acknowledged at once.
    c.publish("other/a", QoS::AtLeastOnce, 1).await;
    assert_eq!(ack_id(c.recv(Duration::from_secs(5)).await), ("puback", 1));

    // Wanted: tickets 1, 2, 3; nothing is acknowledged while the watermark stays at 0.
    c.publish("logged/a", QoS::AtLeastOnce, 10).await;
    c.publish("logged/b", QoS::ExactlyOnce, 11).await;
    c.publish("logged/c", QoS::AtLeastOnce, 12).await;
    assert!(
        c.recv(Duration::from_millis(500)).await.is_none(),
        "an acknowledgement went out before the message was durable"
    );

    // Tickets 1 and 2 durable: their acknowledgements, in order; the third still waits.
    log.durable.send_replace(2);
    assert_eq!(ack_id(c.recv(Duration::from_secs(5)).await), ("puback", 10));
    assert_eq!(ack_id(c.recv(Duration::from_secs(5)).await), ("pubrec", 11));
    assert!(c.recv(Duration::from_millis(300)).await.is_none());

    log.durable.send_replace(3);
    assert_eq!(ack_id(c.recv(Duration::from_secs(5)).await), ("puback", 12));
}
