//! Walks a compiled statement over one message.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::expr::{CastType, Expr, Projection, SelectItem, Step};
use super::function_calls::FunctionCalls;
use super::functions;
use super::value::{Num, Val, arith, compare, equal, negate};
use crate::message::{MessageContext, Outcome, Payload, RuleEnv};

/// What one evaluation can see.
pub(crate) struct Scope<'a, 'e> {
    pub message: &'a MessageContext<'a>,
    pub payload: &'a Payload,
    pub env: &'e RuleEnv,
    /// SQL 2016-03-23: whole Decimals are Ints.
    pub whole_as_int: bool,
    /// The results of the statement's `aws_lambda` calls (`None`: it makes none).
    pub calls: Option<&'e FunctionCalls>,
}

/// Why a statement could not produce a message (AWS then runs the rule's error action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// `SELECT *, ...` merges the payload's keys into an object, which needs a JSON object.
    #[error("SELECT * with other items needs a JSON object payload")]
    PayloadNotAnObject,
    /// An `aws_lambda` call could not be made or its function failed.
    #[error("aws_lambda({function}): {message}")]
    FunctionCall {
        /// The function the call named.
        function: String,
        /// What went wrong.
        message: String,
    },
}

impl<'a> Scope<'a, '_> {
    /// `aws_lambda(function, input)` at call site `site`.
    pub(crate) fn function_result(
        &self,
        site: usize,
        function: &Val<'_>,
        input: &Val<'_>,
    ) -> Val<'a> {
        self.calls
            .map_or(Val::Undefined, |calls| calls.result(site, function, input))
    }

    /// `WHERE`: only a Boolean true (or the string "true") lets the message through.
    pub(crate) fn holds(&self, condition: &'a Expr) -> bool {
        self.eval(condition).to_bool() == Some(true)
    }

    pub(crate) fn project(&self, projection: &'a Projection) -> Result<Outcome<'a>, EvalError> {
        match projection {
            Projection::Value(expr) => Ok(match self.eval(expr) {
                Val::Undefined => Outcome::Bytes(b""),
                Val::Raw(bytes) => Outcome::Bytes(bytes),
                Val::Ref(v) => Outcome::Json(Cow::Borrowed(v)),
                Val::Own(v) => Outcome::Json(Cow::Owned(v)),
            }),
            Projection::Items(items) => {
                if let [SelectItem::Star] = items.as_slice() {
                    return Ok(match self.payload {
                        Payload::Json(v) => Outcome::Json(Cow::Borrowed(v)),
                        Payload::Binary => Outcome::Bytes(self.message.payload),
                    });
                }
                let mut out = Map::new();
                for item in items {
                    match item {
                        SelectItem::Star => match self.payload {
                            Payload::Json(Value::Object(map)) => {
                                out.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                            }
                            _ => return Err(EvalError::PayloadNotAnObject),
                        },
                        SelectItem::Named { name, expr } => {
                            if let Some(v) = self.eval(expr).into_json() {
                                out.insert(name.clone(), v);
                            }
                        }
                    }
                }
                Ok(Outcome::Json(Cow::Owned(Value::Object(out))))
            }
        }
    }

    /// Recursive over the tree: at most a few hundred levels (bounded at compile time), and
    /// `Statement::evaluate` makes room on the stack for deep trees before it starts.
    pub(crate) fn eval(&self, expr: &'a Expr) -> Val<'a> {
        match expr {
            Expr::Literal(v) => Val::Ref(v),
            Expr::Payload => match self.payload {
                Payload::Json(v) => Val::Ref(v),
                Payload::Binary => Val::Raw(self.message.payload),
            },
            Expr::Path { base, steps } => {
                let start = match base {
                    None => match self.payload {
                        Payload::Json(v) => Val::Ref(v),
                        Payload::Binary => return Val::Undefined,
                    },
                    Some(base) => self.eval(base),
                };
                steps.iter().fold(start, |v, step| self.step(v, step))
            }
            Expr::Neg(e) => negate(&self.eval(e), self.whole_as_int),
            Expr::Not(e) => self
                .eval(e)
                .to_bool()
                .map_or(Val::Undefined, |b| Val::bool(!b)),
            Expr::Arith(op, l, r) => arith(*op, &self.eval(l), &self.eval(r), self.whole_as_int),
            Expr::Cmp(op, l, r) => {
                compare(*op, &self.eval(l), &self.eval(r)).map_or(Val::Undefined, Val::bool)
            }
            Expr::And(l, r) => match (self.eval(l).to_bool(), self.eval(r).to_bool()) {
                (Some(a), Some(b)) => Val::bool(a && b),
                _ => Val::Undefined,
            },
            Expr::Or(l, r) => match (self.eval(l).to_bool(), self.eval(r).to_bool()) {
                (Some(a), Some(b)) => Val::bool(a || b),
                _ => Val::Undefined,
            },
            Expr::IsNull { expr, negated } => match self.eval(expr) {
                Val::Undefined => Val::Undefined,
                v => Val::bool(matches!(v.json(), Some(Value::Null)) != *negated),
            },
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                let operand = operand.as_ref().map(|o| self.eval(o));
                for (when, then) in branches {
                    let hit = match &operand {
                        Some(value) => match (value.json(), self.eval(when).json()) {
                            (Some(a), Some(b)) => equal(a, b),
                            _ => false,
                        },
                        None => self.eval(when).to_bool() == Some(true),
                    };
                    if hit {
                        return self.eval(then);
                    }
                }
                otherwise.as_ref().map_or(Val::Undefined, |e| self.eval(e))
            }
            Expr::Call(call) => {
                let args = call.args.iter().map(|a| self.eval(a)).collect();
                functions::call(call, args, self)
            }
            Expr::Cast(e, to) => cast(&self.eval(e), *to),
            Expr::Object(fields) => {
                let mut map = Map::new();
                for (k, e) in fields {
                    if let Some(v) = self.eval(e).into_json() {
                        map.insert(k.clone(), v);
                    }
                }
                Val::Own(Value::Object(map))
            }
            Expr::Array(items) => Val::Own(Value::Array(
                items
                    .iter()
                    .filter_map(|e| self.eval(e).into_json())
                    .collect(),
            )),
        }
    }

    fn step(&self, v: Val<'a>, step: &'a Step) -> Val<'a> {
        let index;
        let key: Result<&str, usize> = match step {
            Step::Key(k) => Ok(k),
            Step::Index(i) => match usize::try_from(*i) {
                Ok(i) => Err(i),
                Err(_) => return Val::Undefined,
            },
            Step::Dynamic(e) => {
                let k = self.eval(e);
                match k.json() {
                    Some(Value::String(s)) => {
                        index = s.clone();
                        Ok(index.as_str())
                    }
                    Some(Value::Number(n)) => match Num::of(n) {
                        Some(Num::Int(i)) if i >= 0 => {
                            Err(usize::try_from(i).unwrap_or(usize::MAX))
                        }
                        _ => return Val::Undefined,
                    },
                    _ => return Val::Undefined,
                }
            }
        };
        fn pick<'v>(v: &'v Value, key: &Result<&str, usize>) -> Option<&'v Value> {
            match (v, key) {
                (Value::Object(map), Ok(k)) => map.get(*k),
                (Value::Array(items), Err(i)) => items.get(*i),
                _ => None,
            }
        }
        match v {
            Val::Ref(r) => pick(r, &key).map_or(Val::Undefined, Val::Ref),
            Val::Own(o) => pick(&o, &key).map_or(Val::Undefined, |x| Val::Own(x.clone())),
            Val::Undefined | Val::Raw(_) => Val::Undefined,
        }
    }
}

