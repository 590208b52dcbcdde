//! The mitigation action kinds, one module each, in one registry: adding a kind is adding a
//! module and a line to [`registry`]. A kind checks its `actionParams` at create and applies
//! them to a thing (Detect: the thing of an alarm) or to an audit finding (its resource).

mod ca_certificate;
mod default_policy;
mod device_certificate;
mod logging;
mod quarantine;
mod sns;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fleetcore_core::TopicPublisher;
use fleetcore_identity::policy::Policies;
use serde_json::Value;

use super::Mitigator;
use crate::error::DefenderError;
use crate::logging::IotLogging;

/// What an action is applied to.
pub enum Subject<'a> {
    /// The thing of a Detect alarm, with the alarm (`violationId`, `behavior`, ...).
    Thing {
        /// The thing's name.
        name: &'a str,
        /// The violation, as ListActiveViolations writes it.
        violation: &'a Value,
    },
    /// An audit finding, as ListAuditFindings writes it.
    Finding(&'a Value),
}

impl Subject<'_> {
    /// The finding's `nonCompliantResource.resourceType`, if a finding.
    pub fn resource_type(&self) -> Option<&str> {
        match self {
            Subject::Finding(f) => f["nonCompliantResource"]["resourceType"].as_str(),
            Subject::Thing { .. } => None,
        }
    }

    /// The finding's resource identifier field `field`, if a finding.
    pub fn resource_id(&self, field: &str) -> Option<&str> {
        match self {
            Subject::Finding(f) => f["nonCompliantResource"]["resourceIdentifier"][field].as_str(),
            Subject::Thing { .. } => None,
        }
    }
}

/// What applying an action did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// It acted.
    Done,
    /// It does not apply to this subject (a CA action on a policy finding, ...).
    Skipped(String),
}

/// What actions reach.
pub struct Reach {
    /// Things, certificates, CAs.
    pub mitigator: Arc<dyn Mitigator>,
    /// Policies.
    pub policies: Arc<Policies>,
    /// SNS topics.
    pub sns: Arc<dyn TopicPublisher>,
    /// The account's logging options.
    pub logging: Arc<IotLogging>,
}

/// The future of an action's application.
pub type Applying<'a> = Pin<Box<dyn Future<Output = Result<Applied, String>> + Send + 'a>>;

/// A kind of mitigation action.
pub trait ActionKind: Send + Sync {
    /// The `actionParams` key (`addThingsToThingGroupParams`, ...).
    fn params_key(&self) -> &'static str;
    /// AWS's `actionType` (`ADD_THINGS_TO_THING_GROUP`, ...).
    fn action_type(&self) -> &'static str;
    /// Checks the params at create.
    fn check(&self, params: &Value, reach: &Reach) -> Result<(), DefenderError>;
    /// Applies the params to `subject`.
    fn apply<'a>(
        &'a self,
        params: &'a Value,
        subject: Subject<'a>,
        reach: &'a Reach,
    ) -> Applying<'a>;
}

/// Every action kind this server applies.
pub fn registry() -> &'static [&'static dyn ActionKind] {
    &[
        &quarantine::AddThingsToThingGroup,
        &device_certificate::UpdateDeviceCertificate,
        &ca_certificate::UpdateCaCertificate,
        &default_policy::ReplaceDefaultPolicyVersion,
        &sns::PublishFindingToSns,
        &logging::EnableIotLogging,
    ]
}

/// The kind of `params` (an object with one key), or why there is none.
pub fn kind_of(params: &Value) -> Result<&'static dyn ActionKind, DefenderError> {
    let object = params
        .as_object()
        .ok_or_else(|| DefenderError::Invalid("actionParams must be an object".into()))?;
    if object.len() != 1 {
        return Err(DefenderError::Invalid(
            "actionParams takes exactly one kind of action".into(),
        ));
    }
    let key = object.keys().next().map(String::as_str).unwrap_or_default();
    registry()
        .iter()
        .copied()
        .find(|k| k.params_key() == key)
        .ok_or_else(|| {
            let known: Vec<&str> = registry().iter().map(|k| k.params_key()).collect();
            DefenderError::Invalid(format!(
                "{key} is not supported by this server ({} are)",
                known.join(", ")
            ))
        })
}

/// The params of `kind` in `params`.
pub fn params_of<'a>(params: &'a Value, kind: &dyn ActionKind) -> &'a Value {
    &params[kind.params_key()]
}
