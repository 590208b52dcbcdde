//! One reader per ingest partition: reads each record once, decodes it once, finds the rules
//! whose filters match its topic in the [`RuleIndex`], evaluates each rule's statement once and
//! queues the output on every action of the rule. It checkpoints the partition's committed
//! position (see [`Progress`]) in the partition's store under the consumer group [`GROUP`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fleetcore_stream::{Position, ReadBatch, Record, StartingPosition, StreamError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::RuntimeConfig;
use super::events;
use super::index::{RuleIndex, RunningRule};
use super::lane::{ActionLane, Origin, Pending, fire_error_action};
use super::progress::Progress;
use super::trace_id::TraceId;
use crate::actions::{Action, Prepared};
use crate::ingest::{INGEST_STREAM, IngestPartition, IngestRecord};
use crate::ingest_tail::TailRead;
use crate::message::{MessageContext, MqttProperties, Payload, RuleEnv};
use crate::sql::EvalError;

/// The consumer group whose checkpoint is the partition's committed position.
pub(crate) const GROUP: &str = "rules";

/// Owner name of the readers' leases: stable across restarts, so a restarted server takes its
/// leases back at once instead of waiting for them to lapse.
const OWNER: &str = "fleetcore-rules";

/// How often the committed position is written while records flow.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The last checkpoint written and when the lease was last renewed.
#[derive(Default)]
struct Checkpointed {
    position: Option<Position>,
    leased: Option<Instant>,
}

/// What one partition reader runs on.
pub(crate) struct PartitionReader {
    pub number: usize,
    pub partition: Arc<IngestPartition>,
    pub index: Arc<RuleIndex>,
    pub progress: Arc<Progress>,
    pub env: RuleEnv,
    pub config: Arc<RuntimeConfig>,
}

impl PartitionReader {
    /// Where the partition resumes: its checkpoint, or its oldest record on a first start (so
    /// nothing appended before the reader started is missed).
    pub(crate) async fn start_position(
        partition: &IngestPartition,
        lease_ttl: Duration,
    ) -> Result<Position, StreamError> {
        let stream = partition.stream.as_ref();
        if let Some(position) = stream
            .checkpoint_of(INGEST_STREAM, GROUP, partition.shard)
            .await?
        {
            return Ok(position);
        }
        stream
            .acquire_lease(INGEST_STREAM, GROUP, partition.shard, OWNER, lease_ttl)
            .await?;
        stream
            .resolve(
                INGEST_STREAM,
                partition.shard,
                StartingPosition::TrimHorizon,
            )
            .await
    }

