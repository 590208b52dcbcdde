//! The provisioning service: templates, RegisterThing, the claim flow's three steps and
//! just-in-time provisioning, over identity (through [`Applier`]) and functions (through the
//! hook's `FunctionInvoker`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::{AccountContext, FunctionInvoker, KvStore};
use fleetcore_identity::IdentityService;
use fleetcore_identity::certificates::CertificateStatus;
use fleetcore_identity::policy::Policies;
use fleetcore_identity::registry::RegistryError;
use serde_json::{Map, Value};

use crate::apply::{Applied, Applier};
use crate::claim::tokens::TokenBook;
use crate::error::ProvisioningError;
use crate::hook::{HOOK_TIMEOUT, HookRequest, Hooks};
use crate::store::{LoadedTemplate, TemplateStore, TemplateType};
use crate::template::{CertificateSource, Template};

/// Settings of the provisioning service.
#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    /// How long a certificate ownership token lives (AWS: one hour).
    pub token_ttl: Duration,
    /// Most ownership tokens outstanding at once.
    pub max_tokens: usize,
    /// How long the pre-provisioning hook may take (AWS: 5 s).
    pub hook_timeout: Duration,
    /// Claim-flow requests waiting to be worked on; more are rejected with 429.
    pub queue_capacity: usize,
    /// Claim-flow requests worked on at once.
    pub concurrency: usize,
}

impl Default for ProvisioningConfig {
    fn default() -> ProvisioningConfig {
        ProvisioningConfig {
            token_ttl: Duration::from_secs(3600),
            max_tokens: 100_000,
            hook_timeout: HOOK_TIMEOUT,
            queue_capacity: 4096,
            concurrency: 32,
        }
    }
}

/// A new certificate of the claim flow, with its token.
#[derive(Debug, Clone)]
pub struct IssuedForClaim {
    /// The certificate id.
    pub certificate_id: String,
    /// Its PEM.
    pub certificate_pem: String,
    /// The private key (CreateKeysAndCertificate only).
    pub private_key: Option<String>,
    /// The ownership token RegisterThing needs.
    pub token: String,
}

/// What a device provisioned by claim is told.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The thing's name ("" when the template has no thing).
    pub thing_name: String,
    /// The template's `DeviceConfiguration`, evaluated.
    pub device_configuration: Map<String, Value>,
}

/// The provisioning service.
pub struct Provisioning {
    pub(crate) templates: TemplateStore,
    pub(crate) applier: Applier,
    hooks: Hooks,
    pub(crate) tokens: TokenBook,
    pub(crate) account: AccountContext,
    pub(crate) config: ProvisioningConfig,
}

impl Provisioning {
    /// The service over `store`, `identity` and `policies`; hooks run through `functions`.
    pub fn new(
        config: ProvisioningConfig,
        store: Arc<dyn KvStore>,
        identity: Arc<IdentityService>,
        policies: Arc<Policies>,
        functions: Option<Arc<dyn FunctionInvoker>>,
    ) -> Provisioning {
        let account = identity.account().clone();
        Provisioning {
            templates: TemplateStore::new(store),
            applier: Applier::new(identity, policies),
            hooks: Hooks::new(functions, config.hook_timeout),
            tokens: TokenBook::new(config.token_ttl, config.max_tokens),
            account,
            config,
        }
    }

    /// The stored templates.
    pub fn templates(&self) -> &TemplateStore {
        &self.templates
    }

    /// `arn:aws:iot:{region}:{account}:provisioningtemplate/{name}`.
    pub fn template_arn(&self, name: &str) -> String {
        self.account
            .iot_arn(format!("provisioningtemplate/{name}"))
            .to_string()
    }

    fn usable(
        &self,
        name: &str,
        kind: TemplateType,
    ) -> Result<Arc<LoadedTemplate>, ProvisioningError> {
        let loaded = self.templates.load(name)?;
        if loaded.record.template_type != kind {
            return Err(ProvisioningError::Invalid(format!(
                "The provisioning template {name} is of type {}, not {}",
                loaded.record.template_type.as_str(),
                kind.as_str()
            )));
        }
        if !loaded.record.enabled {
            return Err(ProvisioningError::Invalid(format!(
                "The provisioning template {name} is disabled"
            )));
        }
        Ok(loaded)
    }

    /// RegisterThing: provisions with the template `body` and `parameters` (the template's
    /// certificate comes from a CSR, a PEM or an id in the parameters). Answers what was
    /// applied and the ARNs by resource kind.
    pub fn register_thing(
        &self,
        body: &str,
        parameters: &Map<String, Value>,
    ) -> Result<(Applied, BTreeMap<String, String>), ProvisioningError> {
        let template = Template::parse(body)?;
        let mut predefined = Map::new();
        if let Some(id) = parameters.get("AWS::IoT::Certificate::Id") {
            predefined.insert("AWS::IoT::Certificate::Id".into(), id.clone());
        }
        let plan = template.evaluate(parameters, &predefined)?;
        let applied = self.applier.apply(&plan)?;
        let mut arns = Map::new();
        if let Some(id) = &applied.certificate_id {
            arns.insert(
                "certificate".into(),
                Value::String(self.applier.identity().certificate_arn(id)),
            );
        }
        if let Some(thing) = &applied.thing_name {
            arns.insert(
                "thing".into(),
                Value::String(self.account.iot_arn(format!("thing/{thing}")).to_string()),
            );
        }
        if let Some(policy) = applied.policy_names.first() {
            arns.insert(
                "policy".into(),
                Value::String(self.account.iot_arn(format!("policy/{policy}")).to_string()),
            );
        }
        let arns = arns
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect();
        Ok((applied, arns))
    }

