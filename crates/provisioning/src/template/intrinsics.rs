//! The intrinsic functions: `Ref`, `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::FindInMap`,
//! `Fn::Sub`, `Fn::If`, and the condition functions `Fn::Equals`, `Fn::And`, `Fn::Or`,
//! `Fn::Not` (with `{"Condition": name}` inside them). The [`Checker`] checks their shape and
//! names at create time; the [`Evaluator`] computes them for one device.

use serde_json::{Map, Value};

use super::{CERTIFICATE_PARAMETERS, Template, TemplateError, invalid};

/// Deepest nesting of intrinsic functions (a template is user input).
const MAX_DEPTH: usize = 32;

const VALUE_FUNCTIONS: &[&str] = &[
    "Ref",
    "Fn::Join",
    "Fn::Select",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::Sub",
    "Fn::If",
];

const CONDITION_FUNCTIONS: &[&str] = &["Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition"];

/// The single `(name, argument)` of an object that is an intrinsic function call.
fn call(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (name, arg) = map.iter().next()?;
    (name == "Ref" || name == "Condition" || name.starts_with("Fn::")).then_some((name, arg))
}

fn array<'a>(arg: &'a Value, at: &str, len: Option<usize>) -> Result<&'a [Value], TemplateError> {
    let items = arg
        .as_array()
        .ok_or_else(|| invalid(at, "takes a list of arguments"))?;
    match len {
        Some(n) if items.len() != n => Err(invalid(at, format!("takes {n} arguments"))),
        _ => Ok(items),
    }
}

/// Names in `${...}` of an `Fn::Sub` string (`${!x}` is a literal `${x}`).
fn sub_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            names.push(name);
        }
        rest = &after[end + 1..];
    }
    names
}

/// Checks a template's intrinsic function calls without evaluating them.
pub(super) struct Checker<'a> {
    pub(super) template: &'a Template,
}

