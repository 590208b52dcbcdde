//! CloudWatch Logs filter patterns: text patterns (terms that must all appear, quoted phrases,
//! `?term` alternatives of which one must appear, `-term` exclusions) and JSON patterns
//! (`{ $.level = "ERROR" && ($.latency > 100 || $.user.id != "x*") }`). Space-delimited
//! (`[a, b]`) patterns are refused: not built.

use serde_json::Value;

/// A parsed filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterPattern {
    /// Matches every event.
    All,
    /// A text pattern.
    Text {
        /// Terms that must all appear.
        all: Vec<String>,
        /// Terms of which one must appear (if any are given).
        any: Vec<String>,
        /// Terms that must not appear.
        none: Vec<String>,
    },
    /// A JSON pattern.
    Json(Expr),
}

/// A JSON pattern's expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// `$.path OP value`.
    Compare {
        /// The selector's path segments.
        path: Vec<Segment>,
        /// The operator.
        op: String,
        /// The literal.
        value: Literal,
    },
}

/// A selector segment: `.name` or `[index]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// A member.
    Key(String),
    /// An array element.
    Index(usize),
}

/// A comparison's right side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string, `*` a wildcard.
    Text(String),
    /// A number.
    Number(f64),
    /// `true`, `false`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// `EXISTS` / `NOT EXISTS` (after IS).
    Exists(bool),
}

impl FilterPattern {
    /// Parses `text`; an error says what is wrong.
    pub fn parse(text: &str) -> Result<FilterPattern, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "\"\"" {
            return Ok(FilterPattern::All);
        }
        if trimmed.starts_with('{') {
            let inner = trimmed
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .ok_or("a JSON filter pattern must end with '}'")?;
            let tokens = tokenize(inner)?;
            let mut parser = Parser { tokens, pos: 0 };
            let expr = parser.or()?;
            if parser.pos != parser.tokens.len() {
                return Err("unexpected text after the JSON filter expression".into());
            }
            return Ok(FilterPattern::Json(expr));
        }
        if trimmed.starts_with('[') {
            return Err(
                "space-delimited filter patterns ([field, ...]) are not supported by this server"
                    .into(),
            );
        }
        let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
        for term in text_terms(trimmed)? {
            if let Some(t) = term.strip_prefix('?') {
                any.push(unquote(t));
            } else if let Some(t) = term.strip_prefix('-') {
                none.push(unquote(t));
            } else {
                all.push(unquote(&term));
            }
        }
        Ok(FilterPattern::Text { all, any, none })
    }

    /// True when the event `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            FilterPattern::All => true,
            FilterPattern::Text { all, any, none } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
                    && !none.iter().any(|t| message.contains(t.as_str()))
            }
            FilterPattern::Json(expr) => match serde_json::from_str::<Value>(message) {
                Ok(doc) => eval(expr, &doc),
                Err(_) => false,
            },
        }
    }
}

fn unquote(term: &str) -> String {
    term.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(term)
        .to_string()
}

/// Splits a text pattern into terms, keeping quoted phrases (with their `?`/`-` prefix) whole.
fn text_terms(text: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    terms.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err("a quoted phrase is not closed".into());
    }
    if !current.is_empty() {
        terms.push(current);
    }
    Ok(terms)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Selector(Vec<Segment>),
    Op(String),
    And,
    Or,
    Open,
    Close,
    Str(String),
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(format!("'{c}' must be doubled ('{c}{c}')"));
                }
                tokens.push(if c == '&' { Token::And } else { Token::Or });
                i += 2;
            }
            '=' | '!' | '<' | '>' => {
                let two = chars.get(i + 1) == Some(&'=');
                let op: String = if two {
                    chars[i..i + 2].iter().collect()
                } else {
                    c.to_string()
                };
                if op == "!" {
                    return Err("'!' must be followed by '='".into());
                }
                tokens.push(Token::Op(op));
                i += if two { 2 } else { 1 };
            }
            '"' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end] != '"' {
                    end += 1;
                }
                if end >= chars.len() {
                    return Err("a quoted string is not closed".into());
                }
                tokens.push(Token::Str(chars[start..end].iter().collect()));
                i = end + 1;
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "._-[]".contains(chars[i]))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                tokens.push(Token::Selector(selector(&text)?));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"()=!<>&|\"".contains(chars[i])
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(tokens)
}