    /// Claim step 1a (`$aws/certificates/create`): a new key and certificate, PENDING_ACTIVATION.
    pub fn create_keys_and_certificate(&self) -> Result<IssuedForClaim, ProvisioningError> {
        let issued = self
            .applier
            .identity()
            .certificates()
            .create_keys_and_certificate_with_status(CertificateStatus::PendingActivation)?;
        let token = self.tokens.issue(&issued.certificate.id)?;
        Ok(IssuedForClaim {
            certificate_id: issued.certificate.id,
            certificate_pem: issued.certificate.pem,
            private_key: Some(issued.private_key_pem),
            token,
        })
    }

    /// Claim step 1b (`$aws/certificates/create-from-csr`): the device's CSR signed,
    /// PENDING_ACTIVATION.
    pub fn create_certificate_from_csr(
        &self,
        csr: &str,
    ) -> Result<IssuedForClaim, ProvisioningError> {
        let record = self
            .applier
            .identity()
            .certificates()
            .create_certificate_from_csr_with_status(csr, CertificateStatus::PendingActivation)
            .map_err(|e| match e {
                RegistryError::InvalidRequest(m) | RegistryError::CertificateValidation(m) => {
                    ProvisioningError::Csr(m)
                }
                other => other.into(),
            })?;
        let token = self.tokens.issue(&record.id)?;
        Ok(IssuedForClaim {
            certificate_id: record.id,
            certificate_pem: record.pem,
            private_key: None,
            token,
        })
    }

    /// Claim step 2 (`$aws/provisioning-templates/{name}/provision`): the hook, if any, then
    /// the template, for the certificate the token was issued with. A failure puts the token
    /// back, so the device may retry until it expires; success uses it up.
    pub async fn provision_by_claim(
        &self,
        name: &str,
        token: &str,
        parameters: Map<String, Value>,
        claim_certificate_id: &str,
        client_id: &str,
    ) -> Result<Provisioned, ProvisioningError> {
        let loaded = self.usable(name, TemplateType::FleetProvisioning)?;
        let (certificate_id, expires) = self.tokens.take(token)?;
        let result = self
            .provision_certificate(
                &loaded,
                &certificate_id,
                parameters,
                claim_certificate_id,
                client_id,
            )
            .await;
        if result.is_err() {
            self.tokens.put_back(token, &certificate_id, expires);
        }
        result
    }

    async fn provision_certificate(
        &self,
        loaded: &LoadedTemplate,
        certificate_id: &str,
        mut parameters: Map<String, Value>,
        claim_certificate_id: &str,
        client_id: &str,
    ) -> Result<Provisioned, ProvisioningError> {
        let name = &loaded.record.name;
        if let Some(hook) = &loaded.record.pre_provisioning_hook {
            let certificate = self
                .applier
                .identity()
                .certificates()
                .describe_certificate(certificate_id)?;
            let overrides = self
                .hooks
                .ask(
                    &hook.target_arn,
                    &HookRequest {
                        claim_certificate_id,
                        certificate_id,
                        certificate_pem: &certificate.pem,
                        template_arn: &self.template_arn(name),
                        client_id,
                        parameters: &parameters,
                    },
                )
                .await?;
            parameters.extend(overrides);
        }
        let mut predefined = Map::new();
        predefined.insert(
            "AWS::IoT::Certificate::Id".into(),
            Value::String(certificate_id.to_string()),
        );
        let plan = loaded.template.evaluate(&parameters, &predefined)?;
        match plan.certificate.as_ref().map(|c| &c.source) {
            Some(CertificateSource::Id(id)) if id == certificate_id => {}
            _ => {
                return Err(ProvisioningError::Parameters(format!(
                    "the certificate resource of template {name} must be CertificateId: {{\"Ref\": \"AWS::IoT::Certificate::Id\"}}"
                )));
            }
        }
        let applied = self.applier.apply(&plan)?;
        Ok(Provisioned {
            thing_name: applied.thing_name.unwrap_or_default(),
            device_configuration: plan.device_configuration,
        })
    }

    /// Checks a template body for `kind` at create/update time.
    pub fn check_body(
        &self,
        body: &str,
        kind: TemplateType,
    ) -> Result<Template, ProvisioningError> {
        let template = Template::parse(body)?;
        if kind == TemplateType::Jitp && !template.certificate_by_id() {
            return Err(ProvisioningError::Invalid(
                "template body: a JITP template needs an AWS::IoT::Certificate resource with CertificateId: {\"Ref\": \"AWS::IoT::Certificate::Id\"}".into(),
            ));
        }
        Ok(template)
    }

    /// The settings.
    pub fn config(&self) -> &ProvisioningConfig {
        &self.config
    }
}
