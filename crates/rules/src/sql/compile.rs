//! From SQL text to a compiled [`Statement`]: sqlparser parses, this module checks that only
//! the AWS IoT dialect is used and builds the expression tree. Every refusal names a position.

use std::cell::Cell;

use sqlparser::ast::{
    self, AccessExpr, BinaryOperator, CastKind, CeilFloorKind, DateTimeField, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, SetExpr, Spanned, Subscript, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, Tokenizer};

use super::expr::{ArithOp, Call, CastType, CmpOp, Expr, Projection, SelectItem, Step};
use super::functions::{Func, compile_regex};
use super::{SqlError, SqlVersion, Statement};
use crate::topic;

/// Longest statement accepted (AWS's `SQL` shape has no documented limit; rules are small).
pub const MAX_SQL_LEN: usize = 64 * 1024;

/// Deepest expression nesting accepted, brackets or compiled tree (sqlparser stops nested
/// calls earlier, at 50 levels).
const MAX_DEPTH: usize = 64;

/// Most operators in one statement: bounds the depth of left-deep chains (`a + a + ... + a`),
/// which sqlparser does not count.
const MAX_OPERATORS: usize = 256;

/// Most `aws_lambda` calls in one statement (each is one synchronous invocation per message).
const MAX_LAMBDA_CALLS: usize = 8;

/// Deepest compiled tree: an operator chain nests one level per operator.
const MAX_TREE_DEPTH: usize = MAX_OPERATORS + MAX_DEPTH;

pub(crate) fn compile(sql: &str, version: SqlVersion) -> Result<Statement, SqlError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(SqlError::at(
            format!("the statement is longer than {MAX_SQL_LEN} bytes"),
            Location::new(1, 1),
        ));
    }
    let (text, select_value) = strip_select_value(sql)?;
    let dialect = GenericDialect {};
    let statements = Parser::new(&dialect)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_statements())
        .map_err(parser_error)?;
    let query = match statements.as_slice() {
        [ast::Statement::Query(q)] => q,
        [] => return Err(SqlError::at("empty statement", Location::new(1, 1))),
        [other] => {
            return Err(unsupported(
                "only SELECT statements are supported",
                other.span(),
            ));
        }
        [_, second, ..] => {
            return Err(unsupported("only one statement is allowed", second.span()));
        }
    };
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(unsupported(
            "only SELECT ... FROM ... [WHERE ...] is supported (no WITH, ORDER BY, LIMIT)",
            query.span(),
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported(
            "only a single SELECT is supported (no UNION, VALUES or subqueries)",
            query.body.span(),
        ));
    };
    check_select_clauses(select)?;
    let compiler = Compiler {
        version,
        deepest: Cell::new(0),
        lambda_sites: Some(Cell::new(0)),
    };
    let topic_filter = from_clause(&text, select)?;
    let projection = compiler.projection(&select.projection, select_value, select.span())?;
    let condition = select
        .selection
        .as_ref()
        .map(|w| compiler.expr(w, 0))
        .transpose()?;
    Ok(Statement {
        depth: compiler.deepest.get(),
        lambda_sites: compiler.lambda_sites.map_or(0, Cell::into_inner),
        sql: sql.to_string(),
        version,
        topic_filter,
        projection,
        condition,
    })
}

