//! SQL expressions over a batch of messages (the `filter` and `math` activities), evaluated by
//! DataFusion on an Arrow batch of the attributes the expression names.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use arrow_array::ArrayRef;
use datafusion::common::DFSchema;
use datafusion::sql::sqlparser::ast::{Expr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::columns::{self, Message};
use crate::model::Column;

/// A checked SQL expression and the attributes it reads.
pub(crate) struct SqlExpr {
    text: String,
    attributes: Vec<String>,
    /// Made once: a session registers every function, too costly per batch.
    ctx: datafusion::prelude::SessionContext,
}

impl SqlExpr {
    /// Parses `text`; `Err` says why it is not an expression.
    pub(crate) fn parse(text: &str) -> Result<SqlExpr, String> {
        let expr = Parser::new(&GenericDialect {})
            .try_with_sql(text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| format!("`{text}` is not a valid expression: {e}"))?;
        let mut attributes = BTreeSet::new();
        let _ = visit_expressions(&expr, |e| {
            match e {
                Expr::Identifier(i) => {
                    attributes.insert(i.value.clone());
                }
                Expr::CompoundIdentifier(parts) => {
                    if let Some(first) = parts.first() {
                        attributes.insert(first.value.clone());
                    }
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        Ok(SqlExpr {
            text: text.to_string(),
            attributes: attributes.into_iter().collect(),
            ctx: crate::query::session().map_err(|e| e.to_string())?,
        })
    }

    /// The expression's value for each message (a message missing an attribute reads it as
    /// null).
    pub(crate) fn evaluate(&self, messages: &[&Message]) -> Result<ArrayRef, String> {
        let mut cols: Vec<Column> = Vec::with_capacity(self.attributes.len());
        columns::learn(&mut cols, messages.iter().copied(), &[]);
        cols.retain(|c| self.attributes.contains(&c.name));
        for name in &self.attributes {
            if !cols.iter().any(|c| &c.name == name) {
                // Never seen in this batch: a null column of any type.
                cols.push(Column {
                    name: name.clone(),
                    kind: crate::model::ColumnKind::Double,
                });
            }
        }
        let batch = columns::batch(&cols, messages)?;
        let schema =
            DFSchema::try_from(batch.schema().as_ref().clone()).map_err(|e| e.to_string())?;
        let logical = self
            .ctx
            .parse_sql_expr(&self.text, &schema)
            .map_err(|e| e.to_string())?;
        let physical = self
            .ctx
            .create_physical_expr(logical, &schema)
            .map_err(|e| e.to_string())?;
        physical
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| e.to_string())
    }
}
