//! The plan as a person reads it: `+` create, `~` update with the changed arguments, `-/+`
//! replace, `-` delete, and `No changes.` when there are none.

use std::fmt::Write;

use serde_json::Value;

use crate::engine::Plan;
use crate::resources::Action;

/// Renders `plan`.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if !plan.notes.is_empty() {
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str("No changes. The server matches the configuration.\n");
        return out;
    }
    let (mut add, mut change, mut destroy) = (0, 0, 0);
    for c in &plan.changes {
        match &c.action {
            Action::NoOp => {}
            Action::Create => {
                add += 1;
                let _ = writeln!(out, "  + {}", c.address);
                if let Some(Value::Object(after)) = &c.after {
                    let width = after.keys().map(String::len).max().unwrap_or(0);
                    for (k, v) in after {
                        let _ = writeln!(out, "      {k:width$} = {}", show(v));
                    }
                }
            }
            Action::Update(keys) => {
                change += 1;
                let _ = writeln!(out, "  ~ {}", c.address);
                diff(&mut out, c.before.as_ref(), c.after.as_ref(), keys, "");
            }
            Action::Replace(keys) => {
                add += 1;
                destroy += 1;
                let _ = writeln!(out, "-/+ {} (must be replaced)", c.address);
                let forcing: Vec<&String> = keys
                    .iter()
                    .filter(|k| c.kind.schema().forces_new(k))
                    .collect();
                diff(&mut out, c.before.as_ref(), c.after.as_ref(), keys, "");
                let _ = writeln!(
                    out,
                    "      (a change of {} replaces it)",
                    forcing
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Action::Delete => {
                destroy += 1;
                let _ = writeln!(out, "  - {}", c.address);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nPlan: {add} to add, {change} to change, {destroy} to destroy."
    );
    out
}

fn diff(out: &mut String, before: Option<&Value>, after: Option<&Value>, keys: &[String], _: &str) {
    let get = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).cloned().unwrap_or(Value::Null);
    for k in keys {
        let _ = writeln!(
            out,
            "      {k}: {} => {}",
            show(&get(before, k)),
            show(&get(after, k))
        );
    }
}

/// A value on one line, long strings cut.
fn show(value: &Value) -> String {
    let text = match value {
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > 120 {
        let cut: String = text.chars().take(117).collect();
        format!("{cut}...")
    } else {
        text
    }
}
