//! One delivery lane per subscription: a bounded queue and a task that sends what it holds,
//! up to `concurrency` messages at once, each retried on its own schedule. Full-policy: a
//! message for a full lane is dropped for that subscription, logged and counted
//! (`outcome="dropped"`): the publisher (an API call, a rule, a detector) never waits for a
//! slow subscriber, and memory stays bounded. A dead endpoint fills only its own lane.
//! Every job is in the [`Outbox`] from before it is queued until it is finished (delivered,
//! refused, given up, dropped), so a restart sends again what was queued or being retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fleetcore_core::StoreError;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};

use super::outbox::{Outbox, Recovered};
use super::{Context, Failure, Outgoing, RetryPolicy, Transports, events};
use crate::model::{Status, Subscription};
use crate::registry::Registry;

/// How lanes queue and send.
#[derive(Debug, Clone, Copy)]
pub struct LaneConfig {
    /// Messages one subscription may have waiting.
    pub capacity: usize,
    /// Messages one subscription may have in flight (each retried on its own).
    pub concurrency: usize,
    /// The retry schedule.
    pub retry: RetryPolicy,
}

impl Default for LaneConfig {
    fn default() -> LaneConfig {
        LaneConfig {
            capacity: 10_000,
            concurrency: 16,
            retry: RetryPolicy::default(),
        }
    }
}

struct Job {
    subscription: Arc<Subscription>,
    outgoing: Outgoing,
    /// Its outbox id.
    id: u64,
}

struct Lane {
    queue: mpsc::Sender<Job>,
    closed: Arc<AtomicBool>,
}

/// The lanes of every subscription with something to deliver.
pub struct Lanes {
    lanes: Mutex<HashMap<String, Lane>>,
    transports: Arc<Transports>,
    context: Arc<Context>,
    config: LaneConfig,
    outbox: Arc<Outbox>,
}

impl Lanes {
    /// Lanes sending through `transports`, keeping their jobs in `outbox`.
    pub fn new(
        transports: Arc<Transports>,
        context: Arc<Context>,
        config: LaneConfig,
        outbox: Arc<Outbox>,
    ) -> Lanes {
        Lanes {
            lanes: Mutex::new(HashMap::new()),
            transports,
            context,
            config,
            outbox,
        }
    }

    /// Queues `outgoing` for each of `subscriptions` once the jobs are on disk (a job for a
    /// full lane is dropped and counted).
    pub fn enqueue(
        &self,
        subscriptions: &[Arc<Subscription>],
        outgoing: Outgoing,
    ) -> Result<(), StoreError> {
        if subscriptions.is_empty() {
            return Ok(());
        }
        let arns: Vec<&str> = subscriptions.iter().map(|s| s.arn.as_str()).collect();
        let message = match &outgoing {
            Outgoing::Notification(m) => Some(&**m),
            Outgoing::Confirmation => None,
        };
        let ids = self.outbox.record(&arns, message)?;
        for (subscription, id) in subscriptions.iter().zip(ids) {
            self.queue(Arc::clone(subscription), outgoing.clone(), id);
        }
        Ok(())
    }

    /// Queues again the jobs found in the outbox at start; those of subscriptions that are
    /// gone (or no longer in the state the job was for) are forgotten.
    pub fn recover(&self, recovered: Vec<Recovered>, registry: &Registry) {
        for job in recovered {
            let subscription = registry.subscription(&job.subscription).ok();
            let (outgoing, wanted) = match job.message {
                Some(m) => (Outgoing::Notification(Arc::new(m)), Status::Confirmed),
                None => (Outgoing::Confirmation, Status::Pending),
            };
            match subscription {
                Some(s) if s.status == wanted => self.queue(s, outgoing, job.id),
                _ => self.outbox.forget(job.id),
            }
        }
    }

    fn queue(&self, subscription: Arc<Subscription>, outgoing: Outgoing, id: u64) {
        let mut lanes = self.lanes.lock();
        let lane = lanes
            .entry(subscription.arn.clone())
            .or_insert_with(|| self.start_lane());
        let job = Job {
            subscription,
            outgoing,
            id,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = lane.queue.try_send(job) {
            events::dropped(&job.subscription.protocol, &job.subscription.arn);
            self.outbox.forget(job.id);
        }
    }

    /// Stops a subscription's lane: what it still holds is not sent.
    pub fn close(&self, subscription_arn: &str) {
        if let Some(lane) = self.lanes.lock().remove(subscription_arn) {
            lane.closed.store(true, Ordering::Release);
        }
    }

    fn start_lane(&self) -> Lane {
        let (queue, mut jobs) = mpsc::channel::<Job>(self.config.capacity.max(1));
        let closed = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let (transports, context, retry, stop, outbox) = (
            Arc::clone(&self.transports),
            Arc::clone(&self.context),
            self.config.retry,
            Arc::clone(&closed),
            Arc::clone(&self.outbox),
        );
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (transports, context, stop, outbox) = (
                    Arc::clone(&transports),
                    Arc::clone(&context),
                    Arc::clone(&stop),
                    Arc::clone(&outbox),
                );
                tokio::spawn(async move {
                    let id = job.id;
                    // Finished (sent, refused, given up) or its subscription is gone.
                    deliver(&transports, &context, retry, &stop, job).await;
                    outbox.forget(id);
                    drop(permit);
                });
            }
        });
        Lane { queue, closed }
    }
}

/// Sends one job, retrying per `retry` until it is delivered, refused or given up.
async fn deliver(
    transports: &Transports,
    context: &Context,
    retry: RetryPolicy,
    stop: &AtomicBool,
    job: Job,
) {
    let subscription = &job.subscription;
    let protocol = subscription.protocol.as_str();
    let Some(transport) = transports.get(protocol) else {
        events::failed(
            protocol,
            &subscription.arn,
            "the protocol does not run here",
        );
        return;
    };
    let mut retries = 0;
    loop {
        let reason = match transport.send(subscription, &job.outgoing, context).await {
            Ok(()) => {
                events::delivered(protocol);
                return;
            }
            Err(Failure::Permanent(reason)) => {
                events::failed(protocol, &subscription.arn, &reason);
                return;
            }
            Err(Failure::Retry(reason)) => reason,
        };
        retries += 1;
        let Some(wait) = retry.delay(retries) else {
            events::failed(protocol, &subscription.arn, &reason);
            return;
        };
        events::retried(protocol, &subscription.arn, &reason);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
    }
}
