//! The rule action kinds AWS IoT knows (botocore `iot` 2015-05-28, shape `Action`) and the
//! members each one requires. An action passes when its shape is AWS's and this server can run
//! it: the action registry ([`crate::actions::validate`]) parses it with the parser that later
//! builds it, and refuses kinds whose capability is missing, naming it. Actions are stored as
//! given once they pass.

use serde_json::Value;

use crate::sql::SqlVersion;

/// Most actions a rule may have (AWS IoT Core quota: 10 actions per rule).
pub const MAX_ACTIONS: usize = 10;

/// Each action kind with its required members.
const KINDS: &[(&str, &[&str])] = &[
    (
        "dynamoDB",
        &["tableName", "roleArn", "hashKeyField", "hashKeyValue"],
    ),
    ("dynamoDBv2", &["roleArn", "putItem"]),
    ("lambda", &["functionArn"]),
    ("sns", &["targetArn", "roleArn"]),
    ("sqs", &["roleArn", "queueUrl"]),
    ("kinesis", &["roleArn", "streamName"]),
    ("republish", &["roleArn", "topic"]),
    ("s3", &["roleArn", "bucketName", "key"]),
    ("firehose", &["roleArn", "deliveryStreamName"]),
    (
        "cloudwatchMetric",
        &[
            "roleArn",
            "metricNamespace",
            "metricName",
            "metricValue",
            "metricUnit",
        ],
    ),
    (
        "cloudwatchAlarm",
        &["roleArn", "alarmName", "stateReason", "stateValue"],
    ),
    ("cloudwatchLogs", &["roleArn", "logGroupName"]),
    (
        "elasticsearch",
        &["roleArn", "endpoint", "index", "type", "id"],
    ),
    ("salesforce", &["token", "url"]),
    ("iotAnalytics", &[]),
    ("iotEvents", &["inputName", "roleArn"]),
    ("iotSiteWise", &["putAssetPropertyValueEntries", "roleArn"]),
    ("stepFunctions", &["stateMachineName", "roleArn"]),
    (
        "timestream",
        &["roleArn", "databaseName", "tableName", "dimensions"],
    ),
    ("http", &["url"]),
    ("kafka", &["destinationArn", "topic", "clientProperties"]),
    (
        "openSearch",
        &["roleArn", "endpoint", "index", "type", "id"],
    ),
    (
        "location",
        &[
            "roleArn",
            "trackerName",
            "deviceId",
            "latitude",
            "longitude",
        ],
    ),
];

/// Checks one action object (`{"kind": {members}}`) of a rule of `version`; `Err` says what is
/// wrong, naming `what` (e.g. `actions[2]`).
pub fn validate_action(what: &str, action: &Value, version: SqlVersion) -> Result<(), String> {
    let Some(map) = action.as_object() else {
        return Err(format!(
            "{what} must be an object such as {{\"republish\": {{...}}}}"
        ));
    };
    let mut kinds = map.iter();
    let (kind, members) = match (kinds.next(), kinds.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(format!("{what} names no action kind")),
        (Some(_), Some(_)) => {
            return Err(format!("{what} must name exactly one action kind"));
        }
    };
    let Some((_, required)) = KINDS.iter().find(|(k, _)| k == kind) else {
        return Err(format!("{what}: unknown action kind {kind:?}"));
    };
    let Some(members) = members.as_object() else {
        return Err(format!("{what}.{kind} must be an object"));
    };
    for field in *required {
        if members.get(*field).is_none_or(Value::is_null) {
            return Err(format!(
                "{what}.{kind} is missing the required member {field}"
            ));
        }
    }
    if *kind == "iotAnalytics"
        && members.get("channelName").is_none_or(Value::is_null)
        && members.get("channelArn").is_none_or(Value::is_null)
    {
        return Err(format!(
            "{what}.iotAnalytics needs channelName or channelArn"
        ));
    }
    if *kind == "republish"
        && let Some(qos) = members.get("qos")
        && !matches!(qos.as_i64(), Some(0 | 1))
    {
        return Err(format!("{what}.republish.qos must be 0 or 1"));
    }
    crate::actions::validate(kind, &Value::Object(members.clone()), version)
        .map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn validate_action(what: &str, action: &Value) -> Result<(), String> {
        super::validate_action(what, action, SqlVersion::V2016_03_23)
    }

    #[test]
    fn known_kinds_with_required_members_pass() {
        assert!(
            validate_action("a", &json!({"republish": {"roleArn": "r", "topic": "t"}})).is_ok()
        );
        assert!(validate_action("a", &json!({"http": {"url": "https://x.test/"}})).is_ok());
        assert!(
            validate_action(
                "a",
                &json!({"kinesis": {"roleArn": "r", "streamName": "s", "partitionKey": "${topic()}"}})
            )
            .is_ok()
        );
    }

    #[test]
    fn kinds_without_their_capability_are_refused_naming_it() {
        let e = validate_action(
            "actions[0]",
            &json!({"stepFunctions": {"stateMachineName": "m", "roleArn": "r"}}),
        )
        .unwrap_err();
        assert!(
            e.contains("Step Functions") && e.contains("stepFunctions"),
            "{e}"
        );
        let e = validate_action(
            "errorAction",
            &json!({"timestream": {"roleArn": "r", "databaseName": "d", "tableName": "t", "dimensions": []}}),
        )
        .unwrap_err();
        assert!(
            e.starts_with("errorAction") && e.contains("Timestream"),
            "{e}"
        );
        let e =
            validate_action("a", &json!({"sqs": {"roleArn": "r", "queueUrl": "q"}})).unwrap_err();
        assert!(e.contains("SQS"), "{e}");
    }

    #[test]
    fn members_are_parsed_as_the_running_action_parses_them() {
        let e = validate_action("a", &json!({"http": {"url": "http://x.test/"}})).unwrap_err();
        assert!(e.contains("https://"), "{e}");
        let e = validate_action(
            "a",
            &json!({"kinesis": {"roleArn": "r", "streamName": "s", "partitionKey": "${"}}),
        )
        .unwrap_err();
        assert!(e.contains("partitionKey"), "{e}");
    }

    #[test]
    fn bad_actions_say_why() {
        let e = validate_action("actions[0]", &json!({"kinesis": {"roleArn": "r"}})).unwrap_err();
        assert!(e.contains("streamName"), "{e}");
        let e = validate_action("actions[1]", &json!({"teleport": {}})).unwrap_err();
        assert!(e.contains("unknown action kind"), "{e}");
        assert!(validate_action("a", &json!({})).is_err());
        assert!(
            validate_action(
                "a",
                &json!({"lambda": {"functionArn": "f"}, "http": {"url": "u"}})
            )
            .is_err()
        );
        assert!(validate_action("a", &json!({"iotAnalytics": {"roleArn": "r"}})).is_err());
        assert!(
            validate_action(
                "a",
                &json!({"republish": {"roleArn": "r", "topic": "t", "qos": 2}})
            )
            .is_err()
        );
        assert!(validate_action("a", &json!("republish")).is_err());
    }
}
