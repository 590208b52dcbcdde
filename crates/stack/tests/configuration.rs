//! Loading, evaluating and planning stacks without a server: bad input is an error naming
//! file and line; the plan shows creates, updates, replacements and deletes.

use std::path::Path;

use fleetcore_stack::resources::Action;
use fleetcore_stack::state::StateResource;
use fleetcore_stack::{Stack, StackError, VarInputs};
use serde_json::json;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.tf", text);
    // What `fleetcore plan` reports: loading, then evaluating against an empty state.
    let planned = Stack::load(dir.path(), &VarInputs::default()).and_then(|stack| {
        let state = stack.state()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(stack.plan(&state)).map(|_| ())
    });
    match planned {
        Ok(()) => panic!("planned:\n{text}"),
        Err(e) => {
            let text = e.to_string();
            let prefix = format!("{}/", dir.path().display());
            text.strip_prefix(&prefix).unwrap_or(&text).to_string()
        }
    }
}

#[test]
fn an_unknown_resource_type_names_file_and_line() {
    let e = load_error("\n\nresource \"aws_dynamodb_table\" \"t\" {\n  name = \"x\"\n}\n");
    assert_eq!(
        e,
        "main.tf:3: resource type \"aws_dynamodb_table\" is not supported by fleetcore"
    );
}

#[test]
fn an_unknown_argument_names_its_line_and_what_is_accepted() {
    let e =
        load_error("resource \"aws_sns_topic\" \"t\" {\n  name = \"x\"\n  colour = \"red\"\n}\n");
    assert!(
        e.starts_with("main.tf:3: aws_sns_topic.t: unknown argument `colour` (it takes: name, "),
        "{e}"
    );
}

#[test]
fn an_unknown_nested_block_names_its_line() {
    let e = load_error(
        "resource \"aws_iot_topic_rule\" \"r\" {\n  name = \"r\"\n  enabled = true\n  sql = \"SELECT * FROM 'a'\"\n  sql_version = \"2016-03-23\"\n  dynamodb {\n    table_name = \"t\"\n  }\n}\n",
    );
    assert!(
        e.starts_with("main.tf:6: aws_iot_topic_rule.r: unknown block `dynamodb`"),
        "{e}"
    );
}

#[test]
fn a_missing_required_argument_names_the_block() {
    let e = load_error("\nresource \"aws_kinesis_stream\" \"s\" {\n  shard_count = 1\n}\n");
    assert_eq!(
        e,
        "main.tf:2: aws_kinesis_stream.s: the argument `name` is required"
    );
}

#[test]
fn a_missing_reference_names_file_and_line() {
    let e = load_error(
        "resource \"aws_iot_thing\" \"t\" {\n  name = \"a\"\n  thing_type_name = aws_iot_thing_type.missing.name\n}\n",
    );
    assert_eq!(
        e,
        "main.tf:3: reference to undeclared resource aws_iot_thing_type.missing"
    );
    let e = load_error("resource \"aws_iot_thing\" \"t\" {\n  name = var.nope\n}\n");
    assert_eq!(e, "main.tf:2: reference to undeclared variable var.nope");
    let e = load_error("locals {\n  a = local.b\n}\n");
    assert_eq!(e, "main.tf:2: reference to undeclared local.b");
}

#[test]
fn a_cycle_names_file_line_and_members() {
    let e = load_error(
        "resource \"aws_sns_topic\" \"a\" {\n  name = aws_sns_topic.b.name\n}\n\nresource \"aws_sns_topic\" \"b\" {\n  name = aws_sns_topic.a.name\n}\n",
    );
    assert_eq!(
        e,
        "main.tf:1: aws_sns_topic.a is part of a dependency cycle among: aws_sns_topic.a, aws_sns_topic.b"
    );
}

#[test]
fn unsupported_constructs_name_file_and_line() {
    let e = load_error("data \"aws_caller_identity\" \"me\" {}\n");
    assert_eq!(
        e,
        "main.tf:1: data sources (`data` blocks) are not supported"
    );
    let e = load_error("module \"vpc\" {\n  source = \"x\"\n}\n");
    assert_eq!(e, "main.tf:1: `module` block \"vpc\" is not supported here");
    let e = load_error("provider \"google\" {}\n");
    assert_eq!(
        e,
        "main.tf:1: provider \"google\" is not supported (only aws and awscc)"
    );
    let e = load_error(
        "resource \"aws_sns_topic\" \"a\" {\n  name = \"a\"\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n",
    );
    assert_eq!(
        e,
        "main.tf:3: aws_sns_topic.a: `lifecycle` is not supported"
    );
}

