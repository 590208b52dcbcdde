//! S3 key prefixes: Firehose's `!{namespace:argument}` expressions and fleetcore's default
//! Hive-style date layout.
//!
//! A [`PrefixTemplate`] is parsed once when a delivery stream is created. Per record it expands to
//! a *group key*: every expression but `!{firehose:random-string}` is filled in (the arrival time
//! of the record, its partition keys), so records that share a group key share an object. The
//! random string is per object, so it is left as a marker and filled by [`finish_key`] when the
//! object is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::error::ArchiveError;

/// Stands for `!{firehose:random-string}` in a group key until the object is named.
const RANDOM_MARKER: char = '\u{0}';

/// One piece of a parsed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Timestamp(Vec<DateToken>),
    RandomString,
    ErrorOutputType,
    PartitionKey(String),
}

/// A piece of a `!{timestamp:...}` pattern (a subset of Java's `DateTimeFormatter`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DateToken {
    Literal(char),
    Year4,
    Year2,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millis,
}

/// A parsed `Prefix` or `ErrorOutputPrefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixTemplate {
    parts: Vec<Part>,
}

/// What a template is expanded with.
#[derive(Debug, Clone, Copy)]
pub struct ExpandContext<'a> {
    /// The record's arrival time (UTC).
    pub arrival: OffsetDateTime,
    /// Partition keys extracted from the record, if dynamic partitioning is on.
    pub partition_keys: Option<&'a BTreeMap<String, String>>,
    /// `!{firehose:error-output-type}` (error prefixes only).
    pub error_output_type: Option<&'a str>,
}

/// Why a template could not be expanded for a record (the record goes to the error output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError(pub String);

