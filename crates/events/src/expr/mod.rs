//! The IoT Events expression language: `$input.In.a.b`, `$variable.v`, literals (numbers,
//! `'strings'` with `${...}` interpolation, `true`/`false`/`null`), arithmetic, comparison,
//! `&&` `||` `!`, and the documented functions (`timeout`, `isUndefined`, `convert`, bitwise,
//! string, math). Expressions are parsed once, when a model is created, and evaluated per input.

mod eval;
mod functions;
mod parse;
mod value;

pub use eval::Scope;
pub use functions::Function;
pub use parse::{ParseError, parse, parse_template};
pub use value::Value;

/// One step of an input path: a member name or an array index.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    /// `.name`
    Field(String),
    /// `[n]`
    Index(usize),
}

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `!`
    Not,
    /// `-`
    Negate,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+` (also string concatenation)
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// A piece of a string literal: text, or a `${...}` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// An interpolated expression.
    Expr(Expr),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Value),
    /// A string literal with interpolations.
    Template(Vec<Part>),
    /// `$input.<input>.<path>`
    Input {
        /// The input's name.
        input: String,
        /// The path inside the message.
        path: Vec<PathStep>,
    },
    /// `$variable.<name>`
    Variable(String),
    /// A unary operation.
    Unary(UnaryOp, Box<Expr>),
    /// A binary operation.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// A function call; arguments were checked against the function's arity.
    Call(Function, Vec<Expr>),
}

impl Expr {
    /// Calls `visit` on this expression and every sub-expression (for validation).
    pub fn walk(&self, visit: &mut impl FnMut(&Expr)) {
        visit(self);
        match self {
            Expr::Literal(_) | Expr::Input { .. } | Expr::Variable(_) => {}
            Expr::Template(parts) => {
                for part in parts {
                    if let Part::Expr(e) = part {
                        e.walk(visit);
                    }
                }
            }
            Expr::Unary(_, e) => e.walk(visit),
            Expr::Binary(_, a, b) => {
                a.walk(visit);
                b.walk(visit);
            }
            Expr::Call(_, args) => {
                for a in args {
                    a.walk(visit);
                }
            }
        }
    }

    /// Evaluates the expression in `scope`.
    pub fn eval(&self, scope: &dyn Scope) -> Value {
        eval::eval(self, scope)
    }
}

/// A string with `${...}` substitutions (an MQTT topic of an action).
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

impl Template {
    /// The pieces of the template.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// The template's text with every substitution evaluated in `scope`.
    pub fn render(&self, scope: &dyn Scope) -> String {
        eval::render(&self.0, scope)
    }
}
