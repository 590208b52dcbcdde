//! Topic names, topic filters and matching (MQTT 5 §4.7, shared subscriptions §4.8.2).
//!
//! Pure functions over `&str`: the codec only guarantees strings are valid MQTT UTF-8, and the
//! session decides (per filter, with reason 0x8F) what to do with a filter these reject.
//! Levels are separated by `/` and an empty level is a real level: `a//b` has three.

/// Prefix that marks a shared subscription's filter.
const SHARE_PREFIX: &str = "$share/";

/// Why a topic filter was refused by [`parse_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The filter is empty, or uses `+`/`#` other than as a whole level (`#` only last).
    #[error("invalid topic filter")]
    InvalidFilter,
    /// `$share/` is followed by an empty share name.
    #[error("empty share name")]
    EmptyShareName,
    /// The share name contains `+` or `#` ([MQTT-4.8.2-2]).
    #[error("share name contains a wildcard")]
    InvalidShareName,
    /// `$share/{group}` has no `/` and filter after the share name ([MQTT-4.8.2-2]).
    #[error("shared subscription without a topic filter")]
    MissingSharedFilter,
}

/// A parsed SUBSCRIBE filter: an ordinary one, or a shared subscription of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind<'a> {
    /// An ordinary filter, matched against topics as is.
    Plain(&'a str),
    /// `$share/{group}/{filter}`: messages matching `filter` go to one member of `group`.
    Shared {
        /// The share name.
        group: &'a str,
        /// The filter the group subscribes to.
        filter: &'a str,
    },
}

/// True if `s` contains `+` or `#`. The decoder uses this on strings already known to be free
/// of U+0000, where [`valid_topic_name`] would scan for it a second time.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| b == b'+' || b == b'#')
}

/// True if `s` may be published to: non-empty, no wildcards, no U+0000, at most `max_len` bytes
/// ([MQTT-4.7.3-1], [MQTT-3.3.2-2]).
pub fn valid_topic_name(s: &str, max_len: usize) -> bool {
    !s.is_empty() && s.len() <= max_len && !has_wildcard(s) && !s.contains('\0')
}

