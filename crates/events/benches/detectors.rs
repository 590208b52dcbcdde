//! Messages per second through a 3-state detector model with 10,000 keys, in process (the
//! engine's `InputSink` path that BatchPutMessage and the rules `iotEvents` action use, without
//! HTTP), with detector state committed to a redb store as in `fleetcore serve`; and how late
//! timers fire while that load runs.
//!
//! Most keys ("load keys") receive 35, 20, 40, 28, ... round robin for the whole run, so their
//! 3 s timer is armed and cleared again and never fires. A known set of "timer keys" receive one
//! `t = 35` each, spread over seconds 1 to 3 of the run, and nothing after: each arms its timer,
//! which comes due (seconds 4 to 6) while the load keys still take the full message rate. A
//! timer's lateness is measured from its due time to the end of the shard commit that made its
//! firing durable (when its effects start). The bench checks that every armed timer fired once
//! and that no load key's timer fired.
//!
//! `cargo bench -p fleetcore-events --bench detectors -- [seconds] [keys] [timer_keys]
//! [timer_check]` (defaults 10 s, 10,000 keys, 1,000 of them timer keys, the engine's default
//! clock check every 64 commands; 0 fires timers only between full turns, the old behaviour).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_core::{AccountContext, InputMessage, InputSink, KvStore, RedbStore};
use fleetcore_events::model::DetectorModelRecord;
use fleetcore_events::{Events, EventsConfig, Targets};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;

/// Seconds a key stays in Hot before its timer moves it to Alarm.
const TIMER_SECONDS: u64 = 3;
/// Messages per `put` call.
const BATCH: u64 = 100;

/// Normal -(t > 30)-> Hot (sets a 3 s timer) -(timeout)-> Alarm -(t < 25)-> Normal; Hot
/// -(t < 25)-> Normal clears the timer. Every message evaluates conditions and sets a variable.
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
                                     "actions": [{"setTimer": {"timerName": "sustained", "seconds": TIMER_SECONDS}}]}]},
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
    let seconds = args.first().copied().unwrap_or(10).max(TIMER_SECONDS + 4);
    let keys = args.get(1).copied().unwrap_or(10_000);
    let timer_keys = args.get(2).copied().unwrap_or(1_000).min(keys / 2);
    let timer_check = args
        .get(3)
        .map_or(EventsConfig::default().timer_check, |&n| n as usize);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(
        Duration::from_secs(seconds),
        keys,
        timer_keys,
        timer_check,
    ));
}

fn message(key: u64, t: u32) -> InputMessage {
    InputMessage {
        input_name: "T".into(),
        message_id: String::new(),
        payload: format!("{{\"id\":\"k{key}\",\"t\":{t}}}").into_bytes(),
    }
}

async fn run(duration: Duration, keys: u64, timer_keys: u64, timer_check: usize) {
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
            timer_check,
        },
    )
    .expect("engine");
    events
        .create_input("T", None, vec!["t".into(), "id".into()])
        .expect("input");
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
                created: 0.0,
                updated: 0.0,
            },
            false,
        )
        .await
        .expect("model");
    // Keys 0..timer_keys are timer keys; the rest are load keys.
    let load_keys = keys - timer_keys;
    let started = Instant::now();
    let (mut sent, mut armed) = (0u64, 0u64);
    while started.elapsed() < duration {
        let chunk: Vec<InputMessage> = (sent..sent + BATCH)
            .map(|i| {
                // Round robin over the load keys; each sees 35, 20, 40, 28, ... in turn.
                let round = (i / load_keys) % 4;
                message(timer_keys + i % load_keys, [35, 20, 40, 28][round as usize])
            })
            .collect();
        let outcomes = events.put(chunk).await;
        assert!(outcomes.iter().all(Result::is_ok));
        sent += BATCH;
        // Arm the timer keys evenly over seconds 1 to 3.
        let progress = (started.elapsed().as_secs_f64() - 1.0) / 2.0;
        let due = ((progress.clamp(0.0, 1.0) * timer_keys as f64) as u64).max(armed);
        if due > armed {
            let outcomes = events
                .put((armed..due).map(|k| message(k, 35)).collect())
                .await;
            assert!(outcomes.iter().all(Result::is_ok));
            armed = due;
        }
    }
    // A list is answered by each shard after every message queued before it is evaluated.
    let detectors = events.detectors("bench").await.expect("list");
    let elapsed = started.elapsed();
    assert_eq!(detectors.len() as u64, keys.min(sent + armed));
    // Timers still pending (the run was too short for them) fire now: wait for all, bounded.
    let deadline = Instant::now() + Duration::from_secs(TIMER_SECONDS + 10);
    while lateness.lock().len() < armed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detectors = events.detectors("bench").await.expect("list");
    let in_alarm = |timer: bool| {
        detectors
            .iter()
            .filter(|d| d.state == "Alarm")
            .filter(|d| {
                let k: u64 = d.key.as_deref().unwrap_or("k0")[1..].parse().unwrap_or(0);
                (k < timer_keys) == timer
            })
            .count()
    };
    let h = lateness.lock();
    println!(
        "timer_check={timer_check} seconds={:.3} keys={keys} messages={sent} rate={:.0}/s timers_armed={armed} timers_fired={} timer_keys_in_alarm={} load_keys_in_alarm={} lateness_ms p50={} p99={} max={}",
        elapsed.as_secs_f64(),
        (sent + armed) as f64 / elapsed.as_secs_f64(),
        h.len(),
        in_alarm(true),
        in_alarm(false),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}
