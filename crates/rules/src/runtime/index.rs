//! The enabled rules by topic filter, in the broker's [`TopicTree`]: a message's matching rules
//! are found by walking the levels of its topic, so 10,000 rules cost about what 10 do for a
//! message that matches one. The ingest log asks it whether any rule wants a topic; the
//! partition readers ask it which rules do.

use std::sync::Arc;

use fleetcore_mqtt::topic_tree::TopicTree;
use fleetcore_stream::Position;
use parking_lot::RwLock;

use super::events::RuleEvents;
use super::lane::ActionLane;
use crate::actions::Action;
use crate::ingest::IngestFilter;
use crate::registry::TopicRule;

/// An enabled rule as the readers run it.
pub(crate) struct RunningRule {
    pub rule: Arc<TopicRule>,
    pub name: Arc<str>,
    /// Per ingest partition, the first position the rule applies to (the partition's tail when
    /// the rule was created or enabled: it never sees messages published before that).
    pub starts: Vec<Position>,
    /// One lane per action, in the rule's order.
    pub lanes: Vec<Arc<ActionLane>>,
    pub error_action: Option<Arc<dyn Action>>,
    pub events: RuleEvents,
}

/// The enabled rules with at least one action, by topic filter.
#[derive(Default)]
pub struct RuleIndex {
    tree: RwLock<TopicTree<Vec<Arc<RunningRule>>>>,
}

impl std::fmt::Debug for RuleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleIndex").finish_non_exhaustive()
    }
}

impl RuleIndex {
    /// An empty index: no topic is wanted.
    pub fn new() -> RuleIndex {
        RuleIndex::default()
    }

    /// Appends the rules matching `topic` to `out`.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<Arc<RunningRule>>) {
        self.tree
            .read()
            .for_each_match(topic, &mut |rules| out.extend(rules.iter().cloned()));
    }

    /// Adds `rule` (a rule of the same name must have been removed first).
    pub(crate) fn insert(&self, rule: Arc<RunningRule>) {
        let filter = rule.rule.topic_pattern().to_string();
        self.tree.write().slot_mut(&filter).push(rule);
    }

    /// Removes the rule `name` filed under `filter`; returns it.
    pub(crate) fn remove(&self, filter: &str, name: &str) -> Option<Arc<RunningRule>> {
        self.tree
            .write()
            .update(filter, |rules| {
                let at = rules.iter().position(|r| &*r.name == name)?;
                Some(rules.swap_remove(at))
            })
            .flatten()
    }
}

impl IngestFilter for RuleIndex {
    fn wants(&self, topic: &str) -> bool {
        let mut wanted = false;
        self.tree
            .read()
            .for_each_match(topic, &mut |rules| wanted |= !rules.is_empty());
        wanted
    }
}
