//! The forward log against a real nats-server: a node's QoS 1 messages become durable (their
//! PUBACKs may go) only once JetStream stored them, a full stream holds the watermark back
//! instead of dropping anything, and once room is made every message is stored, each once, in
//! the order of its ticket.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_holds_the_watermark_and_loses_nothing() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let (broker, _) =
        Broker::start(BrokerConfig::default(), store, Arc::new(Anyone)).expect("broker");
    let router = Arc::clone(broker.router());
    let mut config = ClusterConfig::new(nats.url.clone(), "a");
    config.forward_max_bytes = 4096;
    // A small window, so new messages are sent while refused ones are being sent again.
    config.forward_window = 4;
    let _cluster = Cluster::join(config, Arc::clone(&router))
        .await
        .expect("join");

    // Another node's consumer that does not read yet: its backlog fills the 4 KiB stream.
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

    let mut watermark = router
        .forward_watermark(Publisher::default())
        .expect("a forward log is installed");
    let mut last = 0;
    for i in 0..60 {
        match router.forward(&message(i), Publisher::default()) {
            Ingested::Accepted(t) => {
                assert!(t > last, "tickets grow");
                last = t;
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
        if info.state.bytes > 3000 && durable == info.state.messages {
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
    // ticket order, and the watermark reaches the last ticket.
    let mut messages = other.messages().await.expect("messages");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < last as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {last} arrived: {seen:?}", seen.len()))
            .expect("the stream goes on")
            .expect("a message");
        seen.push(ticket(&next));
        next.ack().await.expect("ack");
    }
    assert_eq!(seen, (1..=last).collect::<Vec<_>>(), "each once, in order");
    tokio::time::timeout(Duration::from_secs(10), watermark.wait_for(|d| *d >= last))
        .await
        .expect("the watermark reaches the last ticket")
        .expect("the forward log runs");
}