#[test]
fn a_variable_without_value_is_an_error_at_its_declaration() {
    let e = load_error("\nvariable \"region\" {\n  type = string\n}\n");
    assert!(
        e.starts_with("main.tf:2: variable \"region\" has no value"),
        "{e}"
    );
}

fn plan_changes(dir: &Path, inputs: &VarInputs) -> Vec<(String, Action)> {
    let stack = Stack::load(dir, inputs).unwrap();
    let state = stack.state().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let plan = runtime.block_on(stack.plan(&state)).unwrap();
    plan.changes
        .into_iter()
        .map(|c| (c.address, c.action))
        .collect()
}

const STACK: &str = r#"
variable "prefix" {
  default = "demo"
}
variable "shards" {
  default = 1
}
locals {
  names = ["a", "b"]
}
resource "aws_kinesis_stream" "raw" {
  name        = "${var.prefix}-raw"
  shard_count = var.shards
}
resource "aws_sns_topic" "alerts" {
  for_each = toset(local.names)
  name     = "${var.prefix}-${each.key}"
}
resource "aws_iot_thing" "t" {
  count = 2
  name  = "${var.prefix}-${count.index}"
  attributes = {
    stream = aws_kinesis_stream.raw.arn
  }
}
"#;

fn seed_state(dir: &Path, resources: Vec<StateResource>) {
    let mut state = fleetcore_stack::State::load(dir).unwrap();
    for r in resources {
        state.put(r).unwrap();
    }
}

#[test]
fn plan_creates_in_dependency_order_with_count_and_for_each() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.tf", STACK);
    let changes = plan_changes(dir.path(), &VarInputs::default());
    let addresses: Vec<&str> = changes.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "aws_kinesis_stream.raw",
            "aws_sns_topic.alerts[\"a\"]",
            "aws_sns_topic.alerts[\"b\"]",
            "aws_iot_thing.t[0]",
            "aws_iot_thing.t[1]",
        ]
    );
    assert!(changes.iter().all(|(_, a)| *a == Action::Create));
}

#[test]
fn plan_compares_with_the_state_update_replace_delete_and_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.tf", STACK);
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/demo-raw";
    seed_state(
        dir.path(),
        vec![
            StateResource {
                address: "aws_kinesis_stream.raw".into(),
                kind: "aws_kinesis_stream".into(),
                arguments: json!({"name": "demo-raw", "shard_count": 1}),
                attributes: json!({"arn": arn, "id": arn}),
                dependencies: vec![],
            },
            StateResource {
                address: "aws_sns_topic.alerts[\"a\"]".into(),
                kind: "aws_sns_topic".into(),
                arguments: json!({"name": "demo-a"}),
                attributes: json!({"arn": "arn:aws:sns:us-east-1:0:demo-a", "id": "x", "owner": "0"}),
                dependencies: vec![],
            },
            StateResource {
                address: "aws_sns_topic.alerts[\"b\"]".into(),
                kind: "aws_sns_topic".into(),
                arguments: json!({"name": "demo-b"}),
                attributes: json!({"arn": "arn:aws:sns:us-east-1:0:demo-b", "id": "x", "owner": "0"}),
                dependencies: vec![],
            },
            StateResource {
                address: "aws_iot_thing.t[0]".into(),
                kind: "aws_iot_thing".into(),
                arguments: json!({"name": "demo-0", "attributes": {"stream": arn}}),
                attributes: json!({"arn": "arn:t0", "id": "demo-0"}),
                dependencies: vec!["aws_kinesis_stream.raw".into()],
            },
            StateResource {
                address: "aws_iot_thing.t[1]".into(),
                kind: "aws_iot_thing".into(),
                arguments: json!({"name": "demo-1", "attributes": {"stream": arn}}),
                attributes: json!({"arn": "arn:t1", "id": "demo-1"}),
                dependencies: vec!["aws_kinesis_stream.raw".into()],
            },
            StateResource {
                address: "aws_sns_topic.gone".into(),
                kind: "aws_sns_topic".into(),
                arguments: json!({"name": "gone"}),
                attributes: json!({"arn": "arn:aws:sns:us-east-1:0:gone", "id": "x", "owner": "0"}),
                dependencies: vec![],
            },
        ],
    );

    // Same configuration: only the resource removed from it changes.
    let changes = plan_changes(dir.path(), &VarInputs::default());
    let changed: Vec<&(String, Action)> =
        changes.iter().filter(|(_, a)| *a != Action::NoOp).collect();
    assert_eq!(
        changed,
        [&("aws_sns_topic.gone".to_string(), Action::Delete)]
    );
    assert_eq!(changes[0].1, Action::Delete, "deletes come first");

    // A variable changed in place: `~` with the changed argument.
    let inputs = VarInputs {
        files: vec![],
        vars: vec![("shards".into(), "3".into())],
    };
    let changes = plan_changes(dir.path(), &inputs);
    assert!(changes.contains(&(
        "aws_kinesis_stream.raw".into(),
        Action::Update(vec!["shard_count".into()])
    )));

    // A name change replaces the stream, and the things referring to its arn see an unknown.
    let inputs = VarInputs {
        files: vec![],
        vars: vec![("prefix".into(), "other".into())],
    };
    let changes = plan_changes(dir.path(), &inputs);
    assert!(changes.contains(&(
        "aws_kinesis_stream.raw".into(),
        Action::Replace(vec!["name".into()])
    )));
    assert!(changes.contains(&(
        "aws_iot_thing.t[0]".into(),
        Action::Replace(vec!["attributes".into(), "name".into()])
    )));
    let stack = Stack::load(dir.path(), &inputs).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let plan = runtime
        .block_on(stack.plan(&stack.state().unwrap()))
        .unwrap();
    let text = fleetcore_stack::plan::render(&plan);
    assert!(
        text.contains("-/+ aws_kinesis_stream.raw (must be replaced)"),
        "{text}"
    );
    assert!(
        text.contains("name: \"demo-raw\" => \"other-raw\""),
        "{text}"
    );
    assert!(text.contains("(known after apply)"), "{text}");
    assert!(text.contains("  - aws_sns_topic.gone"), "{text}");
    assert!(
        text.contains("Plan: 5 to add, 0 to change, 6 to destroy."),
        "{text}"
    );
}