/// Looks at the tokens before parsing: refuses statements whose operator chains or brackets
/// would build a syntax tree deep enough to exhaust the stack (sqlparser builds `a+a+...+a` as
/// a left-deep tree without counting its depth), and handles `SELECT VALUE expr`, AWS syntax
/// that sqlparser does not know: the `VALUE` word right after `SELECT` is blanked (same length,
/// so positions stay right) and remembered.
fn strip_select_value(sql: &str) -> Result<(String, bool), SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.message, e.location))?;
    let mut operators = 0;
    let mut depth = 0usize;
    for t in &tokens {
        match &t.token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SqlError::at("brackets are nested too deeply", t.span.start));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship => operators += 1,
            Token::Word(w)
                if w.quote_style.is_none()
                    && ["AND", "OR", "NOT"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k)) =>
            {
                operators += 1;
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Err(SqlError::at(
                format!("the statement has more than {MAX_OPERATORS} operators"),
                t.span.start,
            ));
        }
    }
    let mut words = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)));
    let is_select = matches!(words.next(), Some(t) if matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("SELECT")));
    let value = words.next().filter(|t| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("VALUE"))
    });
    // `SELECT value FROM ...`, `SELECT value, x ...`, `SELECT value AS v ...`: a field named value
    let value = value.filter(|_| match words.next().map(|t| &t.token) {
        None | Some(Token::Comma | Token::Period | Token::LBracket) => false,
        Some(Token::Word(w)) => {
            !(w.quote_style.is_none()
                && ["FROM", "AS"]
                    .iter()
                    .any(|k| w.value.eq_ignore_ascii_case(k)))
        }
        Some(_) => true,
    });
    match value {
        Some(t) if is_select => {
            let start = byte_offset(sql, t.span.start)
                .filter(|&i| {
                    sql.get(i..i + "VALUE".len())
                        .is_some_and(|w| w.eq_ignore_ascii_case("VALUE"))
                })
                .ok_or_else(|| SqlError::at("cannot read SELECT VALUE here", t.span.start))?;
            let mut text = sql.to_string();
            text.replace_range(start..start + "VALUE".len(), "     ");
            Ok((text, true))
        }
        _ => Ok((sql.to_string(), false)),
    }
}

/// The byte offset of a 1-based line and (character) column.
fn byte_offset(text: &str, at: Location) -> Option<usize> {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if line == at.line && column == at.column {
            return Some(i);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}

/// Where `needle` first appears after the FROM keyword in `text` (sqlparser gives quoted
/// table names no position).
fn locate(text: &str, needle: &str) -> Location {
    let from = text.to_ascii_uppercase().rfind("FROM").unwrap_or(0);
    let found = text[from..].find(needle).map(|i| i + from);
    let Some(at) = found.or_else(|| text.find(needle)) else {
        return Location::new(1, 1);
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Location::new(line as u64, column as u64)
}

fn parser_error(e: ParserError) -> SqlError {
    let message = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return SqlError::at("expressions are nested too deeply", Location::new(1, 1));
        }
    };
    // sqlparser ends its messages with " at Line: L, Column: C".
    let position = message.rfind(" at Line: ").and_then(|i| {
        let rest = &message[i + " at Line: ".len()..];
        let (line, column) = rest.split_once(", Column: ")?;
        Some((i, line.trim().parse().ok()?, column.trim().parse().ok()?))
    });
    match position {
        Some((i, line, column)) => {
            SqlError::at(message[..i].to_string(), Location::new(line, column))
        }
        None => SqlError::at(message, Location::new(1, 1)),
    }
}

fn unsupported(message: impl Into<String>, span: Span) -> SqlError {
    SqlError::at(message, span.start)
}

fn check_select_clauses(select: &ast::Select) -> Result<(), SqlError> {
    let group_by_empty =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let problem = if select.distinct.is_some() {
        Some("DISTINCT is not supported")
    } else if select.top.is_some() {
        Some("TOP is not supported")
    } else if select.into.is_some() {
        Some("SELECT INTO is not supported")
    } else if !group_by_empty || select.having.is_some() {
        Some("GROUP BY and HAVING are not supported: a rule sees one message at a time")
    } else if !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || select.value_table_mode.is_some()
        || select.exclude.is_some()
        || select.select_modifiers.is_some()
        || !select.optimizer_hints.is_empty()
    {
        Some("only SELECT ... FROM ... [WHERE ...] is supported")
    } else {
        None
    };
    match problem {
        Some(p) => Err(unsupported(p, select.span())),
        None => Ok(()),
    }
}

