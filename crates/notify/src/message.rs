//! A published message and the documents built from it: the JSON envelope http(s),
//! email-json and mqtt subscribers get (`Type`, `MessageId`, `TopicArn`, `Subject`, `Message`,
//! `Timestamp`, `SignatureVersion`, `Signature`, `SigningCertURL`, `UnsubscribeURL`,
//! `MessageAttributes`), the subscription confirmation, and the Lambda event.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::error::NotifyServiceError;
use crate::signer::Signer;

/// Largest message SNS takes (256 KiB, body and attributes together).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// One message attribute as `Publish` takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageAttribute {
    /// `String`, `String.Array`, `Number` or `Binary` (with an optional `.custom` suffix).
    pub data_type: String,
    /// The value: the text, or base64 for `Binary`.
    pub value: String,
}

impl MessageAttribute {
    /// Checks an attribute: a known type and a value of that type.
    pub fn new(name: &str, data_type: &str, value: String) -> Result<Self, NotifyServiceError> {
        let invalid = |why: &str| {
            NotifyServiceError::invalid(format!("The message attribute '{name}' {why}"))
        };
        if name.is_empty() || name.len() > 256 || name.starts_with("AWS.") {
            return Err(invalid("has an invalid name"));
        }
        let base = data_type
            .split_once('.')
            .map_or(data_type, |(base, custom)| {
                if base == "String" && custom == "Array" {
                    "String.Array"
                } else {
                    base
                }
            });
        match base {
            "String" | "Binary" => {}
            "Number" => {
                if value.trim().parse::<f64>().is_err() {
                    return Err(invalid("has an invalid number"));
                }
            }
            "String.Array" => {
                if !matches!(serde_json::from_str::<Value>(&value), Ok(Value::Array(_))) {
                    return Err(invalid("must be a JSON array"));
                }
            }
            _ => return Err(invalid(&format!("has an invalid type '{data_type}'"))),
        }
        Ok(MessageAttribute {
            data_type: data_type.to_string(),
            value,
        })
    }

    /// The value a filter policy compares against.
    fn filter_value(&self) -> Option<Value> {
        if self.data_type.starts_with("Number") {
            self.value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
        } else if self.data_type == "String.Array" {
            serde_json::from_str(&self.value).ok()
        } else if self.data_type.starts_with("String") {
            Some(Value::String(self.value.clone()))
        } else {
            None
        }
    }
}

/// A message accepted by `Publish`, shared by every subscription's delivery (and kept in the
/// outbox until delivered).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// The `MessageId`.
    pub message_id: String,
    /// The topic.
    pub topic_arn: String,
    /// The `Subject`, if given.
    pub subject: Option<String>,
    /// The message (`default` of a `MessageStructure=json` message).
    pub message: String,
    /// Per-protocol messages of a `MessageStructure=json` message.
    pub per_protocol: BTreeMap<String, String>,
    /// The message attributes.
    pub attributes: BTreeMap<String, MessageAttribute>,
    /// When it was published, ISO 8601 with milliseconds.
    pub timestamp: String,
    #[serde(skip)]
    signature: OnceLock<String>,
}

impl Published {
    /// Checks and builds a message for `topic_arn`. With `structure` = `json` the message is
    /// a JSON object with a `default` string and optional per-protocol strings.
    pub fn new(
        topic_arn: &str,
        message: &str,
        subject: Option<&str>,
        structure: Option<&str>,
        attributes: BTreeMap<String, MessageAttribute>,
    ) -> Result<Published, NotifyServiceError> {
        if message.is_empty() {
            return Err(NotifyServiceError::invalid("Empty message"));
        }
        let size = message.len()
            + attributes
                .iter()
                .map(|(k, a)| k.len() + a.data_type.len() + a.value.len())
                .sum::<usize>();
        if size > MAX_MESSAGE_BYTES {
            return Err(NotifyServiceError::invalid(format!(
                "Message too long: {size} bytes, at most {MAX_MESSAGE_BYTES}"
            )));
        }
        if let Some(subject) = subject {
            let printable = subject.chars().all(|c| !c.is_control());
            if subject.is_empty() || subject.len() > 100 || !printable {
                return Err(NotifyServiceError::invalid(
                    "Subject: 1 to 100 printable characters, no line breaks",
                ));
            }
        }
        let (message, per_protocol) = match structure {
            None => (message.to_string(), BTreeMap::new()),
            Some("json") => split_structure(message)?,
            Some(other) => {
                return Err(NotifyServiceError::invalid(format!(
                    "MessageStructure: must be json, not {other}"
                )));
            }
        };
        Ok(Published {
            message_id: uuid::Uuid::new_v4().to_string(),
            topic_arn: topic_arn.to_string(),
            subject: subject.map(str::to_string),
            message,
            per_protocol,
            attributes,
            timestamp: crate::clock::iso8601_now(),
            signature: OnceLock::new(),
        })
    }

