//! The AWS IoT SQL dialect (versions `2016-03-23`, `2015-10-08` and `beta`): [`Statement::compile`]
//! parses and checks a statement once; [`Statement::evaluate`] runs it per message.

mod compile;
mod eval;
mod expr;
mod functions;
mod joda;
mod value;

use std::str::FromStr;

use sqlparser::tokenizer::Location;

pub use compile::MAX_SQL_LEN;
pub use eval::EvalError;

use crate::message::{MessageContext, Outcome, Payload, RuleEnv};
use expr::{Expr, Projection};

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
        compile::compile(sql, version)
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

    /// Runs the statement on one message whose payload is already parsed (the caller parses it
    /// once for all rules, see [`Payload::parse`]). Does not check the topic filter.
    pub fn evaluate<'a>(
        &'a self,
        message: &'a MessageContext<'a>,
        payload: &'a Payload,
        env: &'a RuleEnv,
    ) -> Result<Outcome<'a>, EvalError> {
        let scope = eval::Scope {
            message,
            payload,
            env,
            whole_as_int: self.version != SqlVersion::V2015_10_08,
        };
        if let Some(condition) = &self.condition
            && !scope.holds(condition)
        {
            return Ok(Outcome::NoMatch);
        }
        scope.project(&self.projection)
    }
}
