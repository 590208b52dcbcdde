//! Policy evaluation: compiled documents, connection variables, and the allow/deny decision.
//!
//! A [`CompiledPolicy`] is built once per policy version: action patterns become bit sets and
//! resource patterns without variables become [`Glob`]s. [`BoundPolicies`] then binds a set of
//! compiled policies to one connection's [`PolicyVariables`]: variables are substituted, conditions
//! (whose keys are all per-connection) are decided, and what is left is plain wildcard matching,
//! so deciding a request parses nothing and allocates nothing.
//!
//! Semantics follow IAM, which AWS IoT policies follow: an explicit Deny wins over any Allow, and
//! without a matching Allow the request is denied. A resource that uses a policy variable the
//! connection has no value for matches nothing: AWS IoT documents that when a certificate is not
//! attached to a thing, "this variable won't be resolved and will result in an access denied
//! error" (<https://docs.aws.amazon.com/iot/latest/developerguide/thing-policy-examples.html>), and
//! IAM that an unresolvable variable can make the whole statement not apply
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html>).
//! Values substituted for variables are literal: a client id containing `*` matches only itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use fleetcore_core::access::MqttAction;

use super::document::{
    Condition, ConditionOperator, DocumentError, Effect, PolicyDocument, Template, TemplatePart,
    Variable,
};
use super::glob::{Glob, GlobToken};

/// An action an IoT policy can allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IotAction {
    /// `iot:Connect`, on `client/<client id>`.
    Connect,
    /// `iot:Publish`, on `topic/<topic>`.
    Publish,
    /// `iot:Subscribe`, on `topicfilter/<filter>`.
    Subscribe,
    /// `iot:Receive`, on `topic/<topic>`.
    Receive,
    /// `iot:RetainPublish`, on `topic/<topic>`.
    RetainPublish,
    /// `iot:GetThingShadow`, on `thing/<name>`.
    GetThingShadow,
    /// `iot:UpdateThingShadow`, on `thing/<name>`.
    UpdateThingShadow,
    /// `iot:DeleteThingShadow`, on `thing/<name>`.
    DeleteThingShadow,
    /// `iot:ListNamedShadowsForThing`, on `thing/<name>`.
    ListNamedShadowsForThing,
    /// `iot:GetRetainedMessage`, on `topic/<topic>`.
    GetRetainedMessage,
    /// `iot:ListRetainedMessages`, on `*`.
    ListRetainedMessages,
    /// `iot:DeleteConnection`, on `client/<client id>`.
    DeleteConnection,
    /// `iot:DescribeJobExecution`, on `thing/<name>`.
    DescribeJobExecution,
    /// `iot:GetPendingJobExecutions`, on `thing/<name>`.
    GetPendingJobExecutions,
    /// `iot:StartNextPendingJobExecution`, on `thing/<name>`.
    StartNextPendingJobExecution,
    /// `iot:UpdateJobExecution`, on `thing/<name>`.
    UpdateJobExecution,
    /// `iot:AssumeRoleWithCertificate`, on a role alias.
    AssumeRoleWithCertificate,
}

impl IotAction {
    /// Every action, in bit order.
    pub const ALL: [IotAction; 17] = [
        IotAction::Connect,
        IotAction::Publish,
        IotAction::Subscribe,
        IotAction::Receive,
        IotAction::RetainPublish,
        IotAction::GetThingShadow,
        IotAction::UpdateThingShadow,
        IotAction::DeleteThingShadow,
        IotAction::ListNamedShadowsForThing,
        IotAction::GetRetainedMessage,
        IotAction::ListRetainedMessages,
        IotAction::DeleteConnection,
        IotAction::DescribeJobExecution,
        IotAction::GetPendingJobExecutions,
        IotAction::StartNextPendingJobExecution,
        IotAction::UpdateJobExecution,
        IotAction::AssumeRoleWithCertificate,
    ];

