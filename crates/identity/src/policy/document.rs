//! AWS IoT policy documents: parsing and validation of the JSON users write.
//!
//! Parsing is pure (string in, [`PolicyDocument`] or [`DocumentError`] out). It checks everything
//! the engine relies on, so a document that parses always compiles; every rejection says what to
//! change.

use std::fmt;

use serde_json::{Map, Value};

/// The largest policy document AWS accepts, counted in characters excluding whitespace.
///
/// AWS IoT API Reference, CreatePolicy / CreatePolicyVersion, `policyDocument`: "Minimum length
/// of 1. Maximum length of 2048, excluding whitespace."
/// (<https://docs.aws.amazon.com/iot/latest/apireference/API_CreatePolicy.html>)
pub const MAX_DOCUMENT_CHARS: usize = 2048;

/// The one policy language version supported: policy variables exist only in this version.
pub const POLICY_LANGUAGE_VERSION: &str = "2012-10-17";

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

/// One statement of a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The optional statement id.
    pub sid: Option<String>,
    /// Allow or Deny.
    pub effect: Effect,
    /// Action patterns as written (`iot:Publish`, `iot:*`, `*`); matched case-insensitively.
    pub actions: Vec<String>,
    /// Resource patterns.
    pub resources: Vec<Template>,
    /// Conditions; all must hold for the statement to apply.
    pub conditions: Vec<Condition>,
}

/// Whether a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants the actions on the resources.
    Allow,
    /// Refuses them, whatever any Allow says.
    Deny,
}

/// A string from a policy with its wildcards and policy variables located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The pieces, in order; adjacent literals are merged.
    pub parts: Vec<TemplatePart>,
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text matched as is (MQTT `+` and `#` are literal characters in policies).
    Literal(String),
    /// `*`: any run of characters, including none.
    AnyRun,
    /// `?`: exactly one character.
    AnyChar,
    /// `${...}`: replaced by the connection's value when the policy is evaluated.
    Variable(Variable),
}

/// A policy variable (also usable as a condition key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `iot:ClientId`.
    ClientId,
    /// `iot:Connection.Thing.ThingName`.
    ThingName,
    /// `iot:Connection.Thing.ThingTypeName`.
    ThingTypeName,
    /// `iot:Connection.Thing.Attributes[name]`.
    ThingAttribute(String),
    /// `iot:Connection.Thing.IsAttached`: `true` or `false`.
    ThingIsAttached,
    /// `iot:Certificate.Subject.CommonName`.
    CertificateCommonName,
    /// Any other well-formed variable (e.g. `aws:SourceIp`): accepted for compatibility, never
    /// has a value here, so a resource using it matches nothing.
    Other(String),
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variable::ClientId => f.write_str("iot:ClientId"),
            Variable::ThingName => f.write_str("iot:Connection.Thing.ThingName"),
            Variable::ThingTypeName => f.write_str("iot:Connection.Thing.ThingTypeName"),
            Variable::ThingAttribute(name) => {
                write!(f, "iot:Connection.Thing.Attributes[{name}]")
            }
            Variable::ThingIsAttached => f.write_str("iot:Connection.Thing.IsAttached"),
            Variable::CertificateCommonName => f.write_str("iot:Certificate.Subject.CommonName"),
            Variable::Other(name) => f.write_str(name),
        }
    }
}

const SUPPORTED_VARIABLES: &str = "iot:ClientId, iot:Connection.Thing.ThingName, \
    iot:Connection.Thing.ThingTypeName, iot:Connection.Thing.Attributes[name], \
    iot:Connection.Thing.IsAttached, iot:Certificate.Subject.CommonName";