/// True if `s` may be subscribed to: non-empty, at most `max_len` bytes, `+` only as a whole
/// level, `#` only as the whole last level ([MQTT-4.7.1-1], [MQTT-4.7.1-2]). A `$share/` prefix
/// is not interpreted here; see [`parse_filter`].
pub fn valid_topic_filter(s: &str, max_len: usize) -> bool {
    if s.is_empty() || s.len() > max_len || s.contains('\0') {
        return false;
    }
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        let ok = match level {
            "+" => true,
            "#" => levels.peek().is_none(),
            _ => !has_wildcard(level),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Splits a SUBSCRIBE filter into a plain filter or a shared subscription and validates it.
/// Length limits are the caller's, via [`valid_topic_filter`] on the whole string.
pub fn parse_filter(s: &str) -> Result<FilterKind<'_>, TopicError> {
    let Some(shared) = s.strip_prefix(SHARE_PREFIX) else {
        return if valid_topic_filter(s, usize::MAX) {
            Ok(FilterKind::Plain(s))
        } else {
            Err(TopicError::InvalidFilter)
        };
    };
    let (group, filter) = shared
        .split_once('/')
        .ok_or(TopicError::MissingSharedFilter)?;
    if group.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    if has_wildcard(group) {
        return Err(TopicError::InvalidShareName);
    }
    if !valid_topic_filter(filter, usize::MAX) {
        return Err(TopicError::InvalidFilter);
    }
    Ok(FilterKind::Shared { group, filter })
}

/// True if `topic` (a valid topic name) matches `filter` (a valid, non-shared filter).
///
/// `+` matches exactly one level, `#` matches zero or more trailing levels including the parent
/// (`a/#` matches `a`). Topics beginning with `$` are not matched by a filter whose first level is
/// a wildcard, so `#` does not see `$SYS/...` ([MQTT-4.7.2-1]). The result for invalid filters is
/// unspecified (but never a panic).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a/b", 3));
        assert!(valid_topic_name("/", 10));
        assert!(valid_topic_name("a//b", 10));
        assert!(valid_topic_name("$SYS/x", 10));
        assert!(!valid_topic_name("a/b", 2));
        assert!(!valid_topic_name("", 10));
        assert!(!valid_topic_name("a/+", 10));
        assert!(!valid_topic_name("a/#", 10));
        assert!(!valid_topic_name("a+b", 10));
        assert!(!valid_topic_name("a\0", 10));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#", "+", "a/#", "+/+", "a/+/b", "/", "//", "a//#", "+/#", "$SYS/#", "a b/c",
        ] {
            assert!(valid_topic_filter(ok, 100), "{ok}");
        }
        for bad in [
            "", "a/#/b", "#/a", "a#", "a/b#", "+a", "a/+b", "a/b+", "##", "++",
        ] {
            assert!(!valid_topic_filter(bad, 100), "{bad}");
        }
        assert!(!valid_topic_filter("a/b/c", 4));
        assert!(valid_topic_filter("a/b/c", 5));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(parse_filter("a/+"), Ok(FilterKind::Plain("a/+")));
        assert_eq!(
            parse_filter("$share/g/a/#"),
            Ok(FilterKind::Shared {
                group: "g",
                filter: "a/#"
            })
        );
        assert_eq!(
            parse_filter("$share/g//"),
            Ok(FilterKind::Shared {
                group: "g",
                filter: "/"
            })
        );
        assert_eq!(parse_filter("$share//a"), Err(TopicError::EmptyShareName));
        assert_eq!(
            parse_filter("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_filter("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_filter("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(parse_filter("$share/g/"), Err(TopicError::InvalidFilter));
        assert_eq!(parse_filter("$share/g/a#"), Err(TopicError::InvalidFilter));
        assert_eq!(parse_filter("a/#/b"), Err(TopicError::InvalidFilter));
        // Not the shared prefix: ordinary filters.
        assert_eq!(parse_filter("$share"), Ok(FilterKind::Plain("$share")));
        assert_eq!(
            parse_filter("$shared/g/a"),
            Ok(FilterKind::Plain("$shared/g/a"))
        );
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("+", "a", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("/+", "/a", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/b", "a//b", false),
            ("+/#", "a", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/b/#", "a/b/", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A reference matcher written the other way round: recursive over levels.
        fn reference(filter: &[&str], topic: &[&str]) -> bool {
            match (filter.split_first(), topic.split_first()) {
                (Some((&"#", _)), _) => true,
                (Some((&"+", f)), Some((_, t))) => reference(f, t),
                (Some((fl, f)), Some((tl, t))) => fl == tl && reference(f, t),
                (None, None) => true,
                _ => false,
            }
        }

        fn level() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), "[ab$]{1,2}"]
        }

        fn topic() -> impl Strategy<Value = String> {
            // A single empty level would be the empty string, which is not a topic.
            prop::collection::vec(level(), 1..5)
                .prop_map(|l| l.join("/"))
                .prop_filter("non-empty", |t| !t.is_empty())
        }

        fn filter() -> impl Strategy<Value = String> {
            let level = prop_oneof![level(), Just("+".to_string())];
            (prop::collection::vec(level, 1..5), any::<bool>())
                .prop_map(|(mut l, hash)| {
                    if hash {
                        l.push("#".into());
                    }
                    l.join("/")
                })
                .prop_filter("non-empty", |f| !f.is_empty())
        }

        proptest! {
            #[test]
            fn matches_agrees_with_reference(f in filter(), t in topic()) {
                prop_assert!(valid_topic_filter(&f, usize::MAX));
                prop_assert!(valid_topic_name(&t, usize::MAX));
                let levels_f: Vec<&str> = f.split('/').collect();
                let levels_t: Vec<&str> = t.split('/').collect();
                let dollar_excluded = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
                prop_assert_eq!(matches(&f, &t), !dollar_excluded && reference(&levels_f, &levels_t));
            }

            #[test]
            fn a_topic_matches_itself_and_generalisations(t in topic(), mask in any::<u8>()) {
                prop_assert!(matches(&t, &t));
                // Replace some levels with `+`: still a match unless the first level of a `$` topic.
                let levels: Vec<&str> = t.split('/').collect();
                let generalised: Vec<&str> = levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| if mask & (1 << (i % 8)) != 0 { "+" } else { *l })
                    .collect();
                let f = generalised.join("/");
                prop_assert!(valid_topic_filter(&f, usize::MAX));
                prop_assert_eq!(matches(&f, &t), !(t.starts_with('$') && f.starts_with('+')));
                let parent = format!("{}/#", levels[0]);
                prop_assert!(matches(&parent, &t));
            }

            #[test]
            fn never_panics(f in ".{0,20}", t in ".{0,20}", max in 0usize..30) {
                let _ = matches(&f, &t);
                let _ = valid_topic_filter(&f, max);
                let _ = valid_topic_name(&t, max);
                let _ = parse_filter(&f);
            }

            #[test]
            fn valid_filters_are_accepted_by_parse(f in filter()) {
                prop_assert_eq!(parse_filter(&f), Ok(FilterKind::Plain(f.as_str())));
                let shared = format!("$share/grp/{f}");
                prop_assert_eq!(parse_filter(&shared), Ok(FilterKind::Shared { group: "grp", filter: f.as_str() }));
            }
        }
    }
}
