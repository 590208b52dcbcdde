//! Where an idle connection waits without a task: a `ParkingSpot` holds the connection's
//! compact state, and is itself the waker that the socket's readiness and the session's
//! notifications are registered with. The first wake takes the state out and spawns it as a
//! task again; a parked connection therefore costs no task, no future and no timer, only this
//! small allocation (and the registrations that point at it).
//!
//! Waking from any thread is safe, and exactly one wake resumes the parked state: a wake that
//! comes while the state is being parked is not lost (`park` hands the state back instead).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

use parking_lot::Mutex;
use tokio::runtime::Handle;

/// Parked state that becomes a task again when woken.
pub(crate) trait Resume: Send + 'static {
    /// Spawns the task that goes on serving, on `runtime`.
    fn resume(self, runtime: &Handle);
}

/// One parked connection's waiting place (see the module docs).
pub(crate) struct ParkingSpot<T> {
    parked: Mutex<Option<T>>,
    /// Set by the first wake; a spot is used for one parking only.
    woken: AtomicBool,
    runtime: Handle,
}

impl<T: Resume> ParkingSpot<T> {
    /// An empty spot whose parked state resumes on `runtime`.
    pub(crate) fn new(runtime: Handle) -> Arc<ParkingSpot<T>> {
        Arc::new(ParkingSpot {
            parked: Mutex::new(None),
            woken: AtomicBool::new(false),
            runtime,
        })
    }

    /// The waker to register wherever the parked state waits; waking it resumes the state.
    pub(crate) fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(Arc::clone(self))
    }

    /// Leaves `state` here until the waker is woken. `Err(state)` if it was woken already
    /// (while the caller was registering it): the caller goes on with the state itself.
    pub(crate) fn park(&self, state: T) -> Result<(), T> {
        // Under the lock, so a wake either sees the state here or has set `woken` before.
        let mut parked = self.parked.lock();
        if self.woken.load(Ordering::Acquire) {
            return Err(state);
        }
        *parked = Some(state);
        Ok(())
    }
}

impl<T: Resume> Wake for ParkingSpot<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // The guard is dropped before resuming: resuming spawns, and must not hold the lock.
        let state = self.parked.lock().take();
        if let Some(state) = state {
            state.resume(&self.runtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// Parked state that reports its resumption, from a task on the runtime.
    struct Probe {
        id: usize,
        resumed: mpsc::UnboundedSender<usize>,
    }

    impl Resume for Probe {
        fn resume(self, runtime: &Handle) {
            runtime.spawn(async move {
                let _ = self.resumed.send(self.id);
            });
        }
    }

    fn probe(id: usize) -> (Probe, mpsc::UnboundedReceiver<usize>) {
        let (resumed, rx) = mpsc::unbounded_channel();
        (Probe { id, resumed }, rx)
    }

    #[tokio::test]
    async fn a_wake_resumes_the_parked_state_as_a_task_once() {
        let spot = ParkingSpot::new(Handle::current());
        let (state, mut resumed) = probe(7);
        assert!(spot.park(state).is_ok());
        let waker = spot.waker();
        waker.wake_by_ref();
        waker.wake_by_ref();
        let first = tokio::time::timeout(Duration::from_secs(5), resumed.recv()).await;
        assert_eq!(first.ok().flatten(), Some(7));
        // Later wakes find the spot empty: the probe was resumed once, then dropped.
        assert_eq!(resumed.recv().await, None);
    }

    #[tokio::test]
    async fn a_wake_before_parking_hands_the_state_back() {
        let spot = ParkingSpot::new(Handle::current());
        spot.waker().wake();
        let (state, mut resumed) = probe(1);
        let back = spot.park(state);
        assert!(matches!(back, Err(Probe { id: 1, .. })));
        drop(back);
        assert_eq!(resumed.recv().await, None, "nothing was spawned");
    }

    #[tokio::test]
    async fn parked_state_without_a_wake_stays_parked() {
        let spot = ParkingSpot::new(Handle::current());
        let (state, mut resumed) = probe(2);
        assert!(spot.park(state).is_ok());
        tokio::task::yield_now().await;
        assert!(resumed.try_recv().is_err());
        assert!(spot.parked.lock().is_some());
    }

    /// Wakes from other threads racing the parking: every state is either handed back to the
    /// parker or resumed by a wake, exactly once, never lost.
    #[test]
    fn wakes_racing_the_parking_resume_each_state_exactly_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime for the test");
        let rounds = 2_000;
        let (resumed, mut rx) = mpsc::unbounded_channel();
        let handed_back = Arc::new(AtomicUsize::new(0));
        for id in 0..rounds {
            let spot = ParkingSpot::new(runtime.handle().clone());
            let waker = spot.waker();
            let racer = std::thread::spawn(move || waker.wake());
            let state = Probe {
                id,
                resumed: resumed.clone(),
            };
            if spot.park(state).is_err() {
                handed_back.fetch_add(1, Ordering::Relaxed);
            }
            racer.join().expect("the waking thread ran");
        }
        drop(resumed);
        let resumed: Vec<usize> = runtime.block_on(async {
            let mut ids = Vec::new();
            while let Some(id) = rx.recv().await {
                ids.push(id);
            }
            ids
        });
        let mut seen = vec![0u8; rounds];
        for id in &resumed {
            seen[*id] += 1;
        }
        assert!(seen.iter().all(|&n| n <= 1), "a state resumed twice");
        assert_eq!(
            resumed.len() + handed_back.load(Ordering::Relaxed),
            rounds,
            "every state was resumed or handed back"
        );
    }
}
