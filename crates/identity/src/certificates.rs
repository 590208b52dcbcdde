//! Device certificates and registered CA certificates of the AWS IoT control plane: issuing
//! with the data dir's CA (CreateKeysAndCertificate, CreateCertificateFromCsr), registering
//! certificates made elsewhere (RegisterCertificate, RegisterCertificateWithoutCA), their
//! status (ACTIVE / INACTIVE / REVOKED), and the CAs they may chain to (RegisterCACertificate).
//!
//! A certificate's id is the lowercase hex SHA-256 of its DER, as in AWS; records live in the
//! shared store (`iot_cert`, `iot_ca_cert`).

mod ca;
mod x509;

use std::fmt;
use std::sync::Arc;

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use ca::{
    AutoRegistrationStatus, CaCertificateRecord, CaCertificateStatus, CaCertificateUpdate,
    NewCaCertificate, RegistrationConfig,
};

use crate::Pki;
use crate::registry::RegistryError;
use crate::registry::records::{
    Page, PageRequest, RecordStore, Timestamp, paginate, prefix_of, put_json, random_hex, tables,
};
use x509::ParsedCertificate;

/// ListCertificates page size when the caller gives none (AWS's default).
const DEFAULT_PAGE_SIZE: i64 = 25;
/// Subject common name of certificates made by CreateKeysAndCertificate, as AWS names them
/// (policies may refer to it through `${iot:Certificate.Subject.CommonName}`).
const ISSUED_COMMON_NAME: &str = "AWS IoT Certificate";

/// A device certificate's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateStatus {
    /// May connect.
    Active,
    /// May not connect; may be activated again.
    Inactive,
    /// May never connect again.
    Revoked,
    /// Being transferred to another account (never set by fleetcore).
    PendingTransfer,
    /// Registered inactive (deprecated by AWS).
    RegisterInactive,
    /// Auto-registered, waiting for activation.
    PendingActivation,
}

impl CertificateStatus {
    /// The AWS name, e.g. `ACTIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Active => "ACTIVE",
            CertificateStatus::Inactive => "INACTIVE",
            CertificateStatus::Revoked => "REVOKED",
            CertificateStatus::PendingTransfer => "PENDING_TRANSFER",
            CertificateStatus::RegisterInactive => "REGISTER_INACTIVE",
            CertificateStatus::PendingActivation => "PENDING_ACTIVATION",
        }
    }

    /// Parses the AWS name (`InvalidRequest` otherwise).
    pub fn parse(text: &str) -> Result<CertificateStatus, RegistryError> {
        Ok(match text {
            "ACTIVE" => CertificateStatus::Active,
            "INACTIVE" => CertificateStatus::Inactive,
            "REVOKED" => CertificateStatus::Revoked,
            "PENDING_TRANSFER" => CertificateStatus::PendingTransfer,
            "REGISTER_INACTIVE" => CertificateStatus::RegisterInactive,
            "PENDING_ACTIVATION" => CertificateStatus::PendingActivation,
            other => {
                return Err(RegistryError::invalid(format!(
                    "{other:?} is not a certificate status"
                )));
            }
        })
    }
}

/// How devices present a certificate to AWS (`certificateMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateMode {
    /// Chains to a registered CA (or the built-in one).
    #[default]
    Default,
    /// Registered without a CA (RegisterCertificateWithoutCA).
    SniOnly,
}

impl CertificateMode {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateMode::Default => "DEFAULT",
            CertificateMode::SniOnly => "SNI_ONLY",
        }
    }

    /// Parses the AWS name (`InvalidRequest` otherwise).
    pub fn parse(text: &str) -> Result<CertificateMode, RegistryError> {
        match text {
            "DEFAULT" => Ok(CertificateMode::Default),
            "SNI_ONLY" => Ok(CertificateMode::SniOnly),
            other => Err(RegistryError::invalid(format!(
                "certificateMode must be DEFAULT or SNI_ONLY, not {other:?}"
            ))),
        }
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// Not valid before.
    pub not_before: Timestamp,
    /// Not valid after.
    pub not_after: Timestamp,
}

impl Validity {
    fn of(parsed: &ParsedCertificate) -> Validity {
        Validity {
            not_before: parsed.not_before(),
            not_after: parsed.not_after(),
        }
    }