impl PrefixTemplate {
    /// Parses `text`; unknown namespaces, unterminated expressions and unsupported timestamp
    /// letters are `InvalidArgument` errors naming the field.
    pub fn parse(field: &str, text: &str) -> Result<PrefixTemplate, ArchiveError> {
        let invalid = |why: String| ArchiveError::InvalidArgument(format!("{field}: {why}"));
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("!{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid(format!("unterminated expression in {text:?}")))?;
            let expr = &after[..end];
            let (namespace, argument) = expr
                .split_once(':')
                .ok_or_else(|| invalid(format!("expression !{{{expr}}} has no namespace")))?;
            parts.push(match (namespace.trim(), argument.trim()) {
                ("timestamp", pattern) => Part::Timestamp(
                    parse_date_pattern(pattern)
                        .map_err(|why| invalid(format!("!{{timestamp:{pattern}}}: {why}")))?,
                ),
                ("firehose", "random-string") => Part::RandomString,
                ("firehose", "error-output-type") => Part::ErrorOutputType,
                ("partitionKeyFromQuery", key) if !key.is_empty() => {
                    Part::PartitionKey(key.to_string())
                }
                ("partitionKeyFromLambda", _) => {
                    return Err(invalid(
                        "!{partitionKeyFromLambda:...} needs a Lambda processor, which fleetcore does not run".into(),
                    ));
                }
                _ => return Err(invalid(format!("unknown expression !{{{expr}}}"))),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(PrefixTemplate { parts })
    }

    /// True if the template has any `!{...}` expression (then no default date path is added).
    pub fn has_expressions(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    /// True if the template uses `!{partitionKeyFromQuery:...}`.
    pub fn uses_partition_keys(&self) -> bool {
        self.partition_key_names().next().is_some()
    }

    /// The partition keys the template refers to.
    pub fn partition_key_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::PartitionKey(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// True if the template uses `!{firehose:error-output-type}`.
    pub fn uses_error_output_type(&self) -> bool {
        self.parts.contains(&Part::ErrorOutputType)
    }

    /// The group key for one record. Without expressions it is the literal prefix followed by
    /// the Hive-style date path `year=YYYY/month=MM/day=DD/hour=HH/` (after the error output
    /// type for error prefixes, as AWS places it).
    pub fn expand(&self, ctx: &ExpandContext<'_>) -> Result<String, ExpandError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Timestamp(tokens) => format_date(&mut out, tokens, ctx.arrival),
                Part::RandomString => out.push(RANDOM_MARKER),
                Part::ErrorOutputType => out.push_str(ctx.error_output_type.unwrap_or("")),
                Part::PartitionKey(key) => {
                    let value = ctx
                        .partition_keys
                        .and_then(|keys| keys.get(key))
                        .ok_or_else(|| {
                            ExpandError(format!("partition key {key:?} was not extracted"))
                        })?;
                    out.push_str(value);
                }
            }
        }
        if !self.has_expressions() {
            if let Some(kind) = ctx.error_output_type {
                out.push_str(kind);
                out.push('/');
            }
            hive_date_path(&mut out, ctx.arrival);
        }
        Ok(out)
    }
}

/// Fills the random-string markers of a group key: 11 random lower-case letters and digits each,
/// as Firehose does.
pub fn finish_key(group_key: &str) -> String {
    if !group_key.contains(RANDOM_MARKER) {
        return group_key.to_string();
    }
    group_key
        .split(RANDOM_MARKER)
        .enumerate()
        .fold(String::new(), |mut out, (i, piece)| {
            if i > 0 {
                out.push_str(&random_string(11));
            }
            out.push_str(piece);
            out
        })
}

fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `year=YYYY/month=MM/day=DD/hour=HH/` of `t` (UTC).
pub fn hive_date_path(out: &mut String, t: OffsetDateTime) {
    let _ = write!(
        out,
        "year={:04}/month={:02}/day={:02}/hour={:02}/",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    );
}

/// `YYYY-MM-DD-HH-MM-SS` of `t` (UTC), as object names carry it.
pub fn object_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn parse_date_pattern(pattern: &str) -> Result<Vec<DateToken>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    if chars.is_empty() {
        return Err("empty pattern".into());
    }
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        if !c.is_ascii_alphabetic() {
            tokens.extend(std::iter::repeat_n(DateToken::Literal(c), run));
            i += run;
            continue;
        }
        tokens.push(match (c, run) {
            ('y', 4) | ('u', 4) => DateToken::Year4,
            ('y', 2) | ('u', 2) => DateToken::Year2,
            ('M', 2) => DateToken::Month,
            ('d', 2) => DateToken::Day,
            ('H', 2) => DateToken::Hour,
            ('m', 2) => DateToken::Minute,
            ('s', 2) => DateToken::Second,
            ('S', 3) => DateToken::Millis,
            _ => {
                return Err(format!(
                    "`{}` is not supported (use yyyy, yy, MM, dd, HH, mm, ss, SSS)",
                    c.to_string().repeat(run)
                ));
            }
        });
        i += run;
    }
    Ok(tokens)
}

fn format_date(out: &mut String, tokens: &[DateToken], t: OffsetDateTime) {
    for token in tokens {
        let _ = match token {
            DateToken::Literal(c) => {
                out.push(*c);
                Ok(())
            }
            DateToken::Year4 => write!(out, "{:04}", t.year()),
            DateToken::Year2 => write!(out, "{:02}", t.year().rem_euclid(100)),
            DateToken::Month => write!(out, "{:02}", u8::from(t.month())),
            DateToken::Day => write!(out, "{:02}", t.day()),
            DateToken::Hour => write!(out, "{:02}", t.hour()),
            DateToken::Minute => write!(out, "{:02}", t.minute()),
            DateToken::Second => write!(out, "{:02}", t.second()),
            DateToken::Millis => write!(out, "{:03}", t.millisecond()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).expect("time")
    }

    fn ctx(keys: Option<&BTreeMap<String, String>>) -> ExpandContext<'_> {
        ExpandContext {
            // 2026-11-27 03:04:05 UTC
            arrival: at(1_795_748_645),
            partition_keys: keys,
            error_output_type: None,
        }
    }

    #[test]
    fn plain_prefix_gets_the_hive_date_path() {
        let t = PrefixTemplate::parse("Prefix", "raw/").expect("parse");
        assert!(!t.has_expressions());
        assert_eq!(
            t.expand(&ctx(None)).expect("expand"),
            "raw/year=2026/month=11/day=27/hour=03/"
        );
        let empty = PrefixTemplate::parse("Prefix", "").expect("parse");
        assert_eq!(
            empty.expand(&ctx(None)).expect("expand"),
            "year=2026/month=11/day=27/hour=03/"
        );
    }

    #[test]
    fn expressions_replace_the_default_path() {
        let t = PrefixTemplate::parse(
            "Prefix",
            "data/!{timestamp:yyyy}/!{timestamp:MM}-!{timestamp:dd}T!{timestamp:HH:mm:ss}/dev=!{partitionKeyFromQuery:device}/",
        )
        .expect("parse");
        let keys = BTreeMap::from([("device".to_string(), "d1".to_string())]);
        assert_eq!(
            t.expand(&ctx(Some(&keys))).expect("expand"),
            "data/2026/11-27T03:04:05/dev=d1/"
        );
        assert!(t.uses_partition_keys());
        let missing = t.expand(&ctx(None)).expect_err("no keys");
        assert!(missing.0.contains("device"), "{missing:?}");
    }

    #[test]
    fn error_prefixes_take_the_output_type() {
        let t = PrefixTemplate::parse("ErrorOutputPrefix", "errors/!{firehose:error-output-type}/")
            .expect("parse");
        let c = ExpandContext {
            error_output_type: Some("partitioning-failed"),
            ..ctx(None)
        };
        assert_eq!(t.expand(&c).expect("expand"), "errors/partitioning-failed/");
        let plain = PrefixTemplate::parse("ErrorOutputPrefix", "errors/").expect("parse");
        assert_eq!(
            plain.expand(&c).expect("expand"),
            "errors/partitioning-failed/year=2026/month=11/day=27/hour=03/"
        );
    }

    #[test]
    fn random_strings_are_filled_per_object() {
        let t = PrefixTemplate::parse("Prefix", "x/!{firehose:random-string}/").expect("parse");
        let group = t.expand(&ctx(None)).expect("expand");
        let a = finish_key(&group);
        let b = finish_key(&group);
        assert_ne!(a, b);
        assert_eq!(a.len(), "x//".len() + 11);
        assert!(a[2..13].bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn bad_templates_are_invalid_arguments() {
        for bad in [
            "a/!{timestamp:yyyy",
            "!{nope:x}",
            "!{timestamp:QQ}",
            "!{partitionKeyFromLambda:k}",
            "!{firehose}",
            "!{timestamp:}",
        ] {
            let err = PrefixTemplate::parse("Prefix", bad).expect_err(bad);
            assert!(
                matches!(&err, ArchiveError::InvalidArgument(m) if m.starts_with("Prefix")),
                "{bad}: {err:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_literals_round_trip(text in "[a-z/=!{}:]{0,40}") {
            if let Ok(t) = PrefixTemplate::parse("Prefix", &text)
                && !t.has_expressions()
            {
                let expanded = t.expand(&ctx(None)).expect("expand");
                prop_assert!(expanded.starts_with(&text));
            }
        }
    }
}
