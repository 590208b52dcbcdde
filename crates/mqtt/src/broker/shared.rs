//! Shared subscriptions across the nodes of a cluster: the seam through which a cluster takes
//! over the delivery of messages to `$share/{group}/{filter}` groups, so that each message goes
//! to one member across all nodes, not one per node ([`SharedGroups`]), and learns which groups
//! have members on this node ([`SharedInterest`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::message::Message;

/// A cluster that delivers messages to shared groups itself.
pub trait SharedGroups: Send + Sync {
    /// True when the cluster delivers `message` to the shared group `group` with `filter`
    /// (it carries such messages and reads that group already): the local fan-out (and the
    /// delivery of other nodes' messages) then leaves the group out.
    fn delivers(&self, message: &Message, group: &str, filter: &str) -> bool;
    /// `group` with `filter` has its first member on this node.
    fn joined(&self, group: &str, filter: &str);
    /// `group` with `filter` has no member left on this node.
    fn left(&self, group: &str, filter: &str);
}

/// How many members each shared group has on this node, told to the installed
/// [`SharedGroups`] as groups gain their first member and lose their last.
#[derive(Default)]
pub(crate) struct SharedInterest {
    members: Mutex<HashMap<(String, String), usize>>,
    groups: OnceLock<Arc<dyn SharedGroups>>,
}

impl SharedInterest {
    /// Installs `groups` (once) and tells it of every group with members already.
    pub(crate) fn install(&self, groups: Arc<dyn SharedGroups>) {
        let members = self.members.lock();
        if self.groups.set(Arc::clone(&groups)).is_err() {
            return;
        }
        for (group, filter) in members.keys() {
            groups.joined(group, filter);
        }
    }

    /// The installed cluster, if any.
    pub(crate) fn groups(&self) -> Option<&Arc<dyn SharedGroups>> {
        self.groups.get()
    }

    /// A member joined `group` with `filter`.
    pub(crate) fn added(&self, group: &str, filter: &str) {
        let mut members = self.members.lock();
        let count = members
            .entry((group.to_owned(), filter.to_owned()))
            .or_insert(0);
        *count += 1;
        if *count == 1
            && let Some(groups) = self.groups.get()
        {
            groups.joined(group, filter);
        }
    }

    /// A member left `group` with `filter`.
    pub(crate) fn removed(&self, group: &str, filter: &str) {
        let mut members = self.members.lock();
        let key = (group.to_owned(), filter.to_owned());
        let Some(count) = members.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            members.remove(&key);
            if let Some(groups) = self.groups.get() {
                groups.left(group, filter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl SharedGroups for Told {
        fn delivers(&self, _: &Message, _: &str, _: &str) -> bool {
            true
        }
        fn joined(&self, group: &str, filter: &str) {
            self.0.lock().push(format!("+{group}/{filter}"));
        }
        fn left(&self, group: &str, filter: &str) {
            self.0.lock().push(format!("-{group}/{filter}"));
        }
    }

    #[test]
    fn the_cluster_hears_of_a_groups_first_and_last_member_only() {
        let interest = SharedInterest::default();
        interest.added("g", "a/#");
        let told = Arc::new(Told::default());
        interest.install(Arc::clone(&told) as Arc<dyn SharedGroups>);
        interest.added("g", "a/#");
        interest.added("h", "a/#");
        interest.removed("g", "a/#");
        interest.removed("g", "a/#");
        interest.removed("g", "a/#"); // not a member any more: nothing
        interest.removed("h", "a/#");
        assert_eq!(*told.0.lock(), ["+g/a/#", "+h/a/#", "-g/a/#", "-h/a/#"]);
    }
}
