//! Carries out a [`Plan`] against the registry, certificates and policies, all or nothing:
//! every change is recorded as it is made, and when a later step fails the recorded changes
//! are undone in reverse order, so a failure after the thing was created leaves no thing.
//!
//! Order: certificate (found or created), thing (created or overridden), groups, the
//! certificate attached to the thing, policies (inline ones created) attached to the
//! certificate, and last the certificate's status, so a failed run never leaves an active
//! certificate behind.

use std::sync::Arc;

use fleetcore_identity::IdentityService;
use fleetcore_identity::certificates::{CertificateRecord, CertificateStatus};
use fleetcore_identity::policy::{Policies, PolicyError};
use fleetcore_identity::registry::{
    AttributePayload, NewThing, RegistryError, ThingPrincipalType, ThingUpdate,
};
use sha2::{Digest, Sha256};

use crate::error::ProvisioningError;
use crate::template::{CertificateSource, OverrideAction, Plan, PolicyPlan, ThingPlan};

/// What a successful run made or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The thing's name, if the template has a thing.
    pub thing_name: Option<String>,
    /// The certificate's id, if the template has a certificate.
    pub certificate_id: Option<String>,
    /// The certificate's PEM (RegisterThing answers it).
    pub certificate_pem: Option<String>,
    /// The names of the policies attached.
    pub policy_names: Vec<String>,
}

/// One change made, and so one to undo.
enum Undo {
    DeleteCertificate(String),
    DeleteThing(String),
    RestoreThing(ThingUpdate, String),
    RemoveFromGroup(String, String),
    DetachPrincipal(String, String),
    DeletePolicy(String),
    DetachPolicy(String, String),
}

/// Applies plans to one identity service and policy store.
#[derive(Clone)]
pub struct Applier {
    identity: Arc<IdentityService>,
    policies: Arc<Policies>,
}

struct Run<'a> {
    applier: &'a Applier,
    done: Vec<Undo>,
}

