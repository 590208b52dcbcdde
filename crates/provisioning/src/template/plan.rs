//! What an evaluated template asks for: one thing, one certificate, policies, and the device
//! configuration, all as concrete values.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::intrinsics::Evaluator;
use super::{ResourceType, Template, TemplateError};

/// What to do when the thing exists already (`OverrideSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideAction {
    /// Keep what the thing has (the default).
    DoNothing,
    /// Merge the template's attributes into the thing's.
    Merge,
    /// Replace the thing's value with the template's.
    Replace,
    /// Fail provisioning.
    Fail,
}

impl OverrideAction {
    fn parse(text: Option<&String>) -> OverrideAction {
        match text.map(String::as_str) {
            Some("MERGE") => OverrideAction::Merge,
            Some("REPLACE") => OverrideAction::Replace,
            Some("FAIL") => OverrideAction::Fail,
            _ => OverrideAction::DoNothing,
        }
    }
}

/// The `AWS::IoT::Thing` resource, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingPlan {
    /// `ThingName`.
    pub name: String,
    /// `ThingTypeName`.
    pub thing_type_name: Option<String>,
    /// `ThingGroups` (must exist).
    pub thing_groups: Vec<String>,
    /// `AttributePayload`.
    pub attributes: BTreeMap<String, String>,
    /// `OverrideSettings.AttributePayload`.
    pub on_existing_attributes: OverrideAction,
    /// `OverrideSettings.ThingTypeName`.
    pub on_existing_type: OverrideAction,
    /// `OverrideSettings.ThingGroups`.
    pub on_existing_groups: OverrideAction,
}

/// Where the certificate of an `AWS::IoT::Certificate` resource comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// A registered certificate (`CertificateId`; by claim and JITP: the device's own).
    Id(String),
    /// A CSR to sign with the built-in CA (RegisterThing).
    Csr(String),
    /// A certificate to register (RegisterThing), with the CA that signed it, if given.
    Pem {
        /// `CertificatePem`.
        pem: String,
        /// `CACertificatePem`.
        ca_pem: Option<String>,
    },
}

/// The `AWS::IoT::Certificate` resource, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePlan {
    /// Where it comes from.
    pub source: CertificateSource,
    /// `Status` (upper case); `None` keeps what it has.
    pub status: Option<String>,
}

/// An `AWS::IoT::Policy` resource, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyPlan {
    /// An existing policy by name.
    Named(String),
    /// A policy document, created (by a name derived from its hash) if not there yet.
    Inline(String),
}

/// The resources an evaluated template creates or updates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The thing, if the template declares one (and its condition holds).
    pub thing: Option<ThingPlan>,
    /// The certificate.
    pub certificate: Option<CertificatePlan>,
    /// The policies attached to the certificate.
    pub policies: Vec<PolicyPlan>,
    /// `DeviceConfiguration`, evaluated.
    pub device_configuration: Map<String, Value>,
    /// The parameters the template was evaluated with.
    pub parameters: Map<String, Value>,
}

fn string(value: Value, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(TemplateError::Parameters(format!(
            "{at}: expected a non-empty string, got {other}"
        ))),
    }
}

fn attribute(value: Value, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(TemplateError::Parameters(format!(
            "{at}: an attribute value must be a string, got {other}"
        ))),
    }
}

fn optional_string(value: Option<Value>, at: &str) -> Result<Option<String>, TemplateError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => string(v, at).map(Some),
    }
}

