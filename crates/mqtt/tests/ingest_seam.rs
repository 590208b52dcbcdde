//! The durable ingest seam: with an ingest log installed, a QoS 1 PUBACK (and a QoS 2 PUBREC)
//! is held until the log's durable watermark passes the message's ticket; then the
//! acknowledgements go out in the order of their PUBLISH packets. Messages the log does not want
//! are acknowledged at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetcore_core::RedbStore;
use fleetcore_mqtt::broker::{
    Broker, BrokerConfig, IngestLog, Ingested, ListenerKind, Message, Publisher,
};
use fleetcore_mqtt::protocol::{Packet, QoS, reason};
use support::{Anyone, Client};
use tokio::sync::watch;

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
    let mut c = Client::connect(addr, "seam").await;

    // Not wanted by the log: acknowledged at once.
    c.publish("other/a", QoS::AtLeastOnce, 1, Bytes::from_static(b"{}"))
        .await;
    assert_eq!(ack_id(c.recv(Duration::from_secs(5)).await), ("puback", 1));

    // Wanted: tickets 1, 2, 3; nothing is acknowledged while the watermark stays at 0.
    c.publish("logged/a", QoS::AtLeastOnce, 10, Bytes::from_static(b"{}"))
        .await;
    c.publish("logged/b", QoS::ExactlyOnce, 11, Bytes::from_static(b"{}"))
        .await;
    c.publish("logged/c", QoS::AtLeastOnce, 12, Bytes::from_static(b"{}"))
        .await;
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

#[tokio::test]
async fn a_client_beyond_receive_maximum_while_acknowledgements_wait_is_disconnected_with_0x93() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let config = BrokerConfig {
        max_inflight: 2,
        ..BrokerConfig::default()
    };
    let (broker, _) = Broker::start(config, store, Arc::new(Anyone)).expect("broker");
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
    let mut c = Client::connect(addr, "seam").await;

    // One QoS 1 and one QoS 2 message wait for the log: the Receive Maximum of 2 is used up.
    c.publish("logged/a", QoS::AtLeastOnce, 1, Bytes::from_static(b"{}"))
        .await;
    c.publish("logged/b", QoS::ExactlyOnce, 2, Bytes::from_static(b"{}"))
        .await;
    // A resend of the QoS 2 message is no new message: it is acknowledged, not refused.
    c.publish("logged/b", QoS::ExactlyOnce, 2, Bytes::from_static(b"{}"))
        .await;
    assert!(
        c.recv(Duration::from_millis(300)).await.is_none(),
        "an acknowledgement went out before the message was durable"
    );
    // A third message breaks the Receive Maximum.
    c.publish("logged/c", QoS::AtLeastOnce, 3, Bytes::from_static(b"{}"))
        .await;
    match c.recv(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::RECEIVE_MAXIMUM_EXCEEDED),
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "the connection stayed open after DISCONNECT"
    );
}
