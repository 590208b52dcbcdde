//! The broker's subscriptions, kept in a [`TopicTree`]: matching a topic walks only the branches
//! that can match it (exact level, `+`, `#`) instead of testing every filter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::session::SessionHandle;
use crate::protocol::SubscriptionOptions;
use crate::topic_tree::{Slot, TopicTree};

/// One session's subscription at a node of the tree.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: Arc<SessionHandle>,
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// A `$share/{group}/{filter}` group: each message goes to one member, round robin.
#[derive(Debug)]
pub struct SharedGroup {
    /// The group name.
    pub name: String,
    /// The filter its members subscribed to (without `$share/{group}/`).
    pub filter: Box<str>,
    /// Members, in join order.
    pub members: Vec<Subscriber>,
    next: AtomicUsize,
}

impl SharedGroup {
    /// The member the next message goes to: the next online member in round-robin order, or,
    /// when none is online, the next member (its session queues the message).
    pub fn pick(&self) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let online = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|m| m.session.is_online());
        online.or_else(|| self.members.get(start % n))
    }
}

/// The subscriptions of one filter: plain ones and shared groups.
#[derive(Debug, Default)]
struct Subscriptions {
    subscribers: Vec<Subscriber>,
    shared: Vec<SharedGroup>,
}

impl Slot for Subscriptions {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.shared.is_empty()
    }
}

/// All subscriptions of the broker.
#[derive(Debug, Default)]
pub struct SubscriptionTree {
    tree: TopicTree<Subscriptions>,
    count: usize,
}

impl SubscriptionTree {
    /// An empty tree.
    pub fn new() -> SubscriptionTree {
        SubscriptionTree::default()
    }

    /// Number of subscriptions (shared members count one each).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds or replaces the subscription of `subscriber.session` to `filter` (in `group` when
    /// shared). Returns true if it replaced an existing one.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, subscriber: Subscriber) -> bool {
        let node = self.tree.slot_mut(filter);
        let list = match group {
            None => &mut node.subscribers,
            Some(g) => {
                let idx = match node.shared.iter().position(|s| s.name == g) {
                    Some(i) => i,
                    None => {
                        node.shared.push(SharedGroup {
                            name: g.to_string(),
                            filter: filter.into(),
                            members: Vec::new(),
                            next: AtomicUsize::new(0),
                        });
                        node.shared.len() - 1
                    }
                };
                &mut node.shared[idx].members
            }
        };
        let client = subscriber.session.client_id().clone();
        if let Some(existing) = list.iter_mut().find(|s| *s.session.client_id() == client) {
            *existing = subscriber;
            true
        } else {
            list.push(subscriber);
            self.count += 1;
            false
        }
    }

    /// Removes `client_id`'s subscription to `filter` (in `group`). Returns true if it existed.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, client_id: &str) -> bool {
        let removed = self
            .tree
            .update(filter, |node| match group {
                None => remove_member(&mut node.subscribers, client_id),
                Some(g) => {
                    let Some(idx) = node.shared.iter().position(|s| s.name == g) else {
                        return false;
                    };
                    let removed = remove_member(&mut node.shared[idx].members, client_id);
                    if node.shared[idx].members.is_empty() {
                        node.shared.remove(idx);
                    }
                    removed
                }
            })
            .unwrap_or(false);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// The shared group `group` of `filter`, if it has members.
    pub fn shared_group(&self, filter: &str, group: &str) -> Option<&SharedGroup> {
        self.tree
            .get(filter)?
            .shared
            .iter()
            .find(|g| g.name == group)
    }

    /// Calls `each` for every plain subscription and every shared group matching `topic`. A topic
    /// starting with `$` is not matched by a filter whose first level is a wildcard (MQTT §4.7.2).
    pub fn for_each_match<'a>(&'a self, topic: &str, each: &mut impl FnMut(Match<'a>)) {
        self.tree
            .for_each_match(topic, &mut |node: &'a Subscriptions| {
                for s in &node.subscribers {
                    each(Match::Plain(s));
                }
                for g in &node.shared {
                    each(Match::Shared(g));
                }
            });
    }
}

/// A subscription matching a topic.
#[derive(Debug, Clone, Copy)]
pub enum Match<'a> {
    /// A plain subscription.
    Plain(&'a Subscriber),
    /// A shared group; one of its members gets the message.
    Shared(&'a SharedGroup),
}

fn remove_member(list: &mut Vec<Subscriber>, client_id: &str) -> bool {
    match list
        .iter()
        .position(|s| &**s.session.client_id() == client_id)
    {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str) -> Subscriber {
        Subscriber {
            session: crate::broker::test_support::clean_session(
                id,
                10,
                1 << 20,
                std::time::Duration::from_secs(1),
            ),
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn matches(tree: &SubscriptionTree, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.for_each_match(topic, &mut |m| match m {
            Match::Plain(s) => out.push(s.session.client_id().to_string()),
            Match::Shared(g) => out.push(format!("group:{}", g.name)),
        });
        out.sort();
        out
    }

    #[test]
    fn wildcards_match_like_the_spec() {
        let mut t = SubscriptionTree::new();
        t.insert("a/+/c", None, sub("plus"));
        t.insert("a/#", None, sub("hash"));
        t.insert("#", None, sub("all"));
        t.insert("a/b/c", None, sub("exact"));
        t.insert("+/+", None, sub("two"));
        assert_eq!(matches(&t, "a/b/c"), ["all", "exact", "hash", "plus"]);
        assert_eq!(matches(&t, "a"), ["all", "hash"]);
        assert_eq!(matches(&t, "a/b"), ["all", "hash", "two"]);
        assert_eq!(matches(&t, "a//c"), ["all", "hash", "plus"]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let mut t = SubscriptionTree::new();
        t.insert("#", None, sub("all"));
        t.insert("+/x", None, sub("plus"));
        t.insert("$SYS/#", None, sub("sys"));
        t.insert("$SYS/+", None, sub("sysplus"));
        assert_eq!(matches(&t, "$SYS/x"), ["sys", "sysplus"]);
        assert_eq!(matches(&t, "a/x"), ["all", "plus"]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut t = SubscriptionTree::new();
        assert!(!t.insert("a/b", None, sub("c1")));
        assert!(t.insert("a/b", None, sub("c1")));
        assert_eq!(t.len(), 1);
        assert!(t.remove("a/b", None, "c1"));
        assert!(!t.remove("a/b", None, "c1"));
        assert_eq!(t.len(), 0);
        assert!(t.tree.is_empty());
    }

    #[test]
    fn shared_groups_match_once_per_group() {
        let mut t = SubscriptionTree::new();
        t.insert("s/+", Some("g"), sub("m1"));
        t.insert("s/+", Some("g"), sub("m2"));
        t.insert("s/#", Some("h"), sub("m3"));
        assert_eq!(matches(&t, "s/1"), ["group:g", "group:h"]);
        assert!(t.remove("s/+", Some("g"), "m1"));
        assert!(t.remove("s/+", Some("g"), "m2"));
        assert_eq!(matches(&t, "s/1"), ["group:h"]);
    }
}