pub(super) fn build(template: &Template, eval: &Evaluator<'_>) -> Result<Plan, TemplateError> {
    let mut plan = Plan {
        parameters: eval.parameters.clone(),
        ..Plan::default()
    };
    for r in &template.resources {
        let at = format!("Resources.{}", r.logical_id);
        if let Some(c) = &r.condition
            && !eval.named_condition(c, &at, 0)?
        {
            continue;
        }
        let prop = |key: &str| -> Result<Option<Value>, TemplateError> {
            r.properties
                .get(key)
                .map(|v| eval.value(v, &format!("{at}.Properties.{key}")))
                .transpose()
        };
        let pat = |key: &str| format!("{at}.Properties.{key}");
        match r.kind {
            ResourceType::Thing => {
                let name = string(prop("ThingName")?.unwrap_or(Value::Null), &pat("ThingName"))?;
                let thing_type_name =
                    optional_string(prop("ThingTypeName")?, &pat("ThingTypeName"))?;
                let thing_groups = match prop("ThingGroups")? {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .into_iter()
                        .map(|g| string(g, &pat("ThingGroups")))
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(TemplateError::Parameters(format!(
                            "{}: expected a list of group names, got {other}",
                            pat("ThingGroups")
                        )));
                    }
                };
                let attributes = match prop("AttributePayload")? {
                    None | Some(Value::Null) => BTreeMap::new(),
                    Some(Value::Object(map)) => map
                        .into_iter()
                        .map(|(k, v)| Ok((k, attribute(v, &pat("AttributePayload"))?)))
                        .collect::<Result<_, TemplateError>>()?,
                    Some(other) => {
                        return Err(TemplateError::Parameters(format!(
                            "{}: expected an object of attributes, got {other}",
                            pat("AttributePayload")
                        )));
                    }
                };
                plan.thing = Some(ThingPlan {
                    name,
                    thing_type_name,
                    thing_groups,
                    attributes,
                    on_existing_attributes: OverrideAction::parse(
                        r.overrides.get("AttributePayload"),
                    ),
                    on_existing_type: OverrideAction::parse(r.overrides.get("ThingTypeName")),
                    on_existing_groups: OverrideAction::parse(r.overrides.get("ThingGroups")),
                });
            }
            ResourceType::Certificate => {
                let source = if let Some(id) = prop("CertificateId")? {
                    CertificateSource::Id(string(id, &pat("CertificateId"))?)
                } else if let Some(csr) = prop("CertificateSigningRequest")? {
                    CertificateSource::Csr(string(csr, &pat("CertificateSigningRequest"))?)
                } else {
                    CertificateSource::Pem {
                        pem: string(
                            prop("CertificatePem")?.unwrap_or(Value::Null),
                            &pat("CertificatePem"),
                        )?,
                        ca_pem: optional_string(
                            prop("CACertificatePem")?,
                            &pat("CACertificatePem"),
                        )?,
                    }
                };
                let status = optional_string(prop("Status")?, &pat("Status"))?
                    .map(|s| s.to_ascii_uppercase());
                if let Some(s) = &status
                    && !["ACTIVE", "INACTIVE"].contains(&s.as_str())
                {
                    return Err(TemplateError::Parameters(format!(
                        "{}: {s:?} is not ACTIVE or INACTIVE",
                        pat("Status")
                    )));
                }
                plan.certificate = Some(CertificatePlan { source, status });
            }
            ResourceType::Policy => {
                if let Some(name) = prop("PolicyName")? {
                    plan.policies
                        .push(PolicyPlan::Named(string(name, &pat("PolicyName"))?));
                } else {
                    let document = match prop("PolicyDocument")? {
                        Some(Value::String(s)) => s,
                        Some(Value::Object(o)) => Value::Object(o).to_string(),
                        other => {
                            return Err(TemplateError::Parameters(format!(
                                "{}: expected a policy document, got {}",
                                pat("PolicyDocument"),
                                other.unwrap_or(Value::Null)
                            )));
                        }
                    };
                    plan.policies.push(PolicyPlan::Inline(document));
                }
            }
        }
    }
    for (key, value) in &template.device_configuration {
        let v = eval.value(value, &format!("DeviceConfiguration.{key}"))?;
        plan.device_configuration.insert(key.clone(), v);
    }
    Ok(plan)
}