/// The name an inline policy document is created under: the hex SHA-256 of the document, so
/// the same document provisioned twice is one policy.
pub fn inline_policy_name(document: &str) -> String {
    let digest = Sha256::digest(document.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Applier {
    /// An applier over `identity` and `policies`.
    pub fn new(identity: Arc<IdentityService>, policies: Arc<Policies>) -> Applier {
        Applier { identity, policies }
    }

    /// The identity service.
    pub fn identity(&self) -> &Arc<IdentityService> {
        &self.identity
    }

    /// Applies `plan`; on failure undoes what this run did and returns the failure.
    pub fn apply(&self, plan: &Plan) -> Result<Applied, ProvisioningError> {
        let mut run = Run {
            applier: self,
            done: Vec::new(),
        };
        match run.apply(plan) {
            Ok(applied) => Ok(applied),
            Err(error) => {
                run.undo();
                Err(error)
            }
        }
    }
}

impl Run<'_> {
    fn apply(&mut self, plan: &Plan) -> Result<Applied, ProvisioningError> {
        let identity = &self.applier.identity;
        let certificate = match &plan.certificate {
            Some(c) => Some(self.certificate(&c.source)?),
            None => None,
        };
        if let Some(thing) = &plan.thing {
            self.thing(thing)?;
            if let Some(cert) = &certificate {
                let principal = identity.certificate_arn(&cert.id);
                let attached = identity.things_for_certificate(&cert.id)?;
                if !attached.contains(&thing.name) {
                    identity.registry().attach_thing_principal(
                        &thing.name,
                        &principal,
                        ThingPrincipalType::NonExclusive,
                    )?;
                    self.done
                        .push(Undo::DetachPrincipal(thing.name.clone(), principal));
                }
            }
        }
        let mut policy_names = Vec::new();
        for policy in &plan.policies {
            let name = self.policy(policy)?;
            if let Some(cert) = &certificate {
                let target = identity.certificate_arn(&cert.id);
                let attached = self.applier.policies.attached_names(&target)?;
                if !attached.contains(&name) {
                    self.applier.policies.attach(&name, &target)?;
                    self.done.push(Undo::DetachPolicy(name.clone(), target));
                }
            }
            policy_names.push(name);
        }
        let mut certificate_pem = None;
        if let (Some(cert), Some(plan_cert)) = (&certificate, &plan.certificate) {
            if let Some(status) = &plan_cert.status {
                let status = CertificateStatus::parse(status)?;
                identity
                    .certificates()
                    .update_certificate(&cert.id, status)?;
            }
            certificate_pem = Some(cert.pem.clone());
        }
        Ok(Applied {
            thing_name: plan.thing.as_ref().map(|t| t.name.clone()),
            certificate_id: certificate.map(|c| c.id),
            certificate_pem,
            policy_names,
        })
    }

    fn certificate(
        &mut self,
        source: &CertificateSource,
    ) -> Result<CertificateRecord, ProvisioningError> {
        let certificates = self.applier.identity.certificates();
        let record = match source {
            CertificateSource::Id(id) => {
                return certificates.describe_certificate(id).map_err(Into::into);
            }
            CertificateSource::Csr(csr) => certificates
                .create_certificate_from_csr_with_status(csr, CertificateStatus::Inactive)
                .map_err(|e| match e {
                    RegistryError::InvalidRequest(m) | RegistryError::CertificateValidation(m) => {
                        ProvisioningError::Csr(m)
                    }
                    other => other.into(),
                })?,
            CertificateSource::Pem { pem, ca_pem } => match ca_pem {
                Some(ca) => certificates.register_certificate(pem, Some(ca), None)?,
                None => certificates.register_certificate_without_ca(pem, None)?,
            },
        };
        self.done.push(Undo::DeleteCertificate(record.id.clone()));
        Ok(record)
    }

    fn thing(&mut self, plan: &ThingPlan) -> Result<(), ProvisioningError> {
        let registry = self.applier.identity.registry();
        match registry.thing(&plan.name)? {
            None => {
                registry.create_thing(
                    &plan.name,
                    NewThing {
                        thing_type_name: plan.thing_type_name.clone(),
                        attributes: plan.attributes.clone(),
                    },
                )?;
                self.done.push(Undo::DeleteThing(plan.name.clone()));
                for group in &plan.thing_groups {
                    registry.add_thing_to_thing_group(group, &plan.name)?;
                }
            }
            Some(existing) => {
                let refuse = |what: &str| {
                    ProvisioningError::Invalid(format!(
                        "thing {} exists and its OverrideSettings.{what} is FAIL",
                        plan.name
                    ))
                };
                let mut update = ThingUpdate::default();
                if plan.attributes != existing.attributes {
                    match plan.on_existing_attributes {
                        OverrideAction::Fail => return Err(refuse("AttributePayload")),
                        OverrideAction::DoNothing => {}
                        action => {
                            update.attribute_payload = Some(AttributePayload {
                                attributes: plan.attributes.clone(),
                                merge: action == OverrideAction::Merge,
                            });
                        }
                    }
                }
                if plan.thing_type_name != existing.thing_type_name {
                    match plan.on_existing_type {
                        OverrideAction::Fail => return Err(refuse("ThingTypeName")),
                        OverrideAction::DoNothing | OverrideAction::Merge => {}
                        OverrideAction::Replace => match &plan.thing_type_name {
                            Some(t) => update.thing_type_name = Some(t.clone()),
                            None => update.remove_thing_type = true,
                        },
                    }
                }
                if update.attribute_payload.is_some()
                    || update.thing_type_name.is_some()
                    || update.remove_thing_type
                {
                    let restore = ThingUpdate {
                        thing_type_name: existing.thing_type_name.clone(),
                        remove_thing_type: existing.thing_type_name.is_none(),
                        attribute_payload: Some(AttributePayload {
                            attributes: existing.attributes.clone(),
                            merge: false,
                        }),
                        expected_version: None,
                    };
                    registry.update_thing(&plan.name, update)?;
                    self.done
                        .push(Undo::RestoreThing(restore, plan.name.clone()));
                }
                let current = registry.thing_groups_for_thing(&plan.name, false)?;
                let mut wanted = plan.thing_groups.clone();
                wanted.sort();
                let mut have = current.clone();
                have.sort();
                if wanted != have && !plan.thing_groups.is_empty() {
                    match plan.on_existing_groups {
                        OverrideAction::Fail => return Err(refuse("ThingGroups")),
                        OverrideAction::DoNothing | OverrideAction::Merge => {}
                        OverrideAction::Replace => {
                            for group in &plan.thing_groups {
                                if !current.contains(group) {
                                    registry.add_thing_to_thing_group(group, &plan.name)?;
                                    self.done.push(Undo::RemoveFromGroup(
                                        group.clone(),
                                        plan.name.clone(),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn policy(&mut self, plan: &PolicyPlan) -> Result<String, ProvisioningError> {
        let policies = &self.applier.policies;
        match plan {
            PolicyPlan::Named(name) => match policies.get(name) {
                Ok(_) => Ok(name.clone()),
                Err(PolicyError::NotFound { .. }) => Err(ProvisioningError::Invalid(format!(
                    "policy {name} named by the template does not exist"
                ))),
                Err(e) => Err(e.into()),
            },
            PolicyPlan::Inline(document) => {
                let name = inline_policy_name(document);
                match policies.create(&name, document) {
                    Ok(_) => {
                        self.done.push(Undo::DeletePolicy(name.clone()));
                        Ok(name)
                    }
                    Err(PolicyError::AlreadyExists { .. }) => Ok(name),
                    Err(PolicyError::Malformed(e)) => Err(ProvisioningError::Invalid(format!(
                        "the template's inline policy document is invalid: {e}"
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Undoes this run's changes, newest first. A failed undo is logged and the rest go on.
    fn undo(&mut self) {
        let identity = &self.applier.identity;
        let registry = identity.registry();
        while let Some(step) = self.done.pop() {
            let result: Result<(), ProvisioningError> = match &step {
                Undo::DeleteCertificate(id) => identity
                    .certificates()
                    .delete_certificate(id, true)
                    .map_err(Into::into),
                Undo::DeleteThing(name) => {
                    let groups = registry
                        .thing_groups_for_thing(name, false)
                        .unwrap_or_default();
                    for g in groups {
                        let _ = registry.remove_thing_from_thing_group(&g, name);
                    }
                    registry.delete_thing(name, None).map_err(Into::into)
                }
                Undo::RestoreThing(update, name) => registry
                    .update_thing(name, update.clone())
                    .map(|_| ())
                    .map_err(Into::into),
                Undo::RemoveFromGroup(group, thing) => registry
                    .remove_thing_from_thing_group(group, thing)
                    .map_err(Into::into),
                Undo::DetachPrincipal(thing, principal) => registry
                    .detach_thing_principal(thing, principal)
                    .map_err(Into::into),
                Undo::DeletePolicy(name) => self.applier.policies.delete(name).map_err(Into::into),
                Undo::DetachPolicy(name, target) => self
                    .applier
                    .policies
                    .detach(name, target)
                    .map_err(Into::into),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "provisioning rollback step failed");
            }
        }
    }
}
