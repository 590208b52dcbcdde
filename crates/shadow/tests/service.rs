//! The shadow service against a real broker router and redb store: serialized concurrent
//! updates, group commit, the broker tap, persistence across a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_core::access::AllowAll;
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_core::{KvStore, RedbStore};
use fleetcore_mqtt::broker::{Broker, BrokerConfig, Message, ServiceTap};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_shadow::{Operation, ShadowConfig, ShadowError, ShadowId, ShadowService};
use parking_lot::Mutex;
use serde_json::{Value, json};

struct Anyone;

impl Authenticator for Anyone {
    fn authenticate(&self, _: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: "test".into(),
            grant: Arc::new(AllowAll),
        }
    }
}

fn open(dir: &std::path::Path) -> Arc<dyn KvStore> {
    Arc::new(RedbStore::open(&dir.join("store.redb")).expect("open store"))
}

fn start(store: Arc<dyn KvStore>) -> (Broker, ShadowService) {
    let (broker, _) = Broker::start(
        BrokerConfig::default(),
        Arc::clone(&store),
        Arc::new(Anyone),
    )
    .expect("broker");
    let shadows = ShadowService::start(ShadowConfig::default(), store, Arc::clone(broker.router()))
        .expect("shadow service");
    (broker, shadows)
}

fn message(topic: &str, payload: &str) -> Arc<Message> {
    Arc::new(Message {
        topic: Utf8::new(topic).expect("topic"),
        payload: Bytes::from(payload.to_string()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: Some(Arc::from("tester")),
    })
}

/// Records the topics the router hands to a tap.
struct Recorder(Mutex<Vec<String>>);

impl ServiceTap for Recorder {
    fn on_message(&self, message: &Arc<Message>) {
        self.0.lock().push(message.topic.as_str().to_string());
    }
}

async fn update(
    shadows: &ShadowService,
    id: &ShadowId,
    payload: &str,
) -> Result<Value, ShadowError> {
    shadows
        .request(
            id.clone(),
            Operation::Update,
            Bytes::from(payload.to_string()),
        )
        .await
        .map(|body| serde_json::from_slice(&body).expect("the answer is JSON"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn concurrent_updates_get_consecutive_versions_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ShadowId::new("t1", None).expect("id");
    // First life: its runtime (and the broker's store writer with it) ends before the second.
    runtime().block_on(async {
        let (broker, shadows) = start(open(dir.path()));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (shadows, id) = (shadows.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let payload = json!({"state": {"reported": {format!("k{}", i % 10): i}}});
                update(&shadows, &id, &payload.to_string()).await
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            let answer = t.await.expect("join").expect("accepted");
            versions.push(answer["version"].as_u64().expect("version"));
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=200).collect::<Vec<u64>>());

        // a stale version is refused and changes nothing; the current one is accepted
        let stale = update(
            &shadows,
            &id,
            r#"{"state":{"reported":{"x":1}},"version":3}"#,
        )
        .await
        .expect_err("stale");
        assert!(matches!(stale, ShadowError::VersionConflict));
        let current = update(
            &shadows,
            &id,
            r#"{"state":{"reported":{"x":1}},"version":200}"#,
        )
        .await
        .expect("current version");
        assert_eq!(current["version"], 201);
        shadows.shutdown().await;
        broker.shutdown().await.expect("broker shutdown");
    });

    runtime().block_on(async {
        let (_broker, shadows) = start(open(dir.path()));
        let doc = shadows.get("t1", None).expect("get").expect("exists");
        assert_eq!(doc["version"], 201);
        assert_eq!(doc["state"]["reported"]["x"], 1);
        assert_eq!(
            doc["state"]["reported"].as_object().map(|o| o.len()),
            Some(11)
        );
        shadows.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_sees_claimed_topics_and_the_service_ignores_its_own_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, shadows) = start(open(dir.path()));
    let router = Arc::clone(broker.router());
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    router.add_tap(
        vec!["$aws/things/+/shadow/#".into()],
        Arc::clone(&recorder) as Arc<dyn ServiceTap>,
    );

    router.publish(message(
        "devices/t2/shadow/update",
        r#"{"state":{"reported":{"a":1}}}"#,
    ));
    router.publish(message("elsewhere/t2", "x"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc: Value = loop {
        if let Some(doc) = shadows.get("t2", None).expect("get") {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the alias update was not applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(doc["state"]["reported"]["a"], 1);
    // the answers went through the router (and so past the recorder's filter)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !recorder
        .0
        .lock()
        .iter()
        .any(|t| t.ends_with("/update/documents"))
    {
        assert!(
            Instant::now() < deadline,
            "no documents: {:?}",
            recorder.0.lock()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        recorder.0.lock().clone(),
        [
            "$aws/things/t2/shadow/update/accepted",
            "$aws/things/t2/shadow/update/documents"
        ]
    );
    // an output topic is not a request
    router.publish(message(
        "$aws/things/t2/shadow/update/accepted",
        r#"{"state":{"reported":{"a":9}}}"#,
    ));
    let check = update(
        &shadows,
        &ShadowId::new("t2", None).expect("id"),
        r#"{"state":{}}"#,
    )
    .await
    .expect("accepted");
    assert_eq!(
        check["version"], 2,
        "only the alias update and this one count"
    );
    shadows.shutdown().await;
}

/// A store whose commits fail while `failing` is set.
struct FlakyStore {
    inner: RedbStore,
    failing: std::sync::atomic::AtomicBool,
}

impl KvStore for FlakyStore {
    fn get(
        &self,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, fleetcore_core::StoreError> {
        self.inner.get(table, key)
    }

    fn scan_prefix(
        &self,
        table: &'static str,
        prefix: &[u8],
    ) -> Result<fleetcore_core::store::Entries, fleetcore_core::StoreError> {
        self.inner.scan_prefix(table, prefix)
    }

    fn apply(&self, batch: fleetcore_core::WriteBatch) -> Result<(), fleetcore_core::StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(fleetcore_core::StoreError::Backend {
                operation: "commit",
                message: "disk full".into(),
            });
        }
        self.inner.apply(batch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_answered_500_and_leaves_no_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = Arc::new(FlakyStore {
        inner: RedbStore::open(&dir.path().join("store.redb")).expect("open"),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let (_broker, shadows) = start(Arc::clone(&flaky) as Arc<dyn KvStore>);
    let id = ShadowId::new("t3", None).expect("id");
    let first = update(&shadows, &id, r#"{"state":{"reported":{"a":1}}}"#)
        .await
        .expect("first");
    assert_eq!(first["version"], 1);
    flaky
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = update(&shadows, &id, r#"{"state":{"reported":{"a":2,"b":1}}}"#)
        .await
        .expect_err("the commit fails");
    assert_eq!(failed.code(), 500);
    flaky
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let next = update(&shadows, &id, r#"{"state":{"reported":{"c":1}}}"#)
        .await
        .expect("next");
    assert_eq!(next["version"], 2, "the failed update did not count");
    let doc = shadows.get("t3", None).expect("get").expect("exists");
    assert_eq!(doc["state"]["reported"], json!({"a": 1, "c": 1}));
    shadows.shutdown().await;
}