impl Checker<'_> {
    fn parameter(&self, name: &str, at: &str) -> Result<(), TemplateError> {
        if self.template.parameters.contains_key(name) || CERTIFICATE_PARAMETERS.contains(&name) {
            Ok(())
        } else {
            Err(invalid(
                at,
                format!("Ref to {name:?}, which is not a declared parameter"),
            ))
        }
    }

    /// Checks a value position (anything but a condition).
    pub(super) fn value(&self, value: &Value, at: &str) -> Result<(), TemplateError> {
        self.value_at(value, at, 0)
    }

    fn value_at(&self, value: &Value, at: &str, depth: usize) -> Result<(), TemplateError> {
        if depth > MAX_DEPTH {
            return Err(invalid(at, "intrinsic functions nest too deeply"));
        }
        let Some((name, arg)) = call(value) else {
            return match value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, v)| self.value_at(v, &format!("{at}[{i}]"), depth + 1)),
                Value::Object(map) => map
                    .iter()
                    .try_for_each(|(k, v)| self.value_at(v, &format!("{at}.{k}"), depth + 1)),
                _ => Ok(()),
            };
        };
        let at = format!("{at}.{name}");
        let at = at.as_str();
        match name {
            "Ref" => {
                let target = arg
                    .as_str()
                    .ok_or_else(|| invalid(at, "takes a parameter name"))?;
                self.parameter(target, at)
            }
            "Fn::Join" => {
                let args = array(arg, at, Some(2))?;
                if !args[0].is_string() {
                    return Err(invalid(at, "the delimiter must be a string"));
                }
                self.value_at(&args[1], at, depth + 1)
            }
            "Fn::Select" => {
                let args = array(arg, at, Some(2))?;
                self.value_at(&args[0], at, depth + 1)?;
                self.value_at(&args[1], at, depth + 1)
            }
            "Fn::Split" => {
                let args = array(arg, at, Some(2))?;
                if !args[0].is_string() {
                    return Err(invalid(at, "the delimiter must be a string"));
                }
                self.value_at(&args[1], at, depth + 1)
            }
            "Fn::FindInMap" => {
                let args = array(arg, at, Some(3))?;
                match args[0].as_str() {
                    Some(map) if self.template.mappings.contains_key(map) => {}
                    Some(map) => {
                        return Err(invalid(
                            at,
                            format!("mapping {map:?} is not declared in Mappings"),
                        ));
                    }
                    None => return Err(invalid(at, "the first argument must be a mapping name")),
                }
                self.value_at(&args[1], at, depth + 1)?;
                self.value_at(&args[2], at, depth + 1)
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::String(s) => (s.as_str(), None),
                    Value::Array(items) if items.len() == 2 => {
                        let text = items[0]
                            .as_str()
                            .ok_or_else(|| invalid(at, "the first argument must be a string"))?;
                        let vars = items[1]
                            .as_object()
                            .ok_or_else(|| invalid(at, "the second argument must be an object"))?;
                        for (k, v) in vars {
                            self.value_at(v, &format!("{at}.{k}"), depth + 1)?;
                        }
                        (text, Some(vars))
                    }
                    _ => return Err(invalid(at, "takes a string or [string, {variables}]")),
                };
                for name in sub_names(text) {
                    if vars.is_some_and(|v| v.contains_key(name)) {
                        continue;
                    }
                    self.parameter(name, at)?;
                }
                Ok(())
            }
            "Fn::If" => {
                let args = array(arg, at, Some(3))?;
                match args[0].as_str() {
                    Some(c) if self.template.conditions.contains_key(c) => {}
                    _ => {
                        return Err(invalid(
                            at,
                            "the first argument must name a condition declared in Conditions",
                        ));
                    }
                }
                self.value_at(&args[1], at, depth + 1)?;
                self.value_at(&args[2], at, depth + 1)
            }
            other if CONDITION_FUNCTIONS.contains(&other) => Err(invalid(
                at,
                "a condition function can only be used in Conditions or inside Fn::And/Or/Not",
            )),
            other => Err(invalid(
                at,
                format!(
                    "{other} is not a supported intrinsic function (supported: {}, {})",
                    VALUE_FUNCTIONS.join(", "),
                    CONDITION_FUNCTIONS.join(", ")
                ),
            )),
        }
    }

    /// Checks a condition position.
    pub(super) fn condition(&self, value: &Value, at: &str) -> Result<(), TemplateError> {
        self.condition_at(value, at, 0)
    }

    fn condition_at(&self, value: &Value, at: &str, depth: usize) -> Result<(), TemplateError> {
        if depth > MAX_DEPTH {
            return Err(invalid(at, "conditions nest too deeply"));
        }
        if value.is_boolean() {
            return Ok(());
        }
        let (name, arg) = call(value).ok_or_else(|| {
            invalid(
                at,
                "a condition must be Fn::Equals, Fn::And, Fn::Or, Fn::Not or {\"Condition\": name}",
            )
        })?;
        let at = format!("{at}.{name}");
        let at = at.as_str();
        match name {
            "Fn::Equals" => {
                let args = array(arg, at, Some(2))?;
                self.value_at(&args[0], at, depth + 1)?;
                self.value_at(&args[1], at, depth + 1)
            }
            "Fn::And" | "Fn::Or" => {
                let args = array(arg, at, None)?;
                if args.len() < 2 || args.len() > 10 {
                    return Err(invalid(at, "takes 2 to 10 conditions"));
                }
                args.iter()
                    .try_for_each(|c| self.condition_at(c, at, depth + 1))
            }
            "Fn::Not" => {
                let args = array(arg, at, Some(1))?;
                self.condition_at(&args[0], at, depth + 1)
            }
            "Condition" => match arg.as_str() {
                Some(c) if self.template.conditions.contains_key(c) => Ok(()),
                _ => Err(invalid(at, "must name a condition declared in Conditions")),
            },
            other => Err(invalid(at, format!("{other} is not a condition function"))),
        }
    }
}

/// Evaluates intrinsic functions with one device's parameters.
pub(super) struct Evaluator<'a> {
    pub(super) template: &'a Template,
    pub(super) parameters: &'a Map<String, Value>,
}

fn failed(at: &str, what: impl std::fmt::Display) -> TemplateError {
    TemplateError::Parameters(format!("{at}: {what}"))
}

/// A scalar as the text it joins/compares as.
fn text(value: &Value, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(failed(at, format!("expected a string, got {other}"))),
    }
}