    /// The name after `iot:`.
    pub fn name(self) -> &'static str {
        match self {
            IotAction::Connect => "Connect",
            IotAction::Publish => "Publish",
            IotAction::Subscribe => "Subscribe",
            IotAction::Receive => "Receive",
            IotAction::RetainPublish => "RetainPublish",
            IotAction::GetThingShadow => "GetThingShadow",
            IotAction::UpdateThingShadow => "UpdateThingShadow",
            IotAction::DeleteThingShadow => "DeleteThingShadow",
            IotAction::ListNamedShadowsForThing => "ListNamedShadowsForThing",
            IotAction::GetRetainedMessage => "GetRetainedMessage",
            IotAction::ListRetainedMessages => "ListRetainedMessages",
            IotAction::DeleteConnection => "DeleteConnection",
            IotAction::DescribeJobExecution => "DescribeJobExecution",
            IotAction::GetPendingJobExecutions => "GetPendingJobExecutions",
            IotAction::StartNextPendingJobExecution => "StartNextPendingJobExecution",
            IotAction::UpdateJobExecution => "UpdateJobExecution",
            IotAction::AssumeRoleWithCertificate => "AssumeRoleWithCertificate",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for IotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iot:{}", self.name())
    }
}

/// A set of [`IotAction`]s, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ActionSet(u32);

impl ActionSet {
    /// The actions an `Action` pattern names: `*`, `iot:*`, `iot:Publish`, `iot:*Shadow`; case
    /// does not matter (IAM action names are case-insensitive). Other services name none.
    fn from_pattern(pattern: &str) -> ActionSet {
        let lower = pattern.to_ascii_lowercase();
        if lower == "*" {
            return ActionSet(IotAction::ALL.iter().fold(0, |m, a| m | a.bit()));
        }
        let Some(name) = lower.strip_prefix("iot:") else {
            return ActionSet(0);
        };
        let glob = Glob::parse(name);
        ActionSet(
            IotAction::ALL
                .iter()
                .filter(|a| glob.matches(&a.name().to_ascii_lowercase()))
                .fold(0, |m, a| m | a.bit()),
        )
    }

    fn contains(self, action: IotAction) -> bool {
        self.0 & action.bit() != 0
    }
}

/// The per-connection values policy variables and condition keys resolve to. A `None` (or a
/// missing attribute) means the variable has no value for this connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyVariables {
    /// `iot:ClientId`.
    pub client_id: Option<String>,
    /// `iot:Connection.Thing.ThingName`: the thing the certificate is attached to (AWS resolves
    /// it only when the client id equals the thing name if the certificate has several things).
    pub thing_name: Option<String>,
    /// `iot:Connection.Thing.ThingTypeName`.
    pub thing_type_name: Option<String>,
    /// `iot:Connection.Thing.Attributes[name]`.
    pub thing_attributes: BTreeMap<String, String>,
    /// `iot:Connection.Thing.IsAttached`; `Some(false)` for a certificate without a thing.
    pub thing_is_attached: Option<bool>,
    /// `iot:Certificate.Subject.CommonName`.
    pub certificate_common_name: Option<String>,
}

impl PolicyVariables {
    /// The value of `variable`, if the connection has one.
    pub fn get(&self, variable: &Variable) -> Option<Cow<'_, str>> {
        fn borrowed(v: &Option<String>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        match variable {
            Variable::ClientId => borrowed(&self.client_id),
            Variable::ThingName => borrowed(&self.thing_name),
            Variable::ThingTypeName => borrowed(&self.thing_type_name),
            Variable::ThingAttribute(name) => self
                .thing_attributes
                .get(name)
                .map(|v| Cow::Borrowed(v.as_str())),
            Variable::ThingIsAttached => self
                .thing_is_attached
                .map(|b| Cow::Borrowed(if b { "true" } else { "false" })),
            Variable::CertificateCommonName => borrowed(&self.certificate_common_name),
            Variable::Other(_) => None,
        }
    }
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it and none denies it.
    Allow,
    /// A statement denies it.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
}

