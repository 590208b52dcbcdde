//! `ENABLE_IOT_LOGGING`: sets the account's logging options (as SetV2LoggingOptions does) to
//! `logLevel` with `roleArnForLogging`, logging enabled. For a Detect alarm's thing, and for
//! an audit finding on the account settings (`LOGGING_DISABLED_CHECK`); other findings skip it.

use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;
use crate::logging::{LogLevel, LoggingChange};

/// `enableIoTLoggingParams`.
pub struct EnableIotLogging;

fn change(params: &Value) -> Result<LoggingChange, DefenderError> {
    let role = params["roleArnForLogging"].as_str().ok_or_else(|| {
        DefenderError::Invalid("enableIoTLoggingParams.roleArnForLogging is required".into())
    })?;
    let level = params["logLevel"].as_str().ok_or_else(|| {
        DefenderError::Invalid("enableIoTLoggingParams.logLevel is required".into())
    })?;
    if LogLevel::parse(level)? == LogLevel::Disabled {
        return Err(DefenderError::Invalid(
            "enableIoTLoggingParams.logLevel DISABLED would not enable logging".into(),
        ));
    }
    Ok(LoggingChange {
        role_arn: Some(role.to_string()),
        default_log_level: Some(level.to_string()),
        disable_all_logs: Some(false),
    })
}

impl ActionKind for EnableIotLogging {
    fn params_key(&self) -> &'static str {
        "enableIoTLoggingParams"
    }

    fn action_type(&self) -> &'static str {
        "ENABLE_IOT_LOGGING"
    }

    fn check(&self, params: &Value, _reach: &Reach) -> Result<(), DefenderError> {
        let change = change(params)?;
        match change.role_arn.as_deref() {
            Some(arn) if arn.starts_with("arn:") && arn.contains(":iam:") => Ok(()),
            other => Err(DefenderError::Invalid(format!(
                "enableIoTLoggingParams.roleArnForLogging {other:?} is not an IAM role ARN"
            ))),
        }
    }

    fn apply<'a>(
        &'a self,
        params: &'a Value,
        subject: Subject<'a>,
        reach: &'a Reach,
    ) -> Applying<'a> {
        Box::pin(async move {
            if matches!(subject, Subject::Finding(_))
                && subject.resource_type() != Some("ACCOUNT_SETTINGS")
            {
                return Ok(Applied::Skipped(
                    "only an audit finding on the account settings can be mitigated this way"
                        .into(),
                ));
            }
            let change = change(params).map_err(|e| e.to_string())?;
            reach.logging.set(change).map_err(|e| e.to_string())?;
            Ok(Applied::Done)
        })
    }
}
