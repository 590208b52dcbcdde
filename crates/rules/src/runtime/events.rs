//! What the rules runtime counts, each event one function that increments its metric and, for
//! failures, logs it. A rule's counters carry the label `rule`; an action's carry `rule` and
//! `action` (the action's index and kind, such as `0:kinesis`). The handles are registered once,
//! when the rule is put in the index, so the message path touches no label strings.

use std::time::Duration;

use metrics::{Counter, Histogram};

/// The counters of one rule: it is evaluated once per message, whatever its actions.
pub(crate) struct RuleEvents {
    rule: String,
    matched: Counter,
    evaluated: Counter,
    eval_errors: Counter,
}

impl RuleEvents {
    /// Registers the counters of rule `rule`.
    pub(crate) fn new(rule: &str) -> RuleEvents {
        let labels = [("rule", rule.to_string())];
        RuleEvents {
            rule: rule.to_string(),
            matched: metrics::counter!("fleetcore_rules_matched_total", &labels),
            evaluated: metrics::counter!("fleetcore_rules_evaluated_total", &labels),
            eval_errors: metrics::counter!("fleetcore_rules_eval_errors_total", &labels),
        }
    }

    /// A message's topic matched the rule's filter.
    pub(crate) fn matched(&self) {
        self.matched.increment(1);
    }

    /// The statement ran on a message (its WHERE held or not).
    pub(crate) fn evaluated(&self) {
        self.evaluated.increment(1);
    }

    /// The statement could not produce a message.
    pub(crate) fn eval_error(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(rule = %self.rule, %error, "rule evaluation failed");
        self.eval_errors.increment(1);
    }
}

/// A stored ingest record could not be read (skipped).
pub(crate) fn undecodable(partition: usize, error: &dyn std::fmt::Display) {
    tracing::error!(partition, %error, "unreadable ingest record skipped");
    metrics::counter!("fleetcore_rules_undecodable_total").increment(1);
}

/// The counters of one action of a rule.
pub(crate) struct ActionEvents {
    rule: String,
    action: String,
    seconds: Histogram,
    succeeded: Counter,
    failed: Counter,
    error_action_fired: Counter,
    error_action_failed: Counter,
    dropped: Counter,
    spilled: Counter,
    spill_errors: Counter,
}

impl ActionEvents {
    /// The rule's name.
    pub(crate) fn rule(&self) -> &str {
        &self.rule
    }

    /// The action's label (`<index>:<kind>`), as the metrics name it.
    pub(crate) fn action(&self) -> &str {
        &self.action
    }

    /// Registers the counters of action `action` (`index:kind`) of rule `rule`.
    pub(crate) fn new(rule: &str, action: String) -> ActionEvents {
        let labels = [("rule", rule.to_string()), ("action", action.clone())];
        ActionEvents {
            rule: rule.to_string(),
            action,
            seconds: metrics::histogram!("fleetcore_rules_action_seconds", &labels),
            succeeded: metrics::counter!("fleetcore_rules_action_succeeded_total", &labels),
            failed: metrics::counter!("fleetcore_rules_action_failed_total", &labels),
            error_action_fired: metrics::counter!(
                "fleetcore_rules_error_action_fired_total",
                &labels
            ),
            error_action_failed: metrics::counter!(
                "fleetcore_rules_error_action_failed_total",
                &labels
            ),
            dropped: metrics::counter!("fleetcore_rules_dropped_total", &labels),
            spilled: metrics::counter!("fleetcore_rules_spilled_total", &labels),
            spill_errors: metrics::counter!("fleetcore_rules_spill_errors_total", &labels),
        }
    }

    /// One delivery attempt of a batch took `elapsed`.
    pub(crate) fn attempt(&self, elapsed: Duration) {
        self.seconds.record(elapsed.as_secs_f64());
    }

    /// Messages the action delivered.
    pub(crate) fn succeeded(&self, count: u64) {
        self.succeeded.increment(count);
    }

    /// A message the action could not deliver after every attempt.
    pub(crate) fn failed(&self, error: &str) {
        tracing::warn!(rule = %self.rule, action = %self.action, %error, "rule action failed");
        self.failed.increment(1);
    }

    /// The error action was run for a failed message.
    pub(crate) fn error_action_fired(&self) {
        self.error_action_fired.increment(1);
    }

    /// The error action failed too: the message is given up.
    pub(crate) fn error_action_failed(&self, error: &str) {
        tracing::error!(rule = %self.rule, action = %self.action, %error, "rule error action failed; message given up");
        self.error_action_failed.increment(1);
    }

    /// A failed message of a rule without an error action: given up.
    pub(crate) fn dropped(&self) {
        self.dropped.increment(1);
    }

    /// Messages that waited in the lane's overflow file (the destination fell behind).
    pub(crate) fn spilled(&self, count: u64) {
        self.spilled.increment(count);
    }

    /// The overflow file failed: the reader waits for room instead, or (when reading it back)
    /// its messages stay owed until a restart delivers them again.
    pub(crate) fn spill_failed(&self, error: &std::io::Error) {
        tracing::error!(rule = %self.rule, action = %self.action, %error, "rule action overflow file failed");
        self.spill_errors.increment(1);
    }
}
