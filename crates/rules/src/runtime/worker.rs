//! One worker per action of an enabled rule: reads the ingest stream through its own consumer
//! group, runs the rule on each message, delivers the batch with retries, hands what keeps
//! failing to the error action, then commits the checkpoint. A slow or failing action delays
//! only its own worker.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use fleetcore_stream::{ConsumerConfig, ConsumerGroup, Record, StartingPosition, Stream};
use serde_json::json;
use tokio::sync::watch;

use super::RuntimeConfig;
use super::events::{self, Labels};
use crate::actions::{Action, Prepared};
use crate::ingest::{INGEST_STREAM, IngestRecord};
use crate::message::{MessageContext, MqttProperties, Outcome, Payload, RuleEnv};
use crate::registry::TopicRule;

/// Owner name of every rules worker's leases: stable across restarts, so a restarted server
/// takes its leases back at once instead of waiting for them to lapse.
pub(crate) const OWNER: &str = "fleetcore-rules";

/// What one worker runs.
pub(crate) struct Worker {
    pub rule: Arc<TopicRule>,
    pub action: Arc<dyn Action>,
    pub error_action: Option<Arc<dyn Action>>,
    pub env: RuleEnv,
    pub labels: Labels,
    pub group: String,
    pub config: RuntimeConfig,
}

/// A message that reached the action, with what the error payload needs.
struct Origin {
    topic: String,
    client_id: Option<String>,
    trace_id: String,
    payload: Bytes,
    /// The error action's templates, expanded for this message.
    error_params: Vec<String>,
}

/// The trace id of an ingested message: its sequence number in the ingest log, shaped as a
/// UUID, so it is unique and the same on every delivery attempt.
pub(crate) fn trace_id(record: &Record) -> String {
    let n = record.sequence.0;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (n >> 96) as u32,
        (n >> 80) as u16,
        (n >> 64) as u16,
        (n >> 48) as u16,
        n as u64 & 0xffff_ffff_ffff
    )
}

impl Worker {
    /// Runs until `stop` turns true (between batches).
    pub(crate) async fn run(self, ingest: Arc<dyn Stream>, mut stop: watch::Receiver<bool>) {
        let mut group = ConsumerGroup::new(
            ingest,
            INGEST_STREAM,
            self.group.clone(),
            OWNER,
            ConsumerConfig {
                lease_ttl: self.config.lease_ttl,
                batch_limit: self.config.batch_limit,
                start: StartingPosition::Latest,
            },
        );
        loop {
            let batch = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                batch = group.next() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(rule = %self.labels.rule, action = %self.labels.action, %error, "reading the ingest log failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.process(&batch.records).await;
            if let Err(error) = group.commit(&batch).await {
                // The batch is read again (at least once).
                tracing::warn!(rule = %self.labels.rule, action = %self.labels.action, %error, "checkpoint failed");
            }
        }
    }

    /// Runs the rule on the records and delivers what it produces.
    async fn process(&self, records: &[Record]) {
        let (items, origins) = self.prepare(records);
        if items.is_empty() {
            return;
        }
        let outcomes = deliver(&*self.action, &items, &self.config, &self.labels).await;
        let mut delivered = 0;
        for ((outcome, item), origin) in outcomes.into_iter().zip(&items).zip(&origins) {
            match outcome {
                Ok(()) => delivered += 1,
                Err(error) => {
                    events::failed(&self.labels, &error);
                    self.run_error_action(item, origin, &error).await;
                }
            }
        }
        events::succeeded(&self.labels, delivered);
    }

    fn prepare(&self, records: &[Record]) -> (Vec<Prepared>, Vec<Origin>) {
        let statement = &self.rule.statement;
        let mut items = Vec::new();
        let mut origins = Vec::new();
        let (mut matched, mut evaluated) = (0, 0);
        for record in records {
            let stored = match IngestRecord::decode(&record.data) {
                Ok(stored) => stored,
                Err(error) => {
                    events::undecodable(&self.labels, &error);
                    continue;
                }
            };
            if !statement.matches_topic(&stored.topic) {
                continue;
            }
            matched += 1;
            let trace_id = trace_id(record);
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
                    trace_id: Some(&trace_id),
                    user_properties: &stored.user_properties,
                    ..MqttProperties::default()
                },
            };
            let payload = Payload::parse(&stored.payload);
            evaluated += 1;
            let body = match statement.evaluate(&message, &payload, &self.env) {
                Ok(Outcome::NoMatch) => continue,
                Ok(Outcome::Json(v)) => Bytes::from(v.to_string()),
                Ok(Outcome::Bytes(b)) => Bytes::copy_from_slice(b),
                Err(error) => {
                    events::eval_error(&self.labels, &error);
                    continue;
                }
            };
            let expand = |action: &dyn Action| -> Vec<String> {
                action
                    .templates()
                    .iter()
                    .map(|t| t.expand(&message, &payload, &self.env))
                    .collect()
            };
            items.push(Prepared {
                body,
                params: expand(&*self.action),
            });
            origins.push(Origin {
                topic: stored.topic.to_string(),
                client_id: stored.client_id.as_deref().map(str::to_string),
                trace_id: trace_id.clone(),
                payload: Bytes::copy_from_slice(&stored.payload),
                error_params: self.error_action.as_deref().map(expand).unwrap_or_default(),
            });
        }
        events::matched(&self.labels, matched);
        events::evaluated(&self.labels, evaluated);
        (items, origins)
    }

    /// Hands a message the action gave up on to the rule's error action, with AWS's error
    /// payload; if that fails too, the message is logged, counted and given up.
    async fn run_error_action(&self, item: &Prepared, origin: &Origin, error: &str) {
        let Some(error_action) = &self.error_action else {
            events::dropped(&self.labels);
            return;
        };
        events::error_action_fired(&self.labels);
        let report = json!({
            "ruleName": self.rule.record.name,
            "topic": origin.topic,
            "cloudwatchTraceId": origin.trace_id,
            "traceId": origin.trace_id,
            "clientId": origin.client_id.as_deref().unwrap_or("n/a"),
            "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(&origin.payload),
            "failures": [{
                "failedAction": self.action.name(),
                "failedResource": self.action.resource(&item.params),
                "errorMessage": error,
            }],
        });
        let report = [Prepared {
            body: Bytes::from(report.to_string()),
            params: origin.error_params.clone(),
        }];
        let labels = Labels {
            rule: self.labels.rule.clone(),
            action: format!("{}:errorAction", self.labels.action),
        };
        if let Some(Err(error)) = deliver(&**error_action, &report, &self.config, &labels)
            .await
            .pop()
        {
            events::error_action_failed(&self.labels, &error);
        }
    }
}

/// Delivers `items`, retrying the failed ones with exponential backoff up to the configured
/// number of attempts; returns the last outcome of each.
async fn deliver(
    action: &dyn Action,
    items: &[Prepared],
    config: &RuntimeConfig,
    labels: &Labels,
) -> Vec<Result<(), String>> {
    let mut outcomes: Vec<Result<(), String>> = vec![Err("not attempted".into()); items.len()];
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut backoff = config.initial_backoff;
    for attempt in 1..=config.max_attempts.max(1) {
        let batch: Vec<Prepared> = pending.iter().map(|&i| items[i].clone()).collect();
        let started = Instant::now();
        let results = action.deliver(&batch).await;
        events::attempt(labels, started.elapsed());
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
