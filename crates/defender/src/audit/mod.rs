//! Audits: the account's audit configuration, on-demand audit tasks that run the enabled
//! checks ([`checks`]) over the registry and policies, and their findings ([`api`]).
//! Tasks run to completion when started (the checks read the store only), so a task is
//! `COMPLETED` (or `FAILED`) by the time StartOnDemandAuditTask answers. Scheduled audits
//! ([`schedule`]) run the same way when due; suppressions ([`suppressions`]) mark findings.

pub mod api;
pub mod checks;
pub mod notify;
pub mod schedule;
pub mod suppressions;

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetcore_core::{AccountContext, KvStore, WriteBatch};
use fleetcore_identity::IdentityService;
use fleetcore_identity::certificates::{CaCertificateRecord, CertificateRecord, CertificateStatus};
use fleetcore_identity::policy::{PageSpec, Policies, PolicyError};
use fleetcore_identity::registry::PageRequest;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::DefenderError;
use crate::logging::IotLogging;
use crate::meter::FleetMeter;
use crate::service::Defender;
use crate::store::now;

const TABLE: &str = "defender_audit";
const CONFIG_KEY: &[u8] = b"config";
const TASK_PREFIX: &str = "task/";

/// Every audit check name AWS defines (a configuration may name any; only the ones in
/// [`checks::registry`] can be enabled here).
pub const AWS_CHECKS: [&str; 16] = [
    "AUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK",
    "CA_CERTIFICATE_EXPIRING_CHECK",
    "CA_CERTIFICATE_KEY_QUALITY_CHECK",
    "CONFLICTING_CLIENT_IDS_CHECK",
    "DEVICE_CERTIFICATE_EXPIRING_CHECK",
    "DEVICE_CERTIFICATE_KEY_QUALITY_CHECK",
    "DEVICE_CERTIFICATE_SHARED_CHECK",
    "INTERMEDIATE_CA_REVOKED_FOR_ACTIVE_DEVICE_CERTIFICATES_CHECK",
    "IOT_POLICY_OVERLY_PERMISSIVE_CHECK",
    "IOT_ROLE_ALIAS_ALLOWS_ACCESS_TO_UNUSED_SERVICES_CHECK",
    "IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK",
    "LOGGING_DISABLED_CHECK",
    "REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK",
    "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK",
    "UNAUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK",
    "DEVICE_CERTIFICATE_AGE_CHECK",
];

/// The account's audit configuration, as AWS writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfiguration {
    /// `roleArn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `auditNotificationTargetConfigurations` (`SNS`).
    #[serde(default)]
    pub audit_notification_target_configurations: BTreeMap<String, Value>,
    /// `auditCheckConfigurations`: check name -> `{"enabled": bool}`.
    #[serde(default)]
    pub audit_check_configurations: BTreeMap<String, Value>,
}

impl AuditConfiguration {
    fn enabled(&self, check: &str) -> bool {
        self.audit_check_configurations
            .get(check)
            .and_then(|c| c.get("enabled"))
            .and_then(Value::as_bool)
            == Some(true)
    }
}

/// A stored audit task with its findings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditTask {
    /// The id.
    pub task_id: String,
    /// `COMPLETED` or `FAILED`.
    pub status: String,
    /// `ON_DEMAND_AUDIT_TASK` or `SCHEDULED_AUDIT_TASK`.
    pub task_type: String,
    /// The scheduled audit that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_audit_name: Option<String>,
    /// Seconds since the epoch.
    pub start_time: f64,
    /// `auditDetails` by check name.
    pub details: BTreeMap<String, Value>,
    /// The findings, as ListAuditFindings writes them.
    pub findings: Vec<Value>,
}

/// How the server admits clients without a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousAccess {
    /// The IoT policy that governs them; `None`: they may do everything.
    pub policy: Option<String>,
}

