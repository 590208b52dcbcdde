//! Messages per second through a 3-state detector model with 10,000 keys, in process (the
//! engine's `InputSink` path that BatchPutMessage and the rules `iotEvents` action use, without
//! HTTP), with detector state committed to a redb store as in `fleetcore serve`; and how late
//! timers fire under that load (p50 / p99 / max).
//!
//! `cargo bench -p fleetcore-events --bench detectors -- [messages] [keys]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_core::{AccountContext, InputMessage, InputSink, KvStore, RedbStore};
use fleetcore_events::model::DetectorModelRecord;
use fleetcore_events::{Events, EventsConfig, Targets};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;

/// Normal -(t > 30)-> Hot (sets a 1 s timer) -(timeout)-> Alarm -(t < 25)-> Normal; Hot
/// -(t < 25)-> Normal clears the timer. Every message evaluates conditions and most set a
/// variable.
fn definition() -> serde_json::Value {
    let count = json!({"setVariable": {"variableName": "n", "value": "$variable.n + 1"}});
    json!({
        "initialStateName": "Normal",
        "states": [
            {"stateName": "Normal",
             "onEnter": {"events": [{"eventName": "init", "condition": "isUndefined($variable.n)",
                                     "actions": [{"setVariable": {"variableName": "n", "value": "0"}}]}]},
             "onInput": {"events": [{"eventName": "count", "condition": "true", "actions": [count]}],
                         "transitionEvents": [{"eventName": "warm", "condition": "$input.T.t > 30",
                                               "actions": [], "nextState": "Hot"}]}},
            {"stateName": "Hot",
             "onEnter": {"events": [{"eventName": "arm", "condition": "true",
                                     "actions": [{"setTimer": {"timerName": "sustained", "seconds": 1}}]}]},
             "onInput": {"events": [{"eventName": "count", "condition": "true", "actions": [count]}],
                         "transitionEvents": [
                             {"eventName": "fire", "condition": "timeout(\"sustained\")", "actions": [], "nextState": "Alarm"},
                             {"eventName": "calm", "condition": "$input.T.t < 25",
                              "actions": [{"clearTimer": {"timerName": "sustained"}}], "nextState": "Normal"}]}},
            {"stateName": "Alarm",
             "onInput": {"events": [{"eventName": "count", "condition": "true", "actions": [count]}],
                         "transitionEvents": [{"eventName": "cooled", "condition": "$input.T.t < 25",
                                               "actions": [], "nextState": "Normal"}]}}
        ]
    })
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(1_000_000);
    let keys = args.get(1).copied().unwrap_or(10_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(messages, keys));
}

async fn run(messages: u64, keys: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn KvStore> =
        Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let lateness = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram"),
    ));
    let observed = Arc::clone(&lateness);
    let events = Events::start(
        store,
        Targets::default(),
        AccountContext::new("us-east-1", "000000000000"),
        EventsConfig {
            shards: 0,
            lateness: Some(Arc::new(move |ms| {
                let _ = observed.lock().record(ms.max(1));
            })),
        },
    )
    .expect("engine");
    events
        .create_input("T", None, vec!["t".into(), "id".into()])
        .expect("input");
    let now = 0.0;
    events
        .put_detector_model(
            DetectorModelRecord {
                name: "bench".into(),
                version: 0,
                description: None,
                key: Some("id".into()),
                role_arn: "arn:aws:iam::000000000000:role/bench".into(),
                evaluation_method: "SERIAL".into(),
                definition: definition(),
                created: now,
                updated: now,
            },
            false,
        )
        .await
        .expect("model");
    let payloads: Vec<Vec<u8>> = (0..keys)
        .flat_map(|k| {
            [35, 20, 40, 28].map(|t| format!("{{\"id\":\"k{k}\",\"t\":{t}}}").into_bytes())
        })
        .collect();
    let started = Instant::now();
    let batch = 100u64;
    let mut sent = 0u64;
    while sent < messages {
        let n = batch.min(messages - sent);
        let chunk: Vec<InputMessage> = (sent..sent + n)
            .map(|i| {
                // Round robin over the keys; each key sees 35, 20, 40, 28, ... in turn.
                let k = i % keys;
                let round = (i / keys) % 4;
                InputMessage {
                    input_name: "T".into(),
                    message_id: String::new(),
                    payload: payloads[(k * 4 + round) as usize].clone(),
                }
            })
            .collect();
        let outcomes = events.put(chunk).await;
        assert!(outcomes.iter().all(Result::is_ok));
        sent += n;
    }
    // A list is answered by each shard after every message queued before it is evaluated.
    let detectors = events.detectors("bench").await.expect("list");
    let elapsed = started.elapsed();
    assert_eq!(detectors.len() as u64, keys.min(messages));
    // Let the last timers come due and fire while nothing else runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = lateness.lock();
    println!(
        "messages={messages} keys={keys} elapsed={:.3}s rate={:.0}/s timers_fired={} lateness_ms p50={} p99={} max={}",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}