    /// Whether `at` lies within the validity.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// A stored device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// `certificateId`: lowercase hex SHA-256 of the DER.
    pub id: String,
    /// The certificate, PEM.
    pub pem: String,
    /// The status.
    pub status: CertificateStatus,
    /// The registered CA it chains to; `None` for certificates issued by the built-in CA and
    /// those registered without a CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_id: Option<String>,
    /// `DEFAULT`, or `SNI_ONLY` for certificates registered without a CA.
    pub mode: CertificateMode,
    /// When it was created or registered.
    pub creation_date: Timestamp,
    /// When its status last changed.
    pub last_modified_date: Timestamp,
    /// The certificate's own validity.
    pub validity: Validity,
    /// Starts at 1, +1 per status change.
    pub customer_version: i64,
    /// Changes with every update.
    pub generation_id: String,
    /// The subject common name, if any (for `${iot:Certificate.Subject.CommonName}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
}

impl CertificateRecord {
    /// Whether a device may connect with it now: ACTIVE and within its validity.
    pub fn is_usable_now(&self) -> bool {
        self.status == CertificateStatus::Active && self.validity.contains(Timestamp::now())
    }
}

/// A certificate made by CreateKeysAndCertificate, with its key pair (shown once, not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct KeysAndCertificate {
    /// The stored certificate.
    pub certificate: CertificateRecord,
    /// The public key, PEM.
    pub public_key_pem: String,
    /// The PKCS#8 private key, PEM.
    pub private_key_pem: String,
}

impl fmt::Debug for KeysAndCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysAndCertificate")
            .field("certificate", &self.certificate.id)
            .field("private_key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

/// Device certificates and registered CA certificates.
#[derive(Clone)]
pub struct Certificates {
    store: Arc<RecordStore>,
    pki: Arc<Pki>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("account", self.store.account())
            .finish_non_exhaustive()
    }
}

impl Certificates {
    pub(crate) fn new(store: Arc<RecordStore>, pki: Arc<Pki>) -> Certificates {
        Certificates { store, pki }
    }

    /// `arn:aws:iot:{region}:{account}:cert/{id}`.
    pub fn certificate_arn(&self, id: &str) -> String {
        self.store.arn(&format!("cert/{id}"))
    }

    /// `arn:aws:iot:{region}:{account}:cacert/{id}`.
    pub fn ca_certificate_arn(&self, id: &str) -> String {
        self.store.arn(&format!("cacert/{id}"))
    }

    /// The account that owns every certificate here (`ownedBy`).
    pub fn owner(&self) -> &str {
        &self.store.account().account_id
    }

    /// CreateKeysAndCertificate: a new ECDSA P-256 key and a client certificate for it signed
    /// by the data dir's CA, valid until the CA expires (AWS's run until 2049). ACTIVE with
    /// `set_as_active`, else INACTIVE.
    pub fn create_keys_and_certificate(
        &self,
        set_as_active: bool,
    ) -> Result<KeysAndCertificate, RegistryError> {
        self.create_keys_and_certificate_with_status(active_or_inactive(set_as_active))
    }

    /// [`Certificates::create_keys_and_certificate`] with the status given (fleet provisioning
    /// issues PENDING_ACTIVATION certificates that its template activates).
    pub fn create_keys_and_certificate_with_status(
        &self,
        status: CertificateStatus,
    ) -> Result<KeysAndCertificate, RegistryError> {
        let days = (self.pki.ca_not_after() - OffsetDateTime::now_utc())
            .whole_days()
            .clamp(1, i64::from(u32::MAX));
        let days = u32::try_from(days).unwrap_or(u32::MAX);
        let issued = self
            .pki
            .issue_client_certificate(ISSUED_COMMON_NAME, days)
            .map_err(|e| RegistryError::Internal(format!("issuing a certificate failed: {e}")))?;
        let parsed = ParsedCertificate::from_pem(&issued.certificate_pem, "issued certificate")?;
        let certificate = self.insert(&parsed, status, None, CertificateMode::Default)?;
        Ok(KeysAndCertificate {
            certificate,
            public_key_pem: issued.public_key_pem,
            private_key_pem: issued.private_key_pem,
        })
    }