/// What checks read.
pub struct AuditSources {
    policies: Arc<Policies>,
    identity: Arc<IdentityService>,
    meter: Arc<FleetMeter>,
    logging: Arc<IotLogging>,
    anonymous: Option<AnonymousAccess>,
    account_id: String,
}

impl AuditSources {
    /// Anonymous access, if a plain listener admits clients without a certificate.
    pub fn anonymous_access(&self) -> Option<&AnonymousAccess> {
        self.anonymous.as_ref()
    }

    /// The default version id and document of policy `name`, if it exists.
    pub fn policy(&self, name: &str) -> Result<Option<(String, String)>, String> {
        match self.policies.get(name) {
            Ok(info) => Ok(Some((info.default_version_id, info.document))),
            Err(PolicyError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every device certificate.
    pub fn device_certificates(&self) -> Result<Vec<CertificateRecord>, String> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(250);
        loop {
            let certs = self
                .identity
                .certificates()
                .list_certificates(None, true, &page)
                .map_err(|e| e.to_string())?;
            out.extend(certs.items);
            match certs.next_token {
                Some(t) => page = PageRequest::after(t, 250),
                None => return Ok(out),
            }
        }
    }

    /// ACTIVE device certificates as (id, not-after in epoch seconds).
    pub fn active_device_certificates(&self) -> Result<Vec<(String, f64)>, String> {
        Ok(self
            .device_certificates()?
            .iter()
            .filter(|c| c.status == CertificateStatus::Active)
            .map(|c| (c.id.clone(), c.validity.not_after.epoch_seconds()))
            .collect())
    }

    /// Every registered CA certificate, whatever its status.
    pub fn ca_certificates(&self) -> Result<Vec<CaCertificateRecord>, String> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(250);
        loop {
            let cas = self
                .identity
                .certificates()
                .list_ca_certificates(true, None, &page)
                .map_err(|e| e.to_string())?;
            out.extend(cas.items);
            match cas.next_token {
                Some(t) => page = PageRequest::after(t, 250),
                None => return Ok(out),
            }
        }
    }

    /// ACTIVE registered CA certificates as (id, not-after in epoch seconds).
    pub fn active_ca_certificates(&self) -> Result<Vec<(String, f64)>, String> {
        Ok(self
            .identity
            .active_ca_certificates()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| (c.id.clone(), c.validity.not_after.epoch_seconds()))
            .collect())
    }

    /// The things device certificate `id` is attached to.
    pub fn things_of_certificate(&self, id: &str) -> Result<Vec<String>, String> {
        self.identity
            .things_for_certificate(id)
            .map_err(|e| e.to_string())
    }

    /// The client ids connected now with device certificate `id`.
    pub fn live_clients_of_certificate(&self, id: &str) -> Vec<String> {
        self.meter.live_clients_of(id)
    }

    /// Every policy as (name, default version id, document).
    pub fn policies(&self) -> Result<Vec<(String, String, String)>, PolicyError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.policies.list(PageSpec {
                after: after.as_deref(),
                limit: 250,
                ascending: true,
            })?;
            for name in page.items {
                let info = self.policies.get(&name)?;
                out.push((name, info.default_version_id, info.document));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// Audits of one account.
pub struct Audits {
    store: Arc<dyn KvStore>,
    sources: AuditSources,
    account: AccountContext,
    clock: schedule::ScheduleClock,
    notifier: Option<notify::AuditNotifier>,
    writing: Mutex<()>,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DefenderError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DefenderError::Store(fleetcore_core::StoreError::Backend {
            operation: "decode",
            message: format!("a stored audit record does not parse: {e}"),
        })
    })
}

