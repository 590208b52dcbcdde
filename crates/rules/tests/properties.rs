//! Property tests: the compiler never panics on any text (SQL-like or not), and evaluation
//! never panics on any payload, JSON or bytes, for statements that use every function.

use fleetcore_rules::{
    MessageContext, MqttProperties, Outcome, Payload, RuleEnv, SqlVersion, Statement,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// SQL-ish fragments, so generated statements get past the tokenizer and reach the compiler.
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "VALUE",
    "*",
    ",",
    "FROM",
    "'a/+/#'",
    "'a/#/b'",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "(",
    ")",
    "a",
    "b.c",
    "arr[0]",
    "arr[i]",
    "x",
    "1",
    "-2.5",
    "'s'",
    "null",
    "true",
    "=",
    "<>",
    ">",
    "<=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "AS",
    "cast(",
    "AS Int)",
    "topic(",
    "get(",
    "concat(",
    "substring(",
    "regexp_replace(",
    "'('",
    "encode(*, 'base64')",
    "{'k': 1}",
    "[1, 2]",
    "IS NULL",
    "parse_time(",
    "'yyyy'",
    "abs(",
    "nope(",
    ";",
    "GROUP BY",
];

fn sqlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24).prop_map(|parts| parts.join(" "))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9 ]{0,8}".prop_map(Value::String),
        Just(Value::String("2016-05-24".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "c", "x", "i", "arr", "s"]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

/// Statements that together call every function and operator on payload fields.
const STATEMENTS: &[&str] = &[
    "SELECT * FROM '#' WHERE a > 1 OR b.c = 'x' AND NOT x <> 2",
    "SELECT *, a + b AS s, a - b AS d, a * b AS m, a / b AS q, a % b AS r, -a AS n FROM '#'",
    "SELECT VALUE arr[i] FROM '#'",
    "SELECT a.b.c, arr[0].x, arr[i], get(arr, i), get(a, s) FROM '#'",
    "SELECT CASE a WHEN 1 THEN 'one' WHEN b THEN 'b' ELSE x END AS c1, CASE WHEN a > b THEN a ELSE b END AS c2 FROM '#'",
    "SELECT abs(a), ceil(a), floor(a), round(a), mod(a, b), power(a, b), sqrt(a), ln(a), log(a) FROM '#'",
    "SELECT lower(s), upper(s), trim(s), substring(s, a, b), substring(s, i), concat(a, s, arr), length(s) FROM '#'",
    "SELECT startswith(s, x), endswith(s, x), indexof(s, x), replace(s, x, a) FROM '#'",
    "SELECT regexp_matches(s, x), regexp_replace(s, x, a), regexp_matches(s, '[a-z]+'), regexp_replace(s, '(a)', '$1$1') FROM '#'",
    "SELECT cast(a AS Int), cast(a AS Decimal), cast(a AS String), cast(a AS Boolean), cast(s AS Int) FROM '#'",
    "SELECT isNull(a), isUndefined(a), isString(a), isNumber(a), isBoolean(a), isObject(a), isArray(a) FROM '#'",
    "SELECT encode(*, 'base64'), encode(a, 'base64'), md5(s), sha256(s), md5(a) FROM '#'",
    "SELECT parse_time(s, a), parse_time('yyyy-MM-dd HH:mm:ss.SSS Z', a, s), time_to_epoch(s, x), time_to_epoch(s, 'yyyy-MM-dd') FROM '#'",
    "SELECT topic(), topic(a), clientid(), principal(), timestamp(), newuuid(), traceid(), get_thing_shadow(s, 'r') FROM '#'",
    "SELECT {'k': a, 'l': [a, b, arr]} AS o, a IS NULL AS n, b IS NOT NULL AS nn FROM '#'",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compile_never_panics_on_any_text(text in any::<String>()) {
        let _ = Statement::compile(&text, SqlVersion::V2016_03_23);
    }

    #[test]
    fn compile_never_panics_on_sqlish_text(text in sqlish()) {
        let _ = Statement::compile(&text, SqlVersion::V2016_03_23);
        let _ = Statement::compile(&text, SqlVersion::V2015_10_08);
    }

    #[test]
    fn evaluation_never_panics_on_any_json(payload in json_value(), topic in "[a-z]{1,3}(/[a-z]{1,3}){0,3}") {
        let bytes = serde_json::to_vec(&payload).expect("serialize");
        check_all_statements(&topic, &bytes);
    }

    #[test]
    fn evaluation_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_all_statements("a/b", &bytes);
    }
}

