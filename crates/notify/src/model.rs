//! Topics and subscriptions as they are stored (JSON records in the `KvStore`) and the checks
//! on their names and attributes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::NotifyServiceError;
use crate::filter::FilterPolicy;

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// `arn:aws:sns:{region}:{account}:{name}`.
    pub arn: String,
    /// The topic's name.
    pub name: String,
    /// The settable attributes (`DisplayName`, `Policy`, `SignatureVersion`).
    pub attributes: BTreeMap<String, String>,
    /// The tags.
    pub tags: BTreeMap<String, String>,
}

/// Whether a subscription was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for the endpoint's owner to follow the SubscribeURL (http, https, email).
    Pending,
    /// Delivering.
    Confirmed,
}

/// A subscription of an endpoint to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `{topic arn}:{uuid}`.
    pub arn: String,
    /// The topic.
    pub topic_arn: String,
    /// `http`, `https`, `email`, `email-json`, `lambda` or `mqtt`.
    pub protocol: String,
    /// The URL, address, function or MQTT topic.
    pub endpoint: String,
    /// Pending or confirmed.
    pub status: Status,
    /// The secret in the SubscribeURL and UnsubscribeURL.
    pub token: String,
    /// The settable attributes (`FilterPolicy`, `FilterPolicyScope`, `RawMessageDelivery`).
    pub attributes: BTreeMap<String, String>,
}

impl Subscription {
    /// Whether `RawMessageDelivery` is `true`.
    pub fn raw(&self) -> bool {
        self.attributes
            .get(RAW_MESSAGE_DELIVERY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The filter policy and its scope, if one is set (checked when it was set).
    pub fn filter(&self) -> Option<(FilterPolicy, Scope)> {
        let policy = self.attributes.get(FILTER_POLICY)?;
        let policy = FilterPolicy::parse(policy).ok()?;
        Some((policy, self.scope()))
    }

    fn scope(&self) -> Scope {
        match self.attributes.get(FILTER_POLICY_SCOPE).map(String::as_str) {
            Some("MessageBody") => Scope::MessageBody,
            _ => Scope::MessageAttributes,
        }
    }
}

/// What a filter policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The message attributes (the default).
    MessageAttributes,
    /// The message body, which must then be a JSON object.
    MessageBody,
}

/// The subscription attribute holding the filter policy.
pub const FILTER_POLICY: &str = "FilterPolicy";
/// The subscription attribute choosing what the filter policy looks at.
pub const FILTER_POLICY_SCOPE: &str = "FilterPolicyScope";
/// The subscription attribute asking for the bare message instead of the JSON envelope.
pub const RAW_MESSAGE_DELIVERY: &str = "RawMessageDelivery";

/// Checks a topic name: 1 to 256 letters, digits, `-` and `_`. FIFO topics are refused.
pub fn check_topic_name(name: &str) -> Result<(), NotifyServiceError> {
    if name.ends_with(".fifo") {
        return Err(NotifyServiceError::invalid(
            "FIFO topics are not supported by this server",
        ));
    }
    let valid = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(NotifyServiceError::invalid(
            "Topic Name: 1 to 256 letters, digits, hyphens and underscores",
        ))
    }
}

/// Checks one topic attribute being set. `Policy` is kept and returned as given (the admin
/// credentials are the only caller, so it grants nothing more); `DeliveryPolicy`, KMS and
/// FIFO settings are refused: this server does not apply them.
pub fn check_topic_attribute(name: &str, value: &str) -> Result<(), NotifyServiceError> {
    match name {
        "DisplayName" if value.len() <= 100 => Ok(()),
        "DisplayName" => Err(NotifyServiceError::invalid(
            "DisplayName: at most 100 characters",
        )),
        "Policy" => serde_json::from_str::<serde_json::Value>(value)
            .map(drop)
            .map_err(|e| NotifyServiceError::invalid(format!("Policy: not JSON: {e}"))),
        "SignatureVersion" if value == "2" => Ok(()),
        "SignatureVersion" => Err(NotifyServiceError::invalid(
            "SignatureVersion: this server signs messages with SignatureVersion 2 (SHA256) only",
        )),
        "TracingConfig" if value == "PassThrough" => Ok(()),
        "DeliveryPolicy"
        | "KmsMasterKeyId"
        | "FifoTopic"
        | "ContentBasedDeduplication"
        | "ArchivePolicy"
        | "TracingConfig"
        | "FifoThroughputScope" => Err(NotifyServiceError::invalid(format!(
            "{name}: not supported by this server"
        ))),
        _ if name.ends_with("FeedbackRoleArn") || name.ends_with("FeedbackSampleRate") => {
            Err(NotifyServiceError::invalid(format!(
                "{name}: delivery status logging is not supported by this server"
            )))
        }
        _ => Err(NotifyServiceError::invalid(format!(
            "AttributeName: unknown topic attribute {name}"
        ))),
    }
}

/// Checks one subscription attribute being set.
pub fn check_subscription_attribute(
    protocol: &str,
    name: &str,
    value: &str,
) -> Result<(), NotifyServiceError> {
    match name {
        FILTER_POLICY => FilterPolicy::parse(value).map(drop),
        FILTER_POLICY_SCOPE => match value {
            "MessageAttributes" | "MessageBody" => Ok(()),
            _ => Err(NotifyServiceError::invalid(
                "FilterPolicyScope: MessageAttributes or MessageBody",
            )),
        },
        RAW_MESSAGE_DELIVERY => match (value.to_ascii_lowercase().as_str(), protocol) {
            ("true" | "false", "http" | "https" | "mqtt") => Ok(()),
            ("true" | "false", _) => Err(NotifyServiceError::invalid(format!(
                "RawMessageDelivery: not available for protocol {protocol}"
            ))),
            _ => Err(NotifyServiceError::invalid(
                "RawMessageDelivery: true or false",
            )),
        },
        "DeliveryPolicy" | "RedrivePolicy" | "SubscriptionRoleArn" | "ReplayPolicy" => Err(
            NotifyServiceError::invalid(format!("{name}: not supported by this server")),
        ),
        _ => Err(NotifyServiceError::invalid(format!(
            "AttributeName: unknown subscription attribute {name}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(check_topic_name("alerts_1-a").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("a b").is_err());
        assert!(check_topic_name(&"a".repeat(257)).is_err());
        assert!(check_topic_name("orders.fifo").is_err());
    }

    #[test]
    fn attributes_are_checked() {
        assert!(check_topic_attribute("DisplayName", "Alerts").is_ok());
        assert!(check_topic_attribute("Policy", "{").is_err());
        assert!(check_topic_attribute("DeliveryPolicy", "{}").is_err());
        assert!(check_topic_attribute("Nonsense", "x").is_err());
        assert!(check_subscription_attribute("http", "RawMessageDelivery", "true").is_ok());
        assert!(check_subscription_attribute("email", "RawMessageDelivery", "true").is_err());
        assert!(check_subscription_attribute("http", "FilterPolicy", "{\"a\":[1]}").is_ok());
        assert!(check_subscription_attribute("http", "FilterPolicy", "[]").is_err());
        assert!(check_subscription_attribute("http", "FilterPolicyScope", "Body").is_err());
    }
}
