//! Helper threads that run a batch's fdatasyncs in parallel (one per touched file), kept alive
//! across batches: a batch touching several shards used to spawn a thread per file and commit,
//! which cost more CPU than the syncs themselves at a few hundred commits per second.

use std::io;
use std::sync::mpsc;
use std::thread;

/// One sync to run (owning what it syncs): returns its outcome.
pub type SyncJob = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// A job sent to a helper, with where its outcome goes.
type Sent = (SyncJob, mpsc::Sender<io::Result<()>>);

/// Most helper threads; more syncs than helpers + 1 run in rounds.
const MAX_HELPERS: usize = 15;

/// The writer thread's sync helpers, started on first need and stopped when the pool drops.
#[derive(Default)]
pub struct SyncPool {
    helpers: Vec<mpsc::Sender<Sent>>,
}

impl SyncPool {
    /// Runs every job, all at once (the last on the calling thread); the first error, if any,
    /// once all have finished.
    pub fn run_all(&mut self, mut jobs: Vec<SyncJob>) -> io::Result<()> {
        let mut first_error = None;
        while !jobs.is_empty() {
            let round = jobs.len().min(MAX_HELPERS + 1);
            let rest = jobs.split_off(round);
            let Some(own) = jobs.pop() else { break };
            let (done, outcomes) = mpsc::channel();
            let mut sent = 0;
            for job in jobs {
                let outcome = match self.helper(sent) {
                    Ok(helper) => helper.send((job, done.clone())),
                    Err(error) => {
                        tracing::warn!(%error, "cannot start a sync thread; syncing in turn");
                        Err(mpsc::SendError((job, done.clone())))
                    }
                };
                match outcome {
                    Ok(()) => sent += 1,
                    // No helper: run it here instead.
                    Err(mpsc::SendError((job, _))) => keep_first(&mut first_error, job()),
                }
            }
            drop(done);
            keep_first(&mut first_error, own());
            for _ in 0..sent {
                match outcomes.recv() {
                    Ok(outcome) => keep_first(&mut first_error, outcome),
                    // Every sender is gone: a helper died with its job.
                    Err(_) => {
                        keep_first(
                            &mut first_error,
                            Err(io::Error::other("a sync thread died")),
                        );
                        break;
                    }
                }
            }
            jobs = rest;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Helper `index`, started if it does not exist yet.
    fn helper(&mut self, index: usize) -> io::Result<&mpsc::Sender<Sent>> {
        while self.helpers.len() <= index {
            let (sender, jobs) = mpsc::channel::<Sent>();
            thread::Builder::new()
                .name("stream-sync".into())
                .spawn(move || {
                    for (job, done) in jobs {
                        let _ = done.send(job());
                    }
                })?;
            self.helpers.push(sender);
        }
        Ok(&self.helpers[index])
    }
}

fn keep_first(first: &mut Option<io::Error>, outcome: io::Result<()>) {
    if let Err(error) = outcome
        && first.is_none()
    {
        *first = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn every_job_runs_once_and_helpers_are_reused() {
        let mut pool = SyncPool::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(HashSet::new()));
        for _ in 0..20 {
            let jobs: Vec<SyncJob> = (0..4)
                .map(|_| {
                    let (ran, threads) = (Arc::clone(&ran), Arc::clone(&threads));
                    Box::new(move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                        threads
                            .lock()
                            .map_err(|_| io::Error::other("poisoned"))?
                            .insert(thread::current().id());
                        Ok(())
                    }) as SyncJob
                })
                .collect();
            pool.run_all(jobs).expect("all succeed");
        }
        assert_eq!(ran.load(Ordering::SeqCst), 80);
        assert_eq!(pool.helpers.len(), 3, "three helpers plus the caller");
        assert!(threads.lock().expect("lock").len() <= 4);
    }

    #[test]
    fn an_error_is_reported_after_every_job_finished() {
        let mut pool = SyncPool::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<SyncJob> = (0..40)
            .map(|i| {
                let ran = Arc::clone(&ran);
                Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    if i == 7 {
                        Err(io::Error::other("disk full"))
                    } else {
                        Ok(())
                    }
                }) as SyncJob
            })
            .collect();
        let error = pool.run_all(jobs).expect_err("one failed");
        assert_eq!(error.to_string(), "disk full");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            40,
            "more jobs than helpers run in rounds"
        );
    }
}