impl Evaluator<'_> {
    fn parameter(&self, name: &str, at: &str) -> Result<Value, TemplateError> {
        self.parameters
            .get(name)
            .cloned()
            .ok_or_else(|| failed(at, format!("parameter {name} has no value")))
    }

    /// The value of `value` with every intrinsic function call replaced by its result.
    pub(super) fn value(&self, value: &Value, at: &str) -> Result<Value, TemplateError> {
        self.value_at(value, at, 0)
    }

    fn value_at(&self, value: &Value, at: &str, depth: usize) -> Result<Value, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(failed(at, "intrinsic functions nest too deeply"));
        }
        let Some((name, arg)) = call(value) else {
            return match value {
                Value::Array(items) => items
                    .iter()
                    .map(|v| self.value_at(v, at, depth + 1))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.value_at(v, at, depth + 1)?)))
                    .collect::<Result<Map<_, _>, _>>()
                    .map(Value::Object),
                other => Ok(other.clone()),
            };
        };
        let at = format!("{at}.{name}");
        let at = at.as_str();
        let d = depth + 1;
        match name {
            "Ref" => self.parameter(arg.as_str().unwrap_or_default(), at),
            "Fn::Join" => {
                let args = array(arg, at, Some(2))?;
                let delimiter = args[0].as_str().unwrap_or_default();
                let items = match self.value_at(&args[1], at, d)? {
                    Value::Array(items) => items,
                    other => return Err(failed(at, format!("expected a list, got {other}"))),
                };
                let parts = items
                    .iter()
                    .map(|v| text(v, at))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::String(parts.join(delimiter)))
            }
            "Fn::Select" => {
                let args = array(arg, at, Some(2))?;
                let index = self.value_at(&args[0], at, d)?;
                let index = text(&index, at)?
                    .parse::<usize>()
                    .map_err(|_| failed(at, "the index must be a non-negative integer"))?;
                match self.value_at(&args[1], at, d)? {
                    Value::Array(mut items) if index < items.len() => Ok(items.swap_remove(index)),
                    Value::Array(items) => Err(failed(
                        at,
                        format!(
                            "index {index} is out of range for a list of {}",
                            items.len()
                        ),
                    )),
                    other => Err(failed(at, format!("expected a list, got {other}"))),
                }
            }
            "Fn::Split" => {
                let args = array(arg, at, Some(2))?;
                let delimiter = args[0].as_str().unwrap_or_default();
                let source = text(&self.value_at(&args[1], at, d)?, at)?;
                if delimiter.is_empty() {
                    return Err(failed(at, "the delimiter is empty"));
                }
                Ok(Value::Array(
                    source
                        .split(delimiter)
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
            "Fn::FindInMap" => {
                let args = array(arg, at, Some(3))?;
                let map = args[0].as_str().unwrap_or_default();
                let first = text(&self.value_at(&args[1], at, d)?, at)?;
                let second = text(&self.value_at(&args[2], at, d)?, at)?;
                self.template
                    .mappings
                    .get(map)
                    .and_then(|m| m.get(&first))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .ok_or_else(|| {
                        failed(at, format!("mapping {map} has no entry {first}.{second}"))
                    })
            }
            "Fn::Sub" => {
                let (template, vars) = match arg {
                    Value::String(s) => (s.as_str(), None),
                    Value::Array(items) if items.len() == 2 => {
                        (items[0].as_str().unwrap_or_default(), items[1].as_object())
                    }
                    _ => return Err(failed(at, "takes a string or [string, {variables}]")),
                };
                self.substitute(template, vars, at, d).map(Value::String)
            }
            "Fn::If" => {
                let args = array(arg, at, Some(3))?;
                let name = args[0].as_str().unwrap_or_default();
                let branch = if self.named_condition(name, at, d)? {
                    &args[1]
                } else {
                    &args[2]
                };
                self.value_at(branch, at, d)
            }
            other => Err(failed(at, format!("{other} cannot be used here"))),
        }
    }

    fn substitute(
        &self,
        template: &str,
        vars: Option<&Map<String, Value>>,
        at: &str,
        depth: usize,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let value = match vars.and_then(|v| v.get(name)) {
                    Some(v) => self.value_at(v, at, depth + 1)?,
                    None => self.parameter(name, at)?,
                };
                out.push_str(&text(&value, at)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Whether the condition declared as `name` holds.
    pub(super) fn named_condition(
        &self,
        name: &str,
        at: &str,
        depth: usize,
    ) -> Result<bool, TemplateError> {
        let condition = self
            .template
            .conditions
            .get(name)
            .ok_or_else(|| failed(at, format!("condition {name} is not declared")))?;
        self.condition_at(condition, &format!("Conditions.{name}"), depth + 1)
    }

    fn condition_at(&self, value: &Value, at: &str, depth: usize) -> Result<bool, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(failed(
                at,
                "conditions nest too deeply (or refer to themselves)",
            ));
        }
        if let Value::Bool(b) = value {
            return Ok(*b);
        }
        let Some((name, arg)) = call(value) else {
            return Err(failed(at, "not a condition"));
        };
        let d = depth + 1;
        match name {
            "Fn::Equals" => {
                let args = array(arg, at, Some(2))?;
                let a = self.value_at(&args[0], at, d)?;
                let b = self.value_at(&args[1], at, d)?;
                Ok(match (text(&a, at), text(&b, at)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                })
            }
            "Fn::And" => {
                for c in array(arg, at, None)? {
                    if !self.condition_at(c, at, d)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            "Fn::Or" => {
                for c in array(arg, at, None)? {
                    if self.condition_at(c, at, d)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            "Fn::Not" => Ok(!self.condition_at(&array(arg, at, Some(1))?[0], at, d)?),
            "Condition" => self.named_condition(arg.as_str().unwrap_or_default(), at, d),
            other => Err(failed(at, format!("{other} is not a condition function"))),
        }
    }
}
