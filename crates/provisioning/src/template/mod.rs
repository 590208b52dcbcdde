//! AWS's provisioning template language: `Parameters`, `Mappings`, `Conditions`, `Resources`
//! (`AWS::IoT::Thing`, `AWS::IoT::Certificate`, `AWS::IoT::Policy`) with `OverrideSettings`,
//! the intrinsic functions, and `DeviceConfiguration`.
//!
//! [`Template::parse`] checks a body completely at CreateProvisioningTemplate (every error
//! names the place: `Resources.thing.Properties.ThingName`); [`Template::evaluate`] turns it
//! and a device's parameters into a [`Plan`] of concrete resources, touching nothing.

mod intrinsics;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use plan::{CertificatePlan, CertificateSource, OverrideAction, Plan, PolicyPlan, ThingPlan};

/// A template that does not parse, or a device's parameters it cannot be evaluated with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template body is malformed; the message names the place.
    #[error("{0}")]
    Invalid(String),
    /// The parameters are missing, of the wrong type, or make a resource invalid.
    #[error("{0}")]
    Parameters(String),
}

fn invalid(at: &str, what: impl std::fmt::Display) -> TemplateError {
    TemplateError::Invalid(format!("template body: {at}: {what}"))
}

/// Parameters fleetcore supplies itself (from the device certificate), which a template may
/// use without declaring them.
pub const CERTIFICATE_PARAMETERS: &[&str] = &[
    "AWS::IoT::Certificate::Id",
    "AWS::IoT::Certificate::CommonName",
    "AWS::IoT::Certificate::SerialNumber",
    "AWS::IoT::Certificate::Country",
    "AWS::IoT::Certificate::Organization",
    "AWS::IoT::Certificate::OrganizationalUnit",
    "AWS::IoT::Certificate::StateName",
    "AWS::IoT::Certificate::Locality",
    "AWS::IoT::Certificate::DistinguishedNameQualifier",
];

/// The kind of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParameterType {
    String,
    Number,
}

#[derive(Debug, Clone, PartialEq)]
struct Parameter {
    kind: ParameterType,
    default: Option<Value>,
}

/// The resource types a template may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceType {
    Thing,
    Certificate,
    Policy,
}

impl ResourceType {
    fn parse(text: &str) -> Option<ResourceType> {
        match text {
            "AWS::IoT::Thing" => Some(ResourceType::Thing),
            "AWS::IoT::Certificate" => Some(ResourceType::Certificate),
            "AWS::IoT::Policy" => Some(ResourceType::Policy),
            _ => None,
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            ResourceType::Thing => &[
                "ThingName",
                "ThingTypeName",
                "ThingGroups",
                "AttributePayload",
            ],
            ResourceType::Certificate => &[
                "CertificateId",
                "CertificateSigningRequest",
                "CertificatePem",
                "CACertificatePem",
                "Status",
            ],
            ResourceType::Policy => &["PolicyName", "PolicyDocument"],
        }
    }

    fn overrides(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            ResourceType::Thing => &[
                (
                    "AttributePayload",
                    &["MERGE", "REPLACE", "FAIL", "DO_NOTHING"],
                ),
                ("ThingTypeName", &["REPLACE", "FAIL", "DO_NOTHING"]),
                ("ThingGroups", &["REPLACE", "FAIL", "DO_NOTHING"]),
            ],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resource {
    pub(crate) logical_id: String,
    pub(crate) kind: ResourceType,
    pub(crate) properties: Map<String, Value>,
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) condition: Option<String>,
}

/// A parsed, checked provisioning template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parameters: BTreeMap<String, Parameter>,
    mappings: Map<String, Value>,
    conditions: Map<String, Value>,
    resources: Vec<Resource>,
    device_configuration: Map<String, Value>,
}

const TOP_LEVEL: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Parameters",
    "Mappings",
    "Conditions",
    "Resources",
    "DeviceConfiguration",
];

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, TemplateError> {
    value
        .as_object()
        .ok_or_else(|| invalid(at, "must be a JSON object"))
}

