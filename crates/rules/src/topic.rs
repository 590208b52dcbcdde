//! The MQTT topic filter of a rule's FROM clause: validation and matching.

/// Longest topic filter accepted in FROM (AWS: topics are at most 256 bytes).
pub const MAX_FILTER_LEN: usize = 256;

/// Why a FROM topic filter is refused.
pub fn filter_error(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("the topic filter is empty");
    }
    if filter.len() > MAX_FILTER_LEN {
        return Some("the topic filter is longer than 256 bytes");
    }
    if filter.contains('\0') {
        return Some("the topic filter contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Some("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole level");
        }
    }
    None
}

/// True when `topic` (a topic name) matches `filter` (a valid filter). As in MQTT, filters
/// starting with a wildcard do not match topics starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_wildcards() {
        assert_eq!(filter_error("a/+/b/#"), None);
        assert_eq!(filter_error("#"), None);
        assert!(filter_error("a/#/b").is_some());
        assert!(filter_error("a/b#").is_some());
        assert!(filter_error("a/x+").is_some());
        assert!(filter_error("").is_some());
    }

    #[test]
    fn matches_like_mqtt() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$aws/things"));
        assert!(matches(
            "$aws/things/+/shadow/update",
            "$aws/things/t/shadow/update"
        ));
    }
}
