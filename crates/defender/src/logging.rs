//! AWS IoT's account logging options (SetV2LoggingOptions / GetV2LoggingOptions of the `iot`
//! service): whether, and from which level, the platform writes its own log events (rule
//! failures, authorization failures) to CloudWatch Logs' `AWSIotLogsV2`. They are kept in the
//! store and handed, at open and at every change, to the log writer through a [`LogGate`] the
//! binary wires, so this crate does not depend on the writer's.
//!
//! They live here because the audit check `LOGGING_DISABLED_CHECK` and the mitigation action
//! `ENABLE_IOT_LOGGING` are their other readers and writers. Unlike AWS, where logging is off
//! until configured, fleetcore logs at INFO from the first start; GetV2LoggingOptions answers
//! those defaults until they are set. Per-target levels (SetV2LoggingLevel and its siblings)
//! are not built: they answer as unknown operations.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use fleetcore_api::ApiError;
use fleetcore_api::extract::Json;
use fleetcore_core::{KvStore, WriteBatch};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::DefenderError;

const TABLE: &str = "iot_logging";
const OPTIONS_KEY: &[u8] = b"v2";

/// A log level of AWS IoT's logging options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Informational events and above.
    Info,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Nothing.
    Disabled,
}

impl LogLevel {
    /// Parses AWS's name (`DEBUG`, `INFO`, `ERROR`, `WARN`, `DISABLED`).
    pub fn parse(text: &str) -> Result<LogLevel, DefenderError> {
        Ok(match text {
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "ERROR" => LogLevel::Error,
            "WARN" => LogLevel::Warn,
            "DISABLED" => LogLevel::Disabled,
            other => {
                return Err(DefenderError::Invalid(format!(
                    "{other:?} is not a log level (DEBUG, INFO, ERROR, WARN, DISABLED)"
                )));
            }
        })
    }
}

/// The account's v2 logging options, as GetV2LoggingOptions writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingOptions {
    /// `roleArn` (AWS's role for writing to CloudWatch; fleetcore writes its own logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `defaultLogLevel`.
    pub default_log_level: LogLevel,
    /// `disableAllLogs`.
    pub disable_all_logs: bool,
}

impl Default for LoggingOptions {
    fn default() -> LoggingOptions {
        LoggingOptions {
            role_arn: None,
            default_log_level: LogLevel::Info,
            disable_all_logs: false,
        }
    }
}

impl LoggingOptions {
    /// The most verbose level written, `None` when logging is disabled.
    pub fn threshold(&self) -> Option<tracing::Level> {
        if self.disable_all_logs {
            return None;
        }
        match self.default_log_level {
            LogLevel::Debug => Some(tracing::Level::DEBUG),
            LogLevel::Info => Some(tracing::Level::INFO),
            LogLevel::Warn => Some(tracing::Level::WARN),
            LogLevel::Error => Some(tracing::Level::ERROR),
            LogLevel::Disabled => None,
        }
    }
}

/// What SetV2LoggingOptions sets (absent fields keep their value).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingChange {
    /// `roleArn`.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// `defaultLogLevel`.
    #[serde(default)]
    pub default_log_level: Option<String>,
    /// `disableAllLogs`.
    #[serde(default)]
    pub disable_all_logs: Option<bool>,
}

/// Hands the log writer the most verbose level to write (`None`: write nothing).
pub type LogGate = Arc<dyn Fn(Option<tracing::Level>) + Send + Sync>;

/// The account's logging options, applied to the log writer.
pub struct IotLogging {
    store: Arc<dyn KvStore>,
    gate: LogGate,
    writing: Mutex<()>,
}

impl IotLogging {
    /// The options kept in `store` (the defaults if never set), applied through `gate` now.
    pub fn open(store: Arc<dyn KvStore>, gate: LogGate) -> Result<IotLogging, DefenderError> {
        let logging = IotLogging {
            store,
            gate,
            writing: Mutex::new(()),
        };
        (logging.gate)(logging.options()?.threshold());
        Ok(logging)
    }

    /// The options in force.
    pub fn options(&self) -> Result<LoggingOptions, DefenderError> {
        match self.store.get(TABLE, OPTIONS_KEY)? {
            None => Ok(LoggingOptions::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DefenderError::Store(fleetcore_core::StoreError::Backend {
                    operation: "decode",
                    message: format!("the stored logging options do not parse: {e}"),
                })
            }),
        }
    }

    /// Applies `change` (checked first: a bad one changes nothing), stores it and hands the
    /// writer the new level; the options now in force.
    pub fn set(&self, change: LoggingChange) -> Result<LoggingOptions, DefenderError> {
        let level = change
            .default_log_level
            .as_deref()
            .map(LogLevel::parse)
            .transpose()?;
        if let Some(arn) = &change.role_arn
            && !(arn.starts_with("arn:") && arn.contains(":iam:"))
        {
            return Err(DefenderError::Invalid(format!(
                "roleArn {arn:?} is not an IAM role ARN"
            )));
        }
        let _writing = self.writing.lock();
        let mut options = self.options()?;
        if change.role_arn.is_some() {
            options.role_arn = change.role_arn;
        }
        if let Some(level) = level {
            options.default_log_level = level;
        }
        if let Some(disable) = change.disable_all_logs {
            options.disable_all_logs = disable;
        }
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            OPTIONS_KEY,
            serde_json::to_vec(&options).unwrap_or_default(),
        );
        self.store.apply(batch)?;
        (self.gate)(options.threshold());
        Ok(options)
    }
}

type Answer = Result<axum::Json<Value>, ApiError>;

/// The routes; register with `ControlPlane::service_routes("iot", routes(logging))`.
pub fn routes(logging: Arc<IotLogging>) -> Router {
    Router::new()
        .route("/v2LoggingOptions", get(get_options).post(set_options))
        .with_state(logging)
}

async fn get_options(State(l): State<Arc<IotLogging>>) -> Answer {
    Ok(axum::Json(json!(l.options()?)))
}

async fn set_options(
    State(l): State<Arc<IotLogging>>,
    Json(change): Json<LoggingChange>,
) -> Answer {
    l.set(change)?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_persist_and_reach_the_gate() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn KvStore> =
            Arc::new(fleetcore_core::RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate: LogGate = {
            let seen = Arc::clone(&seen);
            Arc::new(move |level| seen.lock().push(level))
        };
        let logging = IotLogging::open(Arc::clone(&store), Arc::clone(&gate)).expect("open");
        assert_eq!(
            logging.options().expect("options"),
            LoggingOptions::default()
        );
        let bad = logging.set(LoggingChange {
            default_log_level: Some("LOUD".into()),
            disable_all_logs: Some(true),
            ..LoggingChange::default()
        });
        assert!(matches!(bad, Err(DefenderError::Invalid(_))));
        logging
            .set(LoggingChange {
                default_log_level: Some("WARN".into()),
                ..LoggingChange::default()
            })
            .expect("set");
        logging
            .set(LoggingChange {
                disable_all_logs: Some(true),
                ..LoggingChange::default()
            })
            .expect("set");
        assert_eq!(
            *seen.lock(),
            [Some(tracing::Level::INFO), Some(tracing::Level::WARN), None]
        );
        drop(logging);
        let reopened = IotLogging::open(store, gate).expect("reopen");
        let options = reopened.options().expect("options");
        assert_eq!(options.default_log_level, LogLevel::Warn);
        assert!(options.disable_all_logs);
        assert_eq!(seen.lock().last(), Some(&None));
    }
}
