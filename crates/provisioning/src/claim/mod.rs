//! Provisioning by claim over MQTT, served in process through the broker's service tap:
//!
//! | request topic | accepted | rejected |
//! |---|---|---|
//! | `$aws/certificates/create/{json,cbor}` | certificateId, certificatePem, privateKey, certificateOwnershipToken | statusCode, errorCode, errorMessage |
//! | `$aws/certificates/create-from-csr/{json,cbor}` | certificateId, certificatePem, certificateOwnershipToken | same |
//! | `$aws/provisioning-templates/{name}/provision/{json,cbor}` | deviceConfiguration, thingName | same |
//!
//! Answers go to `<request topic>/accepted|rejected` and, as on AWS, only to the connection
//! that asked ([`Router::publish_to`]): private keys and tokens never reach other
//! subscribers, nor the rules engine. The tap never blocks: requests go into a bounded queue
//! (full: rejected at once with 429) worked on by a task with bounded concurrency.

pub mod tokens;

use std::sync::{Arc, Weak};

use bytes::Bytes;
use fleetcore_mqtt::broker::{Message, Router, ServiceTap};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::error::ProvisioningError;
use crate::service::Provisioning;

/// The topic filters the claim flow serves.
pub const REQUEST_FILTERS: &[&str] = &[
    "$aws/certificates/create/+",
    "$aws/certificates/create-from-csr/+",
    "$aws/provisioning-templates/+/provision/+",
];

/// The payload format of a request topic (its last level), also used for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Cbor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    CreateKeys,
    CreateFromCsr,
    Provision(String),
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::CreateKeys => "CreateKeysAndCertificate",
            Operation::CreateFromCsr => "CreateCertificateFromCsr",
            Operation::Provision(_) => "RegisterThing",
        }
    }
}

fn parse_topic(topic: &str) -> Option<(Operation, Format)> {
    let levels: Vec<&str> = topic.split('/').collect();
    let format = match *levels.last()? {
        "json" => Format::Json,
        "cbor" => Format::Cbor,
        _ => return None,
    };
    let operation = match levels.as_slice() {
        ["$aws", "certificates", "create", _] => Operation::CreateKeys,
        ["$aws", "certificates", "create-from-csr", _] => Operation::CreateFromCsr,
        ["$aws", "provisioning-templates", name, "provision", _] => {
            Operation::Provision((*name).to_string())
        }
        _ => return None,
    };
    Some((operation, format))
}

fn decode(format: Format, payload: &[u8]) -> Result<Map<String, Value>, String> {
    if payload.is_empty() {
        return Ok(Map::new());
    }
    let value: Value = match format {
        Format::Json => serde_json::from_slice(payload).map_err(|e| e.to_string())?,
        Format::Cbor => ciborium::from_reader(payload).map_err(|e| e.to_string())?,
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("expected an object, got {other}")),
    }
}

fn encode(format: Format, value: &Value) -> Bytes {
    match format {
        Format::Json => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        Format::Cbor => {
            let mut out = Vec::new();
            if let Err(e) = ciborium::into_writer(value, &mut out) {
                tracing::error!(error = %e, "encoding a CBOR answer failed");
            }
            Bytes::from(out)
        }
    }
}

/// The rejected payload of an error: AWS's `statusCode` / `errorCode` / `errorMessage`.
fn rejected(error: &ProvisioningError) -> Value {
    let (status, code) = match error {
        ProvisioningError::NotFound(_) => (404, "ResourceNotFound"),
        ProvisioningError::Token(_) => (400, "InvalidCertificateOwnershipToken"),
        ProvisioningError::Parameters(_) => (400, "InvalidParameters"),
        ProvisioningError::Csr(_) => (400, "InvalidCertificateSigningRequest"),
        ProvisioningError::Invalid(_) => (400, "InvalidRequest"),
        ProvisioningError::Refused(_) => (403, "AccessDenied"),
        ProvisioningError::Throttled(_) => (429, "Throttled"),
        ProvisioningError::Registry(RegistryErrorKind::NotFound(_)) => (404, "ResourceNotFound"),
        ProvisioningError::Registry(
            RegistryErrorKind::InvalidRequest(_)
            | RegistryErrorKind::CertificateValidation(_)
            | RegistryErrorKind::AlreadyExists { .. }
            | RegistryErrorKind::Conflict(_)
            | RegistryErrorKind::CertificateState(_),
        ) => (400, "InvalidParameters"),
        _ => (500, "InternalFailure"),
    };
    let message = match status {
        500 => "An internal error occurred".to_string(),
        _ => error.to_string(),
    };
    json!({"statusCode": status, "errorCode": code, "errorMessage": message})
}

use fleetcore_identity::registry::RegistryError as RegistryErrorKind;

struct Request {
    operation: Operation,
    format: Format,
    topic: String,
    payload: Bytes,
    client_id: Arc<str>,
    principal: String,
}

/// The claim flow's tap on the broker and its worker.
pub struct ClaimFlow;

