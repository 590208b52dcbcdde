//! Registered CA certificates: CAs other than the data dir's whose device certificates may be
//! registered (RegisterCertificate) and, while ACTIVE, connect.

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::x509::ParsedCertificate;
use super::{CertificateMode, Certificates, Validity, creation_key, normalize_id};
use crate::registry::RegistryError;
use crate::registry::records::{
    Page, PageRequest, Tag, Timestamp, paginate, put_json, random_hex, tables, validate_tags,
};

/// Key of the registration code in the settings table.
const REGISTRATION_CODE_KEY: &str = "registration_code";

/// A registered CA's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaCertificateStatus {
    /// Devices with certificates from this CA may connect and be registered.
    Active,
    /// They may not.
    Inactive,
}

impl CaCertificateStatus {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaCertificateStatus::Active => "ACTIVE",
            CaCertificateStatus::Inactive => "INACTIVE",
        }
    }

    /// Parses the AWS name (`InvalidRequest` otherwise).
    pub fn parse(text: &str) -> Result<CaCertificateStatus, RegistryError> {
        match text {
            "ACTIVE" => Ok(CaCertificateStatus::Active),
            "INACTIVE" => Ok(CaCertificateStatus::Inactive),
            other => Err(RegistryError::invalid(format!(
                "a CA certificate's status must be ACTIVE or INACTIVE, not {other:?}"
            ))),
        }
    }
}

/// Whether unknown device certificates from a CA are registered when they first connect (JITR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AutoRegistrationStatus {
    /// Register them (PENDING_ACTIVATION).
    Enable,
    /// Refuse them.
    #[default]
    Disable,
}

impl AutoRegistrationStatus {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoRegistrationStatus::Enable => "ENABLE",
            AutoRegistrationStatus::Disable => "DISABLE",
        }
    }

    /// Parses the AWS name (`InvalidRequest` otherwise).
    pub fn parse(text: &str) -> Result<AutoRegistrationStatus, RegistryError> {
        match text {
            "ENABLE" => Ok(AutoRegistrationStatus::Enable),
            "DISABLE" => Ok(AutoRegistrationStatus::Disable),
            other => Err(RegistryError::invalid(format!(
                "autoRegistrationStatus must be ENABLE or DISABLE, not {other:?}"
            ))),
        }
    }
}

/// The provisioning template used for just-in-time provisioning (`registrationConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationConfig {
    /// `templateBody`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_body: Option<String>,
    /// `roleArn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `templateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
}

/// A stored CA certificate registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaCertificateRecord {
    /// Lowercase hex SHA-256 of the DER.
    pub id: String,
    /// The CA certificate, PEM.
    pub pem: String,
    /// ACTIVE or INACTIVE.
    pub status: CaCertificateStatus,
    /// Just-in-time registration of its device certificates.
    pub auto_registration: AutoRegistrationStatus,
    /// `DEFAULT` or `SNI_ONLY`; device certificates registered under it get the same mode.
    pub mode: CertificateMode,
    /// When it was registered.
    pub creation_date: Timestamp,
    /// When it last changed.
    pub last_modified_date: Timestamp,
    /// The CA certificate's validity.
    pub validity: Validity,
    /// Starts at 1, +1 per update.
    pub customer_version: i64,
    /// Changes with every update.
    pub generation_id: String,
    /// The JITP template, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_config: Option<RegistrationConfig>,
    /// Tags given at registration.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// What RegisterCACertificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCaCertificate {
    /// `caCertificate`, PEM.
    pub ca_certificate_pem: String,
    /// `verificationCertificate`, PEM: proof of possession of the CA key (optional, see
    /// [`Certificates::register_ca_certificate`]).
    pub verification_certificate_pem: Option<String>,
    /// `setAsActive`.
    pub set_as_active: bool,
    /// `allowAutoRegistration`.
    pub allow_auto_registration: bool,
    /// `registrationConfig`.
    pub registration_config: Option<RegistrationConfig>,
    /// `certificateMode` (DEFAULT when absent).
    pub mode: Option<CertificateMode>,
    /// `tags`.
    pub tags: Vec<Tag>,
}