/// `FROM 'topic/filter'`: one single-quoted, valid MQTT topic filter.
fn from_clause(sql: &str, select: &ast::Select) -> Result<String, SqlError> {
    let [from] = select.from.as_slice() else {
        let span = select.from.get(1).map_or(select.span(), Spanned::span);
        return Err(unsupported(
            "FROM takes exactly one topic filter in single quotes",
            span,
        ));
    };
    if !from.joins.is_empty() {
        return Err(unsupported("JOIN is not supported", from.joins[0].span()));
    }
    let ast::TableFactor::Table {
        name, alias, args, ..
    } = &from.relation
    else {
        return Err(unsupported(
            "FROM takes a topic filter in single quotes",
            from.relation.span(),
        ));
    };
    let ident = match name.0.as_slice() {
        [part] => part.as_ident(),
        _ => None,
    };
    let Some(ident) = ident.filter(|i| i.quote_style == Some('\'')) else {
        return Err(unsupported(
            "FROM takes a topic filter in single quotes, e.g. FROM 'devices/+/telemetry'",
            name.span(),
        ));
    };
    if alias.is_some() || args.is_some() {
        return Err(unsupported(
            "FROM takes only a topic filter",
            from.relation.span(),
        ));
    }
    if let Some(problem) = topic::filter_error(&ident.value) {
        return Err(SqlError::at(
            format!("invalid topic filter '{}': {problem}", ident.value),
            locate(sql, &format!("'{}'", ident.value)),
        ));
    }
    Ok(ident.value.clone())
}

struct Compiler {
    version: SqlVersion,
    /// The deepest expression level met, kept in the statement to size the stack at run time.
    deepest: Cell<usize>,
    /// The `aws_lambda` calls numbered so far; `None` where the function is not allowed
    /// (substitution templates, which are expanded synchronously).
    lambda_sites: Option<Cell<usize>>,
}

impl Compiler {
    fn projection(
        &self,
        items: &[ast::SelectItem],
        select_value: bool,
        span: Span,
    ) -> Result<Projection, SqlError> {
        if select_value {
            return match items {
                [ast::SelectItem::UnnamedExpr(e)] => Ok(Projection::Value(self.expr(e, 0)?)),
                [ast::SelectItem::Wildcard(_)] => Ok(Projection::Value(Expr::Payload)),
                [ast::SelectItem::ExprWithAlias { alias, .. }] => Err(unsupported(
                    "SELECT VALUE takes one expression without AS",
                    alias.span,
                )),
                _ => Err(unsupported(
                    "SELECT VALUE takes exactly one expression",
                    items.get(1).map_or(span, Spanned::span),
                )),
            };
        }
        let mut out = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            out.push(match item {
                ast::SelectItem::Wildcard(options) => {
                    if options.opt_ilike.is_some()
                        || options.opt_exclude.is_some()
                        || options.opt_except.is_some()
                        || options.opt_replace.is_some()
                        || options.opt_rename.is_some()
                        || options.opt_alias.is_some()
                    {
                        return Err(unsupported("* takes no options", item.span()));
                    }
                    SelectItem::Star
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    let expr = self.expr(e, 0)?;
                    let name = generated_name(&expr, position + 1);
                    SelectItem::Named { name, expr }
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => SelectItem::Named {
                    name: alias.value.clone(),
                    expr: self.expr(expr, 0)?,
                },
                ast::SelectItem::QualifiedWildcard(..) => {
                    return Err(unsupported("only a bare * is supported", item.span()));
                }
                ast::SelectItem::ExprWithAliases { .. } => {
                    return Err(unsupported("an item takes one alias", item.span()));
                }
            });
        }
        Ok(Projection::Items(out))
    }

