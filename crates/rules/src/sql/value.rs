//! Values during evaluation and AWS's conversion and operator rules.
//!
//! A value is Undefined (a missing field; not representable in JSON), a JSON value (borrowed
//! from the payload or a literal when possible, owned when computed), or the raw payload bytes
//! (only `*` of a non-JSON payload). Operators and functions convert their operands the way the
//! AWS IoT SQL reference's "Conversions" tables say; what cannot be converted is Undefined.

use std::borrow::Cow;

use serde_json::{Number, Value};

use super::expr::{ArithOp, CmpOp};

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Undefined,
    Ref(&'a Value),
    Own(Value),
    Raw(&'a [u8]),
}

/// A number: SQL `Int` (64 bits here) or `Decimal` (a double here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Dec(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Dec(d) => d,
        }
    }

    /// The number read from JSON (no conversion from other types).
    pub(crate) fn of(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i))
        } else {
            n.as_f64().map(Num::Dec)
        }
    }

    /// Parses a string as AWS converts strings to numbers (surrounding whitespace allowed).
    pub(crate) fn parse(s: &str) -> Option<Num> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::Int(i));
        }
        // Rust also accepts "inf"/"nan"; AWS's Decimal does not.
        if !s.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map(Num::Dec)
    }
}

impl<'a> Val<'a> {
    /// The value as JSON, if it is one.
    pub(crate) fn json(&self) -> Option<&Value> {
        match self {
            Val::Ref(v) => Some(v),
            Val::Own(v) => Some(v),
            Val::Undefined | Val::Raw(_) => None,
        }
    }

    /// The value as owned JSON; Undefined and raw bytes are `None`.
    pub(crate) fn into_json(self) -> Option<Value> {
        match self {
            Val::Ref(v) => Some(v.clone()),
            Val::Own(v) => Some(v),
            Val::Undefined | Val::Raw(_) => None,
        }
    }

    pub(crate) fn is_undefined(&self) -> bool {
        matches!(self, Val::Undefined)
    }

    pub(crate) fn bool(b: bool) -> Val<'static> {
        Val::Own(Value::Bool(b))
    }

    pub(crate) fn string(s: impl Into<String>) -> Val<'static> {
        Val::Own(Value::String(s.into()))
    }

    pub(crate) fn int(i: i64) -> Val<'static> {
        Val::Own(Value::Number(i.into()))
    }

    /// A computed number. With SQL 2016-03-23 a whole Decimal is an Int (AWS: "numeric values
    /// that are whole numbers, such as 10.0, are processed as an Int value"). NaN and infinities
    /// are Undefined.
    pub(crate) fn num(n: Num, whole_as_int: bool) -> Val<'static> {
        match n {
            Num::Int(i) => Val::int(i),
            Num::Dec(d) if !d.is_finite() => Val::Undefined,
            Num::Dec(d) => {
                if whole_as_int && d.fract() == 0.0 && d.abs() < 9.007_199_254_740_992e15 {
                    Val::int(d as i64)
                } else {
                    Number::from_f64(d).map_or(Val::Undefined, |n| Val::Own(Value::Number(n)))
                }
            }
        }
    }

    /// The value as a number, converting strings ("To Decimal": Int and Decimal as they are,
    /// strings parsed, everything else Undefined).
    pub(crate) fn to_num(&self) -> Option<Num> {
        match self.json()? {
            Value::Number(n) => Num::of(n),
            Value::String(s) => Num::parse(s),
            _ => None,
        }
    }

    /// True when the value is a number or a string that converts to one.
    pub(crate) fn to_num_from_string(&self) -> bool {
        matches!(self.json(), Some(Value::String(_)))
    }

    /// The value as a Boolean: Booleans, and the strings "true"/"false" in any case.
    pub(crate) fn to_bool(&self) -> Option<bool> {
        match self.json()? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// The value as a string ("To String": strings as they are; numbers, Booleans, arrays and
    /// objects in their JSON form; Null and Undefined are Undefined).
    pub(crate) fn to_str(&self) -> Option<Cow<'_, str>> {
        match self.json()? {
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            json @ (Value::Array(_) | Value::Object(_)) => Some(Cow::Owned(json.to_string())),
            Value::Null => None,
        }
    }
}

