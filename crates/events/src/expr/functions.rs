//! The built-in functions of the expression language, their arity and what they compute.

use super::Value;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `timeout("timer")`: true while the evaluation is the timer's expiry.
    Timeout,
    /// `currentInput("Input")`: true while the evaluation is for a message of that input.
    CurrentInput,
    /// `isUndefined(x)`
    IsUndefined,
    /// `isNull(x)`
    IsNull,
    /// `isNaN(x)`
    IsNaN,
    /// `convert(Type, x)` with Type `Decimal`, `Integer`, `String` or `Boolean`.
    Convert,
    /// `absolute(x)` / `abs(x)`
    Absolute,
    /// `floor(x)`
    Floor,
    /// `ceil(x)`
    Ceil,
    /// `sqrt(x)`
    Sqrt,
    /// `power(x, y)`
    Power,
    /// `mod(x, y)`
    Mod,
    /// `str(x)`: the value's text.
    Str,
    /// `startsWith(s, prefix)`
    StartsWith,
    /// `endsWith(s, suffix)`
    EndsWith,
    /// `contains(s, part)`
    Contains,
    /// `bitand(a, b)`
    BitAnd,
    /// `bitor(a, b)`
    BitOr,
    /// `bitxor(a, b)`
    BitXor,
    /// `bitnot(a)`
    BitNot,
}

impl Function {
    /// The function named `name` (case as AWS documents it) and its number of arguments.
    pub fn lookup(name: &str) -> Option<(Function, usize)> {
        Some(match name {
            "timeout" => (Function::Timeout, 1),
            "currentInput" => (Function::CurrentInput, 1),
            "isUndefined" => (Function::IsUndefined, 1),
            "isNull" => (Function::IsNull, 1),
            "isNaN" => (Function::IsNaN, 1),
            "convert" => (Function::Convert, 2),
            "absolute" | "abs" => (Function::Absolute, 1),
            "floor" => (Function::Floor, 1),
            "ceil" => (Function::Ceil, 1),
            "sqrt" => (Function::Sqrt, 1),
            "power" => (Function::Power, 2),
            "mod" => (Function::Mod, 2),
            "str" => (Function::Str, 1),
            "startsWith" => (Function::StartsWith, 2),
            "endsWith" => (Function::EndsWith, 2),
            "contains" => (Function::Contains, 2),
            "bitand" => (Function::BitAnd, 2),
            "bitor" => (Function::BitOr, 2),
            "bitxor" => (Function::BitXor, 2),
            "bitnot" => (Function::BitNot, 1),
            _ => return None,
        })
    }

    /// Applies a function whose arguments are ordinary values (not `timeout`, `currentInput`
    /// or `convert`'s type name, which the evaluator handles).
    pub(super) fn apply(self, args: &[Value]) -> Value {
        let num = |i: usize| args.get(i).and_then(Value::as_f64);
        let int = |i: usize| match args.get(i) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let text = |i: usize| match args.get(i) {
            Some(Value::Str(s)) => Some(s.as_str()),
            _ => None,
        };
        let keep_int = |v: &Value, f: fn(f64) -> f64| match v {
            Value::Int(i) => Value::Int(*i),
            other => other
                .as_f64()
                .map_or(Value::Undefined, |d| Value::Decimal(f(d))),
        };
        match self {
            Function::IsUndefined => Value::Bool(matches!(args.first(), Some(Value::Undefined))),
            Function::IsNull => Value::Bool(matches!(args.first(), Some(Value::Null))),
            Function::IsNaN => Value::Bool(num(0).is_none_or(f64::is_nan)),
            Function::Absolute => match args.first() {
                Some(Value::Int(i)) => i.checked_abs().map_or(Value::Undefined, Value::Int),
                Some(Value::Decimal(d)) => Value::Decimal(d.abs()),
                _ => Value::Undefined,
            },
            Function::Floor => args
                .first()
                .map_or(Value::Undefined, |v| keep_int(v, f64::floor)),
            Function::Ceil => args
                .first()
                .map_or(Value::Undefined, |v| keep_int(v, f64::ceil)),
            Function::Sqrt => num(0).map_or(Value::Undefined, |d| Value::Decimal(d.sqrt())),
            Function::Power => match (num(0), num(1)) {
                (Some(a), Some(b)) => Value::Decimal(a.powf(b)),
                _ => Value::Undefined,
            },
            Function::Mod => match (int(0), int(1)) {
                (Some(a), Some(b)) => a.checked_rem(b).map_or(Value::Undefined, Value::Int),
                _ => match (num(0), num(1)) {
                    (Some(a), Some(b)) if b != 0.0 => Value::Decimal(a % b),
                    _ => Value::Undefined,
                },
            },
            Function::Str => args
                .first()
                .map_or(Value::Undefined, |v| Value::Str(v.text())),
            Function::StartsWith => match (text(0), text(1)) {
                (Some(s), Some(p)) => Value::Bool(s.starts_with(p)),
                _ => Value::Undefined,
            },
            Function::EndsWith => match (text(0), text(1)) {
                (Some(s), Some(p)) => Value::Bool(s.ends_with(p)),
                _ => Value::Undefined,
            },
            Function::Contains => match (text(0), text(1)) {
                (Some(s), Some(p)) => Value::Bool(s.contains(p)),
                _ => Value::Undefined,
            },
            Function::BitAnd => int2(int(0), int(1), |a, b| a & b),
            Function::BitOr => int2(int(0), int(1), |a, b| a | b),
            Function::BitXor => int2(int(0), int(1), |a, b| a ^ b),
            Function::BitNot => int(0).map_or(Value::Undefined, |a| Value::Int(!a)),
            Function::Timeout | Function::CurrentInput | Function::Convert => Value::Undefined,
        }
    }
}

fn int2(a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => Value::Int(f(a, b)),
        _ => Value::Undefined,
    }
}

/// `convert(Type, x)`.
pub(super) fn convert(target: &str, value: &Value) -> Value {
    match (target, value) {
        (_, Value::Undefined) => Value::Undefined,
        ("String", v) => Value::Str(v.text()),
        ("Decimal", Value::Int(i)) => Value::Decimal(*i as f64),
        ("Decimal", Value::Decimal(d)) => Value::Decimal(*d),
        ("Decimal", Value::Str(s)) => s
            .trim()
            .parse::<f64>()
            .map_or(Value::Undefined, Value::Decimal),
        ("Decimal", Value::Bool(b)) => Value::Decimal(f64::from(u8::from(*b))),
        ("Integer", Value::Int(i)) => Value::Int(*i),
        ("Integer", Value::Decimal(d)) if d.is_finite() && d.abs() < 9.2e18 => {
            Value::Int(d.trunc() as i64)
        }
        ("Integer", Value::Str(s)) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => match s.parse::<f64>() {
                    Ok(d) if d.is_finite() && d.abs() < 9.2e18 => Value::Int(d.trunc() as i64),
                    _ => Value::Undefined,
                },
            }
        }
        ("Integer", Value::Bool(b)) => Value::Int(i64::from(*b)),
        ("Boolean", Value::Bool(b)) => Value::Bool(*b),
        ("Boolean", Value::Int(i)) => Value::Bool(*i != 0),
        ("Boolean", Value::Decimal(d)) => Value::Bool(*d != 0.0),
        ("Boolean", Value::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

/// The type names `convert` accepts.
pub(super) const CONVERT_TYPES: &[&str] = &["Decimal", "Integer", "String", "Boolean"];
