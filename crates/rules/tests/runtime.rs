//! The rule runtime over a real broker router, embedded ingest partitions and a Kinesis-like
//! stream store: a rule with four actions delivers each message once to each; among 10,000 rules
//! with distinct filters, a message reaches only the one rule that matches; after a restart the
//! readers resume from their checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_core::access::AllowAll;
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_core::{KvStore, RedbStore};
use fleetcore_mqtt::broker::{Broker, BrokerConfig, IngestLog, Ingested, Message, Publisher};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_rules::RuleEnv;
use fleetcore_rules::actions::{Destinations, HttpsClient, HttpsConfig};
use fleetcore_rules::destinations::TopicRuleDestinations;
use fleetcore_rules::ingest::{IngestConfig, IngestFilter, IngestPartition, IngestWriter};
use fleetcore_rules::registry::{RuleRegistry, TopicRulePayload};
use fleetcore_rules::runtime::{RuleIndex, RuleRuntime, RuntimeConfig};
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Position, Stream, StreamMode, StreamSpec};
use serde_json::{Value, json};

const PARTITIONS: usize = 3;
const ROLE: &str = "arn:aws:iam::000000000000:role/rules";

struct Anyone;

impl Authenticator for Anyone {
    fn authenticate(&self, _: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: "test".into(),
            grant: Arc::new(AllowAll),
        }
    }
}

/// A server's rules side: broker router, registry, ingest partitions, user streams.
struct Engine {
    broker: Broker,
    registry: Arc<RuleRegistry>,
    writer: Arc<IngestWriter>,
    index: Arc<RuleIndex>,
    runtime: Arc<RuleRuntime>,
    streams: Arc<dyn Stream>,
}

async fn open_stream(dir: &Path) -> Arc<dyn Stream> {
    Arc::new(
        EmbeddedStreams::open(dir, EmbeddedConfig::default())
            .await
            .expect("stream store"),
    )
}

impl Engine {
    /// Starts over `dir`; `store` is the server's key-value store (kept open across a restart,
    /// as the broker's background writer may still hold it).
    async fn start(dir: &Path, store: &Arc<dyn KvStore>) -> Engine {
        let store = Arc::clone(store);
        let (broker, _) = Broker::start(
            BrokerConfig::default(),
            Arc::clone(&store),
            Arc::new(Anyone),
        )
        .expect("broker");
        let registry = Arc::new(RuleRegistry::open(Arc::clone(&store)).expect("registry"));
        let streams = open_stream(&dir.join("streams")).await;
        let mut partitions = Vec::new();
        for n in 0..PARTITIONS {
            let store = open_stream(&dir.join(format!("ingest/partition-{n}"))).await;
            partitions.push(Arc::new(
                IngestPartition::open(store, 24).await.expect("partition"),
            ));
        }
        let index = Arc::new(RuleIndex::new());
        let writer = Arc::new(IngestWriter::start(
            &partitions,
            Arc::clone(&index) as Arc<dyn IngestFilter>,
            IngestConfig::default(),
        ));
        let https = HttpsClient::new(&HttpsConfig::default()).expect("https client");
        let topic_rule_destinations = Arc::new(
            TopicRuleDestinations::open(Arc::clone(&store), https.clone()).expect("destinations"),
        );
        let runtime = RuleRuntime::start(
            Arc::clone(&registry),
            partitions,
            Arc::clone(&index),
            Destinations {
                router: Arc::clone(broker.router()),
                streams: Arc::clone(&streams),
                firehose: None,
                https,
                topic_rule_destinations,
                functions: None,
                events: None,
                analytics: None,
                notifications: None,
                cloudwatch: None,
            },
            RuleEnv::default(),
            RuntimeConfig::default(),
        )
        .await
        .expect("runtime");
        Engine {
            broker,
            registry,
            writer,
            index,
            runtime,
            streams,
        }
    }

    /// Stops the readers (they checkpoint) and the broker (it releases the store).
    async fn stop(self) {
        self.runtime.shutdown().await;
        self.broker.shutdown().await.expect("broker shutdown");
    }

