//! Subscription filter policies, as SNS evaluates them: a JSON object whose keys must all
//! match (AND); each key's value is a list of conditions of which one must match (OR), or, for
//! the `MessageBody` scope, a nested object; `"$or": [policy, ...]` matches if one of the
//! policies does. Conditions: exact strings and numbers, `prefix`, `suffix`,
//! `equals-ignore-case`, `anything-but` (a value, a list, or `{"prefix": ..}`), `numeric`
//! ranges, and `exists`. A policy is checked when it is set; `cidr` is refused.

use serde_json::{Map, Value};

use crate::error::NotifyServiceError;

/// A checked filter policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy(Map<String, Value>);

/// Bounds SNS sets on a policy: keys and the product of the number of values.
const MAX_KEYS: usize = 5;
const MAX_COMBINATIONS: usize = 150;

impl FilterPolicy {
    /// Parses and checks a policy document.
    pub fn parse(text: &str) -> Result<FilterPolicy, NotifyServiceError> {
        let invalid = |why: String| NotifyServiceError::invalid(format!("FilterPolicy: {why}"));
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(invalid("must be a JSON object".into()));
        };
        let combinations = check_object(&map).map_err(invalid)?;
        if combinations > MAX_COMBINATIONS {
            return Err(invalid(format!(
                "{combinations} combinations of values, more than {MAX_COMBINATIONS}"
            )));
        }
        Ok(FilterPolicy(map))
    }

    /// Whether a message with these attributes (name -> value: a string, a number, or an
    /// array for `String.Array`) matches.
    pub fn matches_attributes(&self, attributes: &Map<String, Value>) -> bool {
        match_object(&self.0, attributes, false)
    }

    /// Whether a message body (JSON) matches; a body that is not a JSON object never does.
    pub fn matches_body(&self, body: &str) -> bool {
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(map)) => match_object(&self.0, &map, true),
            _ => false,
        }
    }
}

/// Checks an object level; returns the number of value combinations it allows.
fn check_object(map: &Map<String, Value>) -> Result<usize, String> {
    if map.is_empty() {
        return Err("an empty object matches nothing".into());
    }
    let mut keys = 0;
    let mut combinations = 1usize;
    for (key, value) in map {
        if key == "$or" {
            let Value::Array(options) = value else {
                return Err("$or must be an array of policies".into());
            };
            let mut sum = 0;
            for option in options {
                let Value::Object(option) = option else {
                    return Err("$or must be an array of policies".into());
                };
                sum += check_object(option)?;
            }
            combinations = combinations.saturating_mul(sum.max(1));
            continue;
        }
        keys += 1;
        match value {
            Value::Array(conditions) => {
                if conditions.is_empty() {
                    return Err(format!("{key}: an empty list matches nothing"));
                }
                for condition in conditions {
                    check_condition(key, condition)?;
                }
                combinations = combinations.saturating_mul(conditions.len());
            }
            Value::Object(nested) => {
                combinations = combinations.saturating_mul(check_object(nested)?);
            }
            _ => return Err(format!("{key}: the value must be an array of conditions")),
        }
    }
    if keys > MAX_KEYS {
        return Err(format!("{keys} keys, more than {MAX_KEYS}"));
    }
    Ok(combinations)
}

fn check_condition(key: &str, condition: &Value) -> Result<(), String> {
    let Value::Object(operator) = condition else {
        return match condition {
            Value::String(_) | Value::Number(_) | Value::Null | Value::Bool(_) => Ok(()),
            _ => Err(format!("{key}: a condition must be a value or an operator")),
        };
    };
    let (Some((name, operand)), 1) = (operator.iter().next(), operator.len()) else {
        return Err(format!("{key}: an operator object has exactly one member"));
    };
    let ok = match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => operand.is_string(),
        "exists" => operand.is_boolean(),
        "anything-but" => match operand {
            Value::String(_) | Value::Number(_) => true,
            Value::Array(values) => values.iter().all(|v| v.is_string() || v.is_number()),
            Value::Object(inner) => {
                inner.len() == 1 && inner.get("prefix").is_some_and(Value::is_string)
            }
            _ => false,
        },
        "numeric" => check_numeric(operand),
        other => return Err(format!("{key}: unsupported operator {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{key}: bad operand of {name}"))
    }
}

