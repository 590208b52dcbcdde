//! Durable queues of persistent sessions: a QoS 1 message routed to a persistent session is
//! acknowledged to its publisher only once it is on disk, and it comes back after a crash (the
//! broker's runtime dropped without a shutdown: nothing is saved on the way out). Messages to
//! clean sessions never wait for the disk.

mod support;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetcore_core::store::{Entries, WriteOp};
use fleetcore_core::{KvStore, RedbStore, StoreError, WriteBatch};
use fleetcore_mqtt::broker::{Broker, BrokerConfig, ListenerKind, LoadReport};
use fleetcore_mqtt::protocol::{Packet, Publish, QoS};
use support::{Anyone, Client};

const WAIT: Duration = Duration::from_secs(5);
const QUEUE_TABLE: &str = "mqtt_session_queue";

async fn start(store: Arc<dyn KvStore>) -> (Broker, LoadReport, std::net::SocketAddr) {
    let (broker, report) =
        Broker::start(BrokerConfig::default(), store, Arc::new(Anyone)).expect("broker");
    let addr = broker
        .listen("127.0.0.1:0".parse().expect("addr"), ListenerKind::Tcp)
        .await
        .expect("listen");
    (broker, report, addr)
}

fn open(dir: &Path) -> Arc<dyn KvStore> {
    Arc::new(RedbStore::open(&dir.join("store.redb")).expect("store"))
}

async fn expect_publish(c: &mut Client) -> Publish {
    match c.recv(WAIT).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

async fn expect_puback(c: &mut Client, packet_id: u16) {
    match c.recv(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.reason), (packet_id, 0)),
        other => panic!("expected PUBACK {packet_id}, got {other:?}"),
    }
}

#[test]
fn acknowledged_messages_come_back_after_a_crash_in_order() {
    const N: u16 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tokio::runtime::Runtime::new().expect("runtime");
    crashed.block_on(async {
        let (_broker, _, addr) = start(open(dir.path())).await;
        let (mut sub, _) = Client::connect_with(addr, "keeper", true, Some(3600)).await;
        sub.subscribe("q/#", QoS::AtLeastOnce).await;
        drop(sub);
        let mut publisher = Client::connect(addr, "publisher").await;
        for id in 1..=N {
            let payload = Bytes::from(id.to_string());
            publisher
                .publish("q/a", QoS::AtLeastOnce, id, payload)
                .await;
            expect_puback(&mut publisher, id).await;
        }
    });
    // Every PUBACK is in; the process "dies": no shutdown, no final save.
    drop(crashed);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (_broker, report, addr) = start(open(dir.path())).await;
        assert_eq!((report.sessions, report.queued), (1, usize::from(N)));
        let (mut sub, present) = Client::connect_with(addr, "keeper", false, Some(3600)).await;
        assert!(present, "the persistent session came back");
        for id in 1..=N {
            let p = expect_publish(&mut sub).await;
            assert_eq!(p.payload, Bytes::from(id.to_string()), "order kept");
            assert!(!p.dup, "a queued message was never sent before");
            sub.puback(p.packet_id).await;
        }
        assert!(sub.recv(Duration::from_millis(300)).await.is_none());
    });
}

/// A store whose commits that touch the durable queues wait while the gate is closed.
struct GatedStore {
    inner: Arc<dyn KvStore>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedStore {
    fn set(&self, open: bool) {
        *self.open.lock().expect("gate") = open;
        self.opened.notify_all();
    }
}

impl KvStore for GatedStore {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }

    fn scan_prefix(&self, table: &'static str, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let queues = batch.ops().iter().any(|op| {
            matches!(op, WriteOp::Put { table, .. } | WriteOp::Delete { table, .. }
                | WriteOp::DeletePrefix { table, .. } if *table == QUEUE_TABLE)
        });
        if queues {
            let mut open = self.open.lock().expect("gate");
            while !*open {
                open = self.opened.wait(open).expect("gate");
            }
        }
        self.inner.apply(batch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_is_acknowledged_after_the_commit_and_clean_sessions_never_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gated = Arc::new(GatedStore {
        inner: open(dir.path()),
        open: Mutex::new(true),
        opened: Condvar::new(),
    });
    let (_broker, _, addr) = start(Arc::clone(&gated) as Arc<dyn KvStore>).await;
    let (mut keeper, _) = Client::connect_with(addr, "keeper", true, Some(3600)).await;
    keeper.subscribe("p/#", QoS::AtLeastOnce).await;
    drop(keeper);
    let mut clean = Client::connect(addr, "clean").await;
    clean.subscribe("c/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "publisher").await;

    gated.set(false);
    // To a clean session: acknowledged and delivered with the disk stopped.
    publisher
        .publish("c/x", QoS::AtLeastOnce, 1, Bytes::from_static(b"clean"))
        .await;
    expect_puback(&mut publisher, 1).await;
    assert_eq!(expect_publish(&mut clean).await.payload, "clean");
    // To a persistent session: no PUBACK while its message cannot be committed.
    publisher
        .publish("p/x", QoS::AtLeastOnce, 2, Bytes::from_static(b"kept"))
        .await;
    assert!(
        publisher.recv(Duration::from_millis(500)).await.is_none(),
        "PUBACK sent before the message was on disk"
    );
    gated.set(true);
    expect_puback(&mut publisher, 2).await;
}