    /// CreateCertificateFromCsr: signs the request with the data dir's CA (see
    /// `x509::sign_csr`); a malformed request or one whose signature does not verify is
    /// `InvalidRequest`.
    pub fn create_certificate_from_csr(
        &self,
        csr_pem: &str,
        set_as_active: bool,
    ) -> Result<CertificateRecord, RegistryError> {
        self.create_certificate_from_csr_with_status(csr_pem, active_or_inactive(set_as_active))
    }

    /// [`Certificates::create_certificate_from_csr`] with the status given.
    pub fn create_certificate_from_csr_with_status(
        &self,
        csr_pem: &str,
        status: CertificateStatus,
    ) -> Result<CertificateRecord, RegistryError> {
        let der = x509::sign_csr(&self.pki, csr_pem)?;
        let parsed = ParsedCertificate::from_der(&der)?;
        self.insert(&parsed, status, None, CertificateMode::Default)
    }

    /// The registered CA that signed the DER certificate `der` (an ACTIVE one first), if any:
    /// just-in-time registration asks this of an unknown certificate presented over TLS.
    pub fn registered_issuer_of_der(
        &self,
        der: &[u8],
    ) -> Result<Option<CaCertificateRecord>, RegistryError> {
        let parsed = ParsedCertificate::from_der(der)?;
        self.registered_issuer_of(&parsed)
    }

    /// Registers the DER certificate `der` under the registered CA `ca_id` with `status`
    /// (just-in-time registration: PENDING_ACTIVATION). The certificate must be valid now.
    pub fn register_certificate_der(
        &self,
        der: &[u8],
        ca_id: &str,
        status: CertificateStatus,
    ) -> Result<CertificateRecord, RegistryError> {
        let parsed = ParsedCertificate::from_der(der)?;
        parsed.check_valid_at(OffsetDateTime::now_utc(), "the certificate")?;
        let ca = self.describe_ca_certificate(ca_id)?;
        self.insert(
            &parsed,
            registration_status(Some(status))?,
            Some(ca.id),
            ca.mode,
        )
    }

    /// RegisterCertificate: a device certificate made by a registered CA. With
    /// `ca_certificate_pem`, that CA must be registered and have signed the certificate;
    /// without it, a registered CA that signed it is looked for. Otherwise, or when the
    /// certificate is expired or not yet valid, `CertificateValidation`. The CA must be ACTIVE
    /// (`CertificateState`). A certificate already registered is `AlreadyExists`. `status`
    /// defaults to INACTIVE; PENDING_TRANSFER cannot be asked for.
    pub fn register_certificate(
        &self,
        certificate_pem: &str,
        ca_certificate_pem: Option<&str>,
        status: Option<CertificateStatus>,
    ) -> Result<CertificateRecord, RegistryError> {
        let status = registration_status(status)?;
        let parsed = ParsedCertificate::from_pem(certificate_pem, "certificatePem")?;
        parsed.check_valid_at(OffsetDateTime::now_utc(), "the certificate")?;
        let ca = match ca_certificate_pem {
            Some(ca_pem) => {
                let given = ParsedCertificate::from_pem(ca_pem, "caCertificatePem")?;
                let ca = self.ca_certificate(&given.id)?.ok_or_else(|| {
                    RegistryError::CertificateValidation(format!(
                        "CA certificate {} is not registered",
                        given.id
                    ))
                })?;
                if !parsed.is_signed_by(&given) {
                    return Err(RegistryError::CertificateValidation(
                        "the certificate is not signed by the given CA certificate".into(),
                    ));
                }
                ca
            }
            None => self.registered_issuer_of(&parsed)?.ok_or_else(|| {
                RegistryError::CertificateValidation(
                    "the certificate is not signed by a registered CA certificate".into(),
                )
            })?,
        };
        if ca.status != ca::CaCertificateStatus::Active {
            return Err(RegistryError::CertificateState(format!(
                "CA certificate {} is not ACTIVE",
                ca.id
            )));
        }
        self.insert(&parsed, status, Some(ca.id), ca.mode)
    }

