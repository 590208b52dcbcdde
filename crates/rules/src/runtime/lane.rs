//! One action of a running rule: a bounded queue of the rule's outputs waiting for the action,
//! drained by a task that exists only while there is work. It delivers in batches with retries
//! and backoff, hands what keeps failing to the rule's error action with AWS's error payload,
//! and marks each record done in its partition's [`Progress`]. A slow or failing destination
//! fills only its own queue.
//!
//! Full-policy: the queue holds at most [`RuntimeConfig::lane_capacity`] messages; a partition
//! reader that finds it full waits for room (it stops reading its partition meanwhile), so
//! nothing is dropped and memory stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

use super::RuntimeConfig;
use super::events::ActionEvents;
use super::progress::Progress;
use crate::actions::{Action, Prepared};

/// The message a rule output came from, with what the error payload needs; shared by the
/// rule's actions.
pub(crate) struct Origin {
    pub rule: Arc<str>,
    pub topic: Box<str>,
    pub client_id: Option<Box<str>>,
    pub trace_id: String,
    pub payload: Bytes,
    /// The error action's templates, expanded for this message.
    pub error_params: Vec<String>,
}

/// One rule output waiting for an action.
pub(crate) struct Pending {
    /// The ingest partition and position of the record it came from.
    pub partition: usize,
    pub position: u128,
    pub item: Prepared,
    pub origin: Arc<Origin>,
}

struct Queue {
    items: VecDeque<Pending>,
    /// A drain task is running.
    draining: bool,
}

/// One action of a running rule, with its queue.
pub(crate) struct ActionLane {
    action: Arc<dyn Action>,
    error_action: Option<Arc<dyn Action>>,
    events: ActionEvents,
    config: Arc<RuntimeConfig>,
    /// Every partition's progress, by partition index.
    progress: Arc<[Arc<Progress>]>,
    queue: Mutex<Queue>,
    space: Notify,
}

impl ActionLane {
    /// A lane for `action`, idle until the first push.
    pub(crate) fn new(
        action: Arc<dyn Action>,
        error_action: Option<Arc<dyn Action>>,
        events: ActionEvents,
        config: Arc<RuntimeConfig>,
        progress: Arc<[Arc<Progress>]>,
    ) -> ActionLane {
        ActionLane {
            action,
            error_action,
            events,
            config,
            progress,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                draining: false,
            }),
            space: Notify::new(),
        }
    }

    /// The action's templates (expanded per message by the reader).
    pub(crate) fn action(&self) -> &dyn Action {
        &*self.action
    }

    /// Queues `pending`, waiting for room while the queue is full; starts the drain task if
    /// none runs.
    pub(crate) async fn push(self: &Arc<Self>, pending: Pending) {
        let Some(pending) = self.try_push(pending) else {
            return;
        };
        // Full: wait for room (registered before the re-check, so no wake-up is missed).
        let mut pending = Some(pending);
        while let Some(p) = pending.take() {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            pending = self.try_push(p);
            if pending.is_some() {
                notified.await;
            }
        }
    }

    /// Queues `pending` if there is room (starting the drain task if none runs); gives it back
    /// when the queue is full.
    fn try_push(self: &Arc<Self>, pending: Pending) -> Option<Pending> {
        let mut queue = self.queue.lock();
        if queue.items.len() >= self.config.lane_capacity {
            return Some(pending);
        }
        queue.items.push_back(pending);
        if !queue.draining {
            queue.draining = true;
            tokio::spawn(Arc::clone(self).drain());
        }
        None
    }

    /// Delivers batches until the queue is empty.
    async fn drain(self: Arc<Self>) {
        loop {
            let mut items = Vec::new();
            let mut sources = Vec::new();
            {
                let mut queue = self.queue.lock();
                if queue.items.is_empty() {
                    queue.draining = false;
                    return;
                }
                let take = queue.items.len().min(self.config.batch_limit.max(1));
                for pending in queue.items.drain(..take) {
                    items.push(pending.item);
                    sources.push((pending.partition, pending.position, pending.origin));
                }
            }
            self.space.notify_waiters();
            self.deliver_batch(&items, &sources).await;
            for (partition, progress) in self.progress.iter().enumerate() {
                if sources.iter().any(|s| s.0 == partition) {
                    progress.done(sources.iter().filter(|s| s.0 == partition).map(|s| s.1));
                }
            }
        }
    }

    async fn deliver_batch(&self, items: &[Prepared], sources: &[(usize, u128, Arc<Origin>)]) {
        let outcomes = deliver(&*self.action, items, &self.config, Some(&self.events)).await;
        let mut delivered = 0;
        for ((outcome, item), (_, _, origin)) in outcomes.into_iter().zip(items).zip(sources) {
            match outcome {
                Ok(()) => delivered += 1,
                Err(error) => {
                    self.events.failed(&error);
                    self.run_error_action(item, origin, &error).await;
                }
            }
        }
        self.events.succeeded(delivered);
    }

    /// Hands a message the action gave up on to the rule's error action, with AWS's error
    /// payload; if that fails too, the message is logged, counted and given up.
    async fn run_error_action(&self, item: &Prepared, origin: &Origin, error: &str) {
        let Some(error_action) = &self.error_action else {
            self.events.dropped();
            return;
        };
        self.events.error_action_fired();
        let failed_resource = self.action.resource(&item.params);
        if let Err(error) = fire_error_action(
            &**error_action,
            &self.config,
            origin,
            self.action.name(),
            &failed_resource,
            error,
        )
        .await
        {
            self.events.error_action_failed(&error);
        }
    }
}