    /// Recursive over the AST; `#[recursive]` grows the stack when a deep (but accepted)
    /// statement needs more than the thread has.
    #[recursive::recursive]
    fn expr(&self, e: &ast::Expr, depth: usize) -> Result<Expr, SqlError> {
        self.deepest.set(self.deepest.get().max(depth));
        if depth > MAX_TREE_DEPTH {
            return Err(unsupported("expressions are nested too deeply", e.span()));
        }
        let sub = |x: &ast::Expr| self.expr(x, depth + 1).map(Box::new);
        Ok(match e {
            ast::Expr::Identifier(i) => Expr::Path {
                base: None,
                steps: vec![Step::Key(i.value.clone())],
            },
            ast::Expr::CompoundIdentifier(parts) => Expr::Path {
                base: None,
                steps: parts.iter().map(|i| Step::Key(i.value.clone())).collect(),
            },
            ast::Expr::CompoundFieldAccess { root, access_chain } => {
                let (base, mut steps) = match self.expr(root, depth + 1)? {
                    Expr::Path { base, steps } => (base, steps),
                    other => (Some(Box::new(other)), Vec::new()),
                };
                for access in access_chain {
                    steps.push(self.step(access, depth)?);
                }
                Expr::Path { base, steps }
            }
            ast::Expr::Value(v) => Expr::Literal(literal(&v.value, v.span)?),
            ast::Expr::Nested(inner) => self.expr(inner, depth + 1)?,
            ast::Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => Expr::Not(sub(expr)?),
                UnaryOperator::Plus => self.expr(expr, depth + 1)?,
                UnaryOperator::Minus => match self.expr(expr, depth + 1)? {
                    Expr::Literal(serde_json::Value::Number(n)) => Expr::Literal(
                        negative(&n)
                            .ok_or_else(|| unsupported("number out of range", expr.span()))?,
                    ),
                    other => Expr::Neg(Box::new(other)),
                },
                other => {
                    return Err(unsupported(
                        format!("unsupported operator {other}"),
                        e.span(),
                    ));
                }
            },
            ast::Expr::BinaryOp { left, op, right } => {
                let (l, r) = (sub(left)?, sub(right)?);
                match op {
                    BinaryOperator::Plus => Expr::Arith(ArithOp::Add, l, r),
                    BinaryOperator::Minus => Expr::Arith(ArithOp::Sub, l, r),
                    BinaryOperator::Multiply => Expr::Arith(ArithOp::Mul, l, r),
                    BinaryOperator::Divide => Expr::Arith(ArithOp::Div, l, r),
                    BinaryOperator::Modulo => Expr::Arith(ArithOp::Rem, l, r),
                    BinaryOperator::Eq => Expr::Cmp(CmpOp::Eq, l, r),
                    BinaryOperator::NotEq => Expr::Cmp(CmpOp::NotEq, l, r),
                    BinaryOperator::Lt => Expr::Cmp(CmpOp::Lt, l, r),
                    BinaryOperator::LtEq => Expr::Cmp(CmpOp::LtEq, l, r),
                    BinaryOperator::Gt => Expr::Cmp(CmpOp::Gt, l, r),
                    BinaryOperator::GtEq => Expr::Cmp(CmpOp::GtEq, l, r),
                    BinaryOperator::And => Expr::And(l, r),
                    BinaryOperator::Or => Expr::Or(l, r),
                    other => {
                        return Err(unsupported(
                            format!("unsupported operator {other}"),
                            e.span(),
                        ));
                    }
                }
            }
            ast::Expr::IsNull(x) => Expr::IsNull {
                expr: sub(x)?,
                negated: false,
            },
            ast::Expr::IsNotNull(x) => Expr::IsNull {
                expr: sub(x)?,
                negated: true,
            },
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => Expr::Case {
                operand: operand.as_deref().map(sub).transpose()?,
                branches: conditions
                    .iter()
                    .map(|w| {
                        Ok((
                            self.expr(&w.condition, depth + 1)?,
                            self.expr(&w.result, depth + 1)?,
                        ))
                    })
                    .collect::<Result<_, SqlError>>()?,
                otherwise: else_result.as_deref().map(sub).transpose()?,
            },
            ast::Expr::Function(f) => self.function(f, depth)?,
            ast::Expr::Cast {
                kind: CastKind::Cast,
                expr,
                data_type,
                format: None,
                ..
            } => Expr::Cast(sub(expr)?, cast_type(data_type, e.span())?),
            ast::Expr::Ceil { expr, field } | ast::Expr::Floor { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported("ceil and floor take one argument", e.span()));
                }
                let func = if matches!(e, ast::Expr::Ceil { .. }) {
                    Func::Ceil
                } else {
                    Func::Floor
                };
                call(func, vec![self.expr(expr, depth + 1)?], None)
            }
            ast::Expr::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => call(Func::Trim, vec![self.expr(expr, depth + 1)?], None),
            ast::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                special: true,
                ..
            } => {
                let mut args = vec![self.expr(expr, depth + 1)?];
                for a in [substring_from, substring_for].into_iter().flatten() {
                    args.push(self.expr(a, depth + 1)?);
                }
                if args.len() < 2 {
                    return Err(unsupported("substring takes 2 to 3 arguments", e.span()));
                }
                call(Func::Substring, args, None)
            }
            ast::Expr::Dictionary(fields) => {
                self.literals_allowed(e.span())?;
                Expr::Object(
                    fields
                        .iter()
                        .map(|f| Ok((f.key.value.clone(), self.expr(&f.value, depth + 1)?)))
                        .collect::<Result<_, SqlError>>()?,
                )
            }
            ast::Expr::Array(array) => {
                self.literals_allowed(e.span())?;
                Expr::Array(
                    array
                        .elem
                        .iter()
                        .map(|x| self.expr(x, depth + 1))
                        .collect::<Result<_, SqlError>>()?,
                )
            }
            _ => {
                return Err(unsupported(
                    format!("unsupported expression: {e}"),
                    e.span(),
                ));
            }
        })
    }

    /// Object and array literals exist from SQL version 2016-03-23 on.
    fn literals_allowed(&self, span: Span) -> Result<(), SqlError> {
        if self.version == SqlVersion::V2015_10_08 {
            return Err(unsupported(
                "object and array literals need awsIotSqlVersion 2016-03-23",
                span,
            ));
        }
        Ok(())
    }

    fn step(&self, access: &AccessExpr, depth: usize) -> Result<Step, SqlError> {
        match access {
            AccessExpr::Dot(ast::Expr::Identifier(i)) => Ok(Step::Key(i.value.clone())),
            AccessExpr::Subscript(Subscript::Index { index }) => {
                Ok(match self.expr(index, depth + 1)? {
                    Expr::Literal(serde_json::Value::Number(n)) => match n.as_i64() {
                        Some(i) => Step::Index(i),
                        None => {
                            return Err(unsupported(
                                "an array index is a whole number",
                                index.span(),
                            ));
                        }
                    },
                    Expr::Literal(serde_json::Value::String(s)) => Step::Key(s),
                    other => Step::Dynamic(Box::new(other)),
                })
            }
            other => Err(unsupported(
                format!("unsupported access {other}"),
                other.span(),
            )),
        }
    }

    fn function(&self, f: &ast::Function, depth: usize) -> Result<Expr, SqlError> {
        let span = f.name.span();
        let name = match f.name.0.as_slice() {
            [part] => part.as_ident().map(|i| i.value.clone()),
            _ => None,
        }
        .ok_or_else(|| unsupported(format!("unknown function {}", f.name), span))?;
        let Some((func, arity)) = Func::lookup(&name) else {
            return Err(unsupported(format!("unknown function {name}"), span));
        };
        let site = match (func, &self.lambda_sites) {
            (Func::AwsLambda, None) => {
                return Err(unsupported(
                    "aws_lambda can be called in a rule's SQL statement, not in a substitution template",
                    span,
                ));
            }
            (Func::AwsLambda, Some(sites)) => {
                let site = sites.get();
                if site >= MAX_LAMBDA_CALLS {
                    return Err(unsupported(
                        format!("a statement may call aws_lambda at most {MAX_LAMBDA_CALLS} times"),
                        span,
                    ));
                }
                sites.set(site + 1);
                site
            }
            _ => 0,
        };
        if f.filter.is_some()
            || f.over.is_some()
            || f.null_treatment.is_some()
            || !f.within_group.is_empty()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return Err(unsupported(
                format!("{name}: unsupported call syntax"),
                f.span(),
            ));
        }
        let raw_args: &[FunctionArg] = match &f.args {
            FunctionArguments::None => &[],
            FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(unsupported(
                        format!("{name}: unsupported call syntax"),
                        f.span(),
                    ));
                }
                &list.args
            }
            FunctionArguments::Subquery(q) => {
                return Err(unsupported("subqueries are not supported", q.span()));
            }
        };
        if raw_args.len() < arity.min || arity.max.is_some_and(|m| raw_args.len() > m) {
            return Err(unsupported(
                format!(
                    "{name} takes {arity} argument{}, not {}",
                    if arity.min == 1 && arity.max == Some(1) {
                        ""
                    } else {
                        "s"
                    },
                    raw_args.len()
                ),
                span,
            ));
        }
        let mut args = Vec::with_capacity(raw_args.len());
        for a in raw_args {
            args.push(match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => self.expr(x, depth + 1)?,
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => Expr::Payload,
                other => {
                    return Err(unsupported(
                        format!("{name}: unsupported argument {other}"),
                        other.span(),
                    ));
                }
            });
        }
        let mut regex = None;
        if func.takes_regex()
            && let (
                Some(Expr::Literal(serde_json::Value::String(p))),
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(x))),
            ) = (args.get(1), raw_args.get(1))
        {
            regex = Some(compile_regex(p).map_err(|m| {
                unsupported(format!("{name}: invalid regular expression: {m}"), x.span())
            })?);
        }
        Ok(Expr::Call(Box::new(Call {
            func,
            args,
            regex,
            site,
        })))
    }
}

