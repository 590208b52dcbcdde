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
                let _ = writeln!(out, "  ~ {} (updated in place)", c.address);
                diff(&mut out, c.before.as_ref(), c.after.as_ref(), keys);
            }
            Action::Replace(keys) => {
                add += 1;
                destroy += 1;
                let _ = writeln!(out, "-/+ {} (must be replaced)", c.address);
                let forcing: Vec<&String> = keys
                    .iter()
                    .filter(|k| c.kind.schema().forces_new(k))
                    .collect();
                diff(&mut out, c.before.as_ref(), c.after.as_ref(), keys);
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

fn diff(out: &mut String, before: Option<&Value>, after: Option<&Value>, keys: &[String]) {
    let get = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).cloned().unwrap_or(Value::Null);
    for k in keys {
        let (old, new) = (get(before, k), get(after, k));
        let mut leaves = Vec::new();
        changed_leaves(&old, &new, k.clone(), &mut leaves);
        for (path, old, new) in leaves {
            let _ = writeln!(out, "      {path}: {} => {}", show(old), show(new));
        }
    }
}

/// The paths (`key.b[0].c`) where two values of argument `key` differ.
pub fn changed_paths(old: &Value, new: &Value, key: &str) -> Vec<String> {
    let mut leaves = Vec::new();
    changed_leaves(old, new, key.to_string(), &mut leaves);
    leaves.into_iter().map(|(path, _, _)| path).collect()
}

/// The paths (`a.b[0].c`) where two values differ, down to the smallest differing parts, so a
/// change deep in a large document reads as one line.
fn changed_leaves<'a>(
    old: &'a Value,
    new: &'a Value,
    path: String,
    out: &mut Vec<(String, &'a Value, &'a Value)>,
) {
    const NULL: &Value = &Value::Null;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(NULL), b.get(k).unwrap_or(NULL));
                if x != y {
                    changed_leaves(x, y, format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    changed_leaves(x, y, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => out.push((path, old, new)),
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
