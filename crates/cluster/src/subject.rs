//! MQTT topics as NATS subjects: `<prefix>.msg.` then one token per topic level.
//!
//! NATS tokens cannot be empty and give `.`, `*`, `>` and whitespace a meaning, while MQTT levels
//! may be empty and hold any character. A level is written byte by byte: `[A-Za-z0-9_-]` as is,
//! anything else as `~XX` (upper-case hex); an empty level is `~` alone. The mapping is
//! one-to-one, so the receiving node reads the topic back from the subject, and no topic ever
//! yields a wildcard token.

/// The subject of the messages published on `topic`.
pub fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 5 + topic.len() + 8);
    out.push_str(prefix);
    out.push_str(".msg");
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// Writes one topic level as a subject token.
fn push_level(out: &mut String, level: &str) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    if level.is_empty() {
        out.push('~');
        return;
    }
    for &b in level.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
    }
}

/// The subjects whose messages an MQTT topic filter matches, together exactly (`+` is `*`;
/// a trailing `#` is its parent level and `>` below it, two subjects, since MQTT's `a/#`
/// matches `a` too; `#` alone is `>`). No message matches two of them.
pub fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut out = String::with_capacity(prefix.len() + 5 + filter.len() + 8);
    out.push_str(prefix);
    out.push_str(".msg");
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" if i == 0 => return vec![format!("{out}.>")],
            "#" => return vec![out.clone(), format!("{out}.>")],
            "+" => out.push_str(".*"),
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    vec![out]
}

/// The wildcard subject every message of the cluster `prefix` is published under.
pub fn all_messages(prefix: &str) -> String {
    format!("{prefix}.msg.>")
}

/// The topic of a subject made by [`topic_subject`], or `None` if it is not one.
pub fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".msg.")?;
    let mut bytes = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        if token == "~" {
            continue;
        }
        let mut raw = token.bytes();
        while let Some(b) = raw.next() {
            if b == b'~' {
                let hi = char::from(raw.next()?).to_digit(16)?;
                let lo = char::from(raw.next()?).to_digit(16)?;
                bytes.push(u8::try_from(hi * 16 + lo).ok()?);
            } else {
                bytes.push(b);
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_become_tokens_and_specials_are_escaped() {
        assert_eq!(
            topic_subject("fc", "devices/t-1/telemetry"),
            "fc.msg.devices.t-1.telemetry"
        );
        assert_eq!(topic_subject("fc", "/a//b/"), "fc.msg.~.a.~.b.~");
        assert_eq!(
            topic_subject("fc", "a.b/*/>/x y"),
            "fc.msg.a~2Eb.~2A.~3E.x~20y"
        );
        assert_eq!(topic_subject("fc", "$aws/ü"), "fc.msg.~24aws.~C3~BC");
        assert_eq!(
            subject_topic("fc", "fc.msg.~.a.~.b.~").as_deref(),
            Some("/a//b/")
        );
        assert_eq!(subject_topic("fc", "other.msg.a"), None);
        assert_eq!(subject_topic("fc", "fc.msg.a~Z1"), None);
    }

    #[test]
    fn filters_become_the_subjects_of_exactly_the_topics_they_match() {
        assert_eq!(filter_subjects("fc", "a/+/c"), ["fc.msg.a.*.c"]);
        assert_eq!(filter_subjects("fc", "#"), ["fc.msg.>"]);
        assert_eq!(
            filter_subjects("fc", "a b/#"),
            ["fc.msg.a~20b", "fc.msg.a~20b.>"]
        );
        assert_eq!(filter_subjects("fc", "+/#"), ["fc.msg.*", "fc.msg.*.>"]);
        assert_eq!(filter_subjects("fc", "a//x"), ["fc.msg.a.~.x"]);
    }

    /// NATS's own subject matching: `*` one token, `>` one or more trailing tokens.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    proptest! {
        #[test]
        fn a_filters_subjects_match_exactly_the_topics_the_filter_matches(
            topic in proptest::collection::vec("(|a|b|a b|\\.)", 1..5),
            filter in proptest::collection::vec("(|a|b|\\+|a b|\\.)", 1..5),
            hash in any::<bool>(),
        ) {
            let topic = topic.join("/");
            let mut filter = filter.join("/");
            if hash {
                filter.push_str("/#");
            }
            let subject = topic_subject("fc", &topic);
            let by_nats = filter_subjects("fc", &filter)
                .iter()
                .any(|pattern| nats_matches(pattern, &subject));
            prop_assert_eq!(by_nats, fleetcore_mqtt::topic::matches(&filter, &topic));
        }

        #[test]
        fn any_topic_round_trips_and_never_makes_a_wildcard(topic in "\\PC{0,40}") {
            let subject = topic_subject("fleetcore", &topic);
            prop_assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
            prop_assert!(!subject.contains(char::is_whitespace));
            prop_assert_eq!(subject_topic("fleetcore", &subject), Some(topic));
        }
    }
}
