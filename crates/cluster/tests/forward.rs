//! The forward log against a real nats-server: a node's QoS 1 messages become durable (their
//! PUBACKs may go) only once JetStream stored them, a full stream holds the watermark back
//! instead of dropping anything, and once room is made every message is stored, each once, in
//! each publisher's order — also while another node's acknowledgements free room now and then,
//! so that JetStream refuses some publishes and accepts the next ones.

// The stream crate's nats-server helper, kept in one place; this test needs no restart.
#[allow(dead_code)]
#[path = "../../stream/tests/support/nats.rs"]
mod nats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use fleetcore_cluster::{Cluster, ClusterConfig};
use fleetcore_core::RedbStore;
use fleetcore_core::access::AllowAll;
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_mqtt::broker::{Broker, BrokerConfig, Ingested, Message, Publisher};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use futures_util::StreamExt;
use nats::NatsServer;

struct Anyone;

impl Authenticator for Anyone {
    fn authenticate(&self, _: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: "test".into(),
            grant: Arc::new(AllowAll),
        }
    }
}

fn message(i: usize) -> Arc<Message> {
    message_at(i, QoS::AtLeastOnce)
}

fn message_at(i: usize, qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: Utf8::new(format!("t/{}", i % 3)).expect("topic"),
        payload: Bytes::from(format!("{i:03}").into_bytes()),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    })
}

/// The ticket in a forwarded message's `Nats-Msg-Id` (`<node>.<boot>.<ticket>`).
fn ticket(message: &jetstream::Message) -> u64 {
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .expect("a message id")
        .as_str();
    id.rsplit('.')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a ticket")
}

/// The publishers of the tests' messages, by client id.
const PUBLISHERS: [&str; 2] = ["p0", "p1"];

fn publisher(i: usize) -> Publisher<'static> {
    Publisher {
        client_id: Some(PUBLISHERS[i % PUBLISHERS.len()]),
        principal: None,
    }
}

/// Node `a` on `nats` with a forward stream of 16 messages and `window` publishes in flight, and a
/// durable consumer `other` standing for another node (made before any message, so the stream
/// keeps every message for it).
async fn node_with_a_small_stream(
    nats: &NatsServer,
    dir: &tempfile::TempDir,
    window: usize,
) -> (
    Broker,
    Cluster,
    jetstream::stream::Stream,
    consumer::Consumer<consumer::pull::Config>,
) {
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let (broker, _) =
        Broker::start(BrokerConfig::default(), store, Arc::new(Anyone)).expect("broker");
    let mut config = ClusterConfig::new(nats.url.clone(), "a");
    config.forward_max_messages = 16;
    config.forward_window = window;
    let cluster = Cluster::join(config, Arc::clone(broker.router()))
        .await
        .expect("join");
    let js = jetstream::new(
        async_nats::connect(nats.url.as_str())
            .await
            .expect("connect"),
    );
    let stream = js
        .get_stream("fleetcore_forward")
        .await
        .expect("the stream exists");
    let other = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("other".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    (broker, cluster, stream, other)
}

/// The tickets `other` reads, acknowledging each (after `pause`), until it has `count` or
/// `deadline` passes.
async fn read_tickets(
    other: &consumer::Consumer<consumer::pull::Config>,
    count: usize,
    pause: Duration,
) -> Vec<u64> {
    let mut messages = other.messages().await.expect("messages");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} arrived: {seen:?}", seen.len()))
            .expect("the stream goes on")
            .expect("a message");
        seen.push(ticket(&next));
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        next.ack().await.expect("ack");
    }
    seen
}

/// Asserts that `seen` holds each of `sent` (ticket, publisher) once, in each publisher's
/// order.
fn each_once_in_each_publishers_order(seen: &[u64], sent: &[(u64, usize)]) {
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let mut all: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    all.sort_unstable();
    assert_eq!(sorted, all, "each message once");
    for p in 0..PUBLISHERS.len() {
        let mine: Vec<u64> = sent
            .iter()
            .filter(|(_, q)| *q == p)
            .map(|(t, _)| *t)
            .collect();
        let got: Vec<u64> = seen.iter().copied().filter(|t| mine.contains(t)).collect();
        assert_eq!(got, mine, "publisher {p}'s messages in its order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_holds_the_watermark_and_loses_nothing() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A small window, so new messages are sent while refused ones are being sent again.
    let (broker, _cluster, stream, other) = node_with_a_small_stream(&nats, &dir, 4).await;
    let router = Arc::clone(broker.router());
    let mut watermark = router
        .forward_watermark(Publisher::default())
        .expect("a forward log is installed");
    let mut last = 0;
    let mut sent = Vec::new();
    for i in 0..60 {
        match router.forward(&message(i), publisher(i)) {
            Ingested::Accepted(t) => {
                assert!(t > last, "tickets grow");
                last = t;
                sent.push((t, i % PUBLISHERS.len()));
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert_eq!(
        router.forward(&message_at(0, QoS::AtMostOnce), Publisher::default()),
        Ingested::NotWanted,
        "QoS 0 takes core NATS"
    );

    // The stream fills: the watermark stops at what it holds, below the last ticket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let info = stream.get_info().await.expect("info");
        let durable = *watermark.borrow_and_update();
        if info.state.messages == 16 && durable == info.state.messages {
            break durable;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not fill: {:?}",
            info.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        held < last,
        "held at {held} of {last}: the refused ones are not durable"
    );

    // The other node reads and acknowledges: room is made, every message is stored once, in
    // each publisher's order, and the watermark reaches the last ticket.
    let seen = read_tickets(&other, sent.len(), Duration::ZERO).await;
    each_once_in_each_publishers_order(&seen, &sent);
    tokio::time::timeout(Duration::from_secs(10), watermark.wait_for(|d| *d >= last))
        .await
        .expect("the watermark reaches the last ticket")
        .expect("the forward log runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_never_overtaken_by_its_publishers_next_one() {
    // The other node acknowledges slowly while messages keep coming: the 16-message stream stays at
    // its limit, each acknowledgement frees room for one message, and JetStream refuses some
    // publishes and accepts later ones. With many publishes in flight, a message sent after a
    // refused one is stored before it unless the forward log keeps each publisher's messages
    // one at a time.
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, _cluster, _stream, other) = node_with_a_small_stream(&nats, &dir, 256).await;
    let router = Arc::clone(broker.router());
    let mut watermark = router
        .forward_watermark(Publisher::default())
        .expect("a forward log is installed");
    const COUNT: usize = 300;
    let reader =
        tokio::spawn(async move { read_tickets(&other, COUNT, Duration::from_millis(2)).await });
    let mut sent = Vec::new();
    for i in 0..COUNT {
        match router.forward(&message(i), publisher(i)) {
            Ingested::Accepted(t) => sent.push((t, i % PUBLISHERS.len())),
            other => panic!("message {i}: {other:?}"),
        }
        if i % 20 == 19 {
            // Like publishers held at their Receive Maximum: wait for the acknowledgements.
            let t = sent[sent.len() - 1].0;
            tokio::time::timeout(Duration::from_secs(30), watermark.wait_for(|d| *d >= t))
                .await
                .expect("the watermark moves on")
                .expect("the forward log runs");
        }
    }
    let seen = reader.await.expect("the reader");
    each_once_in_each_publishers_order(&seen, &sent);
}
