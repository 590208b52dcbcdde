//! Session takeover across the nodes of a cluster: the seam through which a cluster learns of
//! every connection that claims a session here ([`AttachObserver`]) and ends the connection of
//! a client id that connected again on another node ([`super::Router::take_over_from_elsewhere`]).
//!
//! Which of two connections with one client id stays is decided by their attach stamps (wall
//! clock, nanoseconds since the Unix epoch), the later one winning and the nodes' ids breaking
//! a tie: every node compares the same pair the same way, so exactly one stays even when both
//! connect at once and each node hears of the other's.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Told of every connection that claims a session on this node.
pub trait AttachObserver: Send + Sync {
    /// A connection claimed the session of `client_id`, stamped `attached_at`.
    fn attached(&self, client_id: &Arc<str>, attached_at: u64);
}

/// The attach stamp of a connection claiming a session now.
pub(super) fn attach_stamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// True when a connection stamped `ours` here must give way to one stamped `theirs` on
/// another node; `theirs_wins_tie` breaks equal stamps (the nodes' ids decide).
pub(super) fn gives_way(ours: u64, theirs: u64, theirs_wins_tie: bool) -> bool {
    ours < theirs || (ours == theirs && theirs_wins_tie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_connection_stays_and_exactly_one_wins_a_tie() {
        assert!(gives_way(1, 2, false));
        assert!(!gives_way(2, 1, true));
        // Both nodes look at the same tie, each from its side: one gives way.
        assert_ne!(gives_way(5, 5, true), gives_way(5, 5, false));
    }
}
