//! The AWS IoT SQL dialect (versions `2016-03-23`, `2015-10-08` and `beta`): [`Statement::compile`]
//! parses and checks a statement once; [`Statement::evaluate`] runs it per message.

mod compile;
mod eval;
mod expr;
mod function_calls;
mod functions;
mod joda;
mod template;
mod value;

use std::str::FromStr;

use bytes::Bytes;
use sqlparser::tokenizer::Location;

pub use compile::MAX_SQL_LEN;
pub use eval::EvalError;
pub use template::Template;

use crate::message::{MessageContext, Outcome, Payload, RuleEnv};
use expr::{Expr, Projection};
use function_calls::FunctionCalls;

/// The `awsIotSqlVersion` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SqlVersion {
    /// `2015-10-08`, AWS's default when a rule names none. Whole-number results stay Decimals
    /// (`10.0`), and object/array literals are refused.
    #[default]
    V2015_10_08,
    /// `2016-03-23`, the recommended version.
    V2016_03_23,
    /// `beta`: evaluated as `2016-03-23`.
    Beta,
}

impl SqlVersion {
    /// The version as AWS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlVersion::V2015_10_08 => "2015-10-08",
            SqlVersion::V2016_03_23 => "2016-03-23",
            SqlVersion::Beta => "beta",
        }
    }
}

impl FromStr for SqlVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<SqlVersion, String> {
        match s {
            "2015-10-08" => Ok(SqlVersion::V2015_10_08),
            "2016-03-23" => Ok(SqlVersion::V2016_03_23),
            "beta" => Ok(SqlVersion::Beta),
            other => Err(format!(
                "unknown awsIotSqlVersion {other:?}: expected 2016-03-23, 2015-10-08 or beta"
            )),
        }
    }
}

/// Statements at most this deep evaluate on the caller's stack as is (a few KiB per level).
const SHALLOW_DEPTH: usize = 48;

/// Stack a deeper statement is guaranteed before it runs, and the size of the segment
/// allocated when the thread has less left.
const DEEP_RED_ZONE: usize = 2 << 20;
const DEEP_STACK: usize = 8 << 20;

/// A statement refused at compile time, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}:{column}: {message}")]
pub struct SqlError {
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters).
    pub column: u64,
}

impl SqlError {
    fn at(message: impl Into<String>, at: Location) -> SqlError {
        SqlError {
            message: message.into(),
            line: at.line.max(1),
            column: at.column.max(1),
        }
    }
}

/// A compiled rule statement: its topic filter, projection and condition, ready to run on any
/// number of messages.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The deepest expression level, to know when evaluation needs a larger stack.
    depth: usize,
    /// How many `aws_lambda` calls it makes.
    lambda_sites: usize,
    sql: String,
    version: SqlVersion,
    topic_filter: String,
    projection: Projection,
    condition: Option<Expr>,
}

impl Statement {
    /// Parses and checks `sql`: unknown functions, wrong arities, unsupported syntax, invalid
    /// topic filters and invalid literal regular expressions are refused here.
    pub fn compile(sql: &str, version: SqlVersion) -> Result<Statement, SqlError> {
        // sqlparser's tree walks (spans, display, drop) recurse as deep as the statement nests:
        // compiling (rare) always gets a roomy stack.
        stacker::maybe_grow(DEEP_RED_ZONE, DEEP_STACK, || compile::compile(sql, version))
    }

    /// The statement's text, as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The SQL version it was compiled for.
    pub fn version(&self) -> SqlVersion {
        self.version
    }

    /// The MQTT topic filter of its FROM clause.
    pub fn topic_filter(&self) -> &str {
        &self.topic_filter
    }

    /// True when the statement's FROM filter matches `topic`.
    pub fn matches_topic(&self, topic: &str) -> bool {
        crate::topic::matches(&self.topic_filter, topic)
    }

    /// True when the statement calls user functions (`aws_lambda`): it then runs only through
    /// [`Statement::evaluate_calling`].
    pub fn calls_functions(&self) -> bool {
        self.lambda_sites > 0
    }

    /// Runs the statement on one message whose payload is already parsed (the caller parses it
    /// once for all rules, see [`Payload::parse`]). Does not check the topic filter. A statement
    /// that calls functions is refused here (see [`Statement::evaluate_calling`]).
    pub fn evaluate<'a>(
        &'a self,
        message: &'a MessageContext<'a>,
        payload: &'a Payload,
        env: &RuleEnv,
    ) -> Result<Outcome<'a>, EvalError> {
        if self.calls_functions() {
            return Err(EvalError::FunctionCall {
                function: String::new(),
                message: "a statement calling aws_lambda runs only in the rules runtime".into(),
            });
        }
        self.pass(message, payload, env, None)
    }

    /// Runs the statement on one message as [`Statement::evaluate`] does, first making its
    /// `aws_lambda` calls through `env.functions` (see `function_calls`); returns the bytes the
    /// actions receive, or `None` when the WHERE clause does not hold. `source` holds the bytes
    /// `message.payload` borrows from (or any other bytes): an output that is a part of it
    /// (`SELECT *` of a binary payload) shares it instead of being copied.
    pub async fn evaluate_calling(
        &self,
        message: &MessageContext<'_>,
        payload: &Payload,
        env: &RuleEnv,
        source: &Bytes,
    ) -> Result<Option<Bytes>, EvalError> {
        if !self.calls_functions() {
            return Ok(self.pass(message, payload, env, None)?.into_body(source));
        }
        let mut calls = FunctionCalls::new(self.lambda_sites);
        loop {
            let outcome = self
                .pass(message, payload, env, Some(&calls))
                .map(|o| o.into_body(source));
            if !calls.settle(env.functions.as_deref()).await? {
                return outcome;
            }
        }
    }

    fn pass<'a>(
        &'a self,
        message: &'a MessageContext<'a>,
        payload: &'a Payload,
        env: &RuleEnv,
        calls: Option<&FunctionCalls>,
    ) -> Result<Outcome<'a>, EvalError> {
        let scope = eval::Scope {
            message,
            payload,
            env,
            whole_as_int: self.version != SqlVersion::V2015_10_08,
            calls,
        };
        let run = || {
            if let Some(condition) = &self.condition
                && !scope.holds(condition)
            {
                return Ok(Outcome::NoMatch);
            }
            scope.project(&self.projection)
        };
        if self.depth <= SHALLOW_DEPTH {
            run()
        } else {
            // Deep statements (long operator chains) could outgrow a small thread stack; this
            // check costs once per message and only for them.
            stacker::maybe_grow(DEEP_RED_ZONE, DEEP_STACK, run)
        }
    }
}
