//! Rule SQL fuzz target: the input is a statement and a payload, as a user and a device would
//! send them (`<sql> NUL <payload bytes>`; without NUL it is all SQL and the payload is `{}`).
//!
//! Compiling must never panic and must refuse with a position (line and column at least 1);
//! a statement that compiles must evaluate without panicking on the payload, under every SQL
//! version, and its output must serialize.

#![no_main]

use fleetcore_rules::{
    MessageContext, MqttProperties, Outcome, Payload, RuleEnv, SqlVersion, Statement,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (sql, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(sql) = std::str::from_utf8(sql) else {
        return;
    };
    let message = MessageContext {
        topic: "devices/d1/telemetry",
        client_id: Some("d1"),
        principal: Some("p"),
        payload,
        received_at_ms: 1_464_111_961_123,
        properties: MqttProperties::default(),
    };
    let parsed = Payload::parse(payload);
    let env = RuleEnv::default();
    for version in [SqlVersion::V2016_03_23, SqlVersion::V2015_10_08] {
        match Statement::compile(sql, version) {
            Ok(statement) => {
                if let Ok(Outcome::Json(v)) = statement.evaluate(&message, &parsed, &env) {
                    serde_json::to_string(&*v).expect("output serializes");
                }
            }
            Err(e) => assert!(e.line >= 1 && e.column >= 1, "refusal without a position: {e:?}"),
        }
    }
});
