//! The expression parser: text in, [`Expr`] or a [`ParseError`] that says where and why out.
//! Pure, so it is fuzzed (`fuzz/fuzz_targets/events_expression.rs`) and property-tested.

use super::functions::CONVERT_TYPES;
use super::{BinaryOp, Expr, Function, Part, PathStep, Template, UnaryOp, Value};

/// Deepest nesting of parentheses, operators and interpolations accepted.
const MAX_DEPTH: usize = 64;

/// Why an expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {position}: {message}")]
pub struct ParseError {
    /// Character offset (0-based) where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser::new(text);
    p.skip_space();
    if p.at_end() {
        return Err(p.error("the expression is empty"));
    }
    let expr = p.expr()?;
    p.skip_space();
    if !p.at_end() {
        return Err(p.error(format!("unexpected {:?}", p.rest_preview())));
    }
    Ok(expr)
}

/// Parses text with `${expression}` substitutions (an action's MQTT topic).
pub fn parse_template(text: &str) -> Result<Template, ParseError> {
    let mut p = Parser::new(text);
    let parts = p.string_parts(None)?;
    Ok(Template(parts))
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    _text: &'a str,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
            _text: text,
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            position: self.pos,
            message: message.into(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn rest_preview(&self) -> String {
        self.chars[self.pos..].iter().take(16).collect()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let matches = token
            .chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c));
        if matches {
            self.pos += token.chars().count();
        }
        matches
    }

    fn expect(&mut self, token: &str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected {token:?}")))
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.nested(|p| p.or())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.nested(|p| p.and())?;
            left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.comparison()?;
        while self.eat("&&") {
            let right = self.nested(|p| p.comparison())?;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.additive()?;
        loop {
            let op = if self.eat("==") {
                BinaryOp::Eq
            } else if self.eat("!=") {
                BinaryOp::Ne
            } else if self.eat("<=") {
                BinaryOp::Le
            } else if self.eat(">=") {
                BinaryOp::Ge
            } else if self.eat("<") {
                BinaryOp::Lt
            } else if self.eat(">") {
                BinaryOp::Gt
            } else {
                return Ok(left);
            };
            let right = self.nested(|p| p.additive())?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat("+") {
                BinaryOp::Add
            } else if self.eat("-") {
                BinaryOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.nested(|p| p.multiplicative())?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat("*") {
                BinaryOp::Mul
            } else if self.eat("/") {
                BinaryOp::Div
            } else if self.eat("%") {
                BinaryOp::Rem
            } else {
                return Ok(left);
            };
            let right = self.nested(|p| p.unary())?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        // `!=` is never a prefix, so a lone `!` here is a negation.
        if self.peek() == Some('!') {
            self.pos += 1;
            let operand = self.nested(|p| p.unary())?;
            return Ok(Expr::Unary(UnaryOp::Not, Box::new(operand)));
        }
        if self.peek() == Some('-') {
            self.pos += 1;
            let operand = self.nested(|p| p.unary())?;
            return Ok(match operand {
                Expr::Literal(Value::Int(i)) => Expr::Literal(Value::Int(-i)),
                Expr::Literal(Value::Decimal(d)) => Expr::Literal(Value::Decimal(-d)),
                other => Expr::Unary(UnaryOp::Negate, Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        let Some(c) = self.peek() else {
            return Err(self.error("the expression ends where a value was expected"));
        };
        match c {
            '(' => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect(")")?;
                Ok(inner)
            }
            '\'' | '"' => {
                self.pos += 1;
                let parts = self.string_parts(Some(c))?;
                Ok(literal_or_template(parts))
            }
            '$' => self.reference(),
            c if c.is_ascii_digit() || c == '.' => self.number(),
            c if c.is_alphabetic() || c == '_' => {
                let name = self.identifier();
                match name.as_str() {
                    "true" => Ok(Expr::Literal(Value::Bool(true))),
                    "false" => Ok(Expr::Literal(Value::Bool(false))),
                    "null" => Ok(Expr::Literal(Value::Null)),
                    _ => self.call(name),
                }
            }
            other => Err(self.error(format!("unexpected {other:?}"))),
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn number(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        let mut decimal = false;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.pos += 1;
            } else if c == '.' && !decimal {
                decimal = true;
                self.pos += 1;
            } else if (c == 'e' || c == 'E')
                && self
                    .peek_at(1)
                    .is_some_and(|n| n.is_ascii_digit() || n == '-' || n == '+')
            {
                decimal = true;
                self.pos += 2;
            } else {
                break;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        let bad = || ParseError {
            position: start,
            message: format!("{text:?} is not a number"),
        };
        if decimal {
            match text.parse::<f64>() {
                Ok(d) if d.is_finite() => Ok(Expr::Literal(Value::Decimal(d))),
                _ => Err(bad()),
            }
        } else {
            text.parse::<i64>()
                .map(|i| Expr::Literal(Value::Int(i)))
                .map_err(|_| bad())
        }
    }

    fn reference(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let kind = self.identifier();
        match kind.as_str() {
            "input" => {
                self.expect_dot("$input.<InputName>")?;
                let input = self.identifier();
                if input.is_empty() {
                    return Err(self.error("$input needs an input name"));
                }
                let mut path = Vec::new();
                loop {
                    if self.peek() == Some('.') {
                        self.pos += 1;
                        let field = self.identifier();
                        if field.is_empty() {
                            return Err(self.error("a '.' must be followed by a field name"));
                        }
                        path.push(PathStep::Field(field));
                    } else if self.peek() == Some('[') {
                        self.pos += 1;
                        let digits_start = self.pos;
                        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                            self.pos += 1;
                        }
                        let digits: String = self.chars[digits_start..self.pos].iter().collect();
                        let index = digits
                            .parse::<usize>()
                            .map_err(|_| self.error("an array index must be a number"))?;
                        if self.peek() != Some(']') {
                            return Err(self.error("expected ']'"));
                        }
                        self.pos += 1;
                        path.push(PathStep::Index(index));
                    } else {
                        break;
                    }
                }
                if path.is_empty() {
                    return Err(self.error(format!(
                        "$input.{input} needs the path of an attribute ($input.{input}.<attribute>)"
                    )));
                }
                Ok(Expr::Input { input, path })
            }
            "variable" => {
                self.expect_dot("$variable.<name>")?;
                let name = self.identifier();
                if name.is_empty() || !name.starts_with(|c: char| c.is_alphabetic()) {
                    return Err(self.error("$variable. needs a variable name"));
                }
                Ok(Expr::Variable(name))
            }
            _ => Err(ParseError {
                position: start,
                message: format!("unknown reference ${kind} (use $input or $variable)"),
            }),
        }
    }

    fn expect_dot(&mut self, form: &str) -> Result<(), ParseError> {
        if self.peek() == Some('.') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected the form {form}")))
        }
    }

    fn call(&mut self, name: String) -> Result<Expr, ParseError> {
        let start = self.pos - name.chars().count();
        let Some((function, arity)) = Function::lookup(&name) else {
            return Err(ParseError {
                position: start,
                message: format!("unknown function or keyword {name:?}"),
            });
        };
        self.expect("(")?;
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                let arg = if function == Function::Convert && args.is_empty() {
                    self.skip_space();
                    let type_name = self.identifier();
                    if !CONVERT_TYPES.contains(&type_name.as_str()) {
                        return Err(self.error(format!(
                            "convert's first argument must be one of {CONVERT_TYPES:?}"
                        )));
                    }
                    Expr::Literal(Value::Str(type_name))
                } else {
                    self.expr()?
                };
                args.push(arg);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        if args.len() != arity {
            return Err(ParseError {
                position: start,
                message: format!("{name} takes {arity} argument(s), not {}", args.len()),
            });
        }
        if matches!(function, Function::Timeout | Function::CurrentInput)
            && !matches!(args[0], Expr::Literal(Value::Str(_)))
        {
            return Err(ParseError {
                position: start,
                message: format!("{name} takes a string literal (a name)"),
            });
        }
        Ok(Expr::Call(function, args))
    }

    /// The pieces of a string up to the closing `quote` (already past the opening one), or to
    /// the end of the text when `quote` is `None` (a template).
    fn string_parts(&mut self, quote: Option<char>) -> Result<Vec<Part>, ParseError> {
        let start = self.pos;
        let mut parts = Vec::new();
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                if quote.is_some() {
                    return Err(ParseError {
                        position: start.saturating_sub(1),
                        message: "the string is not closed".into(),
                    });
                }
                break;
            };
            if Some(c) == quote {
                self.pos += 1;
                break;
            }
            if c == '\\'
                && quote.is_some()
                && let Some(next) = self.peek_at(1)
            {
                text.push(next);
                self.pos += 2;
                continue;
            }
            if c == '$' && self.peek_at(1) == Some('{') {
                self.pos += 2;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                let inner = self.expr()?;
                self.expect("}")?;
                parts.push(Part::Expr(inner));
                continue;
            }
            text.push(c);
            self.pos += 1;
        }
        if !text.is_empty() || parts.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(parts)
    }
}

fn literal_or_template(mut parts: Vec<Part>) -> Expr {
    if parts.len() == 1
        && let Some(Part::Text(_)) = parts.first()
        && let Some(Part::Text(text)) = parts.pop()
    {
        return Expr::Literal(Value::Str(text));
    }
    Expr::Template(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_references() {
        let e = parse("$input.T.temp > 30 && !isUndefined($variable.n) || false").expect("parse");
        let Expr::Binary(BinaryOp::Or, left, _) = e else {
            panic!("or at the top: {e:?}")
        };
        assert!(matches!(*left, Expr::Binary(BinaryOp::And, _, _)));
        assert_eq!(
            parse("$input.T.a.b[2].c").expect("path"),
            Expr::Input {
                input: "T".into(),
                path: vec![
                    PathStep::Field("a".into()),
                    PathStep::Field("b".into()),
                    PathStep::Index(2),
                    PathStep::Field("c".into())
                ]
            }
        );
        assert_eq!(
            parse("1 + 2 * 3").expect("arith"),
            Expr::Binary(
                BinaryOp::Add,
                Box::new(Expr::Literal(Value::Int(1))),
                Box::new(Expr::Binary(
                    BinaryOp::Mul,
                    Box::new(Expr::Literal(Value::Int(2))),
                    Box::new(Expr::Literal(Value::Int(3)))
                ))
            )
        );
    }

    #[test]
    fn errors_say_where() {
        let e = parse("$input.T.temp >").expect_err("dangling operator");
        assert_eq!(e.position, 15);
        assert!(parse("timeout(x)").is_err());
        assert!(
            parse("nosuch(1)")
                .expect_err("unknown")
                .message
                .contains("nosuch")
        );
        assert!(parse("convert(Float, 1)").is_err());
        assert!(
            parse("'open")
                .expect_err("open string")
                .message
                .contains("not closed")
        );
        assert!(parse("$input.T").is_err());
        assert!(parse("$state").is_err());
        assert!(parse(&"(".repeat(200)).is_err());
        assert!(parse("").is_err());
        assert!(parse("1 2").is_err());
    }

    #[test]
    fn strings_interpolate() {
        let e = parse(r#"'{"t": ${$input.T.temp}}'"#).expect("template");
        let Expr::Template(parts) = e else {
            panic!("template")
        };
        assert_eq!(parts.len(), 3);
        let t = parse_template("alerts/${$input.T.kind}/critical").expect("topic");
        assert_eq!(t.parts().len(), 3);
        assert_eq!(
            parse(r"'it\'s'").expect("escape"),
            Expr::Literal(Value::Str("it's".into()))
        );
    }
}