impl Template {
    /// Parses and checks `body` (the JSON document carried as a string in `templateBody`).
    pub fn parse(body: &str) -> Result<Template, TemplateError> {
        let value: Value = serde_json::from_str(body)
            .map_err(|e| TemplateError::Invalid(format!("template body is not JSON: {e}")))?;
        let top = object(&value, "the template")?;
        if let Some(key) = top.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
            return Err(invalid(
                key,
                format!("unknown section (expected one of {})", TOP_LEVEL.join(", ")),
            ));
        }
        let empty = Value::Object(Map::new());
        let mut parameters = BTreeMap::new();
        for (name, spec) in object(top.get("Parameters").unwrap_or(&empty), "Parameters")? {
            let at = format!("Parameters.{name}");
            let spec = object(spec, &at)?;
            let kind = match spec.get("Type").and_then(Value::as_str) {
                Some("String") => ParameterType::String,
                Some("Number") => ParameterType::Number,
                Some(other) => {
                    return Err(invalid(
                        &format!("{at}.Type"),
                        format!("{other:?} is not a parameter type (String or Number)"),
                    ));
                }
                None => return Err(invalid(&format!("{at}.Type"), "is required")),
            };
            if let Some(key) = spec
                .keys()
                .find(|k| !["Type", "Default"].contains(&k.as_str()))
            {
                return Err(invalid(
                    &format!("{at}.{key}"),
                    "unknown parameter attribute",
                ));
            }
            let default = spec.get("Default").cloned();
            if let Some(d) = &default {
                check_type(kind, d).map_err(|e| invalid(&format!("{at}.Default"), e))?;
            }
            parameters.insert(name.clone(), Parameter { kind, default });
        }
        let mappings = object(top.get("Mappings").unwrap_or(&empty), "Mappings")?.clone();
        for (name, map) in &mappings {
            for (key, inner) in object(map, &format!("Mappings.{name}"))? {
                object(inner, &format!("Mappings.{name}.{key}"))?;
            }
        }
        let conditions = object(top.get("Conditions").unwrap_or(&empty), "Conditions")?.clone();
        let device_configuration = object(
            top.get("DeviceConfiguration").unwrap_or(&empty),
            "DeviceConfiguration",
        )?
        .clone();
        let resources_value = top
            .get("Resources")
            .ok_or_else(|| invalid("Resources", "is required"))?;
        let mut resources = Vec::new();
        for (id, resource) in object(resources_value, "Resources")? {
            resources.push(parse_resource(id, resource)?);
        }
        if resources.is_empty() {
            return Err(invalid("Resources", "declares no resource"));
        }
        for kind in [ResourceType::Thing, ResourceType::Certificate] {
            if resources.iter().filter(|r| r.kind == kind).count() > 1 {
                return Err(invalid(
                    "Resources",
                    format!("declares more than one {kind:?} resource"),
                ));
            }
        }
        let template = Template {
            parameters,
            mappings,
            conditions,
            resources,
            device_configuration,
        };
        template.check_references()?;
        Ok(template)
    }

    /// Whether the template's certificate resource is found by `CertificateId` (fleet
    /// provisioning by claim and JITP need one that is).
    pub fn certificate_by_id(&self) -> bool {
        self.resources.iter().any(|r| {
            r.kind == ResourceType::Certificate && r.properties.contains_key("CertificateId")
        })
    }

    /// Every intrinsic, `Ref`, condition and mapping name used anywhere is well formed and
    /// declared.
    fn check_references(&self) -> Result<(), TemplateError> {
        let checker = intrinsics::Checker { template: self };
        for (name, condition) in &self.conditions {
            checker.condition(condition, &format!("Conditions.{name}"))?;
        }
        for r in &self.resources {
            let at = format!("Resources.{}", r.logical_id);
            if let Some(c) = &r.condition
                && !self.conditions.contains_key(c)
            {
                return Err(invalid(
                    &format!("{at}.Condition"),
                    format!("condition {c:?} is not declared in Conditions"),
                ));
            }
            for (key, value) in &r.properties {
                checker.value(value, &format!("{at}.Properties.{key}"))?;
            }
        }
        for (key, value) in &self.device_configuration {
            checker.value(value, &format!("DeviceConfiguration.{key}"))?;
        }
        Ok(())
    }

    /// The values of the parameters after defaults and type checks: `supplied` (from the device
    /// or the caller) over the declared defaults, plus `certificate` (fleetcore's own, such as
    /// `AWS::IoT::Certificate::Id`).
    fn bind(
        &self,
        supplied: &Map<String, Value>,
        certificate: &Map<String, Value>,
    ) -> Result<Map<String, Value>, TemplateError> {
        let mut bound = certificate.clone();
        for (name, p) in &self.parameters {
            if let Some(v) = certificate.get(name) {
                bound.insert(name.clone(), v.clone());
                continue;
            }
            let value = match (supplied.get(name), &p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(TemplateError::Parameters(format!(
                        "parameter {name} is required and was not given"
                    )));
                }
            };
            check_type(p.kind, &value)
                .map_err(|e| TemplateError::Parameters(format!("parameter {name}: {e}")))?;
            bound.insert(name.clone(), value);
        }
        Ok(bound)
    }

    /// Resolves the template with `supplied` parameters and the certificate's own parameters
    /// into the resources to create; nothing is touched.
    pub fn evaluate(
        &self,
        supplied: &Map<String, Value>,
        certificate: &Map<String, Value>,
    ) -> Result<Plan, TemplateError> {
        let parameters = self.bind(supplied, certificate)?;
        let evaluator = intrinsics::Evaluator {
            template: self,
            parameters: &parameters,
        };
        plan::build(self, &evaluator)
    }
}