fn check_all_statements(topic: &str, bytes: &[u8]) {
    let env = RuleEnv::default();
    let message = MessageContext {
        topic,
        client_id: Some("c"),
        principal: None,
        payload: bytes,
        received_at_ms: 1_464_111_961_123,
        properties: MqttProperties::default(),
    };
    let parsed = Payload::parse(bytes);
    for sql in STATEMENTS {
        let statement =
            Statement::compile(sql, SqlVersion::V2016_03_23).expect("statement compiles");
        // Whatever the outcome, it must serialize.
        if let Ok(outcome) = statement.evaluate(&message, &parsed, &env) {
            let _ = outcome.to_bytes();
            if let Outcome::Json(v) = outcome {
                serde_json::to_string(&*v).expect("output serializes");
            }
        }
    }
}

#[test]
fn long_operator_chains_are_refused_without_overflowing_the_stack() {
    for op in ["+", " AND ", " OR ", "*", " = "] {
        let chain = vec!["a"; 10_000].join(op);
        let sql = format!("SELECT {chain} AS x FROM 'a' WHERE {chain}");
        let _ = Statement::compile(&sql, SqlVersion::V2016_03_23);
    }
    let nested = format!("SELECT {}1{} FROM 'a'", "(".repeat(5000), ")".repeat(5000));
    assert!(Statement::compile(&nested, SqlVersion::V2016_03_23).is_err());
    let calls = format!(
        "SELECT {}1{} FROM 'a'",
        "abs(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(Statement::compile(&calls, SqlVersion::V2016_03_23).is_err());
}

/// Runs on a 1 MiB stack (half of a tokio worker's) to show deep statements get room to run.
#[test]
fn the_deepest_accepted_statements_evaluate() {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(deepest_accepted_statements_evaluate)
        .expect("thread")
        .join()
        .expect("no panic");
}

fn deepest_accepted_statements_evaluate() {
    let chain = vec!["a"; 256].join(" + ");
    let shallow_chain = vec!["a"; 48].join(" + ");
    let nested = format!("{}a{}", "abs(".repeat(20), ")".repeat(20));
    for sql in [
        format!("SELECT {chain} AS x FROM 'a'"),
        format!("SELECT {shallow_chain} AS x FROM 'a' WHERE {shallow_chain} > 0"),
        format!("SELECT VALUE {nested} FROM 'a'"),
        format!(
            "SELECT VALUE {}a{} FROM 'a'",
            "(1 + ".repeat(20),
            ")".repeat(20)
        ),
        format!(
            "SELECT * FROM 'a' WHERE {}",
            vec!["a = 1"; 128].join(" AND ")
        ),
    ] {
        let statement = Statement::compile(&sql, SqlVersion::V2016_03_23).expect("accepted");
        let message = MessageContext {
            topic: "a",
            payload: br#"{"a":1}"#,
            ..MessageContext::default()
        };
        let payload = Payload::parse(message.payload);
        let outcome = statement.evaluate(&message, &payload, &RuleEnv::default());
        assert!(
            matches!(outcome, Ok(Outcome::Json(_))),
            "{sql}: {outcome:?}"
        );
    }
    let too_many = format!("SELECT {} AS x FROM 'a'", vec!["a"; 300].join(" + "));
    let err = Statement::compile(&too_many, SqlVersion::V2016_03_23).expect_err("refused");
    assert!(err.message.contains("more than 256 operators"), "{err}");
}