    /// RegisterCertificateWithoutCA: any certificate that is valid now, in `SNI_ONLY` mode and
    /// without a CA. Such a certificate does not chain to a trusted CA, so the TLS listener
    /// must accept it by id. `status` defaults to INACTIVE.
    pub fn register_certificate_without_ca(
        &self,
        certificate_pem: &str,
        status: Option<CertificateStatus>,
    ) -> Result<CertificateRecord, RegistryError> {
        let status = registration_status(status)?;
        let parsed = ParsedCertificate::from_pem(certificate_pem, "certificatePem")?;
        parsed.check_valid_at(OffsetDateTime::now_utc(), "the certificate")?;
        self.insert(&parsed, status, None, CertificateMode::SniOnly)
    }

    fn insert(
        &self,
        parsed: &ParsedCertificate,
        status: CertificateStatus,
        ca_certificate_id: Option<String>,
        mode: CertificateMode,
    ) -> Result<CertificateRecord, RegistryError> {
        let now = Timestamp::now();
        let record = CertificateRecord {
            id: parsed.id.clone(),
            pem: parsed.pem.clone(),
            status,
            ca_certificate_id,
            mode,
            creation_date: now,
            last_modified_date: now,
            validity: Validity::of(parsed),
            customer_version: 1,
            generation_id: random_hex::<16>()?,
            common_name: parsed.common_name.clone(),
        };
        {
            let _writer = self.store.writer();
            if self.store.contains(tables::CERT, &record.id)? {
                return Err(RegistryError::AlreadyExists {
                    message: format!("The certificate is already registered (id {})", record.id),
                    id: record.id.clone(),
                    arn: self.certificate_arn(&record.id),
                });
            }
            let mut batch = WriteBatch::new();
            put_json(&mut batch, tables::CERT, &record.id, &record)?;
            self.store.apply(batch)?;
        }
        if status == CertificateStatus::Active {
            self.store.notify();
        }
        Ok(record)
    }

    /// The certificate `id`, if registered. For the broker: its status, validity and CA.
    pub fn certificate(&self, id: &str) -> Result<Option<CertificateRecord>, RegistryError> {
        match normalize_id(id) {
            Ok(id) => self.store.get(tables::CERT, &id),
            Err(_) => Ok(None),
        }
    }

    /// DescribeCertificate: `NotFound` for an unknown id, `InvalidRequest` for a malformed one.
    pub fn describe_certificate(&self, id: &str) -> Result<CertificateRecord, RegistryError> {
        let id = normalize_id(id)?;
        self.store
            .get(tables::CERT, &id)?
            .ok_or_else(|| RegistryError::not_found("Certificate", &id))
    }

    /// UpdateCertificate to ACTIVE, INACTIVE or REVOKED (other statuses are `InvalidRequest`).
    /// A REVOKED certificate stays revoked, and one pending transfer cannot change
    /// (`CertificateState`). Setting the current status again changes nothing.
    pub fn update_certificate(
        &self,
        id: &str,
        new_status: CertificateStatus,
    ) -> Result<CertificateRecord, RegistryError> {
        if !matches!(
            new_status,
            CertificateStatus::Active | CertificateStatus::Inactive | CertificateStatus::Revoked
        ) {
            return Err(RegistryError::invalid(format!(
                "a certificate's status can be set to ACTIVE, INACTIVE or REVOKED, not {}",
                new_status.as_str()
            )));
        }
        let record = {
            let _writer = self.store.writer();
            let mut record = self.describe_certificate(id)?;
            if record.status == new_status {
                return Ok(record);
            }
            match record.status {
                CertificateStatus::Revoked => {
                    return Err(RegistryError::CertificateState(format!(
                        "Certificate {} is REVOKED and cannot be set to {}",
                        record.id,
                        new_status.as_str()
                    )));
                }
                CertificateStatus::PendingTransfer => {
                    return Err(RegistryError::CertificateState(format!(
                        "Certificate {} is pending transfer",
                        record.id
                    )));
                }
                _ => {}
            }
            record.status = new_status;
            record.last_modified_date = Timestamp::now();
            record.customer_version += 1;
            record.generation_id = random_hex::<16>()?;
            let mut batch = WriteBatch::new();
            put_json(&mut batch, tables::CERT, &record.id, &record)?;
            self.store.apply(batch)?;
            record
        };
        self.store.notify();
        Ok(record)
    }