    /// Reads until `stop` turns true, then waits (up to the grace period) for the pending
    /// deliveries and writes the last checkpoint.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut cursor = self.progress.committed();
        let mut checkpointed = Checkpointed::default();
        let mut last_checkpoint = Instant::now();
        let mut matched = Vec::new();
        let mut handoff = Handoff::default();
        loop {
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint(&mut checkpointed).await;
                last_checkpoint = Instant::now();
            }
            // Caught up: the records just appended, from memory; behind: from the log.
            let (records, next) = match self.partition.recent.read(cursor, self.config.batch_limit)
            {
                TailRead::Records(records) => {
                    let Some(last) = records.last() else {
                        tokio::select! {
                            biased;
                            _ = stop.wait_for(|s| *s) => break,
                            () = self.partition.recent.wait_past(cursor, CHECKPOINT_EVERY) => continue,
                        }
                    };
                    let next = Position::after(last.sequence);
                    (records, next)
                }
                TailRead::Behind => match self.read_log(cursor, &mut stop).await {
                    Some(Some(batch)) => (batch.records, batch.next),
                    Some(None) => continue,
                    None => break,
                },
            };
            // A full lane can hold a record's dispatch up for as long as its action retries; a
            // stop does not wait for it (the record is read again after the restart).
            let dispatched = async {
                for record in &records {
                    // Outputs wait for the end of the batch, unless a rule called a function
                    // (which may take long): then what is ready goes now.
                    if self.dispatch(record, &mut matched, &mut handoff).await {
                        handoff.flush().await;
                    }
                }
                handoff.flush().await;
            };
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = dispatched => {}
            }
            cursor = next;
            self.progress.advance(cursor);
        }
        if tokio::time::timeout(self.config.stop_grace, self.progress.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                partition = self.number,
                "rule actions still pending at shutdown: they run again after the restart"
            );
        }
        self.checkpoint(&mut checkpointed).await;
    }

    /// Reads the ingest log at `cursor`: a batch of records; `Some(None)` when there is none
    /// yet (after waiting for one, or after a failed read and a pause); `None` on stop.
    async fn read_log(
        &self,
        cursor: Position,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Option<ReadBatch>> {
        let stream = self.partition.stream.as_ref();
        let shard = self.partition.shard;
        let read = stream.read(INGEST_STREAM, shard, cursor, self.config.batch_limit);
        let batch = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return None,
            batch = read => batch,
        };
        match batch {
            Ok(batch) if !batch.records.is_empty() => Some(Some(batch)),
            Ok(_) => {
                let wait = stream.wait_for_records(INGEST_STREAM, shard, cursor, CHECKPOINT_EVERY);
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    _ = wait => Some(None),
                }
            }
            Err(error) => {
                tracing::warn!(partition = self.number, %error, "reading the ingest log failed; retrying");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => Some(None),
                }
            }
        }
    }

    /// Writes the committed position if it moved (renewing the lease first when a third of
    /// its TTL has passed).
    async fn checkpoint(&self, checkpointed: &mut Checkpointed) {
        let committed = self.progress.committed();
        if checkpointed.position == Some(committed) {
            return;
        }
        let stream = self.partition.stream.as_ref();
        let shard = self.partition.shard;
        let renew = checkpointed
            .leased
            .is_none_or(|at| at.elapsed() >= self.config.lease_ttl / 3);
        let result = async {
            if renew {
                stream
                    .acquire_lease(INGEST_STREAM, GROUP, shard, OWNER, self.config.lease_ttl)
                    .await?;
                checkpointed.leased = Some(Instant::now());
            }
            stream
                .checkpoint(INGEST_STREAM, GROUP, shard, OWNER, committed)
                .await
        }
        .await;
        match result {
            Ok(()) => checkpointed.position = Some(committed),
            // Not fatal: the records after the last checkpoint are read again after a restart.
            Err(error) => {
                tracing::warn!(partition = self.number, %error, "ingest checkpoint failed")
            }
        }
    }

    /// Runs every matching rule on one record and adds its outputs to `handoff`, for the
    /// rule's actions; true if a rule's statement calls functions (`aws_lambda`).
    async fn dispatch(
        &self,
        record: &Record,
        matched: &mut Vec<Arc<RunningRule>>,
        handoff: &mut Handoff,
    ) -> bool {
        let stored = match IngestRecord::decode(&record.data) {
            Ok(stored) => stored,
            Err(error) => {
                events::undecodable(self.number, &error);
                return false;
            }
        };
        matched.clear();
        self.index.matching(&stored.topic, matched);
        let position = record.sequence.0;
        matched.retain(|rule| {
            rule.starts
                .get(self.number)
                .is_none_or(|start| start.0 <= position)
        });
        if matched.is_empty() {
            return false;
        }
        let called = matched.iter().any(|r| r.rule.statement.calls_functions());
        let trace_id = TraceId::of(self.number, position);
        let received_at_ms = record
            .arrival
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let message = MessageContext {
            topic: &stored.topic,
            client_id: stored.client_id.as_deref(),
            principal: stored.principal.as_deref(),
            payload: &stored.payload,
            received_at_ms,
            properties: MqttProperties {
                trace_id: Some(trace_id.as_str()),
                user_properties: &stored.user_properties,
                content_type: stored.content_type.as_deref(),
                payload_format_utf8: stored.payload_format_indicator.map(|f| f == 1),
                response_topic: stored.response_topic.as_deref(),
                correlation_data: stored.correlation_data.as_deref(),
            },
        };
        let payload = Payload::parse(&stored.payload);
        let expand = |action: &dyn Action| -> Vec<String> {
            action
                .templates()
                .iter()
                .map(|t| t.expand(&message, &payload, &self.env))
                .collect()
        };
        let origin_of = |rule: &RunningRule| Origin {
            rule: Arc::clone(&rule.name),
            partition: self.number,
            position,
            record: record.data.clone(),
            error_params: rule.error_action.as_deref().map(|a| expand(a).into()),
        };
        for rule in matched.drain(..) {
            rule.events.matched();
            rule.events.evaluated();
            let body = match rule
                .rule
                .statement
                .evaluate_calling(&message, &payload, &self.env, &record.data)
                .await
            {
                Ok(Some(body)) => body,
                Ok(None) => continue,
                Err(error) => {
                    rule.events.eval_error(&error);
                    // A failed aws_lambda call is the rule's failure (AWS runs its error action).
                    if let EvalError::FunctionCall {
                        function,
                        message: why,
                    } = &error
                        && let Some(error_action) = &rule.error_action
                        && let Err(failure) = fire_error_action(
                            &**error_action,
                            &self.config,
                            &origin_of(&rule),
                            "aws_lambda",
                            function,
                            why,
                        )
                        .await
                    {
                        rule.events.eval_error(&failure);
                    }
                    continue;
                }
            };
            let origin = origin_of(&rule);
            self.progress.hold(
                position,
                u32::try_from(rule.lanes.len()).unwrap_or(u32::MAX),
            );
            for lane in &rule.lanes {
                let item = Prepared {
                    body: body.clone(),
                    params: expand(lane.action()),
                };
                handoff.add(
                    lane,
                    Pending {
                        item,
                        origin: origin.clone(),
                    },
                );
            }
        }
        called
    }
}

/// The outputs of one read batch, grouped by action lane, so that each lane takes them in one
/// push (one lock, one wake-up of its drain task) instead of one per message. Each lane gets its
/// messages in record order. Kept by the reader and reused from batch to batch.
#[derive(Default)]
struct Handoff {
    /// Lanes with outputs waiting, in the order they were first given one.
    lanes: Vec<(Arc<ActionLane>, VecDeque<Pending>)>,
    /// A lane's index in `lanes`, by the lane's address (unique while `lanes` holds the lane).
    by_lane: HashMap<usize, usize>,
}

impl Handoff {
    /// Adds `pending` for `lane`, after what it already holds for it.
    fn add(&mut self, lane: &Arc<ActionLane>, pending: Pending) {
        let lanes = &mut self.lanes;
        let at = *self
            .by_lane
            .entry(Arc::as_ptr(lane) as usize)
            .or_insert_with(|| {
                lanes.push((Arc::clone(lane), VecDeque::new()));
                lanes.len() - 1
            });
        lanes[at].1.push_back(pending);
    }

    /// Queues what it holds on each lane (waiting for room where a lane is full) and empties it.
    async fn flush(&mut self) {
        for (lane, batch) in &mut self.lanes {
            lane.push_all(batch).await;
        }
        self.lanes.clear();
        self.by_lane.clear();
    }
}
