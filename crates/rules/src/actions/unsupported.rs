//! Actions that cannot run here, in rules stored before CreateTopicRule refused them: kinds this
//! server has no capability for (Lambda, IoT Events, DynamoDB, ...) and actions whose members
//! no longer parse. Every message fails with a clear message, so the rule's error action fires
//! and the failure is counted.

use async_trait::async_trait;
use serde_json::Value;

use super::{Action, Prepared};
use crate::sql::Template;

/// An action that fails every message, saying why.
pub(crate) struct Unsupported {
    name: &'static str,
    resource: String,
    reason: String,
}

/// AWS's `failedAction` name of each kind.
fn action_name(kind: &str) -> &'static str {
    match kind {
        "republish" => "RepublishAction",
        "kinesis" => "KinesisAction",
        "firehose" => "FirehoseAction",
        "http" => "HttpAction",
        "lambda" => "LambdaAction",
        "iotEvents" => "IotEventsAction",
        "iotAnalytics" => "IotAnalyticsAction",
        "s3" => "S3Action",
        "dynamoDB" => "DynamoAction",
        "dynamoDBv2" => "DynamoActionV2",
        "sns" => "SnsAction",
        "sqs" => "SqsAction",
        "openSearch" => "OpenSearchAction",
        "elasticsearch" => "ElasticsearchAction",
        "cloudwatchMetric" => "CloudwatchMetricAction",
        _ => "UnsupportedAction",
    }
}

/// The member naming what an action writes to, for `failedResource`.
fn resource_of(kind: &str, members: &Value) -> String {
    let field = match kind {
        "lambda" => "functionArn",
        "iotEvents" => "inputName",
        "iotAnalytics" => "channelName",
        "s3" => "bucketName",
        "dynamoDB" => "tableName",
        "sns" => "targetArn",
        "sqs" => "queueUrl",
        _ => "",
    };
    members
        .get(field)
        .and_then(Value::as_str)
        .map_or_else(|| kind.to_string(), str::to_string)
}

impl Unsupported {
    /// A kind without a runtime here, failing with `reason`.
    pub(crate) fn kind(kind: &str, members: &Value, reason: String) -> Unsupported {
        Unsupported {
            name: action_name(kind),
            resource: resource_of(kind, members),
            reason,
        }
    }

    /// An action whose parameters could not be built.
    pub(crate) fn broken(kind: &str, reason: String) -> Unsupported {
        Unsupported {
            name: action_name(kind),
            resource: kind.to_string(),
            reason,
        }
    }
}

#[async_trait]
impl Action for Unsupported {
    fn name(&self) -> &'static str {
        self.name
    }

    fn resource(&self, _params: &[String]) -> String {
        self.resource.clone()
    }

    fn templates(&self) -> &[Template] {
        &[]
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        items.iter().map(|_| Err(self.reason.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn every_message_fails_naming_the_reason() {
        let members = json!({"queueUrl": "https://sqs/q", "roleArn": "r"});
        let action = Unsupported::kind("sqs", &members, super::super::missing("sqs"));
        assert_eq!(action.name(), "SqsAction");
        assert_eq!(action.resource(&[]), "https://sqs/q");
        let item = Prepared {
            body: bytes::Bytes::from_static(b"{}"),
            params: vec![],
        };
        let outcomes = action.deliver(&[item.clone(), item]).await;
        assert_eq!(outcomes.len(), 2);
        for outcome in outcomes {
            let reason = outcome.unwrap_err();
            assert!(reason.contains("SQS queues"), "{reason}");
        }
    }
}