/// `left op right` for `+ - * / %`. Int with Int stays Int (falling back to Decimal on
/// overflow); a Decimal or a converted string makes a Decimal; division or remainder by zero
/// is Undefined.
pub(crate) fn arith(
    op: ArithOp,
    left: &Val<'_>,
    right: &Val<'_>,
    whole_as_int: bool,
) -> Val<'static> {
    let (Some(a), Some(b)) = (left.to_num(), right.to_num()) else {
        return Val::Undefined;
    };
    let converted = left.to_num_from_string() || right.to_num_from_string();
    let result = match (a, b) {
        (Num::Int(x), Num::Int(y)) if !converted => match op {
            ArithOp::Add => x.checked_add(y).map(Num::Int),
            ArithOp::Sub => x.checked_sub(y).map(Num::Int),
            ArithOp::Mul => x.checked_mul(y).map(Num::Int),
            ArithOp::Div if y == 0 => return Val::Undefined,
            ArithOp::Div => x.checked_div(y).map(Num::Int),
            ArithOp::Rem if y == 0 => return Val::Undefined,
            ArithOp::Rem => x.checked_rem(y).map(Num::Int),
        }
        .unwrap_or_else(|| Num::Dec(float_op(op, x as f64, y as f64))),
        _ => {
            let (x, y) = (a.as_f64(), b.as_f64());
            if matches!(op, ArithOp::Div | ArithOp::Rem) && y == 0.0 {
                return Val::Undefined;
            }
            Num::Dec(float_op(op, x, y))
        }
    };
    Val::num(result, whole_as_int)
}

fn float_op(op: ArithOp, x: f64, y: f64) -> f64 {
    match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    }
}

/// Unary minus: numbers (and numeric strings) negated, everything else Undefined.
pub(crate) fn negate(v: &Val<'_>, whole_as_int: bool) -> Val<'static> {
    match v.to_num() {
        Some(Num::Int(i)) => Val::num(
            i.checked_neg().map_or(Num::Dec(-(i as f64)), Num::Int),
            whole_as_int,
        ),
        Some(Num::Dec(d)) => Val::num(Num::Dec(-d), whole_as_int),
        None => Val::Undefined,
    }
}

/// A comparison: `Some(bool)`, or `None` for Undefined.
///
/// `=` and `<>` compare values of the same type (Int and Decimal compare as numbers); values
/// of different types are not equal; Undefined on either side is Undefined. The ordering
/// operators convert both sides to Decimal (numeric strings included) and are Undefined when
/// either side does not convert.
pub(crate) fn compare(op: CmpOp, left: &Val<'_>, right: &Val<'_>) -> Option<bool> {
    match op {
        CmpOp::Eq | CmpOp::NotEq => {
            let equal = equal(left.json()?, right.json()?);
            Some(if op == CmpOp::Eq { equal } else { !equal })
        }
        _ => {
            let ordering = match (left.to_num()?, right.to_num()?) {
                (Num::Int(a), Num::Int(b)) => a.cmp(&b),
                (a, b) => a.as_f64().partial_cmp(&b.as_f64())?,
            };
            Some(match op {
                CmpOp::Lt => ordering.is_lt(),
                CmpOp::LtEq => ordering.is_le(),
                CmpOp::Gt => ordering.is_gt(),
                CmpOp::GtEq => ordering.is_ge(),
                CmpOp::Eq | CmpOp::NotEq => unreachable!("handled above"),
            })
        }
    }
}

/// SQL equality of two JSON values: numbers by value, arrays and objects element-wise.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Num::of(x), Num::of(y)) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => x == y,
            (Some(x), Some(y)) => x.as_f64() == y.as_f64(),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn own(v: Value) -> Val<'static> {
        Val::Own(v)
    }

    #[test]
    fn int_arithmetic_stays_int_and_division_by_zero_is_undefined() {
        let r = arith(ArithOp::Div, &own(json!(7)), &own(json!(2)), true);
        assert_eq!(r.json(), Some(&json!(3)));
        assert!(arith(ArithOp::Div, &own(json!(7)), &own(json!(0)), true).is_undefined());
        assert!(arith(ArithOp::Rem, &own(json!(7.5)), &own(json!(0)), true).is_undefined());
        let r = arith(ArithOp::Add, &own(json!("5")), &own(json!(1)), true);
        assert_eq!(r.json(), Some(&json!(6)));
        let r = arith(ArithOp::Add, &own(json!("5")), &own(json!(1)), false);
        assert_eq!(r.json(), Some(&json!(6.0)));
        assert!(arith(ArithOp::Add, &own(json!("a")), &own(json!("b")), true).is_undefined());
        let r = arith(ArithOp::Mul, &own(json!(i64::MAX)), &own(json!(2)), true);
        assert!(r.json().is_some_and(Value::is_f64));
    }

    #[test]
    fn comparisons_follow_aws() {
        assert_eq!(
            compare(CmpOp::Eq, &own(json!(1)), &own(json!(1.0))),
            Some(true)
        );
        assert_eq!(
            compare(CmpOp::Eq, &own(json!("1")), &own(json!(1))),
            Some(false)
        );
        assert_eq!(
            compare(CmpOp::NotEq, &own(json!("1")), &own(json!(1))),
            Some(true)
        );
        assert_eq!(
            compare(CmpOp::Gt, &own(json!("10")), &own(json!(9))),
            Some(true)
        );
        assert_eq!(compare(CmpOp::Gt, &own(json!("b")), &own(json!("a"))), None);
        assert_eq!(compare(CmpOp::Eq, &Val::Undefined, &own(json!(1))), None);
        assert_eq!(
            compare(CmpOp::Eq, &own(json!(null)), &own(json!(null))),
            Some(true)
        );
    }
}