fn call(func: Func, args: Vec<Expr>, regex: Option<regex::Regex>) -> Expr {
    Expr::Call(Box::new(Call {
        func,
        args,
        regex,
        site: 0,
    }))
}

/// The output key of an unnamed SELECT item: the last field name of a path (`a.b.c` is `c`),
/// otherwise `_<position>` (1-based position in the SELECT list).
fn generated_name(expr: &Expr, position: usize) -> String {
    match expr {
        Expr::Path { steps, .. } => match steps.last() {
            Some(Step::Key(k)) => k.clone(),
            _ => format!("_{position}"),
        },
        _ => format!("_{position}"),
    }
}

fn literal(v: &ast::Value, span: Span) -> Result<serde_json::Value, SqlError> {
    use serde_json::Value as J;
    Ok(match v {
        ast::Value::Number(text, _) => {
            if let Ok(i) = text.parse::<i64>() {
                J::from(i)
            } else {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .ok_or_else(|| unsupported(format!("invalid number {text}"), span))?
            }
        }
        ast::Value::SingleQuotedString(s) => J::String(s.clone()),
        ast::Value::Boolean(b) => J::Bool(*b),
        ast::Value::Null => J::Null,
        other => return Err(unsupported(format!("unsupported literal {other}"), span)),
    })
}

