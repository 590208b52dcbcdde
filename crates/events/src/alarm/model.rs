//! Alarm models as CreateAlarmModel / UpdateAlarmModel receive them, and the compiled model the
//! engine runs: the simple rule's `inputProperty` and `threshold` parsed as expressions and
//! checked against the inputs, the capabilities, and every event and notification action built.
//! What does not compile is refused at create time with a message naming the member.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use fleetcore_core::Channel;

use crate::actions::{self, DetectorAction, Targets};
use crate::expr::{self, BinaryOp, Expr, PathStep};
use crate::model::{CompileEnv, Input, check_references, parse_path};

/// The stored form of an alarm model version: what the request carried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmModelRecord {
    /// The model's name.
    pub name: String,
    /// Version, from 1.
    pub version: u32,
    /// Free text.
    pub description: Option<String>,
    /// The role ARN (kept; this server does not assume roles).
    pub role_arn: String,
    /// The `key` attribute path, if any.
    pub key: Option<String>,
    /// `severity`, if given.
    pub severity: Option<i64>,
    /// `alarmRule` as given.
    pub alarm_rule: Json,
    /// `alarmNotification` as given.
    pub alarm_notification: Option<Json>,
    /// `alarmEventActions` as given.
    pub alarm_event_actions: Option<Json>,
    /// `alarmCapabilities` as given.
    pub alarm_capabilities: Option<Json>,
    /// `tags` as given at create.
    pub tags: Vec<Json>,
    /// Epoch seconds.
    pub created: f64,
    /// Epoch seconds.
    pub updated: f64,
}

/// `comparisonOperator` of a simple rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `GREATER`
    Greater,
    /// `GREATER_OR_EQUAL`
    GreaterOrEqual,
    /// `LESS`
    Less,
    /// `LESS_OR_EQUAL`
    LessOrEqual,
    /// `EQUAL`
    Equal,
    /// `NOT_EQUAL`
    NotEqual,
}

const OPERATORS: &[(&str, Operator, BinaryOp)] = &[
    ("GREATER", Operator::Greater, BinaryOp::Gt),
    ("GREATER_OR_EQUAL", Operator::GreaterOrEqual, BinaryOp::Ge),
    ("LESS", Operator::Less, BinaryOp::Lt),
    ("LESS_OR_EQUAL", Operator::LessOrEqual, BinaryOp::Le),
    ("EQUAL", Operator::Equal, BinaryOp::Eq),
    ("NOT_EQUAL", Operator::NotEqual, BinaryOp::Ne),
];

impl Operator {
    /// The API's name of the operator.
    pub fn name(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(_, o, _)| *o == self)
            .map_or("", |(n, _, _)| n)
    }
}

/// What `alarmCapabilities` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// New alarms start DISABLED (`initializationConfiguration.disabledOnInitialization`).
    pub disabled_on_initialization: bool,
    /// An alarm must be acknowledged before it returns to NORMAL (`acknowledgeFlow.enabled`).
    pub acknowledge_flow: bool,
}

/// An alarm model version, compiled.
pub struct AlarmModel {
    /// What was stored.
    pub record: AlarmModelRecord,
    /// The key's path, if the model has a key.
    pub key: Option<Vec<PathStep>>,
    /// The input the rule reads (messages of this input are routed to the model).
    pub input: String,
    /// `simpleRule.inputProperty`.
    pub property: Expr,
    /// `simpleRule.threshold`.
    pub threshold: Expr,
    /// `simpleRule.comparisonOperator`.
    pub operator: Operator,
    /// `inputProperty <operator> threshold`: the alarm is breached when it holds.
    pub rule: Expr,
    /// The capabilities.
    pub capabilities: Capabilities,
    /// `alarmEventActions.alarmActions` then `alarmNotification`'s mails, texts (sent on a change
    /// to ACTIVE) and lambda actions, run on each state change.
    pub actions: Vec<Box<dyn DetectorAction>>,
}

impl std::fmt::Debug for AlarmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlarmModel")
            .field("name", &self.record.name)
            .field("version", &self.record.version)
            .finish()
    }
}

/// A compiled alarm model, shared by the engine's shards.
pub type SharedAlarmModel = Arc<AlarmModel>;