fn check_type(kind: ParameterType, value: &Value) -> Result<(), String> {
    match (kind, value) {
        (ParameterType::String, Value::String(_)) => Ok(()),
        (ParameterType::Number, Value::Number(_)) => Ok(()),
        (ParameterType::Number, Value::String(s)) if s.trim().parse::<f64>().is_ok() => Ok(()),
        (ParameterType::String, other) => Err(format!("expected a string, got {other}")),
        (ParameterType::Number, other) => Err(format!("expected a number, got {other}")),
    }
}

fn parse_resource(id: &str, value: &Value) -> Result<Resource, TemplateError> {
    let at = format!("Resources.{id}");
    let resource = object(value, &at)?;
    if let Some(key) = resource
        .keys()
        .find(|k| !["Type", "Properties", "OverrideSettings", "Condition"].contains(&k.as_str()))
    {
        return Err(invalid(
            &format!("{at}.{key}"),
            "unknown resource attribute",
        ));
    }
    let kind = match resource.get("Type").and_then(Value::as_str) {
        Some(t) => ResourceType::parse(t).ok_or_else(|| {
            invalid(
                &format!("{at}.Type"),
                format!(
                    "{t:?} is not a supported resource type (AWS::IoT::Thing, AWS::IoT::Certificate, AWS::IoT::Policy)"
                ),
            )
        })?,
        None => return Err(invalid(&format!("{at}.Type"), "is required")),
    };
    let empty = Value::Object(Map::new());
    let properties = object(
        resource.get("Properties").unwrap_or(&empty),
        &format!("{at}.Properties"),
    )?
    .clone();
    if let Some(key) = properties
        .keys()
        .find(|k| !kind.properties().contains(&k.as_str()))
    {
        return Err(invalid(
            &format!("{at}.Properties.{key}"),
            format!(
                "unknown property of {kind:?} (expected one of {})",
                kind.properties().join(", ")
            ),
        ));
    }
    let required: &[&[&str]] = match kind {
        ResourceType::Thing => &[&["ThingName"]],
        ResourceType::Certificate => &[&[
            "CertificateId",
            "CertificateSigningRequest",
            "CertificatePem",
        ]],
        ResourceType::Policy => &[&["PolicyName", "PolicyDocument"]],
    };
    for one_of in required {
        let present = one_of
            .iter()
            .filter(|k| properties.contains_key(**k))
            .count();
        if present != 1 {
            return Err(invalid(
                &format!("{at}.Properties"),
                format!("needs exactly one of {}", one_of.join(", ")),
            ));
        }
    }
    let mut overrides = BTreeMap::new();
    if let Some(o) = resource.get("OverrideSettings") {
        let oat = format!("{at}.OverrideSettings");
        for (key, action) in object(o, &oat)? {
            let allowed = kind
                .overrides()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, a)| *a)
                .ok_or_else(|| invalid(&format!("{oat}.{key}"), "cannot be overridden"))?;
            let action = action
                .as_str()
                .filter(|a| allowed.contains(a))
                .ok_or_else(|| {
                    invalid(
                        &format!("{oat}.{key}"),
                        format!("must be one of {}", allowed.join(", ")),
                    )
                })?;
            overrides.insert(key.clone(), action.to_string());
        }
    }
    let condition = match resource.get("Condition") {
        None => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.Condition"),
                "must be the name of a condition",
            ));
        }
    };
    Ok(Resource {
        logical_id: id.to_string(),
        kind,
        properties,
        overrides,
        condition,
    })
}