fn negative(n: &serde_json::Number) -> Option<serde_json::Value> {
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(serde_json::Value::from);
    }
    serde_json::Number::from_f64(-n.as_f64()?).map(serde_json::Value::Number)
}

fn cast_type(t: &ast::DataType, span: Span) -> Result<CastType, SqlError> {
    let text = t.to_string().to_ascii_uppercase();
    let base = text.split('(').next().unwrap_or("").trim();
    Ok(match base {
        "INT" | "INTEGER" | "BIGINT" | "LONG" => CastType::Int,
        "DECIMAL" | "NUMERIC" | "DOUBLE" | "FLOAT" | "REAL" => CastType::Decimal,
        "STRING" | "VARCHAR" | "TEXT" => CastType::String,
        "BOOLEAN" | "BOOL" => CastType::Boolean,
        _ => {
            return Err(unsupported(
                format!("cannot cast to {t}: use Int, Decimal, String or Boolean"),
                span,
            ));
        }
    })
}

/// A bare expression (the inside of a `${...}` substitution template): the same checks and
/// compiled form as an expression of a statement. Returns the expression and its depth.
pub(crate) fn expression(text: &str, version: SqlVersion) -> Result<(Expr, usize), SqlError> {
    if text.len() > MAX_SQL_LEN {
        return Err(SqlError::at(
            format!("the expression is longer than {MAX_SQL_LEN} bytes"),
            Location::new(1, 1),
        ));
    }
    // Bounds operators and brackets before sqlparser builds a tree of them.
    strip_select_value(text)?;
    let dialect = GenericDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| {
            let expr = p.parse_expr()?;
            p.expect_token(&Token::EOF)?;
            Ok(expr)
        })
        .map_err(parser_error)?;
    let compiler = Compiler {
        version,
        deepest: Cell::new(0),
        lambda_sites: None,
    };
    let expr = compiler.expr(&parsed, 0)?;
    Ok((expr, compiler.deepest.get()))
}
