//! The compiled form of a statement: built once from sqlparser's AST by `compile`, then walked
//! per message by `eval` without any re-parsing.

use regex::Regex;
use serde_json::Value;

use super::functions::Func;

/// A compiled expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// A constant (numbers, strings, booleans, null).
    Literal(Value),
    /// `*` as a value (a function argument): the whole payload, JSON or bytes.
    Payload,
    /// A path into the payload (`base: None`) or into a computed value: `a.b[0].c`.
    Path {
        base: Option<Box<Expr>>,
        steps: Vec<Step>,
    },
    /// Unary minus.
    Neg(Box<Expr>),
    /// `NOT`.
    Not(Box<Expr>),
    /// `+ - * / %`.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `= <> < <= > >=`.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `AND`.
    And(Box<Expr>, Box<Expr>),
    /// `OR`.
    Or(Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL`.
    IsNull { expr: Box<Expr>, negated: bool },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    /// A built-in function call.
    Call(Box<Call>),
    /// `cast(x AS type)`.
    Cast(Box<Expr>, CastType),
    /// An object literal `{'k': expr, ...}`.
    Object(Vec<(String, Expr)>),
    /// An array literal `[expr, ...]`.
    Array(Vec<Expr>),
}

/// One step of a path.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// `.name`
    Key(String),
    /// `[n]` with a constant `n`.
    Index(i64),
    /// `[expr]`
    Dynamic(Box<Expr>),
}

/// A built-in function call, with what could be prepared at compile time.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub func: Func,
    pub args: Vec<Expr>,
    /// The compiled pattern of `regexp_matches`/`regexp_replace` when it is a literal.
    pub regex: Option<Regex>,
    /// `aws_lambda`: the call's number in its statement (where its result is kept); 0 otherwise.
    pub site: usize,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// The target types of `cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastType {
    Int,
    Decimal,
    String,
    Boolean,
}

/// One item of the SELECT list.
#[derive(Debug, Clone)]
pub(crate) enum SelectItem {
    /// `*`: the payload's keys are merged into the output.
    Star,
    /// `expr [AS name]`, with the output key decided at compile time.
    Named { name: String, expr: Expr },
}

/// The SELECT clause.
#[derive(Debug, Clone)]
pub(crate) enum Projection {
    /// `SELECT VALUE expr`: the output is the value itself, not an object.
    Value(Expr),
    /// `SELECT item, ...`.
    Items(Vec<SelectItem>),
}