/// `cast(v AS type)`: the standard conversions, plus numbers to and from Booleans (AWS: "with
/// the addition of the ability to cast numbers to or from Booleans").
fn cast<'a>(v: &Val<'a>, to: CastType) -> Val<'a> {
    let Some(json) = v.json() else {
        return Val::Undefined;
    };
    match to {
        CastType::Int => match json {
            Value::Bool(b) => Val::int(i64::from(*b)),
            _ => match v.to_num() {
                Some(Num::Int(i)) => Val::int(i),
                Some(Num::Dec(d)) if d.abs() < 9.2e18 => Val::int(d.trunc() as i64),
                _ => Val::Undefined,
            },
        },
        CastType::Decimal => match json {
            Value::Bool(b) => Val::num(Num::Dec(if *b { 1.0 } else { 0.0 }), false),
            _ => v
                .to_num()
                .map_or(Val::Undefined, |n| Val::num(Num::Dec(n.as_f64()), false)),
        },
        CastType::String => v
            .to_str()
            .map_or(Val::Undefined, |s| Val::string(s.into_owned())),
        CastType::Boolean => match json {
            Value::Number(n) => Num::of(n).map_or(Val::Undefined, |n| Val::bool(n.as_f64() != 0.0)),
            _ => v.to_bool().map_or(Val::Undefined, Val::bool),
        },
    }
}
