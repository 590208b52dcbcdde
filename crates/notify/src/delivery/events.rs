//! The counted events of deliveries: each is logged and counted in
//! `fleetcore_sns_deliveries_total{protocol, outcome}` by one function, so names stay the same.

use metrics::counter;

fn count(protocol: &str, outcome: &'static str) {
    counter!("fleetcore_sns_deliveries_total", "protocol" => protocol.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A message reached its subscriber.
pub fn delivered(protocol: &str) {
    count(protocol, "delivered");
}

/// An attempt failed and will be tried again.
pub fn retried(protocol: &str, subscription: &str, reason: &str) {
    tracing::debug!(
        protocol,
        subscription,
        reason,
        "SNS delivery failed, retrying"
    );
    count(protocol, "retried");
}

/// A message was given up (retries used up, or a permanent refusal).
pub fn failed(protocol: &str, subscription: &str, reason: &str) {
    tracing::warn!(
        protocol,
        subscription,
        reason,
        "SNS delivery failed, giving up"
    );
    count(protocol, "failed");
}

/// A message was dropped because its subscription's queue was full.
pub fn dropped(protocol: &str, subscription: &str) {
    tracing::warn!(
        protocol,
        subscription,
        "SNS delivery queue full, message dropped"
    );
    count(protocol, "dropped");
}

/// A message did not pass the subscription's filter policy.
pub fn filtered(protocol: &str) {
    count(protocol, "filtered");
}
