//! Retained messages: the last retained message per topic, handed to new subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use crate::topic;

/// The retained message of every topic that has one.
#[derive(Debug, Default)]
pub struct RetainedStore {
    by_topic: HashMap<String, Arc<Message>>,
}

impl RetainedStore {
    /// An empty store.
    pub fn new() -> RetainedStore {
        RetainedStore::default()
    }

    /// Sets (or, for an empty payload, clears) the retained message of the message's topic.
    /// Returns true when the store changed.
    pub fn apply(&mut self, message: &Arc<Message>) -> bool {
        if message.payload.is_empty() {
            self.by_topic.remove(message.topic.as_str()).is_some()
        } else {
            self.by_topic
                .insert(message.topic.to_string(), Arc::clone(message));
            true
        }
    }

    /// Puts back a message loaded from disk.
    pub fn restore(&mut self, message: Arc<Message>) {
        self.by_topic.insert(message.topic.to_string(), message);
    }

    /// Retained messages whose topic matches `filter`, skipping expired ones.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let live = |m: &&Arc<Message>| !m.is_expired(now);
        if !filter.contains(['+', '#']) {
            return self
                .by_topic
                .get(filter)
                .filter(live)
                .cloned()
                .into_iter()
                .collect();
        }
        self.by_topic
            .iter()
            .filter(|(t, m)| topic::matches(filter, t) && live(m))
            .map(|(_, m)| Arc::clone(m))
            .collect()
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }
}