fn check_numeric(operand: &Value) -> bool {
    let Value::Array(parts) = operand else {
        return false;
    };
    (parts.len() == 2 || parts.len() == 4)
        && parts.chunks(2).all(|pair| {
            matches!(pair[0].as_str(), Some("=" | "<" | "<=" | ">" | ">=")) && pair[1].is_number()
        })
}

fn match_object(policy: &Map<String, Value>, message: &Map<String, Value>, body: bool) -> bool {
    policy.iter().all(|(key, expected)| {
        if key == "$or" {
            return expected.as_array().is_some_and(|options| {
                options.iter().any(|option| {
                    option
                        .as_object()
                        .is_some_and(|o| match_object(o, message, body))
                })
            });
        }
        let actual = message.get(key);
        match expected {
            Value::Object(nested) => {
                body && actual
                    .and_then(Value::as_object)
                    .is_some_and(|inner| match_object(nested, inner, body))
            }
            Value::Array(conditions) => conditions.iter().any(|c| match_condition(c, actual)),
            _ => false,
        }
    })
}

/// The values a message field stands for: an array's elements, or the value itself.
fn values(actual: &Value) -> Vec<&Value> {
    match actual {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn match_condition(condition: &Value, actual: Option<&Value>) -> bool {
    if let Some(("exists", Value::Bool(wanted))) = condition
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.as_str(), v))
    {
        return actual.is_some() == *wanted;
    }
    let Some(actual) = actual else {
        return false;
    };
    let candidates = values(actual);
    match condition {
        Value::Object(operator) => {
            let Some((name, operand)) = operator.iter().next() else {
                return false;
            };
            match name.as_str() {
                "prefix" => text_test(&candidates, operand, |v, o| v.starts_with(o)),
                "suffix" => text_test(&candidates, operand, |v, o| v.ends_with(o)),
                "equals-ignore-case" => {
                    text_test(&candidates, operand, |v, o| v.eq_ignore_ascii_case(o))
                }
                "numeric" => candidates
                    .iter()
                    .filter_map(|v| number(v))
                    .any(|n| numeric_match(operand, n)),
                "anything-but" => anything_but(operand, &candidates),
                _ => false,
            }
        }
        expected => candidates.iter().any(|v| equal(expected, v)),
    }
}

fn text_test(candidates: &[&Value], operand: &Value, test: fn(&str, &str) -> bool) -> bool {
    let Some(operand) = operand.as_str() else {
        return false;
    };
    candidates
        .iter()
        .filter_map(|v| v.as_str())
        .any(|v| test(v, operand))
}

fn anything_but(operand: &Value, candidates: &[&Value]) -> bool {
    match operand {
        Value::Object(inner) => {
            let Some(prefix) = inner.get("prefix").and_then(Value::as_str) else {
                return false;
            };
            candidates
                .iter()
                .all(|v| v.as_str().is_some_and(|s| !s.starts_with(prefix)))
        }
        Value::Array(excluded) => candidates
            .iter()
            .all(|v| !excluded.iter().any(|e| equal(e, v))),
        single => candidates.iter().all(|v| !equal(single, v)),
    }
}

