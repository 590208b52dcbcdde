//! The identity service as the rest of fleetcore sees it: the registry and the certificates
//! over one store, the change listeners the binary registers, and the questions the broker's
//! authenticator asks at connect time.

use std::fmt;
use std::sync::Arc;

use fleetcore_core::{AccountContext, KvStore, StoreError};

use crate::Pki;
use crate::certificates::{
    CaCertificateRecord, CaCertificateStatus, CertificateRecord, CertificateStatus, Certificates,
};
use crate::registry::records::{RecordStore, Timestamp};
use crate::registry::{ChangeListener, Registry, RegistryError, ThingRecord};

/// What the registry needs to know about policy attachments, implemented by the policy module
/// and installed with [`IdentityService::set_attachment_check`]. Targets are ARNs: certificate
/// ARNs (`arn:aws:iot:{region}:{account}:cert/{id}`) and thing group ARNs
/// (`...:thinggroup/{name}`).
pub trait AttachmentCheck: Send + Sync {
    /// The names of the policies attached to `target`.
    fn attached_policies(&self, target: &str) -> Result<Vec<String>, StoreError>;
    /// Detaches every policy from `target`, which is being deleted (DeleteCertificate with
    /// `forceDelete`, DeleteThingGroup).
    fn detach_all(&self, target: &str) -> Result<(), StoreError>;
}

/// Why a certificate may not connect (see [`IdentityService::certificate_for_connect`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefusal {
    /// No certificate with this id is registered.
    #[error("certificate {0} is not registered")]
    Unregistered(String),
    /// The certificate is not ACTIVE.
    #[error("certificate {id} is {}", status.as_str())]
    NotActive {
        /// The certificate id.
        id: String,
        /// Its status.
        status: CertificateStatus,
    },
    /// The certificate is expired or not yet valid.
    #[error("certificate {0} is outside its validity period")]
    OutsideValidity(String),
    /// The registered CA it was registered under is INACTIVE or no longer registered.
    #[error("the CA {ca} of certificate {id} is not ACTIVE")]
    CaNotActive {
        /// The certificate id.
        id: String,
        /// The CA certificate id.
        ca: String,
    },
    /// The store could not be read; refuse rather than guess.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Registry, certificates and CA registrations over one store, with change notification.
pub struct IdentityService {
    store: Arc<RecordStore>,
    registry: Registry,
    certificates: Certificates,
    pki: Arc<Pki>,
}

impl fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityService")
            .field("account", self.store.account())
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    /// The service over `store` (shared with the rest of fleetcore; its tables are prefixed
    /// `iot_`), issuing certificates with `pki`'s CA and naming resources in `account`.
    pub fn new(store: Arc<dyn KvStore>, pki: Arc<Pki>, account: AccountContext) -> IdentityService {
        let store = Arc::new(RecordStore::new(store, account));
        IdentityService {
            registry: Registry::new(Arc::clone(&store)),
            certificates: Certificates::new(Arc::clone(&store), Arc::clone(&pki)),
            store,
            pki,
        }
    }

    /// Things, thing types, thing groups and thing-principal attachments.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Device certificates and registered CA certificates.
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    /// The region and account id stamped into ARNs.
    pub fn account(&self) -> &AccountContext {
        self.store.account()
    }

    /// The data dir's PKI (the built-in CA).
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// Registers `listener`, called after every committed change that can affect a live
    /// connection: certificate and CA status, certificate deletion, principal attach/detach,
    /// a thing's type or attributes, group membership and group deletion. Listeners run on the
    /// thread that made the change, after the change is durable; they should only signal.
    pub fn on_change(&self, listener: ChangeListener) {
        self.store.add_listener(listener);
    }

    /// Installs the policy module's view of attachments (used by DeleteCertificate and
    /// DeleteThingGroup). Returns false, changing nothing, if one is installed already.
    pub fn set_attachment_check(&self, check: Arc<dyn AttachmentCheck>) -> bool {
        self.store.set_attachment_check(check)
    }

    /// Lets policy code tell listeners about its own changes (policy versions, attachments),
    /// so one set of listeners covers all of identity.
    pub fn notify_change(&self) {
        self.store.notify();
    }

    /// The certificate `id` (lowercase hex SHA-256 of its DER) if registered: status,
    /// validity, CA, common name. For the broker's authenticator.
    pub fn certificate_status_by_id(
        &self,
        id: &str,
    ) -> Result<Option<CertificateRecord>, RegistryError> {
        self.certificates.certificate(id)
    }

    /// The names of the things certificate ARN `principal` is attached to (for
    /// `${iot:Connection.Thing.ThingName}`); empty for anything that is not a certificate ARN.
    pub fn things_for_principal(&self, principal: &str) -> Result<Vec<String>, RegistryError> {
        self.registry.things_for_principal(principal)
    }

    /// The names of the things certificate `certificate_id` is attached to.
    pub fn things_for_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<Vec<String>, RegistryError> {
        self.registry.things_for_certificate(certificate_id)
    }

    /// The thing `name` (type and attributes, for `${iot:Connection.Thing.ThingTypeName}` and
    /// `${iot:Connection.Thing.Attributes[...]}`).
    pub fn thing(&self, name: &str) -> Result<Option<ThingRecord>, RegistryError> {
        self.registry.thing(name)
    }

    /// The groups whose policies apply to thing `name`: its groups and their ancestors.
    pub fn thing_groups_for_thing(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        self.registry.thing_groups_for_thing(name, true)
    }

    /// The ARN policies are attached to for certificate `id`.
    pub fn certificate_arn(&self, id: &str) -> String {
        self.certificates.certificate_arn(id)
    }

    /// The ARN policies are attached to for thing group `name`.
    pub fn thing_group_arn(&self, name: &str) -> String {
        self.registry.thing_group_arn(name)
    }

    /// The registered CA `id`, if any.
    pub fn ca_certificate(&self, id: &str) -> Result<Option<CaCertificateRecord>, RegistryError> {
        self.certificates.ca_certificate(id)
    }

    /// Every ACTIVE registered CA (roots for the TLS listener besides the built-in CA).
    pub fn active_ca_certificates(&self) -> Result<Vec<CaCertificateRecord>, RegistryError> {
        self.certificates.active_ca_certificates()
    }

    /// Whether certificate `id` may connect now: registered, ACTIVE, within its validity, and,
    /// if registered under a CA, that CA registered and ACTIVE. The whole connect-time (and
    /// revalidation-time) certificate rule in one place.
    pub fn certificate_for_connect(&self, id: &str) -> Result<CertificateRecord, ConnectRefusal> {
        let record = self
            .certificates
            .certificate(id)?
            .ok_or_else(|| ConnectRefusal::Unregistered(id.to_owned()))?;
        if record.status != CertificateStatus::Active {
            return Err(ConnectRefusal::NotActive {
                id: record.id,
                status: record.status,
            });
        }
        if !record.validity.contains(Timestamp::now()) {
            return Err(ConnectRefusal::OutsideValidity(record.id));
        }
        if let Some(ca) = &record.ca_certificate_id {
            let active = self
                .certificates
                .ca_certificate(ca)?
                .is_some_and(|c| c.status == CaCertificateStatus::Active);
            if !active {
                return Err(ConnectRefusal::CaNotActive {
                    id: record.id,
                    ca: ca.clone(),
                });
            }
        }
        Ok(record)
    }
}