/// The action kinds AWS allows in `alarmEventActions` (no variables or timers: an alarm has
/// none).
const ALARM_ACTION_KINDS: &[&str] = &[
    "sns",
    "iotTopicPublish",
    "lambda",
    "iotEvents",
    "sqs",
    "firehose",
    "dynamoDB",
    "dynamoDBv2",
    "iotSiteWise",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimpleRuleShape {
    input_property: String,
    comparison_operator: String,
    threshold: String,
}

fn member<'j>(json: &'j Json, name: &str) -> Option<&'j Json> {
    json.get(name).filter(|v| !v.is_null())
}

fn as_list<'j>(json: Option<&'j Json>, place: &str) -> Result<&'j [Json], String> {
    match json {
        None => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(format!("{place} must be a list")),
    }
}

fn flag(json: Option<&Json>, outer: &str, name: &str) -> Result<Option<bool>, String> {
    let Some(outer_json) = json else {
        return Ok(None);
    };
    match member(outer_json, name) {
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!(
            "alarmCapabilities.{outer}.{name} must be true or false"
        )),
        None => Err(format!("alarmCapabilities.{outer}.{name} is required")),
    }
}

/// Compiles a stored alarm model version; `Err` is the InvalidRequestException message.
pub fn compile(
    record: AlarmModelRecord,
    inputs: &BTreeMap<String, Input>,
    targets: &Targets,
) -> Result<AlarmModel, String> {
    let env = CompileEnv {
        inputs,
        actions: targets,
    };
    let simple = member(&record.alarm_rule, "simpleRule")
        .ok_or("alarmRule.simpleRule is required: it is the only kind of alarm rule")?;
    let shape: SimpleRuleShape = serde_json::from_value(simple.clone())
        .map_err(|e| format!("alarmRule.simpleRule is not valid: {e}"))?;
    let (_, operator, op) = OPERATORS
        .iter()
        .find(|(n, _, _)| *n == shape.comparison_operator)
        .ok_or_else(|| {
            format!(
                "alarmRule.simpleRule.comparisonOperator must be one of GREATER, GREATER_OR_EQUAL, LESS, LESS_OR_EQUAL, EQUAL, NOT_EQUAL, not {:?}",
                shape.comparison_operator
            )
        })?;
    let mut read = BTreeSet::new();
    let property = rule_expression("inputProperty", &shape.input_property, &env, &mut read)?;
    if read.is_empty() {
        return Err(format!(
            "alarmRule.simpleRule.inputProperty {:?} reads no input: it must be $input.<InputName>.<attribute>",
            shape.input_property
        ));
    }
    let threshold = rule_expression("threshold", &shape.threshold, &env, &mut read)?;
    let input = match read.len() {
        1 => read.pop_first().unwrap_or_default(),
        _ => {
            return Err(format!(
                "alarmRule.simpleRule reads several inputs ({}): inputProperty and threshold must read the same input",
                read.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    };
    let key = match &record.key {
        Some(k) => Some(parse_path(k).map_err(|e| format!("key: {e}"))?),
        None => None,
    };
    if let Some(s) = record.severity
        && !(0..=i64::from(i32::MAX)).contains(&s)
    {
        return Err(format!("severity must be 0 to 2147483647, not {s}"));
    }
    let capabilities = record.alarm_capabilities.as_ref();
    let capabilities = Capabilities {
        disabled_on_initialization: flag(
            capabilities.and_then(|c| member(c, "initializationConfiguration")),
            "initializationConfiguration",
            "disabledOnInitialization",
        )?
        .unwrap_or(false),
        acknowledge_flow: flag(
            capabilities.and_then(|c| member(c, "acknowledgeFlow")),
            "acknowledgeFlow",
            "enabled",
        )?
        .unwrap_or(true),
    };
    let mut built = Vec::new();
    let event_actions = as_list(
        record
            .alarm_event_actions
            .as_ref()
            .and_then(|a| member(a, "alarmActions")),
        "alarmEventActions.alarmActions",
    )?;
    for (i, action) in event_actions.iter().enumerate() {
        let place = format!("alarmEventActions.alarmActions[{i}]");
        if let Some(kind) = action
            .as_object()
            .and_then(|o| o.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k))
            && !ALARM_ACTION_KINDS.contains(&kind.as_str())
        {
            return Err(format!(
                "{place}: {kind:?} is not an alarm action (one of {})",
                ALARM_ACTION_KINDS.join(", ")
            ));
        }
        built.push(compile_action(action, &place, &env, &input)?);
    }
    let notifications = record
        .alarm_notification
        .as_ref()
        .map(|n| {
            as_list(
                member(n, "notificationActions"),
                "alarmNotification.notificationActions",
            )
        })
        .transpose()?;
    if notifications.is_some_and(<[Json]>::is_empty) {
        return Err("alarmNotification.notificationActions must hold at least one action".into());
    }
    for (i, notification) in notifications.unwrap_or(&[]).iter().enumerate() {
        let place = format!("alarmNotification.notificationActions[{i}]");
        let mut direct = 0;
        for (member_name, channel) in [
            ("emailConfigurations", Channel::Email),
            ("smsConfigurations", Channel::Sms),
        ] {
            let configs = as_list(
                member(notification, member_name),
                &format!("{place}.{member_name}"),
            )?;
            for (j, config) in configs.iter().enumerate() {
                built.push(super::recipients::build(
                    config,
                    channel,
                    &format!("{place}.{member_name}[{j}]"),
                    env.actions,
                )?);
                direct += 1;
            }
        }
        // AWS requires `action.lambdaAction` (its own function sends the mails and texts); here
        // the server sends them, so the function is optional beside them and invoked if given.
        match member(notification, "action").and_then(|a| member(a, "lambdaAction")) {
            Some(lambda) => built.push(compile_action(
                &json!({ "lambda": lambda }),
                &format!("{place}.action.lambdaAction"),
                &env,
                &input,
            )?),
            None if direct == 0 => {
                return Err(format!("{place}.action.lambdaAction is required"));
            }
            None => {}
        }
    }
    Ok(AlarmModel {
        rule: Expr::Binary(*op, Box::new(property.clone()), Box::new(threshold.clone())),
        record,
        key,
        input,
        property,
        threshold,
        operator: *operator,
        capabilities,
        actions: built,
    })
}

fn rule_expression(
    member: &str,
    text: &str,
    env: &CompileEnv<'_>,
    read: &mut BTreeSet<String>,
) -> Result<Expr, String> {
    let place = format!("alarmRule.simpleRule.{member}");
    let e = expr::parse(text).map_err(|e| format!("{place} {text:?} is not valid: {e}"))?;
    check_references(&e, &place, env, read)?;
    Ok(e)
}

fn compile_action(
    action: &Json,
    place: &str,
    env: &CompileEnv<'_>,
    input: &str,
) -> Result<Box<dyn DetectorAction>, String> {
    let built = actions::build(action, env.actions).map_err(|e| format!("{place}: {e}"))?;
    let mut read = BTreeSet::new();
    for e in built.expressions() {
        check_references(e, place, env, &mut read)?;
    }
    if let Some(other) = read.iter().find(|r| *r != input) {
        return Err(format!(
            "{place}: reads input '{other}', but the alarm rule reads '{input}'"
        ));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BTreeMap<String, Input> {
        ["A", "B"]
            .into_iter()
            .map(|name| {
                let input = Input {
                    name: name.into(),
                    description: None,
                    attributes: vec!["t".into(), "limit".into()],
                    created: 0.0,
                    updated: 0.0,
                };
                (name.to_string(), input)
            })
            .collect()
    }

    fn record(members: Json) -> AlarmModelRecord {
        let mut record = AlarmModelRecord {
            name: "m".into(),
            version: 1,
            description: None,
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            key: None,
            severity: None,
            alarm_rule: json!({"simpleRule": {"inputProperty": "$input.A.t",
                                              "comparisonOperator": "GREATER", "threshold": "$input.A.limit"}}),
            alarm_notification: None,
            alarm_event_actions: None,
            alarm_capabilities: None,
            tags: Vec::new(),
            created: 0.0,
            updated: 0.0,
        };
        if let Some(rule) = members.get("alarmRule") {
            record.alarm_rule = rule.clone();
        }
        record.alarm_event_actions = members.get("alarmEventActions").cloned();
        record.alarm_notification = members.get("alarmNotification").cloned();
        record
    }

    fn refusal(members: Json) -> String {
        match compile(record(members), &inputs(), &Targets::default()) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_rule_reads_one_input_and_defaults_to_enabled_with_acknowledge_flow() {
        let model = compile(record(json!({})), &inputs(), &Targets::default()).expect("compiles");
        assert_eq!(model.input, "A");
        assert_eq!(
            model.capabilities,
            Capabilities {
                disabled_on_initialization: false,
                acknowledge_flow: true
            }
        );
        let two = refusal(json!({"alarmRule": {"simpleRule": {
            "inputProperty": "$input.A.t", "comparisonOperator": "LESS", "threshold": "$input.B.limit"}}}));
        assert!(two.contains("reads several inputs (A, B)"), "{two}");
    }

    #[test]
    fn detector_only_actions_are_refused() {
        let e = refusal(json!({"alarmEventActions": {"alarmActions": [
            {"setVariable": {"variableName": "v", "value": "1"}}]}}));
        assert!(
            e.contains("alarmActions[0]: \"setVariable\" is not an alarm action"),
            "{e}"
        );
        let e = refusal(json!({"alarmEventActions": {"alarmActions": [
            {"iotTopicPublish": {"mqttTopic": "a/b"}}]}}));
        assert!(e.contains("this server does not run an MQTT broker"), "{e}");
    }

    /// A directory that knows `ann` (email only).
    struct Directory;

    impl fleetcore_core::RecipientNotifier for Directory {
        fn check(&self, channel: Channel, r: &fleetcore_core::Recipient) -> Result<(), String> {
            match (channel, r.user_id.as_str()) {
                (Channel::Email, "ann") => Ok(()),
                (Channel::Sms, _) => Err("no SMS gateway is configured".into()),
                _ => Err(format!("{} is not in the directory", r.user_id)),
            }
        }

        fn send<'a>(
            &'a self,
            _: Channel,
            _: &'a [fleetcore_core::Recipient],
            _: fleetcore_core::DirectMessage,
        ) -> fleetcore_core::DirectFuture<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn email_and_sms_recipients_are_checked_at_create() {
        let targets = Targets {
            recipients: Some(Arc::new(Directory)),
            ..Targets::default()
        };
        let notification =
            |config: Json| json!({"alarmNotification": {"notificationActions": [config]}});
        let email = |user: &str| {
            json!({"emailConfigurations": [{"from": "ops@example.com", "recipients": {"to": [
                {"ssoIdentity": {"identityStoreId": "d-1", "userId": user}}]}}]})
        };
        let model = compile(record(notification(email("ann"))), &inputs(), &targets)
            .expect("a known recipient compiles without a lambdaAction");
        assert_eq!(model.actions.len(), 1);
        let refused = |members: Json| match compile(record(members), &inputs(), &targets) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        };
        let e = refused(notification(email("eve")));
        assert!(
            e.contains("notificationActions[0].emailConfigurations[0].recipients.to[0].ssoIdentity: eve is not in the directory"),
            "{e}"
        );
        let e = refused(notification(json!({"smsConfigurations": [{"recipients": [
            {"ssoIdentity": {"identityStoreId": "d-1", "userId": "ann"}}]}]})));
        assert!(
            e.contains("smsConfigurations[0].recipients[0].ssoIdentity: no SMS gateway"),
            "{e}"
        );
        let e = refused(notification(
            json!({"emailConfigurations": [{"from": "a@b.c",
            "recipients": {"to": [{"ssoIdentity": {"identityStoreId": "d-1"}}]}}]}),
        ));
        assert!(e.contains("ssoIdentity.userId is required"), "{e}");
        let e = refused(notification(json!({})));
        assert!(e.contains("action.lambdaAction is required"), "{e}");
        // No recipient directory at all (a server without the notify service).
        let e = match compile(
            record(notification(email("ann"))),
            &inputs(),
            &Targets::default(),
        ) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        };
        assert!(e.contains("this server has no recipient directory"), "{e}");
    }
}