impl Decision {
    /// True only for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

#[derive(Debug, Clone)]
enum CompiledResource {
    /// No variables: compiled once, shared by every connection.
    Fixed(Arc<Glob>),
    /// Compiled per connection once its variables are known.
    Templated(Template),
}

#[derive(Debug, Clone)]
struct CompiledStatement {
    effect: Effect,
    actions: ActionSet,
    resources: Vec<CompiledResource>,
    conditions: Vec<Condition>,
}

/// A policy document ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    statements: Vec<CompiledStatement>,
}

impl CompiledPolicy {
    /// Parses and compiles a policy document.
    pub fn parse(text: &str) -> Result<CompiledPolicy, DocumentError> {
        Ok(CompiledPolicy::compile(&PolicyDocument::parse(text)?))
    }

    /// Compiles a parsed document.
    pub fn compile(document: &PolicyDocument) -> CompiledPolicy {
        let statements = document
            .statements
            .iter()
            .map(|s| CompiledStatement {
                effect: s.effect,
                actions: s
                    .actions
                    .iter()
                    .map(|a| ActionSet::from_pattern(a))
                    .fold(ActionSet::default(), |m, a| ActionSet(m.0 | a.0)),
                resources: s
                    .resources
                    .iter()
                    .filter_map(|r| {
                        if r.has_variables() {
                            Some(CompiledResource::Templated(r.clone()))
                        } else {
                            bind_template(r, |_| None).map(|g| CompiledResource::Fixed(Arc::new(g)))
                        }
                    })
                    .collect(),
                conditions: s.conditions.clone(),
            })
            // A statement naming no IoT action can never apply.
            .filter(|s| s.actions.0 != 0)
            .collect();
        CompiledPolicy { statements }
    }
}

/// Substitutes variables into `template` and compiles it; None if a variable has no value.
fn bind_template<'v>(
    template: &Template,
    lookup: impl Fn(&Variable) -> Option<Cow<'v, str>>,
) -> Option<Glob> {
    let mut values: Vec<Cow<'v, str>> = Vec::new();
    for part in &template.parts {
        if let TemplatePart::Variable(v) = part {
            values.push(lookup(v)?);
        }
    }
    let mut values = values.iter();
    let tokens: Vec<GlobToken<'_>> = template
        .parts
        .iter()
        .map(|part| match part {
            TemplatePart::Literal(text) => GlobToken::Literal(text),
            TemplatePart::AnyRun => GlobToken::AnyRun,
            TemplatePart::AnyChar => GlobToken::AnyChar,
            TemplatePart::Variable(_) => {
                GlobToken::Literal(values.next().map(|v| v.as_ref()).unwrap_or_default())
            }
        })
        .collect();
    Some(Glob::new(tokens))
}

/// Whether one condition holds for a connection (IAM semantics: a missing key fails positive
/// operators and satisfies negated ones, `...IfExists` is satisfied by a missing key).
fn condition_holds(condition: &Condition, variables: &PolicyVariables) -> bool {
    use ConditionOperator as Op;
    let value = variables.get(&condition.key);
    if condition.operator == Op::Null {
        return condition.values.iter().any(|v| {
            let want_absent = literal_text(v).eq_ignore_ascii_case("true");
            want_absent == value.is_none()
        });
    }
    let negated = matches!(
        condition.operator,
        Op::StringNotEquals | Op::StringNotEqualsIgnoreCase | Op::StringNotLike
    );
    let Some(value) = value else {
        return condition.if_exists || negated;
    };
    let lookup = |v: &Variable| variables.get(v);
    let any = condition
        .values
        .iter()
        .any(|expected| match condition.operator {
            Op::StringLike | Op::StringNotLike => {
                bind_template(expected, lookup).is_some_and(|glob| glob.matches(&value))
            }
            Op::Bool => literal_text(expected).eq_ignore_ascii_case(&value),
            _ => {
                let Some(expected) = substitute(expected, lookup) else {
                    return false;
                };
                match condition.operator {
                    Op::StringEqualsIgnoreCase | Op::StringNotEqualsIgnoreCase => {
                        expected.to_lowercase() == value.to_lowercase()
                    }
                    _ => expected == *value,
                }
            }
        });
    any != negated
}

