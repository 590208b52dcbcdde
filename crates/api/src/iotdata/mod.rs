//! The `iotdata` service (signing name `iotdata`, REST-JSON): device shadows (GetThingShadow,
//! UpdateThingShadow, DeleteThingShadow, ListNamedShadowsForThing) and Publish into the broker.
//!
//! The same routes serve two callers: the SigV4 control plane (the admin, who may do
//! everything) and the device HTTPS listener ([`device`]), where each request is authorized by
//! the IoT policies of the device's client certificate, as AWS does for its data endpoint.

pub mod device;
mod publish;
mod shadows;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::connect_info::ConnectInfo;
use axum::http::StatusCode;
use axum::http::request::Parts;
use fleetcore_core::access::ConnectionGrant;
use fleetcore_identity::policy::{IotAction, PolicyGrant, ResourceArns};
use fleetcore_mqtt::broker::Router as Broker;
use fleetcore_shadow::{ShadowError, ShadowService};

use crate::error::ApiError;

/// What the `iotdata` handlers share.
#[derive(Clone)]
pub struct IotDataState {
    /// The shadow service.
    pub shadows: ShadowService,
    /// The broker, for Publish.
    pub broker: Arc<Broker>,
    /// ARNs that device requests are authorized on.
    pub arns: ResourceArns,
}

/// The router of the `iotdata` service; register it with `ControlPlane::service("iotdata",
/// ...)` and serve it on the device listener with [`device::serve`].
pub fn routes(state: IotDataState) -> Router {
    Router::new()
        .merge(shadows::routes())
        .merge(publish::routes())
        .with_state(state)
}

/// A device connected to the HTTPS listener: its certificate id and what its policies allow.
#[derive(Clone, Debug)]
pub struct DeviceCaller {
    /// The certificate id (hex SHA-256 of the DER).
    pub certificate_id: String,
    /// The policies attached to the certificate (and its thing's groups).
    pub grant: Arc<PolicyGrant>,
}

/// Who is calling: the admin through the SigV4 control plane, or a device over mutual TLS.
pub(crate) enum Caller {
    Admin,
    Device(DeviceCaller),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(match parts.extensions.get::<ConnectInfo<DeviceCaller>>() {
            Some(ConnectInfo(device)) => Caller::Device(device.clone()),
            None => Caller::Admin,
        })
    }
}

impl Caller {
    /// Checks that the caller may do `action` on `resource_arn` (the admin may do everything;
    /// a device's certificate must still be ACTIVE and its policies must allow it).
    pub(crate) fn authorize(&self, action: IotAction, resource_arn: &str) -> Result<(), ApiError> {
        let Caller::Device(device) = self else {
            return Ok(());
        };
        if let Err(reason) = device.grant.revalidate() {
            return Err(forbidden(format!(
                "certificate {} may no longer be used: {reason}",
                device.certificate_id
            )));
        }
        if device.grant.decide(action, resource_arn).is_allowed() {
            Ok(())
        } else {
            metrics::counter!("fleetcore_iotdata_denied_total", "action" => action.name())
                .increment(1);
            Err(forbidden(format!(
                "The policies of certificate {} do not allow {action} on {resource_arn}",
                device.certificate_id
            )))
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new("ForbiddenException", StatusCode::FORBIDDEN, message)
}

impl From<ShadowError> for ApiError {
    fn from(error: ShadowError) -> ApiError {
        let message = error.to_string();
        match error {
            ShadowError::InvalidRequest(_) => ApiError::invalid_request(message),
            ShadowError::Forbidden(_) => forbidden(message),
            ShadowError::NotFound(_) => ApiError::not_found(message),
            ShadowError::VersionConflict => ApiError::conflict(message),
            ShadowError::TooLarge => ApiError::new(
                "RequestEntityTooLargeException",
                StatusCode::PAYLOAD_TOO_LARGE,
                message,
            ),
            ShadowError::Throttled => ApiError::new(
                "ThrottlingException",
                StatusCode::TOO_MANY_REQUESTS,
                message,
            ),
            ShadowError::Store(e) => {
                tracing::error!(error = %e, "shadow store failure");
                ApiError::internal("An unexpected error has occurred")
            }
            ShadowError::Unavailable => ApiError::new(
                "ServiceUnavailableException",
                StatusCode::SERVICE_UNAVAILABLE,
                message,
            ),
        }
    }
}
