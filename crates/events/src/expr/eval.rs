//! Evaluation: an [`Expr`] against a [`Scope`] (the message being processed, the instance's
//! variables, the timer that expired). Evaluation never fails: what cannot be computed
//! (a missing field, a division by zero, a type mismatch) is `Undefined`, and a comparison
//! with `Undefined` is false, so the condition is simply not met.

use std::cmp::Ordering;

use super::functions::convert;
use super::{BinaryOp, Expr, Function, Part, PathStep, UnaryOp, Value};

/// What an expression reads.
pub trait Scope {
    /// `$input.<input>.<path>`: the field of the message being processed, or `Undefined` when
    /// the message is for another input (or there is no message: a timer expired).
    fn input(&self, input: &str, path: &[PathStep]) -> Value;
    /// `$variable.<name>`.
    fn variable(&self, name: &str) -> Value;
    /// `timeout("<timer>")`: this evaluation is that timer's expiry.
    fn timed_out(&self, timer: &str) -> bool;
    /// `currentInput("<input>")`: this evaluation is for a message of that input.
    fn current_input(&self, input: &str) -> bool;
}

pub(super) fn eval(expr: &Expr, scope: &dyn Scope) -> Value {
    match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Template(parts) => Value::Str(render(parts, scope)),
        Expr::Input { input, path } => scope.input(input, path),
        Expr::Variable(name) => scope.variable(name),
        Expr::Unary(UnaryOp::Not, e) => match eval(e, scope) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Undefined,
        },
        Expr::Unary(UnaryOp::Negate, e) => match eval(e, scope) {
            Value::Int(i) => i.checked_neg().map_or(Value::Undefined, Value::Int),
            Value::Decimal(d) => Value::Decimal(-d),
            _ => Value::Undefined,
        },
        Expr::Binary(BinaryOp::And, a, b) => {
            Value::Bool(eval(a, scope).is_true() && eval(b, scope).is_true())
        }
        Expr::Binary(BinaryOp::Or, a, b) => {
            Value::Bool(eval(a, scope).is_true() || eval(b, scope).is_true())
        }
        Expr::Binary(op, a, b) => binary(*op, &eval(a, scope), &eval(b, scope)),
        Expr::Call(function, args) => call(*function, args, scope),
    }
}

pub(super) fn render(parts: &[Part], scope: &dyn Scope) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Expr(e) => out.push_str(&eval(e, scope).text()),
        }
    }
    out
}

fn call(function: Function, args: &[Expr], scope: &dyn Scope) -> Value {
    let name = || match args.first() {
        Some(Expr::Literal(Value::Str(s))) => s.as_str(),
        _ => "",
    };
    match function {
        Function::Timeout => Value::Bool(scope.timed_out(name())),
        Function::CurrentInput => Value::Bool(scope.current_input(name())),
        Function::Convert => match args.get(1) {
            Some(arg) => convert(name(), &eval(arg, scope)),
            None => Value::Undefined,
        },
        other => {
            let values: Vec<Value> = args.iter().map(|a| eval(a, scope)).collect();
            other.apply(&values)
        }
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    }
}

fn binary(op: BinaryOp, a: &Value, b: &Value) -> Value {
    if matches!(a, Value::Undefined) || matches!(b, Value::Undefined) {
        return match op {
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => Value::Bool(false),
            _ => Value::Undefined,
        };
    }
    let ordering = || compare(a, b);
    match op {
        BinaryOp::Eq => Value::Bool(ordering() == Some(Ordering::Equal)),
        BinaryOp::Ne => Value::Bool(ordering() != Some(Ordering::Equal)),
        BinaryOp::Lt => Value::Bool(ordering() == Some(Ordering::Less)),
        BinaryOp::Le => Value::Bool(matches!(ordering(), Some(Ordering::Less | Ordering::Equal))),
        BinaryOp::Gt => Value::Bool(ordering() == Some(Ordering::Greater)),
        BinaryOp::Ge => Value::Bool(matches!(
            ordering(),
            Some(Ordering::Greater | Ordering::Equal)
        )),
        BinaryOp::Add => match (a, b) {
            (Value::Str(_), _) | (_, Value::Str(_)) => Value::Str(a.text() + &b.text()),
            _ => arithmetic(a, b, i64::checked_add, |x, y| x + y),
        },
        BinaryOp::Sub => arithmetic(a, b, i64::checked_sub, |x, y| x - y),
        BinaryOp::Mul => arithmetic(a, b, i64::checked_mul, |x, y| x * y),
        BinaryOp::Div => match (a, b) {
            (Value::Int(_), Value::Int(0)) => Value::Undefined,
            (Value::Int(x), Value::Int(y)) if x.checked_rem(*y) == Some(0) => {
                x.checked_div(*y).map_or(Value::Undefined, Value::Int)
            }
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if y != 0.0 => Value::Decimal(x / y),
                _ => Value::Undefined,
            },
        },
        BinaryOp::Rem => match (a, b) {
            (Value::Int(x), Value::Int(y)) => {
                x.checked_rem(*y).map_or(Value::Undefined, Value::Int)
            }
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if y != 0.0 => Value::Decimal(x % y),
                _ => Value::Undefined,
            },
        },
        BinaryOp::And | BinaryOp::Or => Value::Undefined,
    }
}

