//! IoT Events expression fuzz target: the input is an expression as a detector model author
//! writes it (a condition, a setVariable value, a payload's contentExpression) or an MQTT topic
//! template. Parsing must never panic and must refuse with a position inside the text; an
//! expression that parses must evaluate without panicking.

#![no_main]

use fleetcore_events::expr::{self, PathStep, Scope, Value};
use libfuzzer_sys::fuzz_target;

/// A scope where every input path and variable has a value, so evaluation goes everywhere.
struct Everything;

impl Scope for Everything {
    fn input(&self, _input: &str, path: &[PathStep]) -> Value {
        match path.len() % 4 {
            0 => Value::Int(i64::MAX),
            1 => Value::Decimal(-0.5),
            2 => Value::Str("x".into()),
            _ => Value::Undefined,
        }
    }
    fn variable(&self, name: &str) -> Value {
        if name.len() % 2 == 0 { Value::Int(i64::MIN) } else { Value::Bool(true) }
    }
    fn timed_out(&self, timer: &str) -> bool {
        timer.is_empty()
    }
    fn current_input(&self, _input: &str) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match expr::parse(text) {
        Ok(e) => {
            let _ = e.eval(&Everything).text();
        }
        Err(e) => assert!(e.position <= text.chars().count(), "position outside the text: {e:?}"),
    }
    if let Ok(t) = expr::parse_template(text) {
        let _ = t.render(&Everything);
    }
});