impl Variable {
    /// Parses a variable or condition key name; names are case-insensitive like IAM's, the
    /// attribute name inside `[...]` is not.
    fn parse(name: &str) -> Option<Variable> {
        const ATTRIBUTES: &str = "iot:connection.thing.attributes[";
        let lower = name.to_ascii_lowercase();
        let known = match lower.as_str() {
            "iot:clientid" => Some(Variable::ClientId),
            "iot:connection.thing.thingname" => Some(Variable::ThingName),
            "iot:connection.thing.thingtypename" => Some(Variable::ThingTypeName),
            "iot:connection.thing.isattached" => Some(Variable::ThingIsAttached),
            "iot:certificate.subject.commonname" => Some(Variable::CertificateCommonName),
            _ => None,
        };
        if known.is_some() {
            return known;
        }
        if lower.starts_with(ATTRIBUTES) && name.ends_with(']') {
            let attribute = &name[ATTRIBUTES.len()..name.len() - 1];
            if !attribute.is_empty() && !attribute.contains(['[', ']']) {
                return Some(Variable::ThingAttribute(attribute.to_string()));
            }
            return None;
        }
        let well_formed = name.split_once(':').is_some_and(|(service, rest)| {
            !service.is_empty()
                && !rest.is_empty()
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && rest.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b'-' | b'/' | b'[' | b']')
                })
        });
        well_formed.then(|| Variable::Other(name.to_string()))
    }

    /// True for the variables a connection can have a value for.
    pub fn is_supported(&self) -> bool {
        !matches!(self, Variable::Other(_))
    }
}

/// A condition: `"Operator": {"key": [values]}` after splitting, one per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// How values are compared.
    pub operator: ConditionOperator,
    /// True for the `...IfExists` form: a missing key satisfies the condition.
    pub if_exists: bool,
    /// The context key compared.
    pub key: Variable,
    /// The values; the condition holds if any matches (none, for negated operators).
    pub values: Vec<Template>,
}

/// The supported condition operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionOperator {
    /// `StringEquals`.
    StringEquals,
    /// `StringNotEquals`.
    StringNotEquals,
    /// `StringEqualsIgnoreCase`.
    StringEqualsIgnoreCase,
    /// `StringNotEqualsIgnoreCase`.
    StringNotEqualsIgnoreCase,
    /// `StringLike` (`*` and `?` wildcards).
    StringLike,
    /// `StringNotLike`.
    StringNotLike,
    /// `Bool`.
    Bool,
    /// `Null`: `"true"` when the key must be absent, `"false"` when present.
    Null,
}

const SUPPORTED_OPERATORS: &str = "StringEquals, StringNotEquals, StringEqualsIgnoreCase, \
    StringNotEqualsIgnoreCase, StringLike, StringNotLike, Bool (each also with IfExists), Null";

impl ConditionOperator {
    fn parse(name: &str) -> Option<(ConditionOperator, bool)> {
        if name == "Null" {
            return Some((ConditionOperator::Null, false));
        }
        let (base, if_exists) = match name.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let operator = match base {
            "StringEquals" => ConditionOperator::StringEquals,
            "StringNotEquals" => ConditionOperator::StringNotEquals,
            "StringEqualsIgnoreCase" => ConditionOperator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => ConditionOperator::StringNotEqualsIgnoreCase,
            "StringLike" => ConditionOperator::StringLike,
            "StringNotLike" => ConditionOperator::StringNotLike,
            "Bool" => ConditionOperator::Bool,
            _ => return None,
        };
        Some((operator, if_exists))
    }

    /// True for the operators whose values use `*` and `?` wildcards.
    fn uses_wildcards(self) -> bool {
        matches!(
            self,
            ConditionOperator::StringLike | ConditionOperator::StringNotLike
        )
    }
}

/// Which statement a problem is in, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    /// 1-based position in the `Statement` list.
    pub index: usize,
    /// The statement's `Sid`, if it has one.
    pub sid: Option<String>,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sid {
            Some(sid) => write!(f, "statement {} (Sid {sid:?})", self.index),
            None => write!(f, "statement {}", self.index),
        }
    }
}