fn selector(text: &str) -> Result<Vec<Segment>, String> {
    let rest = text
        .strip_prefix('$')
        .ok_or_else(|| format!("the selector {text} must start with $"))?;
    let mut segments = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                if name.is_empty() {
                    return Err(format!("the selector {text} has an empty member"));
                }
                segments.push(Segment::Key(name));
            }
            '[' => {
                let mut index = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    index.push(n);
                }
                segments.push(Segment::Index(
                    index
                        .parse()
                        .map_err(|_| format!("the selector {text} has a bad index"))?,
                ));
            }
            _ => return Err(format!("the selector {text} is malformed")),
        }
    }
    if segments.is_empty() {
        return Err("a selector must name a member ($.name)".into());
    }
    Ok(segments)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.tokens.get(self.pos) == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.atom()?;
        while self.tokens.get(self.pos) == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(e),
                    _ => Err("a '(' is not closed".into()),
                }
            }
            Some(Token::Selector(path)) => match self.next() {
                Some(Token::Op(op)) => {
                    let value = match self.next() {
                        Some(Token::Str(s)) => Literal::Text(s),
                        Some(Token::Word(w)) => match w.as_str() {
                            "true" => Literal::Bool(true),
                            "false" => Literal::Bool(false),
                            "NULL" | "null" => Literal::Null,
                            w => match w.parse::<f64>() {
                                Ok(n) => Literal::Number(n),
                                Err(_) => Literal::Text(w.to_string()),
                            },
                        },
                        _ => return Err("a comparison needs a value".into()),
                    };
                    if matches!(value, Literal::Text(_) | Literal::Bool(_) | Literal::Null)
                        && op != "="
                        && op != "!="
                    {
                        return Err(format!(
                            "only = and != compare strings, booleans and NULL (not {op})"
                        ));
                    }
                    Ok(Expr::Compare { path, op, value })
                }
                Some(Token::Word(w)) if w == "IS" => {
                    let (op, value) = match self.next() {
                        Some(Token::Word(w)) if w == "NOT" => match self.next() {
                            Some(Token::Word(w)) if w == "EXISTS" => ("=", Literal::Exists(false)),
                            _ => return Err("IS NOT must be followed by EXISTS".into()),
                        },
                        Some(Token::Word(w)) if w == "EXISTS" => ("=", Literal::Exists(true)),
                        Some(Token::Word(w)) if w == "TRUE" => ("=", Literal::Bool(true)),
                        Some(Token::Word(w)) if w == "FALSE" => ("=", Literal::Bool(false)),
                        Some(Token::Word(w)) if w == "NULL" => ("=", Literal::Null),
                        _ => {
                            return Err("IS must be followed by TRUE, FALSE, NULL or EXISTS".into());
                        }
                    };
                    Ok(Expr::Compare {
                        path,
                        op: op.into(),
                        value,
                    })
                }
                _ => Err("a selector must be followed by a comparison".into()),
            },
            _ => Err("expected a selector ($.name) or '('".into()),
        }
    }
}

fn lookup<'a>(doc: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, s| match s {
        Segment::Key(k) => v.get(k),
        Segment::Index(i) => v.get(*i),
    })
}

fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn eval(expr: &Expr, doc: &Value) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, doc) && eval(b, doc),
        Expr::Or(a, b) => eval(a, doc) || eval(b, doc),
        Expr::Compare { path, op, value } => {
            let found = lookup(doc, path);
            if let Literal::Exists(want) = value {
                return found.is_some() == *want;
            }
            let Some(found) = found else { return false };
            let equal = match (value, found) {
                (Literal::Text(p), Value::String(s)) => Some(wildcard(p, s)),
                (Literal::Text(p), Value::Number(n)) => Some(wildcard(p, &n.to_string())),
                (Literal::Bool(b), Value::Bool(v)) => Some(b == v),
                (Literal::Null, Value::Null) => Some(true),
                (Literal::Number(_), _) => None,
                _ => Some(false),
            };
            if let Some(equal) = equal {
                return if op == "!=" {
                    !equal
                } else {
                    op == "=" && equal
                };
            }
            let (Literal::Number(want), Some(have)) = (value, found.as_f64()) else {
                return op == "!=";
            };
            match op.as_str() {
                "=" => have == *want,
                "!=" => have != *want,
                "<" => have < *want,
                "<=" => have <= *want,
                ">" => have > *want,
                _ => have >= *want,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .matches(message)
    }

    #[test]
    fn text_patterns() {
        assert!(matches("", "anything"));
        assert!(matches("ERROR rule", "ERROR in rule r1"));
        assert!(!matches("ERROR rule", "ERROR in r1"));
        assert!(matches("\"rule failed\"", "the rule failed here"));
        assert!(!matches("\"rule failed\"", "rule x failed"));
        assert!(matches("?ERROR ?WARN", "WARN: low"));
        assert!(!matches("?ERROR ?WARN", "INFO: ok"));
        assert!(matches("ERROR -timeout", "ERROR: refused"));
        assert!(!matches("ERROR -timeout", "ERROR: timeout"));
        assert!(!matches("ERROR -\"timed out\"", "ERROR: timed out"));
    }

    #[test]
    fn json_patterns() {
        let doc =
            r#"{"level":"ERROR","latency":150,"user":{"id":"dev-7"},"tags":["a","b"],"ok":false}"#;
        assert!(matches(r#"{ $.level = "ERROR" && $.latency > 100 }"#, doc));
        assert!(!matches(r#"{ $.level = "ERROR" && $.latency > 200 }"#, doc));
        assert!(matches(
            r#"{ $.latency > 200 || $.user.id = "dev-*" }"#,
            doc
        ));
        assert!(matches(
            r#"{ ($.level != "INFO") && $.tags[1] = "b" }"#,
            doc
        ));
        assert!(matches("{ $.ok IS FALSE }", doc));
        assert!(matches(
            "{ $.missing NOT EXISTS }".replace("NOT", "IS NOT").as_str(),
            doc
        ));
        assert!(matches("{ $.latency = 150 }", doc));
        assert!(!matches("{ $.level = \"ERROR\" }", "not json"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "{ $.a = }",
            "{ $.a > \"x\" }",
            "{ $.a = 1 & $.b = 2 }",
            "{ level = 1 }",
            "{ $.a = 1",
            "[ip, user]",
            "\"open",
        ] {
            assert!(FilterPattern::parse(p).is_err(), "{p}");
        }
    }
}
