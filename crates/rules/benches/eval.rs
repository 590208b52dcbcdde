//! Rule evaluation cost per message, beside anchors measured in the same run:
//! - `json_parse`: `serde_json::from_slice` of the same payload, which the engine does once per
//!   message whatever the rules are;
//! - `closure_filter`: a hand-written Rust closure doing the simple filter on the parsed payload.
//!
//! Run: `cargo bench -p fleetcore-rules --bench eval`

use divan::{Bencher, black_box};
use fleetcore_rules::{
    MessageContext, MqttProperties, Outcome, Payload, RuleEnv, SqlVersion, Statement,
};
use serde_json::Value;

fn main() {
    divan::main();
}

const PAYLOAD: &[u8] = br#"{"deviceId":"sensor-0042","temperature":61.5,"humidity":40,"pressure":1013.2,"battery":87,"status":"ok","location":{"lat":47.61,"lon":-122.33},"readings":[1,2,3,4]}"#;

const FILTER: &str = "SELECT * FROM 't/#' WHERE temperature > 50";

const PROJECTION: &str = "SELECT deviceId, temperature * 1.8 + 32 AS fahrenheit, humidity, \
    location.lat AS lat, location.lon AS lon, readings[0] AS first, topic(2) AS device, \
    upper(status) AS status, timestamp() AS ts, CASE WHEN battery < 20 THEN 'low' ELSE 'ok' END AS battery \
    FROM 't/#' WHERE temperature > 50";

fn message() -> MessageContext<'static> {
    MessageContext {
        topic: "t/sensor-0042/telemetry",
        client_id: Some("sensor-0042"),
        principal: Some("abc"),
        payload: PAYLOAD,
        received_at_ms: 1_700_000_000_000,
        properties: MqttProperties::default(),
    }
}

/// Anchor: parsing the payload, once per message.
#[divan::bench]
fn json_parse(b: Bencher) {
    b.bench(|| serde_json::from_slice::<Value>(black_box(PAYLOAD)).expect("json"));
}

/// Anchor: the simple filter written by hand over the parsed payload.
#[divan::bench]
fn closure_filter(b: Bencher) {
    let payload: Value = serde_json::from_slice(PAYLOAD).expect("json");
    let filter = |v: &Value| {
        v.get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t > 50.0)
    };
    b.bench(|| filter(black_box(&payload)));
}

/// The engine: `SELECT * ... WHERE temperature > 50` on the parsed payload.
#[divan::bench]
fn sql_filter(b: Bencher) {
    let statement = Statement::compile(FILTER, SqlVersion::V2016_03_23).expect("compiles");
    let payload = Payload::parse(PAYLOAD);
    let env = RuleEnv::default();
    let message = message();
    b.bench(|| {
        let outcome = statement.evaluate(black_box(&message), black_box(&payload), &env);
        assert!(matches!(outcome, Ok(Outcome::Json(_))));
    });
}

/// The engine: parse + simple filter, the whole per-message cost for one rule.
#[divan::bench]
fn sql_filter_with_parse(b: Bencher) {
    let statement = Statement::compile(FILTER, SqlVersion::V2016_03_23).expect("compiles");
    let env = RuleEnv::default();
    let message = message();
    b.bench(|| {
        let payload = Payload::parse(black_box(PAYLOAD));
        let outcome = statement.evaluate(&message, &payload, &env);
        matches!(outcome, Ok(Outcome::Json(_)))
    });
}

/// The engine: a 10-expression projection on the parsed payload (builds the output object).
#[divan::bench]
fn sql_projection_10(b: Bencher) {
    let statement = Statement::compile(PROJECTION, SqlVersion::V2016_03_23).expect("compiles");
    let payload = Payload::parse(PAYLOAD);
    let env = RuleEnv::default();
    let message = message();
    b.bench(|| {
        let outcome = statement.evaluate(black_box(&message), black_box(&payload), &env);
        assert!(
            matches!(&outcome, Ok(Outcome::Json(v)) if v.as_object().is_some_and(|o| o.len() == 10))
        );
        outcome
    });
}

/// Compiling a statement (done once per rule, never per message).
#[divan::bench]
fn compile_projection(b: Bencher) {
    b.bench(|| {
        Statement::compile(black_box(PROJECTION), SqlVersion::V2016_03_23).expect("compiles")
    });
}
