//! The platform's own log events in CloudWatch Logs, as AWS IoT's logging writes them: the log
//! group `AWSIotLogsV2` gets rule evaluation and action failures (eventType `RuleExecution`) and
//! authorization failures with the client id and the reason (`Connect`, `Publish-In`,
//! `Subscribe`), one JSON document per event in AWS IoT's v2 log format.
//!
//! The capabilities already emit each of these through one typed tracing event (they log and
//! count in one function); [`PlatformLogLayer`] picks those events out of the tracing stream, so
//! no capability depends on this crate. The layer hands them to a bounded queue
//! ([`QUEUE_DEPTH`]); when it is full the event is dropped and counted
//! (`fleetcore_observe_platform_logs_dropped_total`): logging never slows the message path.
//! [`start_writer`] drains the queue into the log store in batches. [`set_level`] is the
//! account's logging options (SetV2LoggingOptions) as the layer honours them: events above the
//! level set, or all of them when logging is disabled, are not written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::{InputEvent, LogStore};
use crate::cloudwatch::now_secs;

/// The log group AWS IoT writes to.
pub const GROUP: &str = "AWSIotLogsV2";
/// The stream this server writes its events to.
pub const STREAM: &str = "fleetcore";
/// Events waiting for the writer before new ones are dropped.
pub const QUEUE_DEPTH: usize = 4096;

static QUEUE: OnceLock<mpsc::Sender<InputEvent>> = OnceLock::new();

/// The most verbose level written, as [`rank`] numbers it (0: nothing); INFO until set.
static LEVEL: AtomicU8 = AtomicU8::new(3);

/// 1 for ERROR up to 5 for TRACE.
fn rank(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

/// Writes events up to `level` from now on; `None` writes none (logging disabled).
pub fn set_level(level: Option<tracing::Level>) {
    LEVEL.store(level.as_ref().map_or(0, rank), Ordering::Relaxed);
}

/// Whether an event at `level` is written under the level set.
fn written(level: &tracing::Level) -> bool {
    rank(level) <= LEVEL.load(Ordering::Relaxed)
}

/// A tracing layer that turns the platform's failure events into `AWSIotLogsV2` entries.
pub struct PlatformLogLayer {
    account_id: String,
}

impl PlatformLogLayer {
    /// A layer writing entries for `account_id`.
    pub fn new(account_id: &str) -> PlatformLogLayer {
        PlatformLogLayer {
            account_id: account_id.to_string(),
        }
    }
}

#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PlatformLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let Some(queue) = QUEUE.get() else { return };
        if !written(event.metadata().level()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(document) = entry(&fields.0, &self.account_id, event.metadata().level()) else {
            return;
        };
        let message = InputEvent {
            timestamp: (now_secs() * 1000.0) as i64,
            message: document.to_string(),
        };
        if queue.try_send(message).is_err() {
            metrics::counter!("fleetcore_observe_platform_logs_dropped_total").increment(1);
        }
    }
}

