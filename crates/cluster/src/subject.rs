//! MQTT topics as NATS subjects: `<prefix>.msg.` then one token per topic level.
//!
//! NATS tokens cannot be empty and give `.`, `*`, `>` and whitespace a meaning, while MQTT levels
//! may be empty and hold any character. A level is written byte by byte: `[A-Za-z0-9_-]` as is,
//! anything else as `~XX` (upper-case hex); an empty level is `~` alone. The mapping is
//! one-to-one, so the receiving node reads the topic back from the subject, and no topic ever
//! yields a wildcard token.

/// The subject of the messages published on `topic`.
pub fn topic_subject(prefix: &str, topic: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(prefix.len() + 5 + topic.len() + 8);
    out.push_str(prefix);
    out.push_str(".msg");
    for level in topic.split('/') {
        out.push('.');
        if level.is_empty() {
            out.push('~');
            continue;
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
    out
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

    proptest! {
        #[test]
        fn any_topic_round_trips_and_never_makes_a_wildcard(topic in "\\PC{0,40}") {
            let subject = topic_subject("fleetcore", &topic);
            prop_assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
            prop_assert!(!subject.contains(char::is_whitespace));
            prop_assert_eq!(subject_topic("fleetcore", &subject), Some(topic));
        }
    }
}