/// Delivers AWS's error payload for a message of `origin` that `failed_action` (on
/// `failed_resource`) gave up on to the rule's `error_action`, with the usual retries.
pub(crate) async fn fire_error_action(
    error_action: &dyn Action,
    config: &RuntimeConfig,
    origin: &Origin,
    failed_action: &str,
    failed_resource: &str,
    error: &str,
) -> Result<(), String> {
    let report = json!({
        "ruleName": &*origin.rule,
        "topic": &*origin.topic,
        "cloudwatchTraceId": origin.trace_id,
        "traceId": origin.trace_id,
        "clientId": origin.client_id.as_deref().unwrap_or("n/a"),
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(&origin.payload),
        "failures": [{
            "failedAction": failed_action,
            "failedResource": failed_resource,
            "errorMessage": error,
        }],
    });
    let report = [Prepared {
        body: Bytes::from(report.to_string()),
        params: origin.error_params.clone(),
    }];
    deliver(error_action, &report, config, None)
        .await
        .pop()
        .unwrap_or(Ok(()))
}

/// Delivers `items`, retrying the failed ones with exponential backoff up to the configured
/// number of attempts; returns the last outcome of each.
async fn deliver(
    action: &dyn Action,
    items: &[Prepared],
    config: &RuntimeConfig,
    events: Option<&ActionEvents>,
) -> Vec<Result<(), String>> {
    let mut outcomes: Vec<Result<(), String>> = vec![Err("not attempted".into()); items.len()];
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut backoff = config.initial_backoff;
    for attempt in 1..=config.max_attempts.max(1) {
        let started = Instant::now();
        let results = if pending.len() == items.len() {
            action.deliver(items).await
        } else {
            let batch: Vec<Prepared> = pending.iter().map(|&i| items[i].clone()).collect();
            action.deliver(&batch).await
        };
        if let Some(events) = events {
            events.attempt(started.elapsed());
        }
        let mut still = Vec::new();
        for (&i, result) in pending.iter().zip(results) {
            if result.is_err() {
                still.push(i);
            }
            outcomes[i] = result;
        }
        pending = still;
        if pending.is_empty() || attempt == config.max_attempts {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
    outcomes
}
