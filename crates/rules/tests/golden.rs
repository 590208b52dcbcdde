//! Runs the golden files in `tests/golden/*.slt`: statement, message and expected output, in
//! the spirit of sqllogictest. Format of one case (cases are separated by blank lines):
//!
//! ```text
//! # comment
//! query [version=2016-03-23] [topic=a/b] [clientid=c] [principal=p] [timestamp=ms] [traceid=t]
//!       [contenttype=c] [format=utf8|bytes] [responsetopic=t] [correlation=<base64>]
//!       [userprop=k:v ...]                   (MQTT 5 properties; userprop may repeat)
//! SELECT ... FROM 'a/#' WHERE ...        (one or more lines)
//! payload {"json": 1}                    (or `payload-text <raw text>`, `payload-base64 <b64>`;
//!                                         none means {})
//! ----
//! {"expected": "json"}                   (or `no match`, `bytes <text>`, `error: <text the
//!                                         compile error contains>`, `eval error: <text>`)
//! ```
//!
//! Defaults: version 2016-03-23, topic `a/b`, client id `client-1`, principal `principal-1`,
//! timestamp 1464111961123 (2016-05-24T17:46:01.123Z), no trace id. `get_thing_shadow` reads
//! the fixed shadows of [`FixedShadows`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use fleetcore_rules::{
    MessageContext, MqttProperties, Outcome, Payload, RuleEnv, ShadowReader, SqlVersion, Statement,
};
use serde_json::{Value, json};

struct FixedShadows;

impl ShadowReader for FixedShadows {
    fn read_shadow(&self, thing: &str, shadow_name: Option<&str>) -> Option<Value> {
        match (thing, shadow_name) {
            ("lamp", None) => {
                Some(json!({"state": {"reported": {"on": true, "watts": 9}}, "version": 3}))
            }
            ("lamp", Some("config")) => {
                Some(json!({"state": {"desired": {"mode": "eco"}}, "version": 1}))
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Case {
    file: PathBuf,
    line: usize,
    version: SqlVersion,
    topic: String,
    client_id: Option<String>,
    principal: Option<String>,
    timestamp: i64,
    trace_id: Option<String>,
    content_type: Option<String>,
    payload_format_utf8: Option<bool>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    sql: String,
    payload: Vec<u8>,
    expected: String,
}

fn parse_file(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).expect("read golden file");
    let mut cases = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let header = line.strip_prefix("query").unwrap_or_else(|| {
            panic!(
                "{}:{}: expected `query`, found {line:?}",
                path.display(),
                i + 1
            )
        });
        let mut case = Case {
            file: path.to_path_buf(),
            line: i + 1,
            version: SqlVersion::V2016_03_23,
            topic: "a/b".into(),
            client_id: Some("client-1".into()),
            principal: Some("principal-1".into()),
            timestamp: 1_464_111_961_123,
            trace_id: None,
            content_type: None,
            payload_format_utf8: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            sql: String::new(),
            payload: b"{}".to_vec(),
            expected: String::new(),
        };
        for option in header.split_whitespace() {
            let (k, v) = option
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: bad option {option}", path.display(), i + 1));
            match k {
                "version" => case.version = v.parse().expect("version"),
                "topic" => case.topic = v.into(),
                "clientid" => case.client_id = (v != "none").then(|| v.into()),
                "principal" => case.principal = (v != "none").then(|| v.into()),
                "timestamp" => case.timestamp = v.parse().expect("timestamp"),
                "traceid" => case.trace_id = Some(v.into()),
                "contenttype" => case.content_type = Some(v.into()),
                "format" => case.payload_format_utf8 = Some(v == "utf8"),
                "responsetopic" => case.response_topic = Some(v.into()),
                "correlation" => {
                    case.correlation_data = Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .expect("correlation base64"),
                    );
                }
                "userprop" => {
                    let (key, value) = v.split_once(':').expect("userprop=k:v");
                    case.user_properties
                        .push((Cow::Owned(key.into()), Cow::Owned(value.into())));
                }
                other => panic!("{}:{}: unknown option {other}", path.display(), i + 1),
            }
        }
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            let l = lines[i];
            if let Some(p) = l.strip_prefix("payload ") {
                case.payload = p.as_bytes().to_vec();
            } else if let Some(p) = l.strip_prefix("payload-text ") {
                case.payload = p.as_bytes().to_vec();
            } else if let Some(p) = l.strip_prefix("payload-base64 ") {
                case.payload = base64::engine::general_purpose::STANDARD
                    .decode(p.trim())
                    .expect("payload-base64");
            } else if l == "payload-empty" {
                case.payload = Vec::new();
            } else {
                sql.push(l);
            }
            i += 1;
        }
        assert!(
            i < lines.len(),
            "{}:{}: missing ----",
            path.display(),
            case.line
        );
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i]);
            i += 1;
        }
        case.sql = sql.join("\n");
        case.expected = expected.join("\n");
        cases.push(case);
    }
    cases
}

