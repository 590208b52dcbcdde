//! How far one ingest partition is done: the partition's committed position is the first record
//! some action still has to deliver, or, when none is pending, where its reader continues. A
//! restart resumes there, so every record an action had not delivered is read again (and goes
//! again to every rule that matches it: at least once).

use std::collections::BTreeMap;

use fleetcore_stream::Position;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The records of one partition that actions still hold, and where its reader is.
#[derive(Debug)]
pub(crate) struct Progress {
    state: Mutex<State>,
    /// Signalled when the last pending delivery is done.
    idle: Notify,
}

#[derive(Debug)]
struct State {
    /// Record position -> deliveries of it not done yet.
    pending: BTreeMap<u128, u32>,
    /// The reader's next position: every record before it was handed to its actions.
    read: Position,
}

impl Progress {
    /// A partition whose reader starts at `start`.
    pub(crate) fn new(start: Position) -> Progress {
        Progress {
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                read: start,
            }),
            idle: Notify::new(),
        }
    }

    /// The record at `position` was handed to `count` actions.
    pub(crate) fn hold(&self, position: u128, count: u32) {
        *self.state.lock().pending.entry(position).or_default() += count;
    }

    /// Deliveries of the records at `positions` are done (delivered, or handed to the error
    /// action, or given up).
    pub(crate) fn done(&self, positions: impl IntoIterator<Item = u128>) {
        let mut state = self.state.lock();
        for position in positions {
            if let Some(count) = state.pending.get_mut(&position) {
                *count -= 1;
                if *count == 0 {
                    state.pending.remove(&position);
                }
            }
        }
        if state.pending.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// The reader handed out every record before `next`.
    pub(crate) fn advance(&self, next: Position) {
        self.state.lock().read = next;
    }

    /// Where a restart must resume: nothing before it is pending.
    pub(crate) fn committed(&self) -> Position {
        let state = self.state.lock();
        state
            .pending
            .keys()
            .next()
            .map_or(state.read, |&first| Position(first))
    }

    /// Resolves once no delivery is pending.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().pending.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_is_the_first_pending_record() {
        let progress = Progress::new(Position(10));
        assert_eq!(progress.committed(), Position(10));
        progress.hold(10, 2);
        progress.hold(11, 1);
        progress.advance(Position(12));
        assert_eq!(progress.committed(), Position(10));
        progress.done([11]);
        progress.done([10]);
        assert_eq!(
            progress.committed(),
            Position(10),
            "one delivery of 10 left"
        );
        progress.done([10]);
        assert_eq!(progress.committed(), Position(12));
    }
}
