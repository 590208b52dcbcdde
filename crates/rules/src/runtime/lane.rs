//! One action of a running rule: a bounded queue of the rule's outputs waiting for the action,
//! drained by a task that exists only while there is work. It keeps the action's window of
//! batches in flight (see [`crate::actions::Pipelining`]), each with retries and backoff,
//! hands what keeps failing to the rule's error action with AWS's error payload,
//! and marks each record done in its partition's [`Progress`]. A slow or failing destination
//! fills only its own queue.
//!
//! Full-policy: the queue holds at most [`RuntimeConfig::lane_capacity`] messages in memory;
//! what arrives beyond that waits in the lane's overflow file ([`Spill`], at most
//! [`RuntimeConfig::lane_spill_bytes`]), so the partition reader goes on feeding the other
//! actions. Only when that is full too (or there is no spill folder) does a reader wait for
//! room, stopping its partition meanwhile: nothing is dropped and memory stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tracing::Instrument;

use super::RuntimeConfig;
use super::events::ActionEvents;
use super::progress::Progress;
use super::spill::Spill;
use super::trace_id::TraceId;
use crate::actions::{Action, Prepared};
use crate::ingest::IngestRecord;

/// The message a rule output came from, with what the error payload needs: the ingest record
/// itself (a reference count, no copy), decoded again only when an error action fires.
#[derive(Clone)]
pub(crate) struct Origin {
    pub rule: Arc<str>,
    /// The ingest partition and position of the record.
    pub partition: usize,
    pub position: u128,
    /// The record as the ingest log stores it.
    pub record: Bytes,
    /// The error action's templates, expanded for this message (`None` without one).
    pub error_params: Option<Arc<[String]>>,
}

impl Origin {
    /// AWS's error payload for this message, which `failed_action` (on `failed_resource`) gave
    /// up on with `error`.
    fn error_report(&self, failed_action: &str, failed_resource: &str, error: &str) -> String {
        let stored = IngestRecord::decode(&self.record).ok();
        let trace_id = TraceId::of(self.partition, self.position);
        json!({
            "ruleName": &*self.rule,
            "topic": stored.as_ref().map_or("", |s| &*s.topic),
            "cloudwatchTraceId": trace_id.as_str(),
            "traceId": trace_id.as_str(),
            "clientId": stored.as_ref().and_then(|s| s.client_id.as_deref()).unwrap_or("n/a"),
            "base64OriginalPayload": base64::engine::general_purpose::STANDARD
                .encode(stored.as_ref().map_or(&[][..], |s| &*s.payload)),
            "failures": [{
                "failedAction": failed_action,
                "failedResource": failed_resource,
                "errorMessage": error,
            }],
        })
        .to_string()
    }
}

/// One rule output waiting for an action.
pub(crate) struct Pending {
    pub item: Prepared,
    pub origin: Origin,
}

/// Messages taken from the queue for one `deliver` call, with where each came from.
struct Batch {
    items: Vec<Prepared>,
    sources: Vec<Origin>,
}

