//! Audit suppressions: a check's findings on one resource are marked `isSuppressed` (and
//! counted in `suppressedNonCompliantResourcesCount`) until the suppression expires or is
//! deleted. Kept in the audit table under `suppression/<check>\n<resource identifier>`.

use std::collections::BTreeMap;

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AWS_CHECKS, Audits, TABLE, decode};
use crate::error::DefenderError;
use crate::store::now;

const PREFIX: &str = "suppression/";

/// A stored suppression, as DescribeAuditSuppression writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suppression {
    /// The check whose findings are suppressed.
    pub check_name: String,
    /// The resource (`deviceCertificateId`, `clientId`, `policyVersionIdentifier`, ...).
    pub resource_identifier: BTreeMap<String, Value>,
    /// Epoch seconds after which findings are reported again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<f64>,
    /// Never expires.
    #[serde(default)]
    pub suppress_indefinitely: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Suppression {
    /// Whether it applies at `at` (epoch seconds).
    pub fn in_force(&self, at: f64) -> bool {
        self.suppress_indefinitely || self.expiration_date.is_some_and(|e| e > at)
    }

    /// Whether it suppresses `finding` of a task started at `at`.
    pub fn covers(&self, finding: &Value, at: f64) -> bool {
        self.in_force(at)
            && finding["checkName"] == self.check_name.as_str()
            && finding["nonCompliantResource"]["resourceIdentifier"]
                .as_object()
                .is_some_and(|id| {
                    id.len() == self.resource_identifier.len()
                        && id
                            .iter()
                            .all(|(k, v)| self.resource_identifier.get(k) == Some(v))
                })
    }

    fn key(check: &str, resource: &BTreeMap<String, Value>) -> Vec<u8> {
        // BTreeMap keys serialize in order: one resource, one key.
        let resource = serde_json::to_string(resource).unwrap_or_default();
        format!("{PREFIX}{check}\n{resource}").into_bytes()
    }
}

/// What Create/UpdateAuditSuppression set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionChange {
    /// `expirationDate` (epoch seconds).
    #[serde(default)]
    pub expiration_date: Option<f64>,
    /// `suppressIndefinitely`.
    #[serde(default)]
    pub suppress_indefinitely: Option<bool>,
    /// `description`.
    #[serde(default)]
    pub description: Option<String>,
}

fn check_target(check: &str, resource: &BTreeMap<String, Value>) -> Result<(), DefenderError> {
    if !AWS_CHECKS.contains(&check) {
        return Err(DefenderError::Invalid(format!(
            "{check} is not an audit check"
        )));
    }
    if resource.is_empty() {
        return Err(DefenderError::Invalid(
            "resourceIdentifier names no resource".into(),
        ));
    }
    Ok(())
}

fn apply_change(s: &mut Suppression, change: SuppressionChange) -> Result<(), DefenderError> {
    if let Some(d) = change.description {
        if d.chars().count() > 1000 {
            return Err(DefenderError::Invalid(
                "description is longer than 1000 characters".into(),
            ));
        }
        s.description = Some(d);
    }
    if change.expiration_date.is_some() && change.suppress_indefinitely == Some(true) {
        return Err(DefenderError::Invalid(
            "expirationDate and suppressIndefinitely cannot both be given".into(),
        ));
    }
    if let Some(indefinitely) = change.suppress_indefinitely {
        s.suppress_indefinitely = indefinitely;
        if indefinitely {
            s.expiration_date = None;
        }
    }
    if let Some(e) = change.expiration_date {
        s.suppress_indefinitely = false;
        if e <= now() {
            return Err(DefenderError::Invalid(
                "expirationDate must be in the future".into(),
            ));
        }
        s.expiration_date = Some(e);
    }
    if !s.suppress_indefinitely && s.expiration_date.is_none() {
        return Err(DefenderError::Invalid(
            "a suppression needs an expirationDate or suppressIndefinitely".into(),
        ));
    }
    Ok(())
}

impl Audits {
    /// The suppression of `check` on `resource`, if any.
    pub fn suppression(
        &self,
        check: &str,
        resource: &BTreeMap<String, Value>,
    ) -> Result<Option<Suppression>, DefenderError> {
        self.store
            .get(TABLE, &Suppression::key(check, resource))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every suppression, by check and resource.
    pub fn suppressions(&self) -> Result<Vec<Suppression>, DefenderError> {
        self.store
            .scan_prefix(TABLE, PREFIX.as_bytes())?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    fn put_suppression(&self, s: &Suppression) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            Suppression::key(&s.check_name, &s.resource_identifier),
            serde_json::to_vec(s).unwrap_or_default(),
        );
        Ok(self.store.apply(batch)?)
    }

    /// CreateAuditSuppression.
    pub fn create_suppression(
        &self,
        check: String,
        resource: BTreeMap<String, Value>,
        change: SuppressionChange,
    ) -> Result<(), DefenderError> {
        check_target(&check, &resource)?;
        let mut s = Suppression {
            check_name: check,
            resource_identifier: resource,
            expiration_date: None,
            suppress_indefinitely: false,
            description: None,
        };
        apply_change(&mut s, change)?;
        let _writing = self.writing.lock();
        if self
            .suppression(&s.check_name, &s.resource_identifier)?
            .is_some()
        {
            return Err(DefenderError::AlreadyExists(format!(
                "a suppression of {} on this resource already exists",
                s.check_name
            )));
        }
        self.put_suppression(&s)
    }

    /// UpdateAuditSuppression.
    pub fn update_suppression(
        &self,
        check: &str,
        resource: &BTreeMap<String, Value>,
        change: SuppressionChange,
    ) -> Result<(), DefenderError> {
        let _writing = self.writing.lock();
        let mut s = self.existing_suppression(check, resource)?;
        apply_change(&mut s, change)?;
        self.put_suppression(&s)
    }

    /// DeleteAuditSuppression.
    pub fn delete_suppression(
        &self,
        check: &str,
        resource: &BTreeMap<String, Value>,
    ) -> Result<(), DefenderError> {
        let _writing = self.writing.lock();
        self.existing_suppression(check, resource)?;
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, Suppression::key(check, resource));
        Ok(self.store.apply(batch)?)
    }

    /// The suppression of `check` on `resource`, or NotFound.
    pub fn existing_suppression(
        &self,
        check: &str,
        resource: &BTreeMap<String, Value>,
    ) -> Result<Suppression, DefenderError> {
        self.suppression(check, resource)?.ok_or_else(|| {
            DefenderError::NotFound(format!("no suppression of {check} on this resource"))
        })
    }
}