#[test]
fn tfvars_files_and_var_options_are_loaded_in_terraform_order() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.tf",
        "variable \"n\" {\n  default = \"default\"\n}\nresource \"aws_sns_topic\" \"t\" {\n  name = var.n\n}\n",
    );
    let name = |inputs: &VarInputs| {
        let stack = Stack::load(dir.path(), inputs).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let plan = runtime
            .block_on(stack.plan(&stack.state().unwrap()))
            .unwrap();
        plan.changes[0].after.as_ref().unwrap()["name"].clone()
    };
    assert_eq!(name(&VarInputs::default()), "default");
    write(dir.path(), "terraform.tfvars", "n = \"tfvars\"\n");
    assert_eq!(name(&VarInputs::default()), "tfvars");
    write(dir.path(), "b.auto.tfvars", "n = \"auto\"\n");
    assert_eq!(name(&VarInputs::default()), "auto");
    write(dir.path(), "extra.tfvars", "n = \"file\"\n");
    let mut inputs = VarInputs {
        files: vec![dir.path().join("extra.tfvars")],
        vars: vec![],
    };
    assert_eq!(name(&inputs), "file");
    inputs.vars.push(("n".into(), "option".into()));
    assert_eq!(name(&inputs), "option");

    write(dir.path(), "bad.auto.tfvars", "\n\nnot_declared = 1\n");
    let e = Stack::load(dir.path(), &VarInputs::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.ends_with("bad.auto.tfvars:3: no variable \"not_declared\" is declared"),
        "{e}"
    );
}

#[test]
fn the_reference_stack_loads_and_plans() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reference-stack");
    let stack = match Stack::load(&path, &VarInputs::default()) {
        Ok(stack) => stack,
        Err(StackError::Config { at, message }) => panic!("{at}: {message}"),
        Err(e) => panic!("{e}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let state = fleetcore_stack::State::load(tempfile::tempdir().unwrap().path()).unwrap();
    let plan = runtime.block_on(stack.plan(&state)).unwrap();
    assert!(plan.changes.iter().all(|c| c.action == Action::Create));
    assert!(plan.changes.len() > 20, "{}", plan.changes.len());
    assert!(plan.notes.iter().any(|n| n.contains("aws_s3_bucket.lake")));
}
