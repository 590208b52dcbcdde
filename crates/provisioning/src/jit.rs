//! Just-in-time provisioning and registration, asked by the broker's authenticator when a
//! device presents a certificate that TLS accepted (it chains to an ACTIVE registered CA) but
//! that is not registered yet.
//!
//! - **JITP**: the CA has auto-registration enabled and a `registrationConfig` (a template
//!   body, or the name of a `JITP` template). The certificate is registered under the CA, the
//!   template applied (thing, policies, status), and the connection then proceeds with the new
//!   identity: fleetcore does not drop the first connection (a device that reconnects, as AWS
//!   devices are written to, works the same). A failure rolls back, including the
//!   registration, and refuses the connection with the reason.
//! - **JITR**: the CA has auto-registration enabled and no `registrationConfig`. The
//!   certificate is registered PENDING_ACTIVATION, `$aws/events/certificates/registered/{caCertificateId}`
//!   is published (for a rule or function to activate it), and the connection is refused, as
//!   AWS does; the device connects again once its certificate is active.

use std::sync::Arc;

use fleetcore_identity::certificate_id;
use fleetcore_identity::certificates::{AutoRegistrationStatus, CertificateStatus};
use fleetcore_mqtt::broker::{Message, Router};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use serde_json::{Map, Value, json};

use crate::error::ProvisioningError;
use crate::service::Provisioning;
use crate::store::TemplateType;
use crate::template::Template;

/// What became of an unregistered certificate.
#[derive(Debug)]
pub enum FirstConnection {
    /// No registered CA with auto-registration signed it: refuse as unregistered.
    NotEligible,
    /// JITP provisioned it: authenticate again, it is registered now.
    Provisioned,
    /// JITR registered it PENDING_ACTIVATION and announced it: refuse this connection.
    Registered {
        /// The registered certificate's id.
        certificate_id: String,
    },
}

/// Just-in-time provisioning and registration.
pub struct JustInTime {
    provisioning: Arc<Provisioning>,
    router: Arc<Router>,
}

/// The `AWS::IoT::Certificate::*` parameters of a certificate's subject.
fn certificate_parameters(der: &[u8], id: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("AWS::IoT::Certificate::Id".into(), Value::String(id.into()));
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    out.insert(
        "AWS::IoT::Certificate::SerialNumber".into(),
        Value::String(cert.raw_serial_as_string().replace(':', "")),
    );
    let subject = cert.subject();
    let mut put = |name: &str, values: Vec<&str>| {
        if let Some(v) = values.first() {
            out.insert(
                format!("AWS::IoT::Certificate::{name}"),
                Value::String((*v).to_string()),
            );
        }
    };
    put(
        "CommonName",
        subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    put(
        "Country",
        subject
            .iter_country()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    put(
        "Organization",
        subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    put(
        "OrganizationalUnit",
        subject
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    put(
        "StateName",
        subject
            .iter_state_or_province()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    put(
        "Locality",
        subject
            .iter_locality()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    );
    out
}

impl JustInTime {
    /// JIT over `provisioning`, announcing JITR registrations on `router`.
    pub fn new(provisioning: Arc<Provisioning>, router: Arc<Router>) -> JustInTime {
        JustInTime {
            provisioning,
            router,
        }
    }

    /// Handles the first connection of the unregistered DER certificate `der`.
    pub fn first_connection(&self, der: &[u8]) -> Result<FirstConnection, ProvisioningError> {
        let identity = self.provisioning.applier.identity();
        let Some(ca) = identity.certificates().registered_issuer_of_der(der)? else {
            return Ok(FirstConnection::NotEligible);
        };
        if ca.auto_registration != AutoRegistrationStatus::Enable {
            return Ok(FirstConnection::NotEligible);
        }
        let id = certificate_id(der);
        let template = match &ca.registration_config {
            Some(config) if config.template_body.is_some() || config.template_name.is_some() => {
                Some(self.template_of(config)?)
            }
            _ => None,
        };
        let Some(template) = template else {
            let record = identity.certificates().register_certificate_der(
                der,
                &ca.id,
                CertificateStatus::PendingActivation,
            )?;
            self.announce(&ca.id, &record.id);
            tracing::info!(certificate = %record.id, ca = %ca.id, "just-in-time registration: certificate registered PENDING_ACTIVATION");
            return Ok(FirstConnection::Registered {
                certificate_id: record.id,
            });
        };
        let plan = template.evaluate(&Map::new(), &certificate_parameters(der, &id))?;
        let registered = identity.certificates().register_certificate_der(
            der,
            &ca.id,
            CertificateStatus::PendingActivation,
        )?;
        match self.provisioning.applier.apply(&plan) {
            Ok(_) => {
                tracing::info!(certificate = %registered.id, ca = %ca.id, "just-in-time provisioning applied the CA's template");
                Ok(FirstConnection::Provisioned)
            }
            Err(e) => {
                if let Err(undo) = identity
                    .certificates()
                    .delete_certificate(&registered.id, true)
                {
                    tracing::error!(certificate = %registered.id, error = %undo, "could not roll back a just-in-time registration");
                }
                Err(e)
            }
        }
    }

    fn template_of(
        &self,
        config: &fleetcore_identity::certificates::RegistrationConfig,
    ) -> Result<Template, ProvisioningError> {
        if let Some(name) = &config.template_name {
            let loaded = self.provisioning.templates.load(name)?;
            if loaded.record.template_type != TemplateType::Jitp || !loaded.record.enabled {
                return Err(ProvisioningError::Invalid(format!(
                    "the CA's template {name} is not an enabled JITP template"
                )));
            }
            return Ok(loaded.template.clone());
        }
        let body = config.template_body.as_deref().unwrap_or_default();
        Ok(Template::parse(body)?)
    }

    fn announce(&self, ca_id: &str, certificate_id: &str) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let payload = json!({
            "certificateId": certificate_id,
            "caCertificateId": ca_id,
            "timestamp": now_ms,
            "certificateStatus": "PENDING_ACTIVATION",
            "awsAccountId": self.provisioning.account.account_id,
            "certificateRegistrationTimestamp": now_ms,
        });
        let Some(topic) = Utf8::new(format!("$aws/events/certificates/registered/{ca_id}")) else {
            return;
        };
        self.router.publish(Arc::new(Message {
            topic,
            payload: bytes::Bytes::from(payload.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        }));
    }
}