/// A template without wildcards as a string with its variables substituted.
fn substitute<'v>(
    template: &Template,
    lookup: impl Fn(&Variable) -> Option<Cow<'v, str>>,
) -> Option<String> {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => out.push_str(text),
            TemplatePart::AnyRun => out.push('*'),
            TemplatePart::AnyChar => out.push('?'),
            TemplatePart::Variable(v) => out.push_str(&lookup(v)?),
        }
    }
    Some(out)
}

fn literal_text(template: &Template) -> &str {
    match template.parts.as_slice() {
        [TemplatePart::Literal(text)] => text,
        _ => "",
    }
}

#[derive(Debug, Clone)]
struct BoundStatement {
    effect: Effect,
    actions: ActionSet,
    resources: Vec<Arc<Glob>>,
}

/// Policies bound to one connection's variables: deciding a request is wildcard matching only.
#[derive(Debug, Clone, Default)]
pub struct BoundPolicies {
    /// Deny statements first, so the first matching statement decides.
    statements: Vec<BoundStatement>,
}

impl BoundPolicies {
    /// Binds `policies` to `variables`: substitutes variables, drops resources whose variables
    /// have no value and statements whose conditions do not hold.
    pub fn bind(policies: &[Arc<CompiledPolicy>], variables: &PolicyVariables) -> BoundPolicies {
        let mut statements = Vec::new();
        for policy in policies {
            for statement in &policy.statements {
                if !statement
                    .conditions
                    .iter()
                    .all(|c| condition_holds(c, variables))
                {
                    continue;
                }
                let resources: Vec<Arc<Glob>> = statement
                    .resources
                    .iter()
                    .filter_map(|r| match r {
                        CompiledResource::Fixed(glob) => Some(glob.clone()),
                        CompiledResource::Templated(template) => {
                            bind_template(template, |v| variables.get(v)).map(Arc::new)
                        }
                    })
                    .collect();
                if !resources.is_empty() {
                    statements.push(BoundStatement {
                        effect: statement.effect,
                        actions: statement.actions,
                        resources,
                    });
                }
            }
        }
        // Stable: keeps document order within each effect.
        statements.sort_by_key(|s| s.effect == Effect::Allow);
        BoundPolicies { statements }
    }

    /// Decides `action` on the full resource ARN.
    pub fn decide(&self, action: IotAction, resource_arn: &str) -> Decision {
        for statement in &self.statements {
            if statement.actions.contains(action)
                && statement.resources.iter().any(|g| g.matches(resource_arn))
            {
                return match statement.effect {
                    Effect::Deny => Decision::ExplicitDeny,
                    Effect::Allow => Decision::Allow,
                };
            }
        }
        Decision::ImplicitDeny
    }

    /// True when no statement applies to this connection at all.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// Evaluates one request against `policies` for a connection with `variables`.
pub fn evaluate(
    policies: &[Arc<CompiledPolicy>],
    variables: &PolicyVariables,
    action: IotAction,
    resource_arn: &str,
) -> Decision {
    BoundPolicies::bind(policies, variables).decide(action, resource_arn)
}

/// Builds the resource ARNs requests are evaluated against:
/// `arn:<partition>:iot:<region>:<account>:<type>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArns {
    prefix: String,
}

impl ResourceArns {
    /// ARNs in the `aws` partition.
    pub fn new(region: &str, account_id: &str) -> ResourceArns {
        ResourceArns::with_partition("aws", region, account_id)
    }

    /// ARNs in another partition (e.g. `aws-cn`).
    pub fn with_partition(partition: &str, region: &str, account_id: &str) -> ResourceArns {
        ResourceArns {
            prefix: format!("arn:{partition}:iot:{region}:{account_id}:"),
        }
    }

    /// `...:<kind>/<name>` written into `out` (cleared first), reusing its allocation.
    pub fn write(&self, kind: &str, name: &str, out: &mut String) {
        out.clear();
        out.reserve(self.prefix.len() + kind.len() + 1 + name.len());
        out.push_str(&self.prefix);
        out.push_str(kind);
        out.push('/');
        out.push_str(name);
    }