    /// ListCertificates (`ca` None) or ListCertificatesByCA: by creation date, newest first
    /// unless `ascending`.
    pub fn list_certificates(
        &self,
        ca: Option<&str>,
        ascending: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>, RegistryError> {
        let ca = ca.map(normalize_id).transpose()?;
        let all = self.store.scan::<CertificateRecord>(tables::CERT, "")?;
        let mut items: Vec<(String, CertificateRecord)> = all
            .into_iter()
            .filter(|(_, c)| ca.is_none() || c.ca_certificate_id == ca)
            .map(|(_, c)| (creation_key(c.creation_date, &c.id), c))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        if !ascending {
            items.reverse();
        }
        paginate(items, page, DEFAULT_PAGE_SIZE, ascending)
    }

    /// DeleteCertificate. An ACTIVE certificate is `CertificateState`; one attached to a thing
    /// is `DeleteConflict`; one with policies attached is `DeleteConflict` unless `force_delete`,
    /// which detaches them (AWS: "forces the deletion of a certificate if it is inactive and is
    /// not attached to an IoT thing").
    pub fn delete_certificate(&self, id: &str, force_delete: bool) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            let record = self.describe_certificate(id)?;
            if record.status == CertificateStatus::Active {
                return Err(RegistryError::CertificateState(format!(
                    "Certificate must be deactivated (not ACTIVE) before deletion. Id: {}",
                    record.id
                )));
            }
            let arn = self.certificate_arn(&record.id);
            let things = self
                .store
                .scan_suffixes(tables::PRINCIPAL_THINGS, &prefix_of(&record.id))?;
            if let Some(thing) = things.first() {
                return Err(RegistryError::DeleteConflict(format!(
                    "Things must be detached before deletion (arn: {arn}, attached to thing {thing})"
                )));
            }
            if let Some(check) = self.store.attachment_check() {
                let policies = check.attached_policies(&arn)?;
                if !policies.is_empty() {
                    if !force_delete {
                        return Err(RegistryError::DeleteConflict(format!(
                            "Certificate policies must be detached before deletion (arn: {arn}, \
                             policies: {})",
                            policies.join(", ")
                        )));
                    }
                    check.detach_all(&arn)?;
                }
            }
            let mut batch = WriteBatch::new();
            batch.delete(tables::CERT, record.id.as_bytes());
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// A registered CA that signed `cert`, preferring an ACTIVE one.
    fn registered_issuer_of(
        &self,
        cert: &ParsedCertificate,
    ) -> Result<Option<CaCertificateRecord>, RegistryError> {
        let mut found: Option<CaCertificateRecord> = None;
        for (_, ca) in self
            .store
            .scan::<CaCertificateRecord>(tables::CA_CERT, "")?
        {
            let Ok(parsed) = ParsedCertificate::from_pem(&ca.pem, "stored CA certificate") else {
                continue;
            };
            if cert.is_signed_by(&parsed) {
                let active = ca.status == ca::CaCertificateStatus::Active;
                if active {
                    return Ok(Some(ca));
                }
                found.get_or_insert(ca);
            }
        }
        Ok(found)
    }
}

/// The status a registration asks for, INACTIVE by default.
fn active_or_inactive(set_as_active: bool) -> CertificateStatus {
    if set_as_active {
        CertificateStatus::Active
    } else {
        CertificateStatus::Inactive
    }
}

fn registration_status(
    status: Option<CertificateStatus>,
) -> Result<CertificateStatus, RegistryError> {
    match status.unwrap_or(CertificateStatus::Inactive) {
        CertificateStatus::PendingTransfer => Err(RegistryError::invalid(
            "a certificate cannot be registered as PENDING_TRANSFER",
        )),
        other => Ok(other),
    }
}

/// A certificate id as stored: 64 lowercase hex digits (an `0x` prefix and upper case are
/// accepted, as AWS's pattern allows).
pub(crate) fn normalize_id(id: &str) -> Result<String, RegistryError> {
    let hex = id.strip_prefix("0x").unwrap_or(id);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RegistryError::invalid(format!(
            "certificate id {id:?} must be 64 hexadecimal digits"
        )));
    }
    Ok(hex.to_ascii_lowercase())
}

/// Sort key ordering certificates by creation date, then id.
fn creation_key(created: Timestamp, id: &str) -> String {
    format!("{:020}/{id}", created.epoch_millis().max(0))
}

#[cfg(test)]
pub(crate) mod tests;
