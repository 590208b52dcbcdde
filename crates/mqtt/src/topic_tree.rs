//! A tree of topic filters split into levels, each filter's node holding a slot of the caller's
//! (the broker's subscribers, the rules engine's rules): matching a topic walks only the branches
//! that can match it (exact level, `+`, `#`) instead of testing every filter, so its cost
//! depends on the topic's depth and the matches, not on how many filters there are.

use std::collections::HashMap;

/// What a filter's node holds; an empty slot's node is pruned.
pub trait Slot: Default {
    /// True when nothing is left in the slot.
    fn is_empty(&self) -> bool;
}

impl<T> Slot for Vec<T> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

/// A topic level's children, hashed with foldhash (randomly seeded per map): every level of
/// every published topic is hashed once per tree it is matched in, and SipHash was a visible
/// share of the broker's per-message CPU.
type Children<T> = HashMap<Box<str>, Node<T>, foldhash::quality::RandomState>;

#[derive(Debug, Default)]
struct Node<T> {
    children: Children<T>,
    slot: T,
}

impl<T: Slot> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.slot.is_empty()
    }
}

/// Topic filters with a slot each (filters are not validated here: callers insert valid ones).
#[derive(Debug, Default)]
pub struct TopicTree<T> {
    root: Node<T>,
}

impl<T: Slot> TopicTree<T> {
    /// An empty tree.
    pub fn new() -> TopicTree<T> {
        TopicTree {
            root: Node::default(),
        }
    }

    /// True when no filter has a non-empty slot.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The slot of `filter`, created empty if missing (fill it: an empty slot is only pruned by
    /// a later [`TopicTree::update`]).
    pub fn slot_mut(&mut self, filter: &str) -> &mut T {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        &mut node.slot
    }

    /// The slot of `filter`, if the filter is in the tree.
    pub fn get(&self, filter: &str) -> Option<&T> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.children.get(level)?;
        }
        Some(&node.slot)
    }

    /// Runs `change` on the slot of `filter` if the filter is in the tree, then prunes the
    /// nodes left empty. `None` when the filter is not there.
    pub fn update<R>(&mut self, filter: &str, change: impl FnOnce(&mut T) -> R) -> Option<R> {
        let levels: Vec<&str> = filter.split('/').collect();
        update_at(&mut self.root, &levels, change)
    }

    /// Calls `each` with the slot of every filter matching `topic`. A topic starting with `$` is
    /// not matched by a filter whose first level is a wildcard (MQTT §4.7.2).
    pub fn for_each_match<'a>(&'a self, topic: &str, each: &mut impl FnMut(&'a T)) {
        let dollar = topic.starts_with('$');
        match_at(&self.root, Some(topic), dollar, each);
    }
}

fn update_at<T: Slot, R>(
    node: &mut Node<T>,
    levels: &[&str],
    change: impl FnOnce(&mut T) -> R,
) -> Option<R> {
    let Some((level, rest)) = levels.split_first() else {
        return Some(change(&mut node.slot));
    };
    let child = node.children.get_mut(*level)?;
    let result = update_at(child, rest, change);
    if child.is_empty() {
        node.children.remove(*level);
    }
    result
}

/// `remaining` is the rest of the topic after the levels already walked; `None` once every
/// level was consumed (distinct from `Some("")`, an empty last level).
fn match_at<'a, T>(
    node: &'a Node<T>,
    remaining: Option<&str>,
    first_is_dollar: bool,
    each: &mut impl FnMut(&'a T),
) {
    let wildcards_allowed = !first_is_dollar;
    // `#` matches the parent level and everything below it.
    if wildcards_allowed && let Some(hash) = node.children.get("#") {
        each(&hash.slot);
    }
    let Some(remaining) = remaining else {
        each(&node.slot);
        return;
    };
    let (level, rest) = match remaining.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (remaining, None),
    };
    if let Some(child) = node.children.get(level) {
        match_at(child, rest, false, each);
    }
    if wildcards_allowed && let Some(plus) = node.children.get("+") {
        match_at(plus, rest, false, each);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(tree: &TopicTree<Vec<&'static str>>, topic: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        tree.for_each_match(topic, &mut |slot| out.extend(slot.iter().copied()));
        out.sort();
        out
    }

    #[test]
    fn matches_like_the_filter_matcher() {
        let filters = [
            "a/+/c", "a/#", "#", "a/b/c", "+/+", "$SYS/#", "+/x", "a//b", "/+",
        ];
        let mut tree: TopicTree<Vec<&str>> = TopicTree::new();
        for f in filters {
            tree.slot_mut(f).push(f);
        }
        for topic in [
            "a/b/c", "a", "a/b", "a//c", "$SYS/x", "a/x", "a//b", "/a", "/",
        ] {
            let mut expected: Vec<&str> = filters
                .iter()
                .copied()
                .filter(|f| crate::topic::matches(f, topic))
                .collect();
            expected.sort();
            assert_eq!(matches(&tree, topic), expected, "{topic}");
        }
    }

    #[test]
    fn update_prunes_emptied_branches() {
        let mut tree: TopicTree<Vec<&str>> = TopicTree::new();
        tree.slot_mut("a/b/c").push("x");
        tree.slot_mut("a/b").push("y");
        assert_eq!(tree.update("a/b/c", |s| s.retain(|v| *v != "x")), Some(()));
        assert_eq!(matches(&tree, "a/b/c"), Vec::<&str>::new());
        assert_eq!(tree.update("a/b/c", |s| s.len()), None, "pruned");
        assert_eq!(tree.update("a/b", |s| s.clear()), Some(()));
        assert!(tree.is_empty());
    }
}