    /// `...:<kind>/<name>`.
    pub fn arn(&self, kind: &str, name: &str) -> String {
        let mut out = String::new();
        self.write(kind, name, &mut out);
        out
    }

    /// The `client/<id>` ARN `iot:Connect` is checked on.
    pub fn client(&self, client_id: &str) -> String {
        self.arn("client", client_id)
    }

    /// The `topic/<topic>` ARN.
    pub fn topic(&self, topic: &str) -> String {
        self.arn("topic", topic)
    }

    /// The `topicfilter/<filter>` ARN.
    pub fn topic_filter(&self, filter: &str) -> String {
        self.arn("topicfilter", filter)
    }

    /// The `thing/<name>` ARN.
    pub fn thing(&self, thing_name: &str) -> String {
        self.arn("thing", thing_name)
    }

    /// The resource kind an MQTT action is checked on.
    pub fn kind(action: MqttAction) -> &'static str {
        match action {
            MqttAction::Subscribe => "topicfilter",
            MqttAction::Publish | MqttAction::RetainPublish | MqttAction::Receive => "topic",
        }
    }
}

/// Decides an MQTT action: `RetainPublish` needs both `iot:Publish` and `iot:RetainPublish`.
pub fn decide_mqtt(bound: &BoundPolicies, action: MqttAction, resource_arn: &str) -> Decision {
    match action {
        MqttAction::Publish => bound.decide(IotAction::Publish, resource_arn),
        MqttAction::Subscribe => bound.decide(IotAction::Subscribe, resource_arn),
        MqttAction::Receive => bound.decide(IotAction::Receive, resource_arn),
        MqttAction::RetainPublish => match bound.decide(IotAction::Publish, resource_arn) {
            Decision::Allow => bound.decide(IotAction::RetainPublish, resource_arn),
            refused => refused,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARNS: &str = "arn:aws:iot:us-east-1:123456789012:";

    fn policy(statements: &str) -> Arc<CompiledPolicy> {
        Arc::new(
            CompiledPolicy::parse(&format!(
                r#"{{"Version":"2012-10-17","Statement":{statements}}}"#
            ))
            .expect("valid policy"),
        )
    }

    fn device() -> PolicyVariables {
        PolicyVariables {
            client_id: Some("sensor-1".into()),
            thing_name: Some("sensor-1".into()),
            thing_type_name: Some("thermometer".into()),
            thing_attributes: BTreeMap::from([("floor".into(), "3".into())]),
            thing_is_attached: Some(true),
            certificate_common_name: Some("sensor-1.example".into()),
        }
    }

    fn arn(rest: &str) -> String {
        format!("{ARNS}{rest}")
    }

    #[test]
    fn default_deny() {
        let p = policy(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"}"#);
        let d = evaluate(&[p], &device(), IotAction::Subscribe, &arn("topicfilter/a"));
        assert_eq!(d, Decision::ImplicitDeny);
        assert_eq!(
            evaluate(&[], &device(), IotAction::Publish, &arn("topic/a")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn explicit_deny_wins_across_statements_and_policies() {
        let allow = policy(r#"{"Effect":"Allow","Action":"iot:*","Resource":"*"}"#);
        let deny = policy(
            r#"{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/secret/*"}"#,
        );
        let both = [allow.clone(), deny.clone()];
        assert_eq!(
            evaluate(&both, &device(), IotAction::Publish, &arn("topic/secret/x")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&both, &device(), IotAction::Publish, &arn("topic/public/x")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&both, &device(), IotAction::Receive, &arn("topic/secret/x")),
            Decision::Allow
        );
        // Order of policies does not matter.
        assert_eq!(
            evaluate(
                &[deny, allow],
                &device(),
                IotAction::Publish,
                &arn("topic/secret/x")
            ),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn variables_are_substituted() {
        let p = policy(
            r#"[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/*"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/types/${iot:Connection.Thing.ThingTypeName}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/floors/${iot:Connection.Thing.Attributes[floor]}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/attached/${iot:Connection.Thing.IsAttached}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/cn/${iot:Certificate.Subject.CommonName}"}]"#,
        );
        let bound = BoundPolicies::bind(&[p], &device());
        let allowed = |action, rest: &str| bound.decide(action, &arn(rest)).is_allowed();
        assert!(allowed(IotAction::Connect, "client/sensor-1"));
        assert!(!allowed(IotAction::Connect, "client/sensor-2"));
        assert!(allowed(
            IotAction::Publish,
            "topic/devices/sensor-1/telemetry"
        ));
        assert!(!allowed(
            IotAction::Publish,
            "topic/devices/sensor-2/telemetry"
        ));
        assert!(allowed(IotAction::Publish, "topic/types/thermometer"));
        assert!(allowed(IotAction::Publish, "topic/floors/3"));
        assert!(!allowed(IotAction::Publish, "topic/floors/4"));
        assert!(allowed(IotAction::Publish, "topic/attached/true"));
        assert!(allowed(IotAction::Publish, "topic/cn/sensor-1.example"));
    }

    #[test]
    fn a_variable_without_value_matches_nothing() {
        let p = policy(
            r#"[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/devices/${iot:Connection.Thing.ThingName}/*"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/x${aws:SourceIp}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/floor/${iot:Connection.Thing.Attributes[missing]}"}]"#,
        );
        let unattached = PolicyVariables {
            client_id: Some("c".into()),
            thing_is_attached: Some(false),
            ..PolicyVariables::default()
        };
        let bound = BoundPolicies::bind(&[p], &unattached);
        for topic in [
            "topic/devices//x",
            "topic/devices/${iot:Connection.Thing.ThingName}/x",
            "topic/x",
            "topic/floor/",
        ] {
            assert_eq!(
                bound.decide(IotAction::Publish, &arn(topic)),
                Decision::ImplicitDeny,
                "{topic}"
            );
        }
        // A Deny whose variable is unresolved does not apply either.
        let p = policy(
            r#"[{"Effect":"Allow","Action":"iot:Publish","Resource":"*"},
                {"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}"}]"#,
        );
        assert!(evaluate(&[p], &unattached, IotAction::Publish, &arn("topic/")).is_allowed());
    }

    #[test]
    fn substituted_values_are_literal() {
        let p = policy(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/${iot:ClientId}"}"#,
        );
        let sneaky = PolicyVariables {
            client_id: Some("*".into()),
            ..PolicyVariables::default()
        };
        let bound = BoundPolicies::bind(&[p], &sneaky);
        assert!(
            bound
                .decide(IotAction::Publish, &arn("topic/*"))
                .is_allowed()
        );
        assert!(
            !bound
                .decide(IotAction::Publish, &arn("topic/other"))
                .is_allowed()
        );
    }

    #[test]
    fn wildcards_in_resources_and_literal_mqtt_wildcards() {
        let p = policy(
            r#"[{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/cmd/+/#"},
                {"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/cmd/?/*"}]"#,
        );
        let bound = BoundPolicies::bind(&[p], &device());
        assert!(
            bound
                .decide(IotAction::Subscribe, &arn("topicfilter/cmd/+/#"))
                .is_allowed()
        );
        assert!(
            !bound
                .decide(IotAction::Subscribe, &arn("topicfilter/cmd/a/#"))
                .is_allowed()
        );
        assert!(
            !bound
                .decide(IotAction::Subscribe, &arn("topicfilter/cmd/#"))
                .is_allowed()
        );
        assert!(
            bound
                .decide(IotAction::Receive, &arn("topic/cmd/a/b/c"))
                .is_allowed()
        );
        assert!(
            !bound
                .decide(IotAction::Receive, &arn("topic/cmd/ab/c"))
                .is_allowed()
        );
    }

    #[test]
    fn resources_are_account_and_region_scoped() {
        let p = policy(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:eu-west-1:999999999999:topic/a"}"#,
        );
        assert!(!evaluate(&[p], &device(), IotAction::Publish, &arn("topic/a")).is_allowed());
    }

    #[test]
    fn action_patterns() {
        let set = |p: &str| ActionSet::from_pattern(p);
        assert!(set("iot:*").contains(IotAction::AssumeRoleWithCertificate));
        assert!(set("*").contains(IotAction::Connect));
        assert!(set("IOT:publish").contains(IotAction::Publish));
        assert!(!set("iot:Publish").contains(IotAction::RetainPublish));
        let shadows = set("iot:*ThingShadow");
        assert!(shadows.contains(IotAction::GetThingShadow));
        assert!(shadows.contains(IotAction::UpdateThingShadow));
        assert!(shadows.contains(IotAction::DeleteThingShadow));
        assert!(!shadows.contains(IotAction::Publish));
        assert_eq!(set("greengrass:*"), ActionSet(0));
        assert_eq!(set("iot:CreateThing"), ActionSet(0));
    }

    #[test]
    fn retain_publish_needs_publish_too() {
        let only_retain =
            policy(r#"{"Effect":"Allow","Action":"iot:RetainPublish","Resource":"*"}"#);
        let both = policy(
            r#"{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish"],"Resource":"*"}"#,
        );
        let only_publish = policy(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"}"#);
        let topic = arn("topic/t");
        let check = |p: &Arc<CompiledPolicy>| {
            decide_mqtt(
                &BoundPolicies::bind(std::slice::from_ref(p), &device()),
                MqttAction::RetainPublish,
                &topic,
            )
        };
        assert_eq!(check(&only_retain), Decision::ImplicitDeny);
        assert_eq!(check(&only_publish), Decision::ImplicitDeny);
        assert_eq!(check(&both), Decision::Allow);
    }

    #[test]
    fn conditions_decide_whether_a_statement_applies() {
        let p = |condition: &str| {
            policy(&format!(
                r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":{condition}}}"#
            ))
        };
        let connect = |p: Arc<CompiledPolicy>, vars: &PolicyVariables| {
            evaluate(&[p], vars, IotAction::Connect, &arn("client/x")).is_allowed()
        };
        let unattached = PolicyVariables {
            client_id: Some("x".into()),
            thing_is_attached: Some(false),
            ..PolicyVariables::default()
        };
        let attached = r#"{"Bool":{"iot:Connection.Thing.IsAttached":["true"]}}"#;
        assert!(connect(p(attached), &device()));
        assert!(!connect(p(attached), &unattached));

        let typed = r#"{"StringEquals":{"iot:Connection.Thing.ThingTypeName":"thermometer"}}"#;
        assert!(connect(p(typed), &device()));
        assert!(
            !connect(p(typed), &unattached),
            "missing key fails StringEquals"
        );
        let not_typed = r#"{"StringNotEquals":{"iot:Connection.Thing.ThingTypeName":"camera"}}"#;
        assert!(connect(p(not_typed), &device()));
        assert!(
            connect(p(not_typed), &unattached),
            "missing key satisfies StringNotEquals"
        );
        let if_exists =
            r#"{"StringEqualsIfExists":{"iot:Connection.Thing.ThingTypeName":"camera"}}"#;
        assert!(!connect(p(if_exists), &device()));
        assert!(connect(p(if_exists), &unattached));
        let like = r#"{"StringLike":{"iot:ClientId":["sensor-*","cam-?"]}}"#;
        assert!(connect(p(like), &device()));
        assert!(!connect(p(like), &unattached));
        let ignore_case = r#"{"StringEqualsIgnoreCase":{"iot:Certificate.Subject.CommonName":"SENSOR-1.EXAMPLE"}}"#;
        assert!(connect(p(ignore_case), &device()));
        let with_variable =
            r#"{"StringEquals":{"iot:Connection.Thing.ThingName":"${iot:ClientId}"}}"#;
        assert!(connect(p(with_variable), &device()));
        let null = r#"{"Null":{"iot:Connection.Thing.ThingTypeName":"true"}}"#;
        assert!(!connect(p(null), &device()));
        assert!(connect(p(null), &unattached));
        let two_keys = r#"{"StringEquals":{"iot:Connection.Thing.Attributes[floor]":"3","iot:ClientId":"other"}}"#;
        assert!(!connect(p(two_keys), &device()), "all keys must hold");
    }
}
