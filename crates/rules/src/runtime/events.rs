//! What the rules runtime counts, each event one function that increments its metric (labels
//! `rule` and `action`, the action's index and kind such as `0:kinesis`) and, for failures,
//! logs it.

use std::time::Duration;

/// The labels of one action worker.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub rule: String,
    pub action: String,
}

impl Labels {
    fn pairs(&self) -> [(&'static str, String); 2] {
        [("rule", self.rule.clone()), ("action", self.action.clone())]
    }
}

/// A message's topic matched the rule's filter.
pub(crate) fn matched(labels: &Labels, count: u64) {
    metrics::counter!("fleetcore_rules_matched_total", &labels.pairs()).increment(count);
}

/// The statement ran on a message (its WHERE held or not).
pub(crate) fn evaluated(labels: &Labels, count: u64) {
    metrics::counter!("fleetcore_rules_evaluated_total", &labels.pairs()).increment(count);
}

/// The statement could not produce a message.
pub(crate) fn eval_error(labels: &Labels, error: &dyn std::fmt::Display) {
    tracing::warn!(rule = %labels.rule, action = %labels.action, %error, "rule evaluation failed");
    metrics::counter!("fleetcore_rules_eval_errors_total", &labels.pairs()).increment(1);
}

/// A stored ingest record could not be read (skipped).
pub(crate) fn undecodable(labels: &Labels, error: &dyn std::fmt::Display) {
    tracing::error!(rule = %labels.rule, action = %labels.action, %error, "unreadable ingest record skipped");
    metrics::counter!("fleetcore_rules_undecodable_total", &labels.pairs()).increment(1);
}

/// One delivery attempt of a batch took `elapsed`.
pub(crate) fn attempt(labels: &Labels, elapsed: Duration) {
    metrics::histogram!("fleetcore_rules_action_seconds", &labels.pairs())
        .record(elapsed.as_secs_f64());
}

/// Messages the action delivered.
pub(crate) fn succeeded(labels: &Labels, count: u64) {
    metrics::counter!("fleetcore_rules_action_succeeded_total", &labels.pairs()).increment(count);
}

/// A message the action could not deliver after every attempt.
pub(crate) fn failed(labels: &Labels, error: &str) {
    tracing::warn!(rule = %labels.rule, action = %labels.action, %error, "rule action failed");
    metrics::counter!("fleetcore_rules_action_failed_total", &labels.pairs()).increment(1);
}

/// The error action was run for a failed message.
pub(crate) fn error_action_fired(labels: &Labels) {
    metrics::counter!("fleetcore_rules_error_action_fired_total", &labels.pairs()).increment(1);
}

/// The error action failed too: the message is given up.
pub(crate) fn error_action_failed(labels: &Labels, error: &str) {
    tracing::error!(rule = %labels.rule, action = %labels.action, %error, "rule error action failed; message given up");
    metrics::counter!("fleetcore_rules_error_action_failed_total", &labels.pairs()).increment(1);
}

/// A failed message of a rule without an error action: given up.
pub(crate) fn dropped(labels: &Labels) {
    metrics::counter!("fleetcore_rules_dropped_total", &labels.pairs()).increment(1);
}