impl ClaimFlow {
    /// Registers the claim flow on `router`; requests are served by a task on the current
    /// runtime until the router is gone.
    pub fn start(
        provisioning: Arc<Provisioning>,
        router: Arc<Router>,
    ) -> Result<(), fleetcore_mqtt::broker::TooManyTaps> {
        let config = provisioning.config().clone();
        let (queue, mut requests) = mpsc::channel::<Request>(config.queue_capacity.max(1));
        let tap = Arc::new(ClaimTap {
            queue,
            router: Arc::downgrade(&router),
        });
        router.add_tap(REQUEST_FILTERS.iter().map(|f| f.to_string()).collect(), tap)?;
        let weak_router = Arc::downgrade(&router);
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let provisioning = Arc::clone(&provisioning);
                let router = weak_router.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let answer = serve(&provisioning, &request).await;
                    if let Some(router) = router.upgrade() {
                        reply(&router, &request, answer);
                    }
                });
            }
        });
        Ok(())
    }
}

async fn serve(provisioning: &Provisioning, request: &Request) -> Result<Value, ProvisioningError> {
    let body = decode(request.format, &request.payload).map_err(|e| {
        ProvisioningError::Invalid(format!("the request payload could not be read: {e}"))
    })?;
    match &request.operation {
        Operation::CreateKeys => {
            let issued = provisioning.create_keys_and_certificate()?;
            Ok(json!({
                "certificateId": issued.certificate_id,
                "certificatePem": issued.certificate_pem,
                "privateKey": issued.private_key,
                "certificateOwnershipToken": issued.token,
            }))
        }
        Operation::CreateFromCsr => {
            let csr = body
                .get("certificateSigningRequest")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ProvisioningError::Csr("certificateSigningRequest is required".into())
                })?;
            let issued = provisioning.create_certificate_from_csr(csr)?;
            Ok(json!({
                "certificateId": issued.certificate_id,
                "certificatePem": issued.certificate_pem,
                "certificateOwnershipToken": issued.token,
            }))
        }
        Operation::Provision(name) => {
            let token = body
                .get("certificateOwnershipToken")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let parameters = match body.get("parameters") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(other) => {
                    return Err(ProvisioningError::Parameters(format!(
                        "parameters must be an object, got {other}"
                    )));
                }
            };
            let provisioned = provisioning
                .provision_by_claim(
                    name,
                    token,
                    parameters,
                    &request.principal,
                    &request.client_id,
                )
                .await?;
            Ok(json!({
                "thingName": provisioned.thing_name,
                "deviceConfiguration": provisioned.device_configuration,
            }))
        }
    }
}

fn reply(router: &Router, request: &Request, answer: Result<Value, ProvisioningError>) {
    let (suffix, body) = match answer {
        Ok(body) => {
            metrics::counter!("fleetcore_provisioning_requests_total", "operation" => request.operation.name(), "outcome" => "accepted").increment(1);
            tracing::info!(operation = request.operation.name(), client_id = %request.client_id, "provisioning request accepted");
            ("accepted", body)
        }
        Err(error) => {
            metrics::counter!("fleetcore_provisioning_requests_total", "operation" => request.operation.name(), "outcome" => "rejected").increment(1);
            tracing::warn!(operation = request.operation.name(), client_id = %request.client_id, claim_certificate = %request.principal, reason = %error, "provisioning request rejected");
            ("rejected", rejected(&error))
        }
    };
    let Some(topic) = Utf8::new(format!("{}/{suffix}", request.topic)) else {
        return;
    };
    let delivered = router.publish_to(
        &request.client_id,
        Arc::new(Message {
            topic,
            payload: encode(request.format, &body),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        }),
    );
    if !delivered {
        tracing::info!(client_id = %request.client_id, topic = %request.topic, "provisioning answer not delivered: the client is not subscribed to it");
    }
}

struct ClaimTap {
    queue: mpsc::Sender<Request>,
    router: Weak<Router>,
}

impl ServiceTap for ClaimTap {
    fn on_message(&self, _message: &Arc<Message>) {
        // Server-originated messages on these topics ask nothing: only clients provision.
    }

    fn on_client_message(&self, message: &Arc<Message>, principal: &str) {
        let Some((operation, format)) = parse_topic(&message.topic) else {
            return;
        };
        let Some(client_id) = message.origin.clone() else {
            return;
        };
        let request = Request {
            operation,
            format,
            topic: message.topic.to_string(),
            payload: message.payload.clone(),
            client_id,
            principal: principal.to_string(),
        };
        if let Err(e) = self.queue.try_send(request) {
            let request = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            if let Some(router) = self.router.upgrade() {
                reply(
                    &router,
                    &request,
                    Err(ProvisioningError::Throttled(
                        "too many provisioning requests are waiting; retry later".into(),
                    )),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_formats() {
        assert_eq!(
            parse_topic("$aws/certificates/create/json"),
            Some((Operation::CreateKeys, Format::Json))
        );
        assert_eq!(
            parse_topic("$aws/certificates/create-from-csr/cbor"),
            Some((Operation::CreateFromCsr, Format::Cbor))
        );
        assert_eq!(
            parse_topic("$aws/provisioning-templates/t1/provision/json"),
            Some((Operation::Provision("t1".into()), Format::Json))
        );
        assert_eq!(parse_topic("$aws/certificates/create/xml"), None);
        assert_eq!(parse_topic("$aws/certificates/create/json/accepted"), None);
    }

    #[test]
    fn cbor_round_trips() {
        let value = json!({"certificateOwnershipToken": "t", "parameters": {"SerialNumber": "1"}});
        let bytes = encode(Format::Cbor, &value);
        assert_eq!(
            decode(Format::Cbor, &bytes).expect("decode"),
            value.as_object().cloned().expect("object")
        );
        assert!(decode(Format::Cbor, b"\xff\x00").is_err());
        assert!(decode(Format::Json, b"[1]").is_err());
    }
}