/// Equality as SNS sees it: strings by text, numbers by value (`"5"` in an attribute of type
/// Number is 5).
fn equal(expected: &Value, actual: &Value) -> bool {
    match expected {
        Value::Number(_) => number(expected)
            .zip(number(actual))
            .is_some_and(|(a, b)| a == b),
        _ => expected == actual,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn numeric_match(operand: &Value, n: f64) -> bool {
    let Some(parts) = operand.as_array() else {
        return false;
    };
    parts.chunks(2).all(|pair| {
        let Some(bound) = pair.get(1).and_then(Value::as_f64) else {
            return false;
        };
        match pair[0].as_str() {
            Some("=") => n == bound,
            Some("<") => n < bound,
            Some("<=") => n <= bound,
            Some(">") => n > bound,
            Some(">=") => n >= bound,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn attribute_policies() {
        let p = FilterPolicy::parse(
            r#"{"severity":["critical",{"prefix":"high"}],"temp":[{"numeric":[">",50,"<=",100]}]}"#,
        )
        .expect("policy");
        assert!(p.matches_attributes(&attrs(json!({"severity":"critical","temp":60}))));
        assert!(p.matches_attributes(&attrs(json!({"severity":"high-ish","temp":100}))));
        assert!(!p.matches_attributes(&attrs(json!({"severity":"low","temp":60}))));
        assert!(!p.matches_attributes(&attrs(json!({"severity":"critical","temp":101}))));
        assert!(!p.matches_attributes(&attrs(json!({"severity":"critical"}))));
        let arrays = FilterPolicy::parse(r#"{"tags":["a"]}"#).expect("policy");
        assert!(arrays.matches_attributes(&attrs(json!({"tags":["b","a"]}))));
        let but = FilterPolicy::parse(
            r#"{"s":[{"anything-but":["x","y"]}],"t":[{"anything-but":{"prefix":"z"}}]}"#,
        )
        .expect("policy");
        assert!(but.matches_attributes(&attrs(json!({"s":"w","t":"a"}))));
        assert!(!but.matches_attributes(&attrs(json!({"s":"x","t":"a"}))));
        assert!(!but.matches_attributes(&attrs(json!({"s":"w","t":"zz"}))));
        let exists = FilterPolicy::parse(r#"{"a":[{"exists":false}],"b":[{"exists":true}]}"#)
            .expect("policy");
        assert!(exists.matches_attributes(&attrs(json!({"b":"1"}))));
        assert!(!exists.matches_attributes(&attrs(json!({"a":"1","b":"1"}))));
        let or = FilterPolicy::parse(r#"{"$or":[{"a":["1"]},{"b":["2"]}]}"#).expect("policy");
        assert!(or.matches_attributes(&attrs(json!({"b":"2"}))));
        assert!(!or.matches_attributes(&attrs(json!({"a":"2"}))));
        let case = FilterPolicy::parse(r#"{"a":[{"equals-ignore-case":"HeLLo"},{"suffix":"!"}]}"#)
            .expect("policy");
        assert!(case.matches_attributes(&attrs(json!({"a":"hello"}))));
        assert!(case.matches_attributes(&attrs(json!({"a":"wow!"}))));
    }

    #[test]
    fn body_policies_nest() {
        let p =
            FilterPolicy::parse(r#"{"device":{"type":["sensor"]},"level":[{"numeric":[">=",3]}]}"#)
                .expect("policy");
        assert!(p.matches_body(r#"{"device":{"type":"sensor"},"level":4}"#));
        assert!(!p.matches_body(r#"{"device":{"type":"gateway"},"level":4}"#));
        assert!(!p.matches_body("not json"));
        assert!(!p.matches_attributes(&attrs(json!({"device":"x","level":4}))));
    }

    #[test]
    fn bad_policies_are_refused() {
        for text in [
            "[]",
            "{}",
            "{\"a\":\"x\"}",
            "{\"a\":[]}",
            "{\"a\":[{\"cidr\":\"10.0.0.0/24\"}]}",
            "{\"a\":[{\"numeric\":[\"~\",1]}]}",
            "{\"a\":[{\"prefix\":1}]}",
            "{\"a\":[1],\"b\":[1],\"c\":[1],\"d\":[1],\"e\":[1],\"f\":[1]}",
            "not json",
        ] {
            assert!(FilterPolicy::parse(text).is_err(), "{text}");
        }
    }
}
