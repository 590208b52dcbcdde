//! `lambda`: invokes a fleetcore function (by name or ARN) through the `FunctionInvoker` seam
//! with AWS's SNS event (`{"Records":[{"EventSource":"aws:sns","Sns":{...}}]}`). No
//! confirmation. A throttled or failing invocation service is retried; a missing function or a
//! function error is a permanent failure (counted), as Lambda's own async retries are not here.

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{FunctionInvoker, InvokeError};

use super::{Context, Failure, Outgoing, ProtocolKind, Targets, Transport};
use crate::model::Subscription;

/// The `lambda` protocol.
pub(super) const LAMBDA: ProtocolKind = ProtocolKind {
    name: "lambda",
    needs_confirmation: false,
    check_endpoint,
    build,
    unavailable: "this server runs no functions",
};

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let name = endpoint.strip_prefix("arn:").map_or(endpoint, |_| {
        endpoint.rsplit(":function:").next().unwrap_or("")
    });
    if name.is_empty() || endpoint.starts_with("arn:") && !endpoint.contains(":function:") {
        return Err(format!("{endpoint:?} is not a function name or ARN"));
    }
    Ok(())
}

fn build(targets: &Targets) -> Result<Option<Arc<dyn Transport>>, String> {
    Ok(targets
        .functions
        .clone()
        .map(|functions| Arc::new(Lambda { functions }) as Arc<dyn Transport>))
}

struct Lambda {
    functions: Arc<dyn FunctionInvoker>,
}

#[async_trait]
impl Transport for Lambda {
    async fn send(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> Result<(), Failure> {
        let Outgoing::Notification(published) = outgoing else {
            return Ok(());
        };
        let event = published.lambda_event(
            &context.signer,
            &context.urls,
            &subscription.arn,
            &subscription.token,
        );
        let payload = serde_json::to_vec(&event).map_err(|e| Failure::Permanent(e.to_string()))?;
        match self.functions.invoke(&subscription.endpoint, payload).await {
            Ok(output) => match output.function_error {
                None => Ok(()),
                Some(kind) => Err(Failure::Permanent(format!(
                    "the function failed ({kind}): {}",
                    String::from_utf8_lossy(&output.payload[..output.payload.len().min(512)])
                ))),
            },
            Err(error @ (InvokeError::Throttled(_) | InvokeError::Service(_))) => {
                Err(Failure::Retry(error.to_string()))
            }
            Err(error) => Err(Failure::Permanent(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert!(check_endpoint("handler").is_ok());
        assert!(check_endpoint("arn:aws:lambda:us-east-1:000000000000:function:f").is_ok());
        assert!(check_endpoint("arn:aws:sqs:us-east-1:000000000000:q").is_err());
        assert!(check_endpoint("").is_err());
    }
}
