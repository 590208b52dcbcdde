//! One delivery lane per subscription: a bounded queue and a task that sends what it holds,
//! up to `concurrency` messages at once, each retried on its own schedule. Full-policy: a
//! message for a full lane is dropped for that subscription, logged and counted
//! (`outcome="dropped"`): the publisher (an API call, a rule, a detector) never waits for a
//! slow subscriber, and memory stays bounded. A dead endpoint fills only its own lane.
//! Pending deliveries live in memory only: a restart loses what was queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};

use super::{Context, Failure, Outgoing, RetryPolicy, Transports, events};
use crate::model::Subscription;

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
}

impl Lanes {
    /// Lanes sending through `transports`.
    pub fn new(transports: Arc<Transports>, context: Arc<Context>, config: LaneConfig) -> Lanes {
        Lanes {
            lanes: Mutex::new(HashMap::new()),
            transports,
            context,
            config,
        }
    }

    /// Queues `outgoing` for `subscription` (dropped and counted if its lane is full).
    pub fn enqueue(&self, subscription: &Arc<Subscription>, outgoing: Outgoing) {
        let job = Job {
            subscription: Arc::clone(subscription),
            outgoing,
        };
        let mut lanes = self.lanes.lock();
        let lane = lanes
            .entry(subscription.arn.clone())
            .or_insert_with(|| self.start_lane());
        if let Err(mpsc::error::TrySendError::Full(_)) = lane.queue.try_send(job) {
            events::dropped(&subscription.protocol, &subscription.arn);
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
        let (transports, context, retry, stop) = (
            Arc::clone(&self.transports),
            Arc::clone(&self.context),
            self.config.retry,
            Arc::clone(&closed),
        );
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (transports, context, stop) = (
                    Arc::clone(&transports),
                    Arc::clone(&context),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    deliver(&transports, &context, retry, &stop, job).await;
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
