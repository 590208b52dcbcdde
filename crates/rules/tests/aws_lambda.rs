//! `aws_lambda(functionArn, inputJson)` in rule SQL: the call reaches the `FunctionInvoker` with
//! the input as JSON, its JSON result is the value, a failing call is the statement's error, and
//! a statement without a call never reaches the invoker. The functions here are small Rust
//! closures behind the seam; the system tests (`test_functions.py`) run real Python functions.

use std::sync::Arc;

use fleetcore_core::{FunctionInvoker, InvokeError, InvokeFuture, InvokeOutput};
use fleetcore_rules::{
    EvalError, MessageContext, Payload, RuleEnv, SqlVersion, Statement, sql::Template,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Functions by name: `double` returns `{"v": 2 * input.v}`, `echo` returns its input, `fails`
/// fails as a throwing handler does, `text` returns bytes that are not JSON. Every call is kept.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Value)>>,
}

impl FunctionInvoker for Fake {
    fn invoke<'a>(&'a self, function: &'a str, payload: Vec<u8>) -> InvokeFuture<'a> {
        Box::pin(async move {
            let input: Value = serde_json::from_slice(&payload)
                .map_err(|e| InvokeError::Invalid(e.to_string()))?;
            self.calls
                .lock()
                .push((function.to_string(), input.clone()));
            let name = function.rsplit(':').next().unwrap_or(function);
            let (payload, function_error) = match name {
                "double" => {
                    let v = input["v"].as_i64().unwrap_or(0);
                    (json!({ "v": v * 2 }).to_string().into_bytes(), None)
                }
                "echo" => (payload, None),
                "fails" => (
                    br#"{"errorType":"ValueError","errorMessage":"boom"}"#.to_vec(),
                    Some("Unhandled".to_string()),
                ),
                "text" => (b"not json".to_vec(), None),
                _ => return Err(InvokeError::NotFound(function.to_string())),
            };
            Ok(InvokeOutput {
                payload,
                function_error,
            })
        })
    }
}

fn env(fake: &Arc<Fake>) -> RuleEnv {
    RuleEnv {
        shadows: None,
        functions: Some(Arc::clone(fake) as Arc<dyn FunctionInvoker>),
    }
}

async fn run(sql: &str, payload: &str, env: &RuleEnv) -> Result<Option<Value>, EvalError> {
    let statement = Statement::compile(sql, SqlVersion::V2016_03_23).expect("compiles");
    let message = MessageContext {
        topic: "devices/d1/telemetry",
        payload: payload.as_bytes(),
        ..MessageContext::default()
    };
    let parsed = Payload::parse(payload.as_bytes());
    let out = statement
        .evaluate_calling(&message, &parsed, env, &bytes::Bytes::new())
        .await?
        .map(|body| serde_json::from_slice(&body).expect("the output is JSON"));
    Ok(out)
}

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:";

#[tokio::test]
async fn the_function_result_is_the_value() {
    let fake = Arc::new(Fake::default());
    let sql = format!(
        "SELECT device, aws_lambda('{ARN}double', {{'v': temp}}).v AS doubled \
         FROM 'devices/+/telemetry'"
    );
    let out = run(&sql, r#"{"device":"d1","temp":21}"#, &env(&fake)).await;
    assert_eq!(out, Ok(Some(json!({"device": "d1", "doubled": 42}))));
    assert_eq!(
        *fake.calls.lock(),
        vec![(format!("{ARN}double"), json!({"v": 21}))]
    );
}

#[tokio::test]
async fn nested_and_where_calls_see_each_others_results() {
    let fake = Arc::new(Fake::default());
    let sql = "SELECT VALUE aws_lambda('double', aws_lambda('double', *)) FROM 'devices/#' \
               WHERE aws_lambda('echo', {'ok': ok}).ok = true";
    let out = run(sql, r#"{"v":5,"ok":true}"#, &env(&fake)).await;
    assert_eq!(out, Ok(Some(json!({"v": 20}))));
    assert_eq!(fake.calls.lock().len(), 3, "each call is made once");

    let fake = Arc::new(Fake::default());
    let out = run(sql, r#"{"v":5,"ok":false}"#, &env(&fake)).await;
    assert_eq!(out, Ok(None), "the WHERE clause reads the echo's result");
}

#[tokio::test]
async fn a_failing_call_is_the_statements_error() {
    let fake = Arc::new(Fake::default());
    for (function, why) in [
        ("fails", "the function failed (Unhandled)"),
        ("text", "not JSON"),
        ("missing", "not found"),
    ] {
        let sql = format!("SELECT aws_lambda('{function}', *) AS r FROM 'devices/#'");
        match run(&sql, r#"{"v":1}"#, &env(&fake)).await {
            Err(EvalError::FunctionCall {
                function: named,
                message,
            }) => {
                assert_eq!(named, function);
                assert!(message.contains(why), "{function}: {message}");
            }
            other => panic!("{function}: expected a failed call, got {other:?}"),
        }
    }
    let refused = run(
        "SELECT aws_lambda(42, *) AS r FROM 'devices/#'",
        "{}",
        &env(&fake),
    )
    .await;
    assert!(
        matches!(&refused, Err(EvalError::FunctionCall { message, .. }) if message.contains("string")),
        "{refused:?}"
    );
    let no_service = run(
        "SELECT aws_lambda('echo', *) AS r FROM 'devices/#'",
        "{}",
        &RuleEnv::default(),
    )
    .await;
    assert!(
        matches!(&no_service, Err(EvalError::FunctionCall { message, .. }) if message.contains("not running")),
        "{no_service:?}"
    );
}

#[tokio::test]
async fn statements_without_calls_never_reach_the_invoker() {
    let fake = Arc::new(Fake::default());
    let out = run(
        "SELECT temp * 2 AS t FROM 'devices/#'",
        r#"{"temp":2}"#,
        &env(&fake),
    )
    .await;
    assert_eq!(out, Ok(Some(json!({"t": 4}))));
    assert!(fake.calls.lock().is_empty());
}

#[test]
fn calls_are_refused_where_they_cannot_run() {
    let template = Template::compile("${aws_lambda('echo', *)}", SqlVersion::V2016_03_23);
    assert!(
        template.is_err_and(|e| e.message.contains("substitution template")),
        "aws_lambda in a template"
    );
    let many = (0..9)
        .map(|i| format!("aws_lambda('echo', {i}) AS a{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let error = Statement::compile(&format!("SELECT {many} FROM 'a'"), SqlVersion::V2016_03_23)
        .expect_err("nine calls");
    assert!(error.message.contains("at most 8"), "{error}");
    // The synchronous evaluation (golden files, benches) refuses a statement that calls.
    let statement = Statement::compile(
        "SELECT aws_lambda('echo', *) FROM 'a'",
        SqlVersion::V2016_03_23,
    )
    .expect("compiles");
    let message = MessageContext::default();
    assert!(matches!(
        statement.evaluate(&message, &Payload::parse(b"{}"), &RuleEnv::default()),
        Err(EvalError::FunctionCall { .. })
    ));
}