/// The AWS IoT v2 log document for a platform event, if it is one that is logged.
fn entry(
    fields: &BTreeMap<&'static str, String>,
    account_id: &str,
    level: &tracing::Level,
) -> Option<serde_json::Value> {
    let get = |k: &str| fields.get(k).cloned();
    let message = fields.get("message")?.as_str();
    let level = if *level == tracing::Level::ERROR {
        "ERROR"
    } else if *level == tracing::Level::WARN {
        "WARN"
    } else {
        "INFO"
    };
    let timestamp = time_text();
    let mut doc = json!({
        "timestamp": timestamp,
        "logLevel": level,
        "accountId": account_id,
        "status": "Failure",
    });
    match message {
        "rule evaluation failed" => {
            doc["eventType"] = json!("RuleExecution");
            doc["ruleName"] = json!(get("rule")?);
            doc["details"] = json!(format!("Rule evaluation failed: {}", get("error")?));
        }
        "rule action failed" | "rule error action failed; message given up" => {
            doc["eventType"] = json!("RuleExecution");
            doc["ruleName"] = json!(get("rule")?);
            let action = get("action").unwrap_or_default();
            doc["ruleAction"] = json!(action.split_once(':').map_or(action.as_str(), |(_, k)| k));
            doc["details"] = json!(get("error")?);
            if message != "rule action failed" {
                doc["reason"] = json!("The error action failed too; the message was given up");
            }
        }
        "not authorized" => {
            let action = get("action").unwrap_or_default();
            doc["eventType"] = json!(match action.as_str() {
                "publish" => "Publish-In",
                "subscribe" => "Subscribe",
                "receive" => "Publish-Out",
                "connect" => "Connect",
                other => other,
            });
            doc["clientId"] = json!(get("client_id")?);
            doc["topicName"] = json!(get("resource").unwrap_or_default());
            doc["details"] = json!("Authorization Failure");
            doc["reason"] = json!(format!("AUTHORIZATION_FAILURE: not allowed to {action}"));
        }
        "connection not authorized" | "bad credentials" => {
            doc["eventType"] = json!("Connect");
            doc["clientId"] = json!(get("client_id")?);
            doc["sourceIp"] = json!(get("peer").unwrap_or_default());
            doc["details"] = json!(if message == "bad credentials" {
                "Authentication Failure"
            } else {
                "Authorization Failure"
            });
            doc["reason"] = json!(get("why").unwrap_or_else(|| message.to_string()));
        }
        _ => return None,
    }
    Some(doc)
}

/// `2017-08-10 15:37:23.476`, AWS IoT's log timestamp form (UTC).
fn time_text() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Starts the task that writes queued platform events into `store` (once per process).
pub fn start_writer(store: Arc<LogStore>) -> Option<tokio::task::JoinHandle<()>> {
    let (sender, mut receiver) = mpsc::channel(QUEUE_DEPTH);
    QUEUE.set(sender).ok()?;
    Some(tokio::spawn(async move {
        let mut batch = Vec::new();
        while receiver.recv_many(&mut batch, 1000).await > 0 {
            let events = std::mem::take(&mut batch);
            let store = Arc::clone(&store);
            let written =
                tokio::task::spawn_blocking(move || store.append(GROUP, STREAM, &events)).await;
            if let Ok(Err(e)) = written {
                tracing::debug!(error = %e, "platform log events not stored");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_and_authorization_failures_become_aws_iot_entries() {
        let fields = BTreeMap::from([
            ("message", "rule action failed".to_string()),
            ("rule", "r1".to_string()),
            ("action", "0:republish".to_string()),
            ("error", "boom".to_string()),
        ]);
        let doc = entry(&fields, "000000000000", &tracing::Level::WARN).expect("entry");
        assert_eq!(doc["eventType"], "RuleExecution");
        assert_eq!(doc["ruleName"], "r1");
        assert_eq!(doc["ruleAction"], "republish");
        assert_eq!(doc["logLevel"], "WARN");
        let fields = BTreeMap::from([
            ("message", "not authorized".to_string()),
            ("client_id", "dev1".to_string()),
            ("action", "publish".to_string()),
            ("resource", "a/b".to_string()),
        ]);
        let doc = entry(&fields, "000000000000", &tracing::Level::INFO).expect("entry");
        assert_eq!(doc["eventType"], "Publish-In");
        assert_eq!(doc["clientId"], "dev1");
        assert_eq!(doc["topicName"], "a/b");
        let other = BTreeMap::from([("message", "client connected".to_string())]);
        assert!(entry(&other, "0", &tracing::Level::INFO).is_none());
    }

    #[test]
    fn the_level_set_gates_events() {
        set_level(Some(tracing::Level::WARN));
        assert!(written(&tracing::Level::ERROR) && written(&tracing::Level::WARN));
        assert!(!written(&tracing::Level::INFO));
        set_level(None);
        assert!(!written(&tracing::Level::ERROR));
        set_level(Some(tracing::Level::INFO));
        assert!(written(&tracing::Level::INFO) && !written(&tracing::Level::DEBUG));
    }

    #[test]
    fn timestamps_have_aws_iot_form() {
        let t = time_text();
        assert_eq!(t.len(), 23, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }
}
