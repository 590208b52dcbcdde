//! The links in messages, served without a signature on the HTTP listener (the token in them
//! is the secret): following a SubscribeURL confirms, an UnsubscribeURL unsubscribes, and the
//! SigningCertURL gives the certificate that verifies message signatures.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetcore_api::ApiError;
use fleetcore_api::query::Xml;

use crate::error::NotifyServiceError;
use crate::service::Notify;

/// Path of the SubscribeURL.
pub const CONFIRM_PATH: &str = "/sns/confirm";
/// Path of the UnsubscribeURL.
pub const UNSUBSCRIBE_PATH: &str = "/sns/unsubscribe";
/// Path of the SigningCertURL.
pub const SIGNING_CERT_PATH: &str = "/sns/signing-cert.pem";

/// The public routes, for `ControlPlane::public`.
pub fn routes(notify: Arc<Notify>) -> Router {
    Router::new()
        .route(CONFIRM_PATH, get(confirm))
        .route(UNSUBSCRIBE_PATH, get(unsubscribe))
        .route(SIGNING_CERT_PATH, get(signing_cert))
        .with_state(notify)
}

type Params = Query<HashMap<String, String>>;

async fn confirm(State(notify): State<Arc<Notify>>, Query(params): Params) -> Response {
    let (Some(topic), Some(token)) = (params.get("TopicArn"), params.get("Token")) else {
        return error(NotifyServiceError::invalid(
            "TopicArn and Token are required",
        ));
    };
    match notify.confirm(topic, token) {
        Ok(subscription) => {
            let mut xml = Xml::new();
            xml.open("ConfirmSubscriptionResponse")
                .open("ConfirmSubscriptionResult")
                .element("SubscriptionArn", &subscription.arn)
                .close("ConfirmSubscriptionResult")
                .close("ConfirmSubscriptionResponse");
            ok(xml)
        }
        Err(e) => error(e),
    }
}

async fn unsubscribe(State(notify): State<Arc<Notify>>, Query(params): Params) -> Response {
    let (Some(arn), Some(token)) = (params.get("SubscriptionArn"), params.get("Token")) else {
        return error(NotifyServiceError::invalid(
            "SubscriptionArn and Token are required",
        ));
    };
    let matches = notify
        .registry()
        .subscription(arn)
        .is_ok_and(|s| s.token == *token);
    if !matches {
        return error(NotifyServiceError::NotFound(
            "Subscription does not exist".into(),
        ));
    }
    match notify.unsubscribe(arn) {
        Ok(()) => {
            let mut xml = Xml::new();
            xml.open("UnsubscribeResponse").close("UnsubscribeResponse");
            ok(xml)
        }
        Err(e) => error(e),
    }
}

async fn signing_cert(State(notify): State<Arc<Notify>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        notify.signing_certificate().to_string(),
    )
        .into_response()
}

fn ok(xml: Xml) -> Response {
    let mut response = (StatusCode::OK, xml.into_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

fn error(error: NotifyServiceError) -> Response {
    let error: ApiError = crate::api::api_error(error);
    error.query().into_response()
}