    /// The message a subscriber of `protocol` gets.
    pub fn message_for(&self, protocol: &str) -> &str {
        self.per_protocol
            .get(protocol)
            .map_or(self.message.as_str(), String::as_str)
    }

    /// The attributes as a filter policy sees them (Binary attributes are not matched).
    pub fn filter_values(&self) -> Map<String, Value> {
        self.attributes
            .iter()
            .filter_map(|(k, a)| a.filter_value().map(|v| (k.clone(), v)))
            .collect()
    }

    /// The JSON envelope of the message for a subscriber of `protocol`.
    pub fn envelope(
        &self,
        protocol: &str,
        signer: &Signer,
        urls: &Urls,
        subscription_arn: &str,
        token: &str,
    ) -> Value {
        let message = self.message_for(protocol);
        let signature = if message == self.message {
            self.signature
                .get_or_init(|| signer.sign(&self.string_to_sign(message)))
                .clone()
        } else {
            signer.sign(&self.string_to_sign(message))
        };
        let mut envelope = json!({
            "Type": "Notification",
            "MessageId": self.message_id,
            "TopicArn": self.topic_arn,
            "Message": message,
            "Timestamp": self.timestamp,
            "SignatureVersion": "2",
            "Signature": signature,
            "SigningCertURL": urls.signing_cert(),
            "UnsubscribeURL": urls.unsubscribe(subscription_arn, token),
        });
        if let Some(subject) = &self.subject {
            envelope["Subject"] = json!(subject);
        }
        if !self.attributes.is_empty() {
            envelope["MessageAttributes"] = self.attributes_json("Type", "Value");
        }
        envelope
    }

    /// The Lambda event (`{"Records":[{"EventSource":"aws:sns","Sns":{...}}]}`).
    pub fn lambda_event(
        &self,
        signer: &Signer,
        urls: &Urls,
        subscription_arn: &str,
        token: &str,
    ) -> Value {
        let envelope = self.envelope("lambda", signer, urls, subscription_arn, token);
        let mut sns = json!({
            "Type": "Notification",
            "MessageId": self.message_id,
            "TopicArn": self.topic_arn,
            "Subject": self.subject,
            "Message": envelope["Message"],
            "Timestamp": self.timestamp,
            "SignatureVersion": "2",
            "Signature": envelope["Signature"],
            "SigningCertUrl": envelope["SigningCertURL"],
            "UnsubscribeUrl": envelope["UnsubscribeURL"],
            "MessageAttributes": self.attributes_json("Type", "Value"),
        });
        if self.subject.is_none() {
            sns["Subject"] = Value::Null;
        }
        json!({"Records": [{
            "EventVersion": "1.0",
            "EventSubscriptionArn": subscription_arn,
            "EventSource": "aws:sns",
            "Sns": sns,
        }]})
    }

    fn attributes_json(&self, type_key: &str, value_key: &str) -> Value {
        Value::Object(
            self.attributes
                .iter()
                .map(|(name, a)| {
                    (
                        name.clone(),
                        json!({type_key: a.data_type, value_key: a.value}),
                    )
                })
                .collect(),
        )
    }

    /// AWS's string to sign of a notification.
    fn string_to_sign(&self, message: &str) -> String {
        let mut text = format!("Message\n{message}\nMessageId\n{}\n", self.message_id);
        if let Some(subject) = &self.subject {
            text.push_str(&format!("Subject\n{subject}\n"));
        }
        text.push_str(&format!(
            "Timestamp\n{}\nTopicArn\n{}\nType\nNotification\n",
            self.timestamp, self.topic_arn
        ));
        text
    }
}

