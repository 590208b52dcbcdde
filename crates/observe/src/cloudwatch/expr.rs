//! Metric math for GetMetricData: numbers, query ids, `+ - * /`, parentheses, arrays
//! `[a, b]`, and the functions `SUM`, `AVG`, `MIN`, `MAX` (of one series: a scalar; of an array:
//! a series, point by point) and `RATE` (change per second between successive points).

use std::collections::{BTreeMap, HashMap};

use crate::error::{ObserveError, invalid};

/// A time series: timestamp (epoch seconds) to value.
pub type Series = BTreeMap<i64, f64>;

/// What an expression evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One number.
    Scalar(f64),
    /// One series.
    Series(Series),
    /// Several series (`[m1, m2]`).
    Array(Vec<Series>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Ident(String),
    Op(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ObserveError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Number(text.parse().map_err(|_| {
                invalid(format!("Invalid number {text} in expression."))
            })?));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if "+-*/()[],".contains(c) {
            tokens.push(Token::Op(c));
            i += 1;
        } else {
            return Err(invalid(format!(
                "Unexpected character '{c}' in expression."
            )));
        }
    }
    Ok(tokens)
}

/// Evaluates `text` with `ids` as the values of the other queries.
pub fn evaluate(text: &str, ids: &HashMap<String, Value>) -> Result<Value, ObserveError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        ids,
    };
    let value = parser.sum()?;
    if parser.pos != tokens.len() {
        return Err(invalid(format!(
            "Unexpected input after position {} in expression '{text}'.",
            parser.pos
        )));
    }
    Ok(value)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    ids: &'a HashMap<String, Value>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expect(&mut self, op: char) -> Result<(), ObserveError> {
        if self.peek() == Some(&Token::Op(op)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(invalid(format!("Expected '{op}' in expression.")))
        }
    }

    fn sum(&mut self) -> Result<Value, ObserveError> {
        let mut left = self.product()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let right = self.product()?;
            left = binary(op, left, right)?;
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Value, ObserveError> {
        let mut left = self.unary()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.pos += 1;
            let right = self.unary()?;
            left = binary(op, left, right)?;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Value, ObserveError> {
        if self.peek() == Some(&Token::Op('-')) {
            self.pos += 1;
            let value = self.unary()?;
            return binary('*', Value::Scalar(-1.0), value);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Value, ObserveError> {
        match self.peek().cloned() {
            Some(Token::Number(n)) => {
                self.pos += 1;
                Ok(Value::Scalar(n))
            }
            Some(Token::Op('(')) => {
                self.pos += 1;
                let value = self.sum()?;
                self.expect(')')?;
                Ok(value)
            }
            Some(Token::Op('[')) => {
                self.pos += 1;
                let mut series = Vec::new();
                loop {
                    match self.sum()? {
                        Value::Series(s) => series.push(s),
                        Value::Array(a) => series.extend(a),
                        Value::Scalar(_) => {
                            return Err(invalid("An array holds time series, not numbers."));
                        }
                    }
                    if self.peek() == Some(&Token::Op(',')) {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.expect(']')?;
                Ok(Value::Array(series))
            }
            Some(Token::Ident(name)) => {
                self.pos += 1;
                if self.peek() == Some(&Token::Op('(')) {
                    self.pos += 1;
                    let argument = self.sum()?;
                    self.expect(')')?;
                    function(&name, argument)
                } else {
                    self.ids.get(&name).cloned().ok_or_else(|| {
                        invalid(format!("The expression refers to an unknown id '{name}'."))
                    })
                }
            }
            _ => Err(invalid("The expression is incomplete.")),
        }
    }
}

fn apply(op: char, a: f64, b: f64) -> f64 {
    match op {
        '+' => a + b,
        '-' => a - b,
        '*' => a * b,
        _ => a / b,
    }
}

fn binary(op: char, left: Value, right: Value) -> Result<Value, ObserveError> {
    let map = |s: Series, f: &dyn Fn(f64) -> f64| -> Series {
        s.into_iter()
            .map(|(t, v)| (t, f(v)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    Ok(match (left, right) {
        (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(apply(op, a, b)),
        (Value::Series(s), Value::Scalar(b)) => Value::Series(map(s, &|a| apply(op, a, b))),
        (Value::Scalar(a), Value::Series(s)) => Value::Series(map(s, &|b| apply(op, a, b))),
        (Value::Series(a), Value::Series(b)) => Value::Series(
            a.into_iter()
                .filter_map(|(t, x)| b.get(&t).map(|y| (t, apply(op, x, *y))))
                .filter(|(_, v)| v.is_finite())
                .collect(),
        ),
        _ => {
            return Err(invalid(
                "Arithmetic on arrays of time series is not supported.",
            ));
        }
    })
}

fn function(name: &str, argument: Value) -> Result<Value, ObserveError> {
    let reduce = |values: &mut dyn Iterator<Item = f64>| -> Option<f64> {
        let values: Vec<f64> = values.collect();
        if values.is_empty() {
            return None;
        }
        Some(match name {
            "SUM" => values.iter().sum(),
            "AVG" => values.iter().sum::<f64>() / values.len() as f64,
            "MIN" => values.iter().copied().fold(f64::INFINITY, f64::min),
            _ => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    };
    match (name, argument) {
        ("SUM" | "AVG" | "MIN" | "MAX", Value::Series(s)) => Ok(Value::Scalar(
            reduce(&mut s.values().copied()).unwrap_or(f64::NAN),
        )),
        ("SUM" | "AVG" | "MIN" | "MAX", Value::Array(all)) => {
            let mut by_time: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for series in &all {
                for (t, v) in series {
                    by_time.entry(*t).or_default().push(*v);
                }
            }
            Ok(Value::Series(
                by_time
                    .into_iter()
                    .filter_map(|(t, vs)| reduce(&mut vs.into_iter()).map(|v| (t, v)))
                    .collect(),
            ))
        }
        ("RATE", Value::Series(s)) => {
            let points: Vec<(i64, f64)> = s.into_iter().collect();
            Ok(Value::Series(
                points
                    .windows(2)
                    .filter(|w| w[1].0 > w[0].0)
                    .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0) as f64))
                    .collect(),
            ))
        }
        ("SUM" | "AVG" | "MIN" | "MAX" | "RATE", Value::Scalar(_)) => Err(invalid(format!(
            "{name} takes a time series or an array of time series."
        ))),
        ("RATE", Value::Array(_)) => Err(invalid("RATE takes one time series.")),
        _ => Err(invalid(format!(
            "The function {name} is not supported (supported: SUM, AVG, MIN, MAX, RATE)."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> HashMap<String, Value> {
        HashMap::from([
            (
                "m1".to_string(),
                Value::Series(BTreeMap::from([(0, 1.0), (60, 3.0), (120, 6.0)])),
            ),
            (
                "m2".to_string(),
                Value::Series(BTreeMap::from([(0, 10.0), (60, 20.0)])),
            ),
        ])
    }

    #[test]
    fn arithmetic_aligns_series() {
        let v = evaluate("(m1 + m2) * 2", &ids()).expect("eval");
        assert_eq!(v, Value::Series(BTreeMap::from([(0, 22.0), (60, 46.0)])));
        let v = evaluate("m2 / m1 - 1", &ids()).expect("eval");
        assert_eq!(
            v,
            Value::Series(BTreeMap::from([(0, 9.0), (60, 20.0 / 3.0 - 1.0)]))
        );
    }

    #[test]
    fn functions_reduce_series_and_arrays() {
        assert_eq!(
            evaluate("SUM(m1)", &ids()).expect("sum"),
            Value::Scalar(10.0)
        );
        assert_eq!(
            evaluate("MAX(m2)", &ids()).expect("max"),
            Value::Scalar(20.0)
        );
        assert_eq!(
            evaluate("AVG([m1, m2])", &ids()).expect("avg"),
            Value::Series(BTreeMap::from([(0, 5.5), (60, 11.5), (120, 6.0)]))
        );
        assert_eq!(
            evaluate("RATE(m1)", &ids()).expect("rate"),
            Value::Series(BTreeMap::from([(60, 2.0 / 60.0), (120, 3.0 / 60.0)]))
        );
    }

    #[test]
    fn bad_expressions_are_invalid_parameters() {
        for text in ["m3", "SUM(", "m1 +", "FOO(m1)", "m1 $ 2", "[1]", "m1 m2"] {
            assert!(
                matches!(
                    evaluate(text, &ids()),
                    Err(ObserveError::InvalidParameter(_))
                ),
                "{text}"
            );
        }
    }
}
