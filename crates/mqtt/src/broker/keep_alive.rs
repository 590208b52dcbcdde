//! Keep-alive deadlines of parked connections, watched by one shared sweep instead of a timer
//! per connection: a parked connection files its deadline here, and the sweep kicks its
//! session when the deadline passes, so the connection wakes, sees its keep alive expired and
//! closes (MQTT §3.1.2.10: 1.5 times the keep alive without a packet).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::session::SessionHandle;

/// How often the sweep looks for passed deadlines: a late client is closed at most this long
/// after its 1.5x keep alive.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The deadlines of every parked connection that has a keep alive.
pub struct KeepAliveSweep {
    /// By deadline, then connection id (unique among parked connections).
    deadlines: Mutex<BTreeMap<(Instant, u64), Arc<SessionHandle>>>,
    /// Set once the sweeping task runs.
    started: std::sync::Once,
}

/// A deadline filed with the sweep; give it back with [`KeepAliveSweep::withdraw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filed {
    key: (Instant, u64),
}

impl Default for KeepAliveSweep {
    fn default() -> Self {
        KeepAliveSweep {
            deadlines: Mutex::new(BTreeMap::new()),
            started: std::sync::Once::new(),
        }
    }
}

impl KeepAliveSweep {
    /// Files `deadline` for connection `connection_id` of `session`; the session is kicked
    /// once the deadline passes. Starts the sweeping task on first use (it ends when the sweep
    /// is dropped).
    pub fn file(
        self: &Arc<Self>,
        deadline: Instant,
        connection_id: u64,
        session: &Arc<SessionHandle>,
    ) -> Filed {
        self.started.call_once(|| {
            let weak = Arc::downgrade(self);
            tokio::spawn(sweep(weak));
        });
        let key = (deadline, connection_id);
        self.deadlines.lock().insert(key, Arc::clone(session));
        Filed { key }
    }

    /// Takes a deadline back (the connection woke before it passed, or is gone).
    pub fn withdraw(&self, filed: Filed) {
        self.deadlines.lock().remove(&filed.key);
    }

    /// Kicks the sessions whose deadline is at or before `now`; returns how many.
    fn expire(&self, now: Instant) -> usize {
        let due = {
            let mut deadlines = self.deadlines.lock();
            let later = deadlines.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *deadlines, later)
        };
        // Kicked outside the lock: the woken connection withdraws its (already removed) entry.
        for session in due.values() {
            session.kick();
        }
        due.len()
    }

    /// Deadlines filed now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.deadlines.lock().len()
    }

    /// True when no deadline is filed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sweep(sweep: Weak<KeepAliveSweep>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sweep) = sweep.upgrade() else { return };
        sweep.expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Arc<SessionHandle> {
        crate::broker::test_support::clean_session(
            id,
            10,
            64 * 1024,
            std::time::Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn passed_deadlines_kick_their_sessions_and_leave_the_rest() {
        let sweep = Arc::new(KeepAliveSweep::default());
        let now = Instant::now();
        let (a, b) = (session("a"), session("b"));
        sweep.file(now, 1, &a);
        let later = sweep.file(now + Duration::from_secs(60), 2, &b);
        assert_eq!(sweep.expire(now), 1);
        assert_eq!(sweep.len(), 1);
        // The kick left a permit for a: its connection wakes at once.
        tokio::time::timeout(Duration::from_secs(1), a.kicked().notified())
            .await
            .expect("a was kicked");
        sweep.withdraw(later);
        assert!(sweep.is_empty());
        assert_eq!(sweep.expire(now + Duration::from_secs(120)), 0);
    }

    #[tokio::test]
    async fn the_sweeping_task_kicks_without_being_asked() {
        let sweep = Arc::new(KeepAliveSweep::default());
        let s = session("late");
        sweep.file(Instant::now() + Duration::from_millis(50), 7, &s);
        tokio::time::timeout(Duration::from_secs(5), s.kicked().notified())
            .await
            .expect("the sweep kicked the late session");
        assert!(sweep.is_empty());
    }
}