/// Why a policy document was rejected; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The document is empty or only whitespace.
    #[error("the policy document is empty")]
    Empty,
    /// The document is longer than AWS allows.
    #[error(
        "the policy document has {chars} characters excluding whitespace; the maximum is {max}",
        max = MAX_DOCUMENT_CHARS
    )]
    TooLong {
        /// Characters excluding whitespace.
        chars: usize,
    },
    /// The document is not JSON.
    #[error("the policy document is not valid JSON: {message} (line {line}, column {column})")]
    InvalidJson {
        /// The parser's description.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The document is JSON but not an object.
    #[error("the policy document must be a JSON object with \"Version\" and \"Statement\"")]
    NotAnObject,
    /// A top-level member other than Version, Id, Statement.
    #[error(
        "unknown policy element {0:?}: a policy document has only \"Version\", \"Id\" and \"Statement\""
    )]
    UnknownElement(String),
    /// No `Version`.
    #[error("the policy document has no \"Version\": add \"Version\": \"2012-10-17\"")]
    MissingVersion,
    /// A `Version` other than 2012-10-17.
    #[error("policy language version {0} is not supported: use \"Version\": \"2012-10-17\"")]
    UnsupportedVersion(String),
    /// No `Statement`.
    #[error("the policy document has no \"Statement\"")]
    MissingStatement,
    /// `Statement` is neither an object nor a non-empty array.
    #[error("\"Statement\" must be an object or a non-empty array of objects")]
    InvalidStatementList,
    /// A problem inside one statement.
    #[error("{at}: {problem}")]
    Statement {
        /// Which statement.
        at: StatementRef,
        /// What is wrong with it.
        problem: StatementProblem,
    },
}

