//! Substitution templates of rule action parameters (`alerts/${topic(2)}/${severity}`): text
//! with `${expression}` parts, compiled once per rule and expanded per message against the
//! original payload (not the SELECT output), as AWS IoT does.

use super::expr::Expr;
use super::{DEEP_RED_ZONE, DEEP_STACK, SHALLOW_DEPTH, SqlError, SqlVersion, compile, eval};
use crate::message::{MessageContext, Payload, RuleEnv};

/// One piece of a template.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// A compiled substitution template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    depth: usize,
    version: SqlVersion,
}

impl Template {
    /// Compiles `text`: each `${...}` holds one SQL expression (functions, operators and paths
    /// into the payload). An unterminated `${` or an expression that does not compile is refused.
    pub fn compile(text: &str, version: SqlVersion) -> Result<Template, SqlError> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let inner = &rest[start + 2..];
            let end = closing_brace(inner).ok_or_else(|| SqlError {
                message: format!("unterminated ${{ in template {text:?}"),
                line: 1,
                column: (text.len() - rest.len() + start + 1) as u64,
            })?;
            let (expr, d) = compile::expression(&inner[..end], version).map_err(|e| SqlError {
                message: format!("in template {text:?}: {}", e.message),
                ..e
            })?;
            depth = depth.max(d);
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expr(expr));
            rest = &inner[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            parts,
            depth,
            version,
        })
    }

    /// The SQL version its expressions were compiled for.
    pub fn version(&self) -> SqlVersion {
        self.version
    }

    /// True when the template has no `${...}` part.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text of a template without any `${...}` part; `None` when it has one.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Expands the template for one message. An expression that is Undefined (or Null)
    /// contributes nothing; strings are inserted as they are, other values as JSON text.
    pub fn expand(&self, message: &MessageContext<'_>, payload: &Payload, env: &RuleEnv) -> String {
        let scope = eval::Scope {
            message,
            payload,
            env,
            whole_as_int: self.version != SqlVersion::V2015_10_08,
            calls: None,
        };
        let run = || {
            let mut out = String::new();
            for part in &self.parts {
                match part {
                    Part::Text(t) => out.push_str(t),
                    Part::Expr(e) => {
                        if let Some(s) = scope.eval(e).to_str() {
                            out.push_str(&s);
                        }
                    }
                }
            }
            out
        };
        if self.depth <= SHALLOW_DEPTH {
            run()
        } else {
            stacker::maybe_grow(DEEP_RED_ZONE, DEEP_STACK, run)
        }
    }
}

/// Where the `}` closing a `${` is in `inner` (the text after `${`): braces of object literals
/// nest, and braces inside single-quoted strings do not count.
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in inner.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn expand(template: &str, payload: serde_json::Value) -> String {
        let t = Template::compile(template, SqlVersion::V2016_03_23).expect("compiles");
        let bytes = payload.to_string().into_bytes();
        let message = MessageContext {
            topic: "devices/d1/telemetry",
            client_id: Some("c1"),
            payload: &bytes,
            received_at_ms: 1_700_000_000_000,
            ..MessageContext::default()
        };
        t.expand(&message, &Payload::parse(&bytes), &RuleEnv::default())
    }

    #[test]
    fn expands_paths_functions_and_operators() {
        let p = json!({"thingType": "pump", "severity": "high", "t": 51, "o": {"k": [1, 2]}});
        assert_eq!(
            expand("alerts/${thingType}/${severity}", p.clone()),
            "alerts/pump/high"
        );
        assert_eq!(expand("${topic(2)}-${clientid()}", p.clone()), "d1-c1");
        assert_eq!(
            expand("${t + 1}|${o.k[1]}|${o}", p.clone()),
            r#"52|2|{"k":[1,2]}"#
        );
        assert_eq!(expand("${concat('a}', 'b')}", p.clone()), "a}b");
        assert_eq!(expand("x/${missing}/y", p.clone()), "x//y");
        assert_eq!(expand("plain", p), "plain");
    }

    #[test]
    fn refuses_broken_templates() {
        for bad in ["a/${topic(2)", "${nope()}", "${1 +}", "${a b}"] {
            assert!(
                Template::compile(bad, SqlVersion::V2016_03_23).is_err(),
                "{bad} should be refused"
            );
        }
        assert!(
            Template::compile("no templates here", SqlVersion::V2016_03_23)
                .expect("literal")
                .is_literal()
        );
    }
}