impl Audits {
    /// Audits stored in `store`, reading `policies`, `identity`'s certificates, what
    /// `defender`'s meter saw of the connections and the `logging` options; schedules run on
    /// `clock`.
    pub fn new(
        store: Arc<dyn KvStore>,
        policies: Arc<Policies>,
        identity: Arc<IdentityService>,
        defender: &Defender,
        logging: Arc<IotLogging>,
        clock: schedule::ScheduleClock,
    ) -> Audits {
        Audits {
            store,
            clock,
            account: defender.account().clone(),
            notifier: None,
            sources: AuditSources {
                policies,
                identity,
                meter: defender.meter(),
                logging,
                anonymous: None,
                account_id: defender.account().account_id.clone(),
            },
            writing: Mutex::new(()),
        }
    }

    /// Sends finished tasks to the configured SNS target through `sns` (call inside the
    /// runtime).
    pub fn with_notifications(mut self, sns: Arc<dyn fleetcore_core::TopicPublisher>) -> Audits {
        self.notifier = Some(notify::AuditNotifier::new(sns));
        self
    }

    /// Audits the server's anonymous access (a plain listener that admits clients without a
    /// certificate, under `access.policy` or none).
    pub fn with_anonymous_access(mut self, access: AnonymousAccess) -> Audits {
        self.sources.anonymous = Some(access);
        self
    }

    /// The configuration (empty until first updated).
    pub fn configuration(&self) -> Result<AuditConfiguration, DefenderError> {
        Ok(match self.store.get(TABLE, CONFIG_KEY)? {
            Some(b) => decode(&b)?,
            None => AuditConfiguration::default(),
        })
    }