/// What UpdateCACertificate carries besides the id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaCertificateUpdate {
    /// `newStatus`.
    pub new_status: Option<CaCertificateStatus>,
    /// `newAutoRegistrationStatus`.
    pub new_auto_registration_status: Option<AutoRegistrationStatus>,
    /// `registrationConfig`: replaces the stored one.
    pub registration_config: Option<RegistrationConfig>,
    /// `removeAutoRegistration`: drops the stored registration config.
    pub remove_auto_registration: bool,
}

impl Certificates {
    /// GetRegistrationCode: the code a CA's verification certificate must carry as its
    /// common name. Made once (64 random hex digits) and kept.
    pub fn registration_code(&self) -> Result<String, RegistryError> {
        if let Some(code) = self
            .store
            .get::<String>(tables::SETTINGS, REGISTRATION_CODE_KEY)?
        {
            return Ok(code);
        }
        let _writer = self.store.writer();
        if let Some(code) = self
            .store
            .get::<String>(tables::SETTINGS, REGISTRATION_CODE_KEY)?
        {
            return Ok(code);
        }
        let code = random_hex::<32>()?;
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::SETTINGS, REGISTRATION_CODE_KEY, &code)?;
        self.store.apply(batch)?;
        Ok(code)
    }

    /// RegisterCACertificate. The certificate must be a CA certificate (basic constraints
    /// CA:TRUE) valid now, else `CertificateValidation`; a CA registered already is
    /// `AlreadyExists`.
    ///
    /// AWS requires a verification certificate in DEFAULT mode: a certificate signed by the CA's
    /// key whose common name is the account's registration code, proving the registrant holds
    /// the key. fleetcore checks it when given (signature: `CertificateValidation`; common name:
    /// `RegistrationCodeValidation`) but does not require it: the API is already limited to
    /// the installation's administrators, and AWS's check guards against registering another
    /// tenant's CA, which a single-tenant installation does not have.
    pub fn register_ca_certificate(
        &self,
        new: NewCaCertificate,
    ) -> Result<CaCertificateRecord, RegistryError> {
        validate_tags(&new.tags)?;
        let parsed = ParsedCertificate::from_pem(&new.ca_certificate_pem, "caCertificate")?;
        if !parsed.is_ca {
            return Err(RegistryError::CertificateValidation(
                "caCertificate is not a CA certificate (basic constraints CA:TRUE)".into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        parsed.check_valid_at(now, "the CA certificate")?;
        if let Some(verification) = &new.verification_certificate_pem {
            let verification =
                ParsedCertificate::from_pem(verification, "verificationCertificate")?;
            if !verification.is_signed_by(&parsed) {
                return Err(RegistryError::CertificateValidation(
                    "the verification certificate is not signed by the CA certificate".into(),
                ));
            }
            verification.check_valid_at(now, "the verification certificate")?;
            let code = self.registration_code()?;
            if verification.common_name.as_deref() != Some(code.as_str()) {
                return Err(RegistryError::RegistrationCodeValidation(
                    "the verification certificate's common name is not the registration code"
                        .into(),
                ));
            }
        }
        let timestamp = Timestamp::now();
        let record = CaCertificateRecord {
            id: parsed.id.clone(),
            pem: parsed.pem.clone(),
            status: if new.set_as_active {
                CaCertificateStatus::Active
            } else {
                CaCertificateStatus::Inactive
            },
            auto_registration: if new.allow_auto_registration {
                AutoRegistrationStatus::Enable
            } else {
                AutoRegistrationStatus::Disable
            },
            mode: new.mode.unwrap_or_default(),
            creation_date: timestamp,
            last_modified_date: timestamp,
            validity: Validity::of(&parsed),
            customer_version: 1,
            generation_id: random_hex::<16>()?,
            registration_config: new.registration_config,
            tags: new.tags,
        };
        {
            let _writer = self.store.writer();
            if self.store.contains(tables::CA_CERT, &record.id)? {
                return Err(RegistryError::AlreadyExists {
                    message: format!(
                        "The CA certificate is already registered (id {})",
                        record.id
                    ),
                    id: record.id.clone(),
                    arn: self.ca_certificate_arn(&record.id),
                });
            }
            let mut batch = WriteBatch::new();
            put_json(&mut batch, tables::CA_CERT, &record.id, &record)?;
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(record)
    }

    /// The registered CA `id`, if any. For the broker and the TLS trust store.
    pub fn ca_certificate(&self, id: &str) -> Result<Option<CaCertificateRecord>, RegistryError> {
        match normalize_id(id) {
            Ok(id) => self.store.get(tables::CA_CERT, &id),
            Err(_) => Ok(None),
        }
    }

    /// DescribeCACertificate.
    pub fn describe_ca_certificate(&self, id: &str) -> Result<CaCertificateRecord, RegistryError> {
        let id = normalize_id(id)?;
        self.store
            .get(tables::CA_CERT, &id)?
            .ok_or_else(|| RegistryError::not_found("CA certificate", &id))
    }

    /// Every ACTIVE registered CA: the roots the TLS listener should trust besides the data
    /// dir's own CA.
    pub fn active_ca_certificates(&self) -> Result<Vec<CaCertificateRecord>, RegistryError> {
        Ok(self
            .store
            .scan::<CaCertificateRecord>(tables::CA_CERT, "")?
            .into_iter()
            .map(|(_, ca)| ca)
            .filter(|ca| ca.status == CaCertificateStatus::Active)
            .collect())
    }

    /// ListCACertificates: by registration date, newest first unless `ascending`;
    /// `template_name` keeps those whose registration config names that template.
    pub fn list_ca_certificates(
        &self,
        ascending: bool,
        template_name: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CaCertificateRecord>, RegistryError> {
        let all = self
            .store
            .scan::<CaCertificateRecord>(tables::CA_CERT, "")?;
        let mut items: Vec<(String, CaCertificateRecord)> = all
            .into_iter()
            .filter(|(_, ca)| {
                template_name.is_none_or(|t| {
                    ca.registration_config
                        .as_ref()
                        .and_then(|c| c.template_name.as_deref())
                        == Some(t)
                })
            })
            .map(|(_, ca)| (creation_key(ca.creation_date, &ca.id), ca))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        if !ascending {
            items.reverse();
        }
        paginate(items, page, super::DEFAULT_PAGE_SIZE, ascending)
    }

    /// UpdateCACertificate: status, auto-registration, registration config. A status change
    /// notifies the change listeners (devices of an INACTIVE CA may not stay connected).
    pub fn update_ca_certificate(
        &self,
        id: &str,
        update: CaCertificateUpdate,
    ) -> Result<CaCertificateRecord, RegistryError> {
        let (record, status_changed) = {
            let _writer = self.store.writer();
            let mut record = self.describe_ca_certificate(id)?;
            let before = record.status;
            if let Some(status) = update.new_status {
                record.status = status;
            }
            if let Some(auto) = update.new_auto_registration_status {
                record.auto_registration = auto;
            }
            if update.remove_auto_registration {
                record.registration_config = None;
            }
            if let Some(config) = update.registration_config {
                record.registration_config = Some(config);
            }
            record.last_modified_date = Timestamp::now();
            record.customer_version += 1;
            record.generation_id = random_hex::<16>()?;
            let mut batch = WriteBatch::new();
            put_json(&mut batch, tables::CA_CERT, &record.id, &record)?;
            self.store.apply(batch)?;
            let changed = before != record.status;
            (record, changed)
        };
        if status_changed {
            self.store.notify();
        }
        Ok(record)
    }

    /// DeleteCACertificate: the CA must be INACTIVE (`CertificateState`). Device certificates
    /// registered under it stay registered (and keep its id as `caCertificateId`); they can no
    /// longer connect since their CA is no longer trusted.
    pub fn delete_ca_certificate(&self, id: &str) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            let record = self.describe_ca_certificate(id)?;
            if record.status == CaCertificateStatus::Active {
                return Err(RegistryError::CertificateState(format!(
                    "CA certificate {} must be INACTIVE before it can be deleted",
                    record.id
                )));
            }
            let mut batch = WriteBatch::new();
            batch.delete(tables::CA_CERT, record.id.as_bytes());
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }
}