struct Queue {
    /// The oldest waiting messages, in memory.
    items: VecDeque<Pending>,
    /// The newer ones that did not fit (empty unless the destination fell behind).
    spill: Option<Spill>,
    /// A drain task is running.
    draining: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.spill.as_ref().is_none_or(Spill::is_empty)
    }

    /// Moves what fits from `batch` into memory, or, once anything waits in the spill (order)
    /// or memory is full, into the spill. A spill that fails is logged and treated as full.
    fn accept(&mut self, capacity: usize, batch: &mut VecDeque<Pending>, events: &ActionEvents) {
        let spilled = self.spill.as_ref().is_some_and(|s| !s.is_empty());
        if !spilled {
            let take = capacity.saturating_sub(self.items.len()).min(batch.len());
            self.items.extend(batch.drain(..take));
        }
        if batch.is_empty() {
            return;
        }
        if let Some(spill) = &mut self.spill {
            match spill.append(batch) {
                Ok(count) => events.spilled(count as u64),
                Err(error) => events.spill_failed(&error),
            }
        }
    }

    /// Takes up to `limit` messages from the front, refilling memory from the spill first
    /// when it has room.
    fn take(&mut self, capacity: usize, limit: usize, events: &ActionEvents) -> Vec<Pending> {
        if let Some(spill) = &mut self.spill
            && !spill.is_empty()
            && self.items.len() <= capacity / 2
        {
            let room = capacity - self.items.len();
            if let Err(error) = spill.take(room, &mut self.items) {
                // Lost from the spill: the checkpoint stays at them, so a restart delivers
                // them again.
                events.spill_failed(&error);
            }
        }
        let take = self.items.len().min(limit);
        self.items.drain(..take).collect()
    }
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
    /// Signalled when the queue has room again.
    space: Notify,
    /// Signalled when a message is queued while the drain task runs (it may have a free slot).
    arrived: Notify,
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
        let spill = config
            .spill_dir
            .as_ref()
            .map(|dir| Spill::new(dir.join(spill_file_name()), config.lane_spill_bytes));
        ActionLane {
            action,
            error_action,
            events,
            config,
            progress,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                spill,
                draining: false,
            }),
            space: Notify::new(),
            arrived: Notify::new(),
        }
    }

    /// The action's templates (expanded per message by the reader).
    pub(crate) fn action(&self) -> &dyn Action {
        &*self.action
    }

    /// Queues every message of `batch` in order (emptying it), waiting for room while the
    /// queue and its spill are full; starts the drain task if none runs. One lock and at most one wake-up of
    /// the drain task per call, however many messages it queues.
    pub(crate) async fn push_all(self: &Arc<Self>, batch: &mut VecDeque<Pending>) {
        loop {
            // Registered before the attempt, so room made right after it is not missed.
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.try_push(batch);
            if batch.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Queues as many messages of `batch` as there is room for, from its front (starting the
    /// drain task if none runs, waking it if one does).
    fn try_push(self: &Arc<Self>, batch: &mut VecDeque<Pending>) {
        let mut queue = self.queue.lock();
        let before = batch.len();
        queue.accept(self.config.lane_capacity, batch, &self.events);
        if batch.len() == before {
            return;
        }
        if queue.draining {
            drop(queue);
            self.arrived.notify_one();
        } else {
            queue.draining = true;
            drop(queue);
            tokio::spawn(Arc::clone(self).drain());
        }
    }

    /// Keeps up to the action's window of [`Action::deliver`] calls running until the queue is
    /// empty. Each call marks its records done as it completes, in whatever order (a partition's
    /// committed position stays at the first record still owed), and a free slot of the window
    /// is refilled at once, from the queue or from the next push.
    async fn drain(self: Arc<Self>) {
        let shape = self.action.pipelining();
        let batch = shape.batch.min(self.config.batch_limit).max(1);
        let window = shape.in_flight.max(1);
        let mut running = FuturesUnordered::new();
        loop {
            let mut took = false;
            while running.len() < window {
                let Some(taken) = self.take(batch) else {
                    break;
                };
                took = true;
                running.push(self.deliver_batch(taken));
            }
            if took {
                self.space.notify_waiters();
            }
            if running.is_empty() {
                let mut queue = self.queue.lock();
                if queue.is_empty() {
                    queue.draining = false;
                    return;
                }
                continue;
            }
            if running.len() < window {
                tokio::select! {
                    _ = running.next() => {}
                    () = self.arrived.notified() => {}
                }
            } else {
                running.next().await;
            }
        }
    }

    /// Takes up to `limit` queued messages, or `None` when the queue is empty.
    fn take(&self, limit: usize) -> Option<Batch> {
        let taken = self
            .queue
            .lock()
            .take(self.config.lane_capacity, limit, &self.events);
        if taken.is_empty() {
            return None;
        }
        let mut batch = Batch {
            items: Vec::with_capacity(taken.len()),
            sources: Vec::with_capacity(taken.len()),
        };
        for pending in taken {
            batch.items.push(pending.item);
            batch.sources.push(pending.origin);
        }
        Some(batch)
    }

    /// Delivers one batch (with retries, then the error action) and marks its records done.
    async fn deliver_batch(&self, batch: Batch) {
        let Batch { items, sources } = batch;
        // A sampled share of the deliveries is traced (one decision per batch).
        let span = if fleetcore_core::trace::sample_message() {
            let resource = items.first().map(|i| self.action.resource(&i.params));
            tracing::trace_span!(
                target: fleetcore_core::trace::TARGET,
                "rule.action",
                otel.kind = "client",
                fleetcore.rule = self.events.rule(),
                fleetcore.action = self.events.action(),
                fleetcore.action_type = self.action.name(),
                fleetcore.resource = resource.as_deref(),
                fleetcore.batch_size = items.len(),
                fleetcore.delivered = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let outcomes = deliver(&*self.action, &items, &self.config, Some(&self.events))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            let delivered = outcomes.iter().filter(|o| o.is_ok()).count();
            span.record("fleetcore.delivered", delivered);
            match outcomes.iter().find_map(|o| o.as_ref().err()) {
                Some(error) => {
                    span.record("otel.status_code", "error");
                    span.record("otel.status_message", error.as_str());
                }
                None => {
                    span.record("otel.status_code", "ok");
                }
            }
        }
        drop(span);
        let mut delivered = 0;
        for ((outcome, item), origin) in outcomes.into_iter().zip(&items).zip(&sources) {
            match outcome {
                Ok(()) => delivered += 1,
                Err(error) => {
                    self.events.failed(&error);
                    self.run_error_action(item, origin, &error).await;
                }
            }
        }
        self.events.succeeded(delivered);
        if let [origin] = sources.as_slice() {
            if let Some(progress) = self.progress.get(origin.partition) {
                progress.done([origin.position]);
            }
            return;
        }
        for (partition, progress) in self.progress.iter().enumerate() {
            if sources.iter().any(|s| s.partition == partition) {
                progress.done(
                    sources
                        .iter()
                        .filter(|s| s.partition == partition)
                        .map(|s| s.position),
                );
            }
        }
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

/// A name for a new lane's spill file, unique in this process.
fn spill_file_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("lane-{n}.spill")
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
    let report = [Prepared {
        body: Bytes::from(origin.error_report(failed_action, failed_resource, error)),
        params: origin
            .error_params
            .as_deref()
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
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
    // The first attempt's answers are the outcomes (no placeholder per message); later
    // attempts replace those of the messages that failed.
    let mut outcomes: Vec<Result<(), String>> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut backoff = config.initial_backoff;
    for attempt in 1..=config.max_attempts.max(1) {
        let started = Instant::now();
        if attempt == 1 {
            outcomes = action.deliver(items).await;
            outcomes.truncate(items.len());
            outcomes.resize_with(items.len(), || Err("the action gave no outcome".into()));
            pending = (0..items.len()).filter(|&i| outcomes[i].is_err()).collect();
        } else {
            let batch: Vec<Prepared> = pending.iter().map(|&i| items[i].clone()).collect();
            let results = action.deliver(&batch).await;
            let mut still = Vec::new();
            for (&i, result) in pending.iter().zip(results) {
                if result.is_err() {
                    still.push(i);
                }
                outcomes[i] = result;
            }
            pending = still;
        }
        if let Some(events) = events {
            events.attempt(started.elapsed());
        }
        if pending.is_empty() || attempt == config.max_attempts {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use fleetcore_stream::Position;
    use tokio::sync::oneshot;

    use super::*;
    use crate::actions::Pipelining;
    use crate::sql::Template;

    /// An action whose deliveries finish when the test says so, one message per call, four
    /// calls at once.
    #[derive(Default)]
    struct Gated {
        /// Body -> the sender that finishes its delivery, once the call has started.
        started: Mutex<HashMap<String, oneshot::Sender<()>>>,
        arrived: Notify,
    }

    #[async_trait]
    impl Action for Gated {
        fn name(&self) -> &'static str {
            "GatedAction"
        }
        fn resource(&self, _params: &[String]) -> String {
            String::new()
        }
        fn templates(&self) -> &[Template] {
            &[]
        }
        fn pipelining(&self) -> Pipelining {
            Pipelining {
                batch: 1,
                in_flight: 4,
            }
        }
        async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
            let mut outcomes = Vec::new();
            for item in items {
                let (finish, finished) = oneshot::channel();
                let key = String::from_utf8_lossy(&item.body).into_owned();
                self.started.lock().insert(key, finish);
                self.arrived.notify_waiters();
                outcomes.push(finished.await.map_err(|_| "cancelled".to_string()));
            }
            outcomes
        }
    }

    impl Gated {
        /// Waits (with a deadline) until `count` deliveries are running.
        async fn running(&self, count: usize) {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let notified = self.arrived.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.started.lock().len() >= count {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .expect("deliveries did not start in time");
        }

        fn finish(&self, body: &str) {
            let sender = self.started.lock().remove(body).expect("running");
            sender.send(()).expect("delivery waiting");
        }
    }

    fn pending(position: u128) -> Pending {
        Pending {
            item: Prepared {
                body: Bytes::from(position.to_string()),
                params: Vec::new(),
            },
            origin: Origin {
                rule: "r".into(),
                partition: 0,
                position,
                record: Bytes::new(),
                error_params: None,
            },
        }
    }

    async fn committed_becomes(progress: &Progress, want: u128) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while progress.committed() != Position(want) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("committed stayed at {:?}", progress.committed()));
    }

    /// A lane of a [`Gated`] action over one partition starting at record 0.
    fn gated_lane(config: RuntimeConfig) -> (Arc<Gated>, Arc<Progress>, Arc<ActionLane>) {
        let action = Arc::new(Gated::default());
        let progress = Arc::new(Progress::new(Position(0)));
        let lane = Arc::new(ActionLane::new(
            Arc::clone(&action) as Arc<dyn Action>,
            None,
            ActionEvents::new("r", "0:gated".into()),
            Arc::new(config),
            Arc::from([Arc::clone(&progress)]),
        ));
        (action, progress, lane)
    }

    #[tokio::test]
    async fn deliveries_overlap_and_the_checkpoint_stays_at_the_first_owed_record() {
        let (action, progress, lane) = gated_lane(RuntimeConfig::default());
        for position in 0..6 {
            progress.hold(position, 1);
            lane.push_all(&mut VecDeque::from([pending(position)]))
                .await;
        }
        progress.advance(Position(6));
        // Four calls at once, not one batch after another.
        action.running(4).await;
        assert_eq!(action.started.lock().len(), 4, "the window is four calls");
        // Later records finish first: the checkpoint stays at record 0 ...
        action.finish("3");
        action.finish("1");
        // ... and the freed slots take records 4 and 5 at once.
        action.running(4).await;
        assert!(action.started.lock().contains_key("5"));
        assert_eq!(progress.committed(), Position(0));
        action.finish("0");
        committed_becomes(&progress, 2).await;
        for body in ["2", "4", "5"] {
            action.finish(body);
        }
        committed_becomes(&progress, 6).await;
    }

    #[tokio::test]
    async fn a_destination_that_fell_behind_does_not_hold_up_the_reader_and_gets_everything_in_order()
     {
        let spill_dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig {
            lane_capacity: 4,
            spill_dir: Some(spill_dir.path().to_path_buf()),
            ..RuntimeConfig::default()
        };
        let (action, progress, lane) = gated_lane(config);
        // Four deliveries hang and four more fill the queue; the other 92 do not make the
        // reader wait: they go to the overflow file.
        tokio::time::timeout(Duration::from_secs(10), async {
            for position in 0..100 {
                progress.hold(position, 1);
                lane.push_all(&mut VecDeque::from([pending(position)]))
                    .await;
            }
        })
        .await
        .expect("the reader was held up by a lane that fell behind");
        progress.advance(Position(100));
        assert!(
            std::fs::read_dir(spill_dir.path()).unwrap().count() == 1,
            "the overflow is in a file"
        );
        // Delivered one by one as the destination recovers: every message, in order.
        for position in 0..100u128 {
            action.running(1).await;
            let first = action
                .started
                .lock()
                .keys()
                .filter_map(|k| k.parse::<u128>().ok())
                .min()
                .expect("a delivery runs");
            assert_eq!(first, position, "delivered in order");
            action.finish(&position.to_string());
        }
        committed_becomes(&progress, 100).await;
    }
}