    /// Merges `update` into the configuration; enabling a check this server does not run is
    /// refused.
    pub fn update_configuration(&self, update: AuditConfiguration) -> Result<(), DefenderError> {
        let runnable: Vec<&str> = checks::registry().iter().map(|c| c.name()).collect();
        for (name, c) in &update.audit_check_configurations {
            if !AWS_CHECKS.contains(&name.as_str()) {
                return Err(DefenderError::Invalid(format!(
                    "{name} is not an audit check"
                )));
            }
            let enabled = c.get("enabled").and_then(Value::as_bool) == Some(true);
            if enabled && !runnable.contains(&name.as_str()) {
                return Err(DefenderError::Invalid(format!(
                    "{name} is not supported by this server; it runs {}",
                    runnable.join(", ")
                )));
            }
        }
        for (kind, target) in &update.audit_notification_target_configurations {
            if kind != "SNS" {
                return Err(DefenderError::Invalid(format!(
                    "auditNotificationTargetConfigurations key {kind:?} is not SNS"
                )));
            }
            let enabled = target.get("enabled").and_then(Value::as_bool) == Some(true);
            let arn = target.get("targetArn").and_then(Value::as_str);
            if enabled && !arn.is_some_and(|a| a.starts_with("arn:") && a.contains(":sns:")) {
                return Err(DefenderError::Invalid(format!(
                    "auditNotificationTargetConfigurations.SNS.targetArn {arn:?} is not an SNS topic ARN"
                )));
            }
        }
        let _writing = self.writing.lock();
        let mut config = self.configuration()?;
        if update.role_arn.is_some() {
            config.role_arn = update.role_arn;
        }
        config
            .audit_notification_target_configurations
            .extend(update.audit_notification_target_configurations);
        config
            .audit_check_configurations
            .extend(update.audit_check_configurations);
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            CONFIG_KEY,
            serde_json::to_vec(&config).unwrap_or_default(),
        );
        Ok(self.store.apply(batch)?)
    }

    /// Runs `check_names` (each enabled in the configuration) as a new on-demand task.
    pub fn start_on_demand(&self, check_names: &[String]) -> Result<AuditTask, DefenderError> {
        self.run_task(check_names, None)
    }

    /// Runs `check_names` as a new task: on demand, or of the scheduled audit `scheduled`.
    fn run_task(
        &self,
        check_names: &[String],
        scheduled: Option<&str>,
    ) -> Result<AuditTask, DefenderError> {
        if check_names.is_empty() {
            return Err(DefenderError::Invalid("targetCheckNames is empty".into()));
        }
        let config = self.configuration()?;
        let registry = checks::registry();
        let mut selected = Vec::new();
        for name in check_names {
            if !config.enabled(name) {
                return Err(DefenderError::Invalid(format!(
                    "{name} is not enabled in the account audit configuration"
                )));
            }
            let check = registry.iter().find(|c| c.name() == name).ok_or_else(|| {
                DefenderError::Invalid(format!("{name} is not supported by this server"))
            })?;
            selected.push(check);
        }
        let start_time = now();
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let mut details = BTreeMap::new();
        let mut findings = Vec::new();
        let mut failed = false;
        let suppressions = self.suppressions()?;
        for check in selected {
            match check.run(&self.sources) {
                Ok(outcome) => {
                    let n = outcome.findings.len();
                    let mut suppressed = 0;
                    for f in outcome.findings {
                        let mut finding = json!({
                            "findingId": uuid::Uuid::new_v4().simple().to_string(),
                            "taskId": task_id,
                            "checkName": check.name(),
                            "taskStartTime": start_time,
                            "findingTime": now(),
                            "severity": f.severity,
                            "nonCompliantResource": f.resource,
                            "reasonForNonCompliance": f.reason,
                            "reasonForNonComplianceCode": f.code,
                            "isSuppressed": false,
                        });
                        if !f.related.is_empty() {
                            finding["relatedResources"] = Value::Array(f.related);
                        }
                        if suppressions.iter().any(|s| s.covers(&finding, start_time)) {
                            finding["isSuppressed"] = json!(true);
                            suppressed += 1;
                        }
                        findings.push(finding);
                    }
                    details.insert(check.name().to_string(), json!({
                        "checkRunStatus": if n == 0 { "COMPLETED_COMPLIANT" } else { "COMPLETED_NON_COMPLIANT" },
                        "checkCompliant": n == 0,
                        "totalResourcesCount": outcome.total,
                        "nonCompliantResourcesCount": n,
                        "suppressedNonCompliantResourcesCount": suppressed,
                    }));
                }
                Err(e) => {
                    failed = true;
                    details.insert(check.name().to_string(), json!({
                        "checkRunStatus": "FAILED", "errorCode": "INTERNAL_FAILURE", "message": e,
                    }));
                }
            }
        }
        let task = AuditTask {
            task_id: task_id.clone(),
            status: if failed { "FAILED" } else { "COMPLETED" }.into(),
            task_type: if scheduled.is_some() {
                "SCHEDULED_AUDIT_TASK"
            } else {
                "ON_DEMAND_AUDIT_TASK"
            }
            .into(),
            scheduled_audit_name: scheduled.map(str::to_string),
            start_time,
            details,
            findings,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            format!("{TASK_PREFIX}{task_id}").into_bytes(),
            serde_json::to_vec(&task).unwrap_or_default(),
        );
        self.store.apply(batch)?;
        if let (Some(notifier), Some(sns)) = (
            &self.notifier,
            config.audit_notification_target_configurations.get("SNS"),
        ) && sns.get("enabled").and_then(Value::as_bool) == Some(true)
            && let Some(topic) = sns.get("targetArn").and_then(Value::as_str)
        {
            notifier.send(topic, &self.account.account_id, &task);
        }
        Ok(task)
    }

    /// The task `id`, if any.
    pub fn task(&self, id: &str) -> Result<Option<AuditTask>, DefenderError> {
        self.store
            .get(TABLE, format!("{TASK_PREFIX}{id}").as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every task, oldest first.
    pub fn tasks(&self) -> Result<Vec<AuditTask>, DefenderError> {
        let mut tasks: Vec<AuditTask> = self
            .store
            .scan_prefix(TABLE, TASK_PREFIX.as_bytes())?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_, _>>()?;
        tasks.sort_by(|a, b| a.start_time.total_cmp(&b.start_time));
        Ok(tasks)
    }
}
