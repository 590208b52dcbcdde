//! The pre-provisioning hook: the template's function is called through core's
//! [`FunctionInvoker`] with AWS's request shape, and its answer decides. Deny by default: an
//! invocation error, a function error, a timeout or a malformed answer refuses the device.

use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::FunctionInvoker;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ProvisioningError;

/// How long the hook may take (AWS: 5 seconds).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the hook is asked about one device.
#[derive(Debug, Clone)]
pub struct HookRequest<'a> {
    /// The certificate the device connected with (the claim).
    pub claim_certificate_id: &'a str,
    /// The device's new certificate.
    pub certificate_id: &'a str,
    /// Its PEM.
    pub certificate_pem: &'a str,
    /// The template's ARN.
    pub template_arn: &'a str,
    /// The device's MQTT client id.
    pub client_id: &'a str,
    /// The parameters the device sent.
    pub parameters: &'a Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookAnswer {
    allow_provisioning: bool,
    #[serde(default)]
    parameter_overrides: Option<Map<String, Value>>,
}

/// Calls hooks.
#[derive(Clone)]
pub struct Hooks {
    invoker: Option<Arc<dyn FunctionInvoker>>,
    timeout: Duration,
}

impl Hooks {
    /// Hooks called through `invoker` (`None`: a template with a hook refuses every device,
    /// since the hook cannot run), each given `timeout`.
    pub fn new(invoker: Option<Arc<dyn FunctionInvoker>>, timeout: Duration) -> Hooks {
        Hooks { invoker, timeout }
    }

    /// Asks `function`; `Ok(overrides)` when it allows the device, the reason otherwise.
    pub async fn ask(
        &self,
        function: &str,
        request: &HookRequest<'_>,
    ) -> Result<Map<String, Value>, ProvisioningError> {
        let refuse = |why: String| {
            ProvisioningError::Refused(format!("the pre-provisioning hook {function} {why}"))
        };
        let invoker = self
            .invoker
            .as_ref()
            .ok_or_else(|| refuse("cannot run: functions are not available".into()))?;
        let payload = json!({
            "claimCertificateId": request.claim_certificate_id,
            "certificateId": request.certificate_id,
            "certificatePem": request.certificate_pem,
            "templateArn": request.template_arn,
            "clientId": request.client_id,
            "parameters": request.parameters,
        });
        let payload = serde_json::to_vec(&payload).map_err(|e| refuse(e.to_string()))?;
        let output = tokio::time::timeout(self.timeout, invoker.invoke(function, payload))
            .await
            .map_err(|_| refuse(format!("did not answer within {:?}", self.timeout)))?
            .map_err(|e| refuse(format!("could not be invoked: {e}")))?;
        if let Some(kind) = output.function_error {
            return Err(refuse(format!(
                "failed ({kind}): {}",
                String::from_utf8_lossy(&output.payload)
            )));
        }
        let answer: HookAnswer = serde_json::from_slice(&output.payload).map_err(|e| {
            refuse(format!(
                "answered malformed (expected {{\"allowProvisioning\": bool, \"parameterOverrides\": {{...}}}}): {e}"
            ))
        })?;
        if !answer.allow_provisioning {
            return Err(refuse(
                "refused the device (allowProvisioning: false)".into(),
            ));
        }
        Ok(answer.parameter_overrides.unwrap_or_default())
    }
}
