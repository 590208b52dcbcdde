//! The seam through which capabilities write to CloudWatch (the rules `cloudwatchMetric`,
//! `cloudwatchLogs` and `cloudwatchAlarm` actions): `fleetcore-observe` implements it and the
//! binary wires it, so no capability depends on the observability crate.

use std::future::Future;
use std::pin::Pin;

/// One metric value, as PutMetricData takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The namespace (not `AWS/...`).
    pub namespace: String,
    /// The metric name.
    pub name: String,
    /// The value.
    pub value: f64,
    /// A CloudWatch unit (`Count`, `Seconds`, ...), if given.
    pub unit: Option<String>,
    /// When, epoch seconds; now if absent.
    pub timestamp: Option<f64>,
}

/// Why a CloudWatch write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudWatchError {
    /// The request is invalid (bad unit, unknown alarm, value out of range).
    #[error("{0}")]
    Invalid(String),
    /// The service failed.
    #[error("CloudWatch failed: {0}")]
    Service(String),
}

/// The future every write returns: done once the write is stored.
pub type CloudWatchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), CloudWatchError>> + Send + 'a>>;

/// Writes metrics, log events and alarm states.
pub trait CloudWatchSink: Send + Sync + 'static {
    /// Stores one metric value.
    fn put_metric(&self, metric: MetricValue) -> CloudWatchFuture<'_>;

    /// Appends `messages` (epoch milliseconds, text) to `stream` of `group` (both created if
    /// missing).
    fn put_log_events<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        messages: Vec<(i64, String)>,
    ) -> CloudWatchFuture<'a>;

    /// Sets alarm `alarm` to `state` (`OK`, `ALARM`, `INSUFFICIENT_DATA`) with `reason`.
    fn set_alarm_state<'a>(
        &'a self,
        alarm: &'a str,
        state: &'a str,
        reason: &'a str,
    ) -> CloudWatchFuture<'a>;
}

/// Takes the functions' invocation logs into CloudWatch Logs (`/aws/lambda/<function>`) without
/// waiting: the implementor queues them (bounded; what does not fit is dropped and counted) and
/// stores them in batches, so an invocation never waits for the log store.
pub trait InvocationLogSink: Send + Sync + 'static {
    /// Takes the framed logs (`START` ... `REPORT`) of one or more invocations of `function` at
    /// `version`, one after another in the order they ran (a batch is handed over at once).
    fn invocation_log(&self, function: &str, version: &str, log: &str);
}