/// The `default` and per-protocol messages of a `MessageStructure=json` message.
fn split_structure(
    message: &str,
) -> Result<(String, BTreeMap<String, String>), NotifyServiceError> {
    let invalid = || {
        NotifyServiceError::invalid(
            "Message Structure - JSON message body failed to parse or has no default entry",
        )
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(message) else {
        return Err(invalid());
    };
    let mut default = None;
    let mut per_protocol = BTreeMap::new();
    for (key, value) in map {
        let Value::String(text) = value else {
            return Err(invalid());
        };
        if key == "default" {
            default = Some(text);
        } else {
            per_protocol.insert(key, text);
        }
    }
    Ok((default.ok_or_else(invalid)?, per_protocol))
}

/// The links this server puts in messages: confirmation, unsubscribe, signing certificate.
#[derive(Debug, Clone)]
pub struct Urls {
    base: String,
}

impl Urls {
    /// Links under `base` (e.g. `http://127.0.0.1:8080`), where the public routes are served.
    pub fn new(base: &str) -> Urls {
        Urls {
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// `SigningCertURL`.
    pub fn signing_cert(&self) -> String {
        format!("{}{}", self.base, crate::public::SIGNING_CERT_PATH)
    }

    /// `SubscribeURL`: following it confirms the subscription.
    pub fn subscribe(&self, topic_arn: &str, token: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("TopicArn", topic_arn)
            .append_pair("Token", token)
            .finish();
        format!("{}{}?{query}", self.base, crate::public::CONFIRM_PATH)
    }

    /// `UnsubscribeURL`: following it ends the subscription (the token makes it unguessable).
    pub fn unsubscribe(&self, subscription_arn: &str, token: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("SubscriptionArn", subscription_arn)
            .append_pair("Token", token)
            .finish();
        format!("{}{}?{query}", self.base, crate::public::UNSUBSCRIBE_PATH)
    }
}

/// The subscription confirmation sent to a new http(s) or email-json subscriber.
pub fn confirmation(topic_arn: &str, token: &str, signer: &Signer, urls: &Urls) -> (String, Value) {
    let message_id = uuid::Uuid::new_v4().to_string();
    let timestamp = crate::clock::iso8601_now();
    let subscribe_url = urls.subscribe(topic_arn, token);
    let message = format!(
        "You have chosen to subscribe to the topic {topic_arn}.\n\
         To confirm the subscription, visit the SubscribeURL included in this message."
    );
    let to_sign = format!(
        "Message\n{message}\nMessageId\n{message_id}\nSubscribeURL\n{subscribe_url}\n\
         Timestamp\n{timestamp}\nToken\n{token}\nTopicArn\n{topic_arn}\nType\nSubscriptionConfirmation\n"
    );
    let envelope = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": token,
        "TopicArn": topic_arn,
        "Message": message,
        "SubscribeURL": subscribe_url,
        "Timestamp": timestamp,
        "SignatureVersion": "2",
        "Signature": signer.sign(&to_sign),
        "SigningCertURL": urls.signing_cert(),
    });
    (message_id, envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_messages_split_per_protocol() {
        let p = Published::new(
            "arn:aws:sns:r:1:t",
            r#"{"default":"d","email":"e"}"#,
            Some("s"),
            Some("json"),
            BTreeMap::new(),
        )
        .expect("message");
        assert_eq!(p.message_for("http"), "d");
        assert_eq!(p.message_for("email"), "e");
        for bad in [r#"{"email":"e"}"#, "[]", r#"{"default":1}"#] {
            assert!(
                Published::new("t", bad, None, Some("json"), BTreeMap::new()).is_err(),
                "{bad}"
            );
        }
        assert!(Published::new("t", "", None, None, BTreeMap::new()).is_err());
        assert!(Published::new("t", "m", Some("a\nb"), None, BTreeMap::new()).is_err());
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(Published::new("t", &big, None, None, BTreeMap::new()).is_err());
    }

    #[test]
    fn attributes_are_typed() {
        assert!(MessageAttribute::new("n", "Number", "12.5".into()).is_ok());
        assert!(MessageAttribute::new("n", "Number", "twelve".into()).is_err());
        assert!(MessageAttribute::new("n", "String.Array", "[1]".into()).is_ok());
        assert!(MessageAttribute::new("n", "String.Array", "1".into()).is_err());
        assert!(MessageAttribute::new("n", "Number.float", "1".into()).is_ok());
        assert!(MessageAttribute::new("n", "Date", "1".into()).is_err());
        let mut attributes = BTreeMap::new();
        for (name, data_type, value) in [("n", "Number", "5"), ("s", "String", "x")] {
            attributes.insert(
                name.to_string(),
                MessageAttribute::new(name, data_type, value.into()).expect("attribute"),
            );
        }
        let p = Published::new("t", "m", None, None, attributes).expect("message");
        let values = p.filter_values();
        assert_eq!(values["n"], json!(5.0));
        assert_eq!(values["s"], json!("x"));
    }

    #[test]
    fn links_are_escaped() {
        let urls = Urls::new("http://h:1/");
        assert_eq!(
            urls.subscribe("arn:aws:sns:r:1:t", "a b"),
            "http://h:1/sns/confirm?TopicArn=arn%3Aaws%3Asns%3Ar%3A1%3At&Token=a+b"
        );
    }
}