/// What is wrong with one statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementProblem {
    /// The statement is not a JSON object.
    #[error("a statement must be a JSON object with \"Effect\", \"Action\" and \"Resource\"")]
    NotAnObject,
    /// A member that statements do not have.
    #[error(
        "unknown element {0:?}: a statement has \"Sid\", \"Effect\", \"Action\", \"Resource\" and \"Condition\""
    )]
    UnknownElement(String),
    /// An IAM element IoT policies do not support.
    #[error("{element:?} is not supported in IoT policies: {advice}")]
    UnsupportedElement {
        /// The element.
        element: String,
        /// What to write instead.
        advice: &'static str,
    },
    /// An element has the wrong JSON type.
    #[error("{element:?} must be {expected}")]
    WrongType {
        /// The element.
        element: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A required element is missing.
    #[error("missing {0:?}")]
    Missing(&'static str),
    /// An element is an empty list.
    #[error("{0:?} must not be empty")]
    EmptyList(&'static str),
    /// `Effect` is neither Allow nor Deny.
    #[error("\"Effect\" must be \"Allow\" or \"Deny\", not {0:?}")]
    InvalidEffect(String),
    /// A malformed action.
    #[error("invalid action {action:?}: {reason}")]
    InvalidAction {
        /// The action as written.
        action: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A malformed resource.
    #[error("invalid resource {resource:?}: {reason}")]
    InvalidResource {
        /// The resource as written.
        resource: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A malformed `Condition` block.
    #[error("invalid condition: {0}")]
    InvalidCondition(String),
    /// A condition operator this server does not evaluate.
    #[error("condition operator {operator:?} is not supported; supported: {supported}", supported = SUPPORTED_OPERATORS)]
    UnsupportedConditionOperator {
        /// The operator as written.
        operator: String,
    },
    /// A condition key this server has no value for.
    #[error("condition key {key:?} is not supported; supported: {supported}", supported = SUPPORTED_VARIABLES)]
    UnsupportedConditionKey {
        /// The key as written.
        key: String,
    },
}

/// Number of characters AWS counts toward the size limit.
pub fn counted_chars(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

impl PolicyDocument {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<PolicyDocument, DocumentError> {
        let chars = counted_chars(text);
        if chars == 0 {
            return Err(DocumentError::Empty);
        }
        if chars > MAX_DOCUMENT_CHARS {
            return Err(DocumentError::TooLong { chars });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::InvalidJson {
            message: json_message(&e),
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(top) = value else {
            return Err(DocumentError::NotAnObject);
        };
        for key in top.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(DocumentError::UnknownElement(key.clone()));
            }
        }
        match top.get("Version") {
            None => return Err(DocumentError::MissingVersion),
            Some(Value::String(v)) if v == POLICY_LANGUAGE_VERSION => {}
            Some(other) => return Err(DocumentError::UnsupportedVersion(other.to_string())),
        }
        let raw_statements: Vec<&Value> = match top.get("Statement") {
            None => return Err(DocumentError::MissingStatement),
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            Some(_) => return Err(DocumentError::InvalidStatementList),
        };
        let statements = raw_statements
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_statement(i + 1, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PolicyDocument { statements })
    }
}

/// serde_json's message without its trailing " at line L column C" (reported separately).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn parse_statement(index: usize, value: &Value) -> Result<Statement, DocumentError> {
    let sid = match value {
        Value::Object(o) => o.get("Sid").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let at = StatementRef { index, sid };
    let fail = |problem: StatementProblem| DocumentError::Statement {
        at: at.clone(),
        problem,
    };
    let Value::Object(map) = value else {
        return Err(fail(StatementProblem::NotAnObject));
    };
    check_statement_keys(map).map_err(&fail)?;
    if let Some(sid) = map.get("Sid")
        && !sid.is_string()
    {
        return Err(fail(StatementProblem::WrongType {
            element: "Sid",
            expected: "a string",
        }));
    }
    let effect = match map.get("Effect") {
        None => return Err(fail(StatementProblem::Missing("Effect"))),
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(Value::String(s)) => return Err(fail(StatementProblem::InvalidEffect(s.clone()))),
        Some(_) => {
            return Err(fail(StatementProblem::WrongType {
                element: "Effect",
                expected: "the string \"Allow\" or \"Deny\"",
            }));
        }
    };
    let actions = string_list(map, "Action").map_err(&fail)?;
    for action in &actions {
        validate_action(action).map_err(|reason| {
            fail(StatementProblem::InvalidAction {
                action: action.clone(),
                reason,
            })
        })?;
    }
    let resources = string_list(map, "Resource")
        .map_err(&fail)?
        .into_iter()
        .map(|r| {
            parse_resource(&r).map_err(|reason| {
                fail(StatementProblem::InvalidResource {
                    resource: r.clone(),
                    reason,
                })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = match map.get("Condition") {
        None => Vec::new(),
        Some(c) => parse_conditions(c).map_err(&fail)?,
    };
    Ok(Statement {
        sid: at.sid.clone(),
        effect,
        actions,
        resources,
        conditions,
    })
}

fn check_statement_keys(map: &Map<String, Value>) -> Result<(), StatementProblem> {
    for key in map.keys() {
        let advice = match key.as_str() {
            "Sid" | "Effect" | "Action" | "Resource" | "Condition" => continue,
            "NotAction" => "list the actions in \"Action\" (use a Deny statement to carve out)",
            "NotResource" => {
                "list the resources in \"Resource\" (use a Deny statement to carve out)"
            }
            "Principal" | "NotPrincipal" => {
                "IoT policies apply to the certificates and thing groups they are attached to"
            }
            _ => return Err(StatementProblem::UnknownElement(key.clone())),
        };
        return Err(StatementProblem::UnsupportedElement {
            element: key.clone(),
            advice,
        });
    }
    Ok(())
}

/// A required element that is a string or a non-empty array of strings.
fn string_list(
    map: &Map<String, Value>,
    element: &'static str,
) -> Result<Vec<String>, StatementProblem> {
    const EXPECTED: &str = "a string or an array of strings";
    match map.get(element) {
        None => Err(StatementProblem::Missing(element)),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(StatementProblem::EmptyList(element));
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(StatementProblem::WrongType {
                        element,
                        expected: EXPECTED,
                    }),
                })
                .collect()
        }
        Some(_) => Err(StatementProblem::WrongType {
            element,
            expected: EXPECTED,
        }),
    }
}

/// `*`, or `service:Name` where the name may use `*` and `?`.
fn validate_action(action: &str) -> Result<(), &'static str> {
    if action == "*" {
        return Ok(());
    }
    let Some((service, name)) = action.split_once(':') else {
        return Err("expected service:Action, e.g. \"iot:Publish\"");
    };
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("the service prefix (before ':') must be letters, digits or '-', e.g. \"iot\"");
    }
    if name.is_empty() {
        return Err("the action name after ':' is empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
    {
        return Err("an action name has only letters, digits and the wildcards '*' and '?'");
    }
    Ok(())
}

fn parse_resource(resource: &str) -> Result<Template, String> {
    if resource.is_empty() {
        return Err("a resource must not be empty".into());
    }
    if resource != "*" {
        if !resource.starts_with("arn:") {
            return Err(
                "a resource is \"*\" or an ARN such as \"arn:aws:iot:us-east-1:123456789012:topic/sensors/*\""
                    .into(),
            );
        }
        if resource.matches(':').count() < 5 {
            return Err(
                "an ARN has six parts, arn:partition:service:region:account-id:resource".into(),
            );
        }
    }
    Template::parse(resource, true)
}

impl Template {
    /// Parses `text`, locating `${...}` variables and, if `wildcards`, `*` and `?`.
    /// `${*}`, `${?}` and `${$}` stand for the literal characters (IAM policy syntax).
    pub fn parse(text: &str, wildcards: bool) -> Result<Template, String> {
        let mut parts: Vec<TemplatePart> = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '$' && rest[1..].starts_with('{') {
                let Some(close) = rest.find('}') else {
                    return Err("\"${\" is not closed by '}'".into());
                };
                let name = &rest[2..close];
                rest = &rest[close + 1..];
                match name {
                    "*" | "?" | "$" => literal.push_str(name),
                    _ => {
                        let variable = Variable::parse(name).ok_or_else(|| {
                            format!(
                                "\"${{{name}}}\" is not a policy variable; supported: {SUPPORTED_VARIABLES}"
                            )
                        })?;
                        flush(&mut parts, &mut literal);
                        parts.push(TemplatePart::Variable(variable));
                    }
                }
                continue;
            }
            rest = &rest[c.len_utf8()..];
            match c {
                '*' if wildcards => {
                    flush(&mut parts, &mut literal);
                    parts.push(TemplatePart::AnyRun);
                }
                '?' if wildcards => {
                    flush(&mut parts, &mut literal);
                    parts.push(TemplatePart::AnyChar);
                }
                _ => literal.push(c),
            }
        }
        flush(&mut parts, &mut literal);
        Ok(Template { parts })
    }

    /// True when the template uses a policy variable.
    pub fn has_variables(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Variable(_)))
    }
}

fn flush(parts: &mut Vec<TemplatePart>, literal: &mut String) {
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(std::mem::take(literal)));
    }
}

fn parse_conditions(value: &Value) -> Result<Vec<Condition>, StatementProblem> {
    let invalid = |m: String| StatementProblem::InvalidCondition(m);
    let Value::Object(operators) = value else {
        return Err(invalid(
            "\"Condition\" must be an object like {\"StringEquals\": {\"key\": \"value\"}}".into(),
        ));
    };
    let mut conditions = Vec::new();
    for (operator_name, keys) in operators {
        let Some((operator, if_exists)) = ConditionOperator::parse(operator_name) else {
            return Err(StatementProblem::UnsupportedConditionOperator {
                operator: operator_name.clone(),
            });
        };
        let Value::Object(keys) = keys else {
            return Err(invalid(format!(
                "{operator_name:?} must map condition keys to values"
            )));
        };
        if keys.is_empty() {
            return Err(invalid(format!("{operator_name:?} has no condition keys")));
        }
        for (key_name, values) in keys {
            let key = Variable::parse(key_name)
                .filter(Variable::is_supported)
                .ok_or_else(|| StatementProblem::UnsupportedConditionKey {
                    key: key_name.clone(),
                })?;
            let raw = condition_values(values).ok_or_else(|| {
                invalid(format!(
                    "the value of {key_name:?} must be a string, boolean, number or a non-empty array of them"
                ))
            })?;
            let takes_bool = matches!(operator, ConditionOperator::Bool | ConditionOperator::Null);
            if takes_bool
                && let Some(bad) = raw
                    .iter()
                    .find(|v| !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"))
            {
                return Err(invalid(format!(
                    "{operator_name:?} takes \"true\" or \"false\", not {bad:?}"
                )));
            }
            let values = raw
                .iter()
                .map(|v| Template::parse(v, operator.uses_wildcards()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| invalid(format!("value of {key_name:?}: {m}")))?;
            conditions.push(Condition {
                operator,
                if_exists,
                key,
                values,
            });
        }
    }
    Ok(conditions)
}

fn condition_values(value: &Value) -> Option<Vec<String>> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
        Value::Array(_) => None,
        v => scalar(v).map(|s| vec![s]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement_problem(text: &str) -> StatementProblem {
        match PolicyDocument::parse(text) {
            Err(DocumentError::Statement { problem, .. }) => problem,
            other => panic!("expected a statement problem, got {other:?}"),
        }
    }

    fn doc(statement: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":{statement}}}"#)
    }

    #[test]
    fn parses_a_device_policy_with_arrays_objects_and_variables() {
        let d = PolicyDocument::parse(
            r#"{
              "Version": "2012-10-17",
              "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect",
                 "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}"},
                {"Sid": "pub", "Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
                 "Resource": ["arn:aws:iot:*:*:topic/devices/${iot:Connection.Thing.ThingName}/*"]},
                {"Effect": "Deny", "Action": "iot:*", "Resource": "*"}
              ]
            }"#,
        )
        .expect("valid");
        assert_eq!(d.statements.len(), 3);
        assert_eq!(d.statements[1].sid.as_deref(), Some("pub"));
        assert_eq!(d.statements[2].effect, Effect::Deny);
        assert_eq!(
            d.statements[0].resources[0].parts,
            vec![
                TemplatePart::Literal("arn:aws:iot:us-east-1:123456789012:client/".into()),
                TemplatePart::Variable(Variable::ClientId),
            ]
        );
        assert_eq!(
            d.statements[1].resources[0].parts,
            vec![
                TemplatePart::Literal("arn:aws:iot:".into()),
                TemplatePart::AnyRun,
                TemplatePart::Literal(":".into()),
                TemplatePart::AnyRun,
                TemplatePart::Literal(":topic/devices/".into()),
                TemplatePart::Variable(Variable::ThingName),
                TemplatePart::Literal("/".into()),
                TemplatePart::AnyRun,
            ]
        );
    }

    #[test]
    fn statement_may_be_a_single_object() {
        let d = PolicyDocument::parse(&doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"}"#,
        ))
        .expect("valid");
        assert_eq!(d.statements.len(), 1);
        assert_eq!(d.statements[0].actions, vec!["iot:Publish".to_string()]);
    }

    #[test]
    fn mqtt_wildcards_are_literal_and_escapes_work() {
        let t =
            Template::parse("arn:aws:iot:r:1:topicfilter/a/+/#${*}${?}${$}", true).expect("valid");
        assert_eq!(
            t.parts,
            vec![TemplatePart::Literal(
                "arn:aws:iot:r:1:topicfilter/a/+/#*?$".into()
            )]
        );
    }

    #[test]
    fn variables_are_case_insensitive_but_attribute_names_are_not() {
        let t = Template::parse(
            "${IOT:CLIENTID}${iot:Connection.Thing.Attributes[Floor]}",
            true,
        )
        .expect("valid");
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Variable(Variable::ClientId),
                TemplatePart::Variable(Variable::ThingAttribute("Floor".into())),
            ]
        );
        let other = Template::parse("${aws:SourceIp}", true).expect("valid");
        assert_eq!(
            other.parts,
            vec![TemplatePart::Variable(Variable::Other(
                "aws:SourceIp".into()
            ))]
        );
    }

    #[test]
    fn size_limit_counts_characters_without_whitespace() {
        let filler = "a".repeat(2000);
        let padded = format!(
            "{{\"Version\":\"2012-10-17\",\"Statement\":{{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"arn:aws:iot:r:1:topic/x\",\"Sid\":\"s\"}}}}{}",
            " ".repeat(5000)
        );
        assert!(PolicyDocument::parse(&padded).is_ok(), "whitespace is free");
        let long = doc(&format!(
            r#"{{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:r:1:topic/{filler}"}}"#
        ));
        match PolicyDocument::parse(&long) {
            Err(DocumentError::TooLong { chars }) => assert!(chars > MAX_DOCUMENT_CHARS),
            other => panic!("expected TooLong, got {other:?}"),
        }
        let e = PolicyDocument::parse(&long).unwrap_err().to_string();
        assert!(e.contains("maximum is 2048"), "{e}");
    }

    #[test]
    fn document_level_errors() {
        assert_eq!(PolicyDocument::parse(" \n"), Err(DocumentError::Empty));
        assert!(matches!(
            PolicyDocument::parse("{\"Version\": "),
            Err(DocumentError::InvalidJson { line: 1, .. })
        ));
        let e = PolicyDocument::parse("{\"Version\": \"2012-10-17\",}").unwrap_err();
        assert!(e.to_string().contains("line 1, column"), "{e}");
        assert_eq!(PolicyDocument::parse("[]"), Err(DocumentError::NotAnObject));
        assert_eq!(
            PolicyDocument::parse(r#"{"Statement":[]}"#),
            Err(DocumentError::MissingVersion)
        );
        assert_eq!(
            PolicyDocument::parse(r#"{"Version":"2008-10-17","Statement":[]}"#),
            Err(DocumentError::UnsupportedVersion("\"2008-10-17\"".into()))
        );
        assert_eq!(
            PolicyDocument::parse(r#"{"Version":"2012-10-17"}"#),
            Err(DocumentError::MissingStatement)
        );
        assert_eq!(
            PolicyDocument::parse(&doc("[]")),
            Err(DocumentError::InvalidStatementList)
        );
        assert_eq!(
            PolicyDocument::parse(&doc("\"x\"")),
            Err(DocumentError::InvalidStatementList)
        );
        assert_eq!(
            PolicyDocument::parse(r#"{"Version":"2012-10-17","Statement":[],"Extra":1}"#),
            Err(DocumentError::UnknownElement("Extra".into()))
        );
    }

    #[test]
    fn statement_errors_name_the_statement_and_the_problem() {
        let e = PolicyDocument::parse(&doc(
            r#"[{"Effect":"Allow","Action":"iot:Publish","Resource":"*"},
                {"Sid":"second","Effect":"allow","Action":"iot:Publish","Resource":"*"}]"#,
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "statement 2 (Sid \"second\"): \"Effect\" must be \"Allow\" or \"Deny\", not \"allow\""
        );
        assert_eq!(
            statement_problem(&doc("[1]")),
            StatementProblem::NotAnObject
        );
        assert_eq!(
            statement_problem(&doc(r#"{"Action":"iot:Publish","Resource":"*"}"#)),
            StatementProblem::Missing("Effect")
        );
        assert!(matches!(
            statement_problem(&doc(
                r#"{"Effect":true,"Action":"iot:Publish","Resource":"*"}"#
            )),
            StatementProblem::WrongType {
                element: "Effect",
                ..
            }
        ));
        assert_eq!(
            statement_problem(&doc(r#"{"Effect":"Allow","Resource":"*"}"#)),
            StatementProblem::Missing("Action")
        );
        assert_eq!(
            statement_problem(&doc(r#"{"Effect":"Allow","Action":"iot:Publish"}"#)),
            StatementProblem::Missing("Resource")
        );
        assert_eq!(
            statement_problem(&doc(r#"{"Effect":"Allow","Action":[],"Resource":"*"}"#)),
            StatementProblem::EmptyList("Action")
        );
        assert!(matches!(
            statement_problem(&doc(r#"{"Effect":"Allow","Action":[1],"Resource":"*"}"#)),
            StatementProblem::WrongType {
                element: "Action",
                ..
            }
        ));
        assert!(matches!(
            statement_problem(&doc(
                r#"{"Effect":"Allow","Action":"iot:Publish","Resource":{}}"#
            )),
            StatementProblem::WrongType {
                element: "Resource",
                ..
            }
        ));
        assert_eq!(
            statement_problem(&doc(
                r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*","Foo":1}"#
            )),
            StatementProblem::UnknownElement("Foo".into())
        );
        assert!(matches!(
            statement_problem(&doc(r#"{"Effect":"Allow","NotAction":"iot:Publish","Resource":"*"}"#)),
            StatementProblem::UnsupportedElement { ref element, .. } if element == "NotAction"
        ));
        assert!(matches!(
            statement_problem(&doc(
                r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*","Principal":"*"}"#
            )),
            StatementProblem::UnsupportedElement { ref element, .. } if element == "Principal"
        ));
        assert!(matches!(
            statement_problem(&doc(
                r#"{"Sid":1,"Effect":"Allow","Action":"iot:Publish","Resource":"*"}"#
            )),
            StatementProblem::WrongType { element: "Sid", .. }
        ));
    }

    #[test]
    fn malformed_actions_are_rejected() {
        for action in [
            "Publish",
            "iot:",
            ":Publish",
            "iot:Pub lish",
            "i t:Publish",
            "iot:a.b",
        ] {
            let problem = statement_problem(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"{action}","Resource":"*"}}"#
            )));
            assert!(
                matches!(problem, StatementProblem::InvalidAction { .. }),
                "{action}: {problem:?}"
            );
        }
        for action in [
            "*",
            "iot:*",
            "iot:*Shadow",
            "iot:Get?hingShadow",
            "greengrass:*",
        ] {
            PolicyDocument::parse(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"{action}","Resource":"*"}}"#
            )))
            .unwrap_or_else(|e| panic!("{action}: {e}"));
        }
    }

    #[test]
    fn malformed_resources_are_rejected() {
        for resource in [
            "",
            "topic/x",
            "arn:aws:iot:topic/x",
            "arn:aws:iot:r:1:topic/${iot:ClientId",
            "arn:aws:iot:r:1:topic/${}",
            "arn:aws:iot:r:1:topic/${iot:Connection.Thing.Attributes[]}",
            "arn:aws:iot:r:1:topic/${not a variable}",
        ] {
            let problem = statement_problem(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"iot:Publish","Resource":"{resource}"}}"#
            )));
            assert!(
                matches!(problem, StatementProblem::InvalidResource { .. }),
                "{resource}: {problem:?}"
            );
        }
    }

    #[test]
    fn conditions_parse_and_unsupported_ones_are_rejected_clearly() {
        let d = PolicyDocument::parse(&doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                "Condition":{"Bool":{"iot:Connection.Thing.IsAttached":["true"]},
                             "StringLikeIfExists":{"iot:Connection.Thing.ThingTypeName":"sensor-*"}}}"#,
        ))
        .expect("valid");
        let conditions = &d.statements[0].conditions;
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].operator, ConditionOperator::Bool);
        assert_eq!(conditions[0].key, Variable::ThingIsAttached);
        assert_eq!(conditions[1].operator, ConditionOperator::StringLike);
        assert!(conditions[1].if_exists);
        assert_eq!(
            conditions[1].values[0].parts,
            vec![
                TemplatePart::Literal("sensor-".into()),
                TemplatePart::AnyRun
            ]
        );

        let p = statement_problem(&doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}"#,
        ));
        assert!(matches!(
            p,
            StatementProblem::UnsupportedConditionOperator { .. }
        ));
        assert!(p.to_string().contains("StringEquals"), "{p}");
        let p = statement_problem(&doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                "Condition":{"StringEquals":{"aws:SourceIp":"10.0.0.1"}}}"#,
        ));
        assert_eq!(
            p,
            StatementProblem::UnsupportedConditionKey {
                key: "aws:SourceIp".into()
            }
        );
        let p = statement_problem(&doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                "Condition":{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["LastWill"]}}}"#,
        ));
        assert!(matches!(
            p,
            StatementProblem::UnsupportedConditionOperator { .. }
        ));
        for bad in [
            r#""Condition":"x""#,
            r#""Condition":{"StringEquals":"x"}"#,
            r#""Condition":{"StringEquals":{}}"#,
            r#""Condition":{"StringEquals":{"iot:ClientId":[]}}"#,
            r#""Condition":{"StringEquals":{"iot:ClientId":{"a":1}}}"#,
            r#""Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"yes"}}"#,
        ] {
            let p = statement_problem(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"*",{bad}}}"#
            )));
            assert!(
                matches!(p, StatementProblem::InvalidCondition(_)),
                "{bad}: {p:?}"
            );
        }
    }
}