    /// Publishes like a device `client` would, and waits until the message is durable.
    async fn publish(&self, client: &str, topic: &str, payload: Value) {
        let message = Arc::new(Message {
            topic: Utf8::new(topic).expect("topic"),
            payload: Bytes::from(payload.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        });
        let publisher = Publisher {
            client_id: Some(client),
            principal: Some("test"),
        };
        if let Ingested::Accepted(ticket) = self.writer.ingest(&message, publisher) {
            let mut durable = self.writer.durable(publisher);
            tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|w| *w >= ticket))
                .await
                .expect("durable in time")
                .expect("writer alive");
        }
    }

    async fn create_stream(&self, name: &str) {
        self.streams
            .create_stream(StreamSpec {
                name: name.into(),
                mode: StreamMode::Provisioned,
                shard_count: 1,
                retention_hours: 24,
            })
            .await
            .expect("create stream");
    }

    /// Every record of stream `name`, as JSON.
    async fn records(&self, name: &str) -> Vec<Value> {
        let shard = self
            .streams
            .describe_stream(name)
            .await
            .expect("stream")
            .shards[0]
            .id;
        let mut from = Position(0);
        let mut out = Vec::new();
        loop {
            let batch = self
                .streams
                .read(name, shard, from, 10_000)
                .await
                .expect("read");
            if batch.records.is_empty() {
                return out;
            }
            out.extend(
                batch
                    .records
                    .iter()
                    .map(|r| serde_json::from_slice(&r.data).expect("json record")),
            );
            from = batch.next;
        }
    }

    /// Waits until stream `name` has at least `count` records; returns them.
    async fn wait_records(&self, name: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = self.records(name).await;
            if records.len() >= count {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {count} records after 30 s",
                records.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn kv(dir: &Path) -> Arc<dyn KvStore> {
    Arc::new(RedbStore::open(&dir.join("store.redb")).expect("store"))
}

fn rule(sql: &str, actions: Vec<Value>) -> TopicRulePayload {
    serde_json::from_value(json!({
        "sql": sql,
        "awsIotSqlVersion": "2016-03-23",
        "actions": actions,
    }))
    .expect("payload")
}

fn kinesis(stream: &str) -> Value {
    json!({"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "${topic(2)}"}})
}

/// (publisher, i) of every record, with how often each was delivered.
fn counted(records: &[Value]) -> BTreeMap<(String, i64), usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = (
            r["p"].as_str().unwrap_or_default().to_string(),
            r["i"].as_i64().unwrap_or(-1),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_actions_each_get_every_message_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::start(dir.path(), &kv(dir.path())).await;
    for n in 0..4 {
        engine.create_stream(&format!("out{n}")).await;
    }
    // Created from a blocking thread, as the API does.
    let registry = Arc::clone(&engine.registry);
    tokio::task::spawn_blocking(move || {
        registry
            .create(
                "fan_out",
                &rule(
                    "SELECT * FROM 'dev/+/t' WHERE i >= 0",
                    (0..4).map(|n| kinesis(&format!("out{n}"))).collect(),
                ),
                None,
            )
            .expect("create")
    })
    .await
    .expect("join");
    assert!(engine.index.wants("dev/a/t"));
    assert!(!engine.index.wants("dev/a/other"));
    let publishers = ["alpha", "bravo", "charlie", "delta", "echo"];
    for i in 0..100 {
        for p in publishers {
            engine
                .publish(p, &format!("dev/{p}/t"), json!({"p": p, "i": i}))
                .await;
        }
    }
    // WHERE false: evaluated, delivered nowhere.
    engine
        .publish("alpha", "dev/alpha/t", json!({"p": "alpha", "i": -1}))
        .await;
    engine
        .publish("alpha", "dev/alpha/t", json!({"p": "alpha", "i": 100}))
        .await;
    for n in 0..4 {
        let records = engine.wait_records(&format!("out{n}"), 501).await;
        let counts = counted(&records);
        assert_eq!(counts.len(), 501, "out{n}: every message once");
        assert!(counts.values().all(|&c| c == 1), "out{n}: no duplicates");
        assert!(!counts.contains_key(&("alpha".into(), -1)));
        // One publisher's messages keep their order through one partition and one action.
        let alpha: Vec<i64> = records
            .iter()
            .filter(|r| r["p"] == "alpha")
            .map(|r| r["i"].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(alpha, (0..=100).collect::<Vec<_>>());
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn among_ten_thousand_rules_only_the_matching_one_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::start(dir.path(), &kv(dir.path())).await;
    engine.create_stream("hits").await;
    let started = Instant::now();
    // From 8 threads, as concurrent API calls: their store writes share commits.
    let creators: Vec<_> = (0..8)
        .map(|t| {
            let registry = Arc::clone(&engine.registry);
            tokio::task::spawn_blocking(move || {
                for i in (t..10_000).step_by(8) {
                    registry
                        .create(
                            &format!("r{i}"),
                            &rule(
                                &format!("SELECT *, 'r{i}' AS rule FROM 'fleet/{i}/+'"),
                                vec![kinesis("hits")],
                            ),
                            None,
                        )
                        .expect("create");
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await.expect("join");
    }
    eprintln!("10,000 rules created in {:?}", started.elapsed());
    engine
        .publish("dev", "fleet/4242/t", json!({"p": "dev", "i": 1}))
        .await;
    engine
        .publish("dev", "fleet/9999/t", json!({"p": "dev", "i": 2}))
        .await;
    assert!(!engine.index.wants("fleet/10000/t"));
    let records = engine.wait_records("hits", 2).await;
    let rules: Vec<&str> = records.iter().filter_map(|r| r["rule"].as_str()).collect();
    assert_eq!(rules, ["r4242", "r9999"]);
    // Deleting takes the rule out before the call returns.
    let registry = Arc::clone(&engine.registry);
    tokio::task::spawn_blocking(move || registry.delete("r4242").expect("delete"))
        .await
        .expect("join");
    assert!(!engine.index.wants("fleet/4242/t"));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint_without_losing_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = kv(dir.path());
    {
        let engine = Engine::start(dir.path(), &store).await;
        engine.create_stream("out").await;
        let registry = Arc::clone(&engine.registry);
        tokio::task::spawn_blocking(move || {
            registry
                .create(
                    "keep",
                    &rule("SELECT * FROM 'k/#'", vec![kinesis("out")]),
                    None,
                )
                .expect("create")
        })
        .await
        .expect("join");
        for i in 0..50 {
            engine.publish("a", "k/a", json!({"p": "a", "i": i})).await;
        }
        engine.wait_records("out", 50).await;
        engine.stop().await;
    }
    let engine = Engine::start(dir.path(), &store).await;
    for i in 50..60 {
        engine.publish("a", "k/a", json!({"p": "a", "i": i})).await;
    }
    let records = engine.wait_records("out", 60).await;
    let counts = counted(&records);
    assert_eq!(counts.len(), 60);
    // A clean shutdown checkpointed everything delivered: nothing is delivered twice.
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
    engine.stop().await;
}
