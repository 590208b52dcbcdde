//! The MetadataExtraction processor's query: the subset of jq that dynamic partitioning needs,
//! an object of named paths, `{device: .device.id, site: .meta."site-id"}`.
//!
//! Supported: keys as bare words or double-quoted strings; values as `.a.b` paths whose segments
//! are bare words, double-quoted strings (`."a-b"`) or `["a-b"]`. A value must be a string,
//! number or boolean; anything else (missing, null, object, array) fails the record, which then
//! goes to the error output.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ArchiveError;

/// A parsed MetadataExtractionQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractionQuery {
    keys: Vec<(String, Vec<String>)>,
}

/// Why a record's partition keys could not be extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractError(pub String);

impl ExtractionQuery {
    /// Parses `text`; a syntax error is an `InvalidArgument` error.
    pub fn parse(text: &str) -> Result<ExtractionQuery, ArchiveError> {
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        let keys = p.query().map_err(|why| {
            ArchiveError::InvalidArgument(format!(
                "MetadataExtractionQuery {text:?}: {why} (at byte {})",
                p.at
            ))
        })?;
        Ok(ExtractionQuery { keys })
    }

    /// The names of the keys the query extracts.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Evaluates the query on a record's bytes.
    pub fn extract(&self, data: &[u8]) -> Result<BTreeMap<String, String>, ExtractError> {
        let doc: Value = serde_json::from_slice(data)
            .map_err(|e| ExtractError(format!("the record is not JSON: {e}")))?;
        let mut out = BTreeMap::new();
        for (key, path) in &self.keys {
            let mut value = &doc;
            for segment in path {
                value = value.get(segment.as_str()).unwrap_or(&Value::Null);
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => {
                    return Err(ExtractError(format!(
                        "partition key {key:?}: .{} is missing or null",
                        path.join(".")
                    )));
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(ExtractError(format!(
                        "partition key {key:?}: .{} is not a string, number or boolean",
                        path.join(".")
                    )));
                }
            };
            check_key_value(key, &text)?;
            out.insert(key.clone(), text);
        }
        Ok(out)
    }
}

/// A partition key value becomes part of an object key (and, in the local lake, a folder name):
/// refuse what would escape or break the path.
fn check_key_value(key: &str, value: &str) -> Result<(), ExtractError> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.chars().any(char::is_control)
    {
        return Err(ExtractError(format!(
            "partition key {key:?}: value {value:?} cannot be part of an object key (empty, `.`, `..`, `/` or control characters)"
        )));
    }
    Ok(())
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

type Parsed<T> = Result<T, String>;

impl Parser<'_> {
    fn query(&mut self) -> Parsed<Vec<(String, Vec<String>)>> {
        self.expect(b'{')?;
        let mut keys: Vec<(String, Vec<String>)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            return Err("the query extracts no key".into());
        }
        loop {
            self.skip_ws();
            let key = match self.peek() {
                Some(b'"') => self.quoted()?,
                _ => self.word()?,
            };
            self.expect(b':')?;
            let path = self.path()?;
            if keys.iter().any(|(k, _)| *k == key) {
                return Err(format!("key {key:?} appears twice"));
            }
            keys.push((key, path));
            self.skip_ws();
            match self.next_byte() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err("expected `,` or `}`".into()),
            }
        }
        self.skip_ws();
        if self.at != self.bytes.len() {
            return Err("unexpected text after `}`".into());
        }
        Ok(keys)
    }

    fn path(&mut self) -> Parsed<Vec<String>> {
        self.skip_ws();
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"') => segments.push(self.quoted()?),
                        Some(b'[') => segments.push(self.bracket()?),
                        _ => segments.push(self.word()?),
                    }
                }
                Some(b'[') if !segments.is_empty() => segments.push(self.bracket()?),
                _ => break,
            }
        }
        if segments.is_empty() {
            return Err("expected a path like .a.b".into());
        }
        Ok(segments)
    }

    fn bracket(&mut self) -> Parsed<String> {
        self.expect(b'[')?;
        self.skip_ws();
        let s = self.quoted()?;
        self.expect(b']')?;
        Ok(s)
    }

    fn word(&mut self) -> Parsed<String> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.at += 1;
        }
        if start == self.at {
            return Err("expected a name".into());
        }
        Ok(self.text[start..self.at].to_string())
    }

    fn quoted(&mut self) -> Parsed<String> {
        self.expect(b'"')?;
        let start = self.at;
        // A JSON string: find its end honouring escapes, then let serde_json decode it.
        while let Some(b) = self.next_byte() {
            match b {
                b'\\' => self.at += 1,
                b'"' => {
                    let literal = &self.text[start - 1..self.at];
                    return serde_json::from_str(literal).map_err(|e| e.to_string());
                }
                _ => {}
            }
        }
        Err("unterminated string".into())
    }

    fn expect(&mut self, want: u8) -> Parsed<()> {
        self.skip_ws();
        if self.next_byte() == Some(want) {
            Ok(())
        } else {
            Err(format!("expected `{}`", want as char))
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek();
        if b.is_some() {
            self.at += 1;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extracts_nested_paths_and_scalars() {
        let q = ExtractionQuery::parse(
            r#"{device: .device.id, "site": .meta."site-id", n: .n, ok: .flags["ok"]}"#,
        )
        .expect("parse");
        assert_eq!(
            q.key_names().collect::<Vec<_>>(),
            ["device", "site", "n", "ok"]
        );
        let keys = q
            .extract(
                br#"{"device":{"id":"d-7"},"meta":{"site-id":"plant"},"n":42,"flags":{"ok":true}}"#,
            )
            .expect("extract");
        assert_eq!(keys["device"], "d-7");
        assert_eq!(keys["site"], "plant");
        assert_eq!(keys["n"], "42");
        assert_eq!(keys["ok"], "true");
    }

    #[test]
    fn unusable_values_fail_the_record() {
        let q = ExtractionQuery::parse("{k: .a.b}").expect("parse");
        for (doc, why) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"a":{}}"#, "missing"),
            (br#"{"a":{"b":null}}"#, "missing or null"),
            (br#"{"a":{"b":[1]}}"#, "not a string"),
            (br#"{"a":{"b":"x/y"}}"#, "cannot be part"),
            (br#"{"a":{"b":".."}}"#, "cannot be part"),
        ] {
            let err = q.extract(doc).expect_err(why);
            assert!(err.0.contains(why), "{err:?}");
        }
    }

    #[test]
    fn syntax_errors_are_invalid_arguments() {
        for bad in [
            "",
            "{}",
            "{k .a}",
            "{k: a}",
            "{k: .a",
            "{k: .a} x",
            "{k: .a, k: .b}",
            r#"{k: ."a}"#,
        ] {
            assert!(
                matches!(
                    ExtractionQuery::parse(bad),
                    Err(ArchiveError::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_and_extract_never_panic(query in r#"[{}a-z.:," \[\]\\]{0,30}"#, doc in r#"[{}a-z:,"0-9\[\]]{0,30}"#) {
            if let Ok(q) = ExtractionQuery::parse(&query) {
                let _ = q.extract(doc.as_bytes());
            }
        }
    }
}