/// Runs one case; `Err` says how the result differs from the expectation.
fn run(case: &Case, env: &RuleEnv) -> Result<(), String> {
    let statement = match Statement::compile(&case.sql, case.version) {
        Ok(s) => s,
        Err(e) => {
            let shown = format!("error: {e}");
            return match case.expected.strip_prefix("error: ") {
                Some(want) if e.to_string().contains(want) => Ok(()),
                _ => Err(format!("got {shown}")),
            };
        }
    };
    if case.expected.starts_with("error: ") {
        return Err("compiled, but a compile error was expected".into());
    }
    if !statement.matches_topic(&case.topic) {
        return Err(format!(
            "topic {} does not match FROM '{}'",
            case.topic,
            statement.topic_filter()
        ));
    }
    let message = MessageContext {
        topic: &case.topic,
        client_id: case.client_id.as_deref(),
        principal: case.principal.as_deref(),
        payload: &case.payload,
        received_at_ms: case.timestamp,
        properties: MqttProperties {
            trace_id: case.trace_id.as_deref(),
            content_type: case.content_type.as_deref(),
            payload_format_utf8: case.payload_format_utf8,
            response_topic: case.response_topic.as_deref(),
            correlation_data: case.correlation_data.as_deref(),
            user_properties: &case.user_properties,
        },
    };
    let payload = Payload::parse(&case.payload);
    let outcome = match statement.evaluate(&message, &payload, env) {
        Ok(o) => o,
        Err(e) => {
            return match case.expected.strip_prefix("eval error: ") {
                Some(want) if e.to_string().contains(want) => Ok(()),
                _ => Err(format!("got eval error: {e}")),
            };
        }
    };
    let got = match &outcome {
        Outcome::NoMatch => "no match".to_string(),
        Outcome::Bytes(b) => format!("bytes {}", String::from_utf8_lossy(b)),
        Outcome::Json(v) => v.to_string(),
    };
    let ok = match (&outcome, case.expected.as_str()) {
        (Outcome::Json(v), want) if !want.starts_with("no match") && !want.starts_with("bytes") => {
            serde_json::from_str::<Value>(want)
                .map_err(|e| format!("expected is not JSON ({e}): {want}"))?
                == **v
        }
        _ => got == case.expected,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("got {got}"))
    }
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let env = RuleEnv {
        shadows: Some(Arc::new(FixedShadows)),
        functions: None,
    };
    let mut failures = Vec::new();
    let mut count = 0;
    for file in &files {
        for case in parse_file(file) {
            count += 1;
            if let Err(why) = run(&case, &env) {
                failures.push(format!(
                    "{}:{}: {}\n    sql: {}\n    want: {}\n    {why}",
                    case.file
                        .file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default(),
                    case.line,
                    case.topic,
                    case.sql,
                    case.expected
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{count} golden cases passed");
}