fn arithmetic(
    a: &Value,
    b: &Value,
    int: fn(i64, i64) -> Option<i64>,
    dec: fn(f64, f64) -> f64,
) -> Value {
    if let (Value::Int(x), Value::Int(y)) = (a, b)
        && let Some(r) = int(*x, *y)
    {
        return Value::Int(r);
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => Value::Decimal(dec(x, y)),
        _ => Value::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    struct Message {
        input: &'static str,
        body: serde_json::Value,
        timer: Option<&'static str>,
    }

    impl Scope for Message {
        fn input(&self, input: &str, path: &[PathStep]) -> Value {
            if input != self.input {
                return Value::Undefined;
            }
            let mut at = &self.body;
            for step in path {
                let next = match step {
                    PathStep::Field(f) => at.get(f),
                    PathStep::Index(i) => at.get(i),
                };
                match next {
                    Some(n) => at = n,
                    None => return Value::Undefined,
                }
            }
            Value::from_json(at)
        }
        fn variable(&self, name: &str) -> Value {
            match name {
                "count" => Value::Int(3),
                "label" => Value::Str("hot".into()),
                _ => Value::Undefined,
            }
        }
        fn timed_out(&self, timer: &str) -> bool {
            self.timer == Some(timer)
        }
        fn current_input(&self, input: &str) -> bool {
            input == self.input
        }
    }

    fn scope() -> Message {
        Message {
            input: "T",
            body: json!({"temp": 31.5, "n": 7, "id": "sensor-1", "a": [1, {"b": 2}]}),
            timer: Some("cooldown"),
        }
    }

    fn run(text: &str) -> Value {
        parse(text).expect(text).eval(&scope())
    }

    #[test]
    fn evaluates_the_documented_forms() {
        assert_eq!(run("$input.T.temp > 30"), Value::Bool(true));
        assert_eq!(run("$input.Other.temp > 30"), Value::Bool(false));
        assert_eq!(run("$input.Other.temp <= 30"), Value::Bool(false));
        assert_eq!(run("$input.T.a[1].b + $variable.count"), Value::Int(5));
        assert_eq!(run("$input.T.n / 2"), Value::Decimal(3.5));
        assert_eq!(run("$input.T.n % 4"), Value::Int(3));
        assert_eq!(run("1 / 0"), Value::Undefined);
        assert_eq!(
            run("'x-' + $variable.label + 1"),
            Value::Str("x-hot1".into())
        );
        assert_eq!(
            run("timeout(\"cooldown\") && !timeout('other')"),
            Value::Bool(true)
        );
        assert_eq!(run("currentInput(\"T\")"), Value::Bool(true));
        assert_eq!(run("isUndefined($variable.nope)"), Value::Bool(true));
        assert_eq!(run("convert(Integer, $input.T.temp)"), Value::Int(31));
        assert_eq!(run("convert(Decimal, '2.5') * 2"), Value::Decimal(5.0));
        assert_eq!(run("convert(String, 12) == '12'"), Value::Bool(true));
        assert_eq!(
            run("absolute(-4) + floor(2.7) + ceil(2.1)"),
            Value::Decimal(9.0)
        );
        assert_eq!(
            run("bitand(12, 10) + bitor(1, 2) + bitxor(3, 1)"),
            Value::Int(13)
        );
        assert_eq!(run("bitnot(0)"), Value::Int(-1));
        assert_eq!(run("startsWith($input.T.id, 'sensor')"), Value::Bool(true));
        assert_eq!(run("endsWith($input.T.id, '-2')"), Value::Bool(false));
        assert_eq!(run("contains($input.T.id, 'or-')"), Value::Bool(true));
        assert_eq!(
            run(r#"'{"t": ${$input.T.temp}, "id": "${$input.T.id}"}'"#),
            Value::Str(r#"{"t": 31.5, "id": "sensor-1"}"#.into())
        );
    }

    proptest! {
        #[test]
        fn integer_arithmetic_matches_rust(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            prop_assert_eq!(run(&format!("{a} + {b}")), Value::Int(a + b));
            prop_assert_eq!(run(&format!("{a} - ({b})")), Value::Int(a - b));
            prop_assert_eq!(run(&format!("{a} * {b}")), Value::Int(a * b));
            prop_assert_eq!(run(&format!("{a} < {b}")), Value::Bool(a < b));
            prop_assert_eq!(run(&format!("{a} == {b} || {a} != {b}")), Value::Bool(true));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,64}") {
            let _ = parse(&text);
        }
    }
}
