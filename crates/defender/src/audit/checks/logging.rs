//! `LOGGING_DISABLED_CHECK`: the account's logging options (SetV2LoggingOptions) disable the
//! platform's logs (`disableAllLogs`, or `defaultLogLevel` `DISABLED`). fleetcore has only v2
//! logging options (AWS also reads the v1 ones).

use serde_json::json;

use super::{AuditCheck, CheckOutcome, NonCompliance};
use crate::audit::AuditSources;

/// The check.
pub struct LoggingDisabled;

impl AuditCheck for LoggingDisabled {
    fn name(&self) -> &'static str {
        "LOGGING_DISABLED_CHECK"
    }

    fn run(&self, sources: &AuditSources) -> Result<CheckOutcome, String> {
        let options = sources.logging.options().map_err(|e| e.to_string())?;
        let findings = if options.threshold().is_none() {
            vec![NonCompliance {
                resource: json!({
                    "resourceType": "ACCOUNT_SETTINGS",
                    "resourceIdentifier": {"account": sources.account_id},
                    "additionalInfo": {
                        "DEFAULT_LOG_LEVEL": options.default_log_level,
                        "DISABLE_ALL_LOGS": options.disable_all_logs.to_string(),
                    },
                }),
                severity: "LOW",
                reason: "AWS IoT logging is disabled".into(),
                code: "LOGGING_DISABLED",
                related: Vec::new(),
            }]
        } else {
            Vec::new()
        };
        Ok(CheckOutcome { total: 1, findings })
    }
}
