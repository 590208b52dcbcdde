//! The values expressions compute and variables hold.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A value of the expression language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A missing input field or variable (`isUndefined` is true; comparisons are false).
    Undefined,
    /// JSON `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal.
    Decimal(f64),
    /// A string.
    Str(String),
}

impl Value {
    /// The value of a JSON member (objects and arrays become their JSON text).
    pub fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Decimal(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            other => Value::Str(other.to_string()),
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Decimal(d) => Some(*d),
            _ => None,
        }
    }

    /// True only for `Bool(true)` (a condition that is not a boolean is not met).
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// The text of the value where it is spliced into a string (`${...}`, `+` with a string).
    pub fn text(&self) -> String {
        match self {
            Value::Undefined => String::new(),
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => decimal_text(*d),
            Value::Str(s) => s.clone(),
        }
    }

    /// The value as the data API shows a variable: numbers and booleans as their text,
    /// strings in single quotes (`"'text'"`).
    pub fn api_text(&self) -> String {
        match self {
            Value::Str(s) => format!("'{s}'"),
            other => other.text(),
        }
    }

    /// Reads a variable value as the data API writes it (BatchUpdateDetector): a number, a
    /// boolean, or a quoted string; anything else is kept as a string.
    pub fn from_api_text(text: &str) -> Value {
        let t = text.trim();
        if t == "true" || t == "false" {
            return Value::Bool(t == "true");
        }
        if let Ok(i) = t.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(d) = t.parse::<f64>()
            && d.is_finite()
        {
            return Value::Decimal(d);
        }
        let quoted = (t.len() >= 2 && t.starts_with('\'') && t.ends_with('\''))
            || (t.len() >= 2 && t.starts_with('"') && t.ends_with('"'));
        if quoted {
            return Value::Str(t[1..t.len() - 1].to_string());
        }
        Value::Str(text.to_string())
    }

    /// The value as JSON (Undefined becomes null).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Undefined | Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Decimal(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::String(s.clone()),
        }
    }
}

/// A decimal's text: always with a fractional part (`30.0`), as IoT Events prints decimals.
fn decimal_text(d: f64) -> String {
    if d.is_finite() && d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{d:.1}")
    } else {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_text_round_trips() {
        for v in [
            Value::Int(3),
            Value::Decimal(2.5),
            Value::Bool(true),
            Value::Str("hot".into()),
        ] {
            assert_eq!(Value::from_api_text(&v.api_text()), v);
        }
        assert_eq!(Value::Decimal(30.0).text(), "30.0");
    }
}
