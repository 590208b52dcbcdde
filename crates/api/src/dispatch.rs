//! The control-plane dispatcher: every request that is not `/health` or `/metrics` is read
//! (body bounded), verified with Signature V4 against the admin credentials, and forwarded to
//! the router of the service it names: the `X-Amz-Target` prefix for JSON 1.1 services, else
//! the signature's credential scope (paths collide between services, so never the path).
//! Query services (form-encoded bodies, `sns`) are routed by the scope too; their errors are
//! XML documents. A few public paths (SNS subscription confirmation links) need no signature.
//!
//! ```text
//! ControlPlane::new(credentials, "us-east-1", "000000000000")
//!     .service("iot", iot::routes(iot_state))
//!     .into_router(api_state)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::ServiceExt;
use tracing::Instrument;

use crate::ApiState;
use crate::context::{RequestContext, new_request_id};
use crate::error::{ApiError, Protocol};
use crate::sigv4::{Credentials, SigV4Error, SignedRequest, Verifier};

/// Largest request body accepted by default: 1 MiB of payload plus room for its envelope.
pub const DEFAULT_BODY_LIMIT: usize = (1 << 20) + (64 << 10);

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// `X-Amz-Target` prefixes of the JSON 1.0/1.1 services and their signing names.
const TARGET_PREFIXES: &[(&str, &str)] = &[
    ("Kinesis_20131202", "kinesis"),
    ("Firehose_20150804", "firehose"),
    // CloudWatch over JSON 1.0 (what botocore 1.42 picks; RPC v2 CBOR is routed by scope).
    ("GraniteServiceVersion20100801", "monitoring"),
    ("Logs_20140328", "logs"),
];

/// Largest error body of a service router that is rewritten into an AWS shape.
const REWRITTEN_BODY_LIMIT: usize = 4096;

struct Service {
    router: Router,
    body_limit: usize,
}

/// Builder of the control plane: the services by signing name, the credentials they share.
pub struct ControlPlane {
    verifier: Verifier,
    region: String,
    account_id: String,
    services: HashMap<String, Service>,
    public: Router,
}

impl ControlPlane {
    /// A control plane that accepts requests signed with `credentials` for `region`.
    pub fn new(
        credentials: Credentials,
        region: impl Into<String>,
        account_id: impl Into<String>,
    ) -> ControlPlane {
        let region = region.into();
        ControlPlane {
            verifier: Verifier::new(credentials).with_region(region.clone()),
            region,
            account_id: account_id.into(),
            services: HashMap::new(),
            public: Router::new(),
        }
    }

    /// Serves `router`'s paths without a signature (links a person or a webhook follows, such
    /// as SNS's SubscribeURL, whose token is the secret). Its paths must not collide with
    /// another service's.
    pub fn public(mut self, router: Router) -> ControlPlane {
        self.public = std::mem::take(&mut self.public).merge(router);
        self
    }

    /// Serves the service whose signing name is `signing_name` (`iot`, `iotdata`, `kinesis`,
    /// ...) with `router`, bodies up to [`DEFAULT_BODY_LIMIT`].
    pub fn service(self, signing_name: &str, router: Router) -> ControlPlane {
        self.service_with_body_limit(signing_name, router, DEFAULT_BODY_LIMIT)
    }

    /// [`ControlPlane::service`] with another body limit (Kinesis `PutRecords` carries up to
    /// 5 MiB of base64).
    pub fn service_with_body_limit(
        mut self,
        signing_name: &str,
        router: Router,
        body_limit: usize,
    ) -> ControlPlane {
        self.services
            .insert(signing_name.to_string(), Service { router, body_limit });
        self
    }

    /// Adds `routes` to the service `signing_name` (registered before or after): a capability
    /// contributes its operations to a service another crate serves (fleet provisioning's
    /// template operations to `iot`). Paths must not overlap the service's own.
    pub fn service_routes(mut self, signing_name: &str, routes: Router) -> ControlPlane {
        match self.services.remove(signing_name) {
            Some(service) => {
                self.services.insert(
                    signing_name.to_string(),
                    Service {
                        router: service.router.merge(routes),
                        body_limit: service.body_limit,
                    },
                );
                self
            }
            None => self.service(signing_name, routes),
        }
    }

    /// The whole HTTP router: `/health` and `/metrics` (unauthenticated) and, for every other
    /// path, the dispatcher.
    pub fn into_router(mut self, state: ApiState) -> Router {
        let public = std::mem::take(&mut self.public);
        for service in self.services.values_mut() {
            // `dispatch` read the body within the service's own limit; axum's default (2 MB)
            // would refuse, in a service's extractor, a larger body the service allows (a
            // Lambda zip, a Kinesis PutRecords).
            service.router = std::mem::take(&mut service.router).layer(DefaultBodyLimit::disable());
        }
        let control_plane = Arc::new(self);
        crate::router(state)
            .merge(public)
            .fallback(move |request: Request| {
                let control_plane = Arc::clone(&control_plane);
                async move { control_plane.handle(request).await }
            })
    }

    async fn handle(&self, request: Request) -> Response {
        let request_id = new_request_id();
        let span = tracing::trace_span!(
            target: fleetcore_core::trace::TARGET,
            "aws.request",
            otel.kind = "server",
            rpc.system = "aws-api",
            rpc.service = tracing::field::Empty,
            rpc.method = tracing::field::Empty,
            http.request.method = %request.method(),
            url.path = request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            aws.request_id = %request_id,
            traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()),
            otel.status_code = tracing::field::Empty,
        );
        let mut response = match self
            .dispatch(request, &request_id)
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        if !span.is_disabled() {
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    async fn dispatch(&self, request: Request, request_id: &str) -> Result<Response, ApiError> {
        let (parts, body) = request.into_parts();
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok());
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let protocol = if crate::rpcv2::is_rpc_v2_cbor(&parts.headers) {
            Protocol::RpcV2Cbor
        } else if target.is_some() || content_type.starts_with(b"application/x-amz-json") {
            Protocol::Json11
        } else if content_type.starts_with(b"application/x-www-form-urlencoded") {
            Protocol::Query
        } else {
            Protocol::RestJson
        };
        let target_service = target.and_then(|t| {
            let prefix = t.split_once('.').map_or(t, |(p, _)| p);
            TARGET_PREFIXES
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|(_, service)| *service)
        });

        let pending = self
            .verifier
            .check_headers(SignedRequest::from(&parts), SystemTime::now())
            .map_err(|e| auth_failure(e, protocol, &parts, request_id))?;
        let authorization = pending.authorization();
        let service_name = target_service
            .unwrap_or(authorization.scope.service.as_str())
            .to_string();
        let service = self.services.get(&service_name);
        let limit = service.map_or(DEFAULT_BODY_LIMIT, |s| s.body_limit);
        let body = read_body(&parts, body, limit)
            .await
            .map_err(|e| shaped(e, protocol))?;
        self.verifier
            .verify_body(&pending, SignedRequest::from(&parts), &body)
            .map_err(|e| auth_failure(e, protocol, &parts, request_id))?;

        let Some(service) = service else {
            let error = match protocol {
                Protocol::Query => {
                    let action = crate::query::QueryParams::parse(&body)
                        .get("Action")
                        .unwrap_or_default()
                        .to_string();
                    crate::query::unknown_action(&service_name, &action)
                }
                _ => unknown_operation(&parts, &service_name, protocol),
            };
            count_request(&service_name, error.status);
            return Err(error);
        };
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("rpc.service", service_name.as_str());
            if let Some(operation) = operation_name(&parts, &body, &service_name, protocol) {
                span.record("rpc.method", operation.as_str());
            }
        }
        let context = RequestContext {
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            service: service_name.clone(),
            request_id: request_id.to_string(),
            protocol,
            access_key_id: authorization.access_key_id.clone(),
        };
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let mut request = Request::from_parts(parts, Body::from(body));
        request.extensions_mut().insert(context);
        let response = match service.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = aws_shaped(response, &method, &path, &service_name, protocol).await;
        count_request(&service_name, response.status());
        tracing::debug!(service = %service_name, %method, path, status = response.status().as_u16(), request_id, "control-plane request");
        Ok(response)
    }
}

/// The AWS operation a request names, for its trace span: the JSON target's suffix, the
/// Query `Action`, the RPC v2 path's last segment, or the REST route's operation.
fn operation_name(parts: &Parts, body: &[u8], service: &str, protocol: Protocol) -> Option<String> {
    match protocol {
        Protocol::Json11 => parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.rsplit_once('.').map_or(t, |(_, op)| op).to_string()),
        Protocol::Query => crate::query::QueryParams::parse(body)
            .get("Action")
            .map(str::to_string),
        Protocol::RpcV2Cbor => crate::rpcv2::operation_name(parts.uri.path()).map(str::to_string),
        Protocol::RestJson => {
            crate::operations::operation_name(service, &parts.method, parts.uri.path())
                .map(str::to_string)
        }
    }
}

/// Reads the body up to `limit` bytes; a declared or actual larger body is a 413.
async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            "RequestEntityTooLargeException",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::invalid_request(format!(
            "The request body could not be read: {e}"
        ))),
    }
}

fn shaped(error: ApiError, protocol: Protocol) -> ApiError {
    error.in_protocol(protocol)
}

fn auth_failure(
    error: SigV4Error,
    protocol: Protocol,
    parts: &Parts,
    request_id: &str,
) -> ApiError {
    let reason = error.reason();
    metrics::counter!("fleetcore_api_auth_failures_total", "reason" => reason).increment(1);
    tracing::info!(
        reason,
        code = error.code(),
        method = %parts.method,
        path = parts.uri.path(),
        request_id,
        "control-plane request refused"
    );
    error.into_api_error(protocol)
}

fn count_request(service: &str, status: StatusCode) {
    metrics::counter!(
        "fleetcore_api_requests_total",
        "service" => service.to_string(),
        "status" => status.as_str().to_string()
    )
    .increment(1);
}

/// The error for a request no service operation matches (unknown service, path or method).
fn unknown_operation(parts: &Parts, service: &str, protocol: Protocol) -> ApiError {
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    match (protocol, target) {
        // JSON 1.1: the operation is named by the target.
        (Protocol::Json11, Some(target)) => ApiError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            format!("Operation {target} of service '{service}' is not implemented by this server."),
        )
        .json11(),
        _ => unknown_operation_error(&parts.method, parts.uri.path(), service, protocol),
    }
}

fn unknown_operation_error(
    method: &axum::http::Method,
    path: &str,
    service: &str,
    protocol: Protocol,
) -> ApiError {
    match protocol {
        Protocol::RestJson => match crate::operations::operation_name(service, method, path) {
            // An operation AWS has and this server does not implement: named, 501.
            Some(operation) => ApiError::new(
                "UnknownOperationException",
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "Operation {operation} ({method} {path}) of service '{service}' is not implemented by this server."
                ),
            ),
            None => ApiError::new(
                "UnknownOperationException",
                StatusCode::NOT_FOUND,
                format!("{method} {path} is not an operation of service '{service}'."),
            ),
        },
        Protocol::Json11 | Protocol::Query => ApiError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            format!("{method} {path} is not an operation of service '{service}'."),
        )
        .in_protocol(protocol),
        // RPC v2 names the operation in the path.
        Protocol::RpcV2Cbor => ApiError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            match crate::rpcv2::operation_name(path) {
                Some(op) => format!(
                    "Operation {op} of service '{service}' is not implemented by this server."
                ),
                None => format!("{method} {path} is not an operation of service '{service}'."),
            },
        )
        .rpc_v2_cbor(),
    }
}

/// Keeps service responses as they are, except errors that did not come from [`ApiError`]
/// (axum's own 404/405 and extractor rejections, in plain text): those get the AWS shape so
/// SDKs raise a proper exception.
async fn aws_shaped(
    response: Response,
    method: &axum::http::Method,
    path: &str,
    service: &str,
    protocol: Protocol,
) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key("x-amzn-errortype")
    {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            unknown_operation_error(method, path, service, protocol)
        }
        _ => {
            let text = match axum::body::to_bytes(response.into_body(), REWRITTEN_BODY_LIMIT).await
            {
                Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
                Err(_) => String::new(),
            };
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new("RequestEntityTooLargeException", status, text)
            } else if status.is_server_error() {
                ApiError::internal(text)
            } else if protocol != Protocol::RestJson {
                ApiError::new("SerializationException", StatusCode::BAD_REQUEST, text)
            } else if protocol == Protocol::Query {
                ApiError::new("InvalidParameter", StatusCode::BAD_REQUEST, text)
            } else {
                ApiError::invalid_request(text)
            };
            shaped(error, protocol)
        }
    };
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::sign;
    use axum::routing::{get, post};
    use serde_json::Value;

    fn admin() -> Credentials {
        Credentials {
            access_key_id: "FCKITESTTESTTESTTEST".into(),
            secret_access_key: "test-secret".into(),
        }
    }

    fn app() -> Router {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let iot = Router::new()
            .route(
                "/echo/{name}",
                post(|ctx: RequestContext, axum::extract::Path(name): axum::extract::Path<String>, body: Bytes| async move {
                    axum::Json(serde_json::json!({
                        "name": name,
                        "service": ctx.service,
                        "region": ctx.region,
                        "account": ctx.account_id,
                        "bytes": body.len(),
                    }))
                }),
            )
            .route(
                "/typed",
                get(|crate::extract::Query(q): crate::extract::Query<HashMap<String, u32>>| async move {
                    axum::Json(serde_json::json!(q))
                }),
            );
        let contributed = Router::new().route("/contributed", get(|| async { "contributed" }));
        let iotdata = Router::new().route("/echo/{name}", post(|| async { "iotdata" }));
        let kinesis =
            Router::new().route("/", post(|ctx: RequestContext| async move { ctx.service }));
        let lambda = Router::new().route(
            "/size",
            post(
                |body: Bytes| async move { axum::Json(serde_json::json!({ "bytes": body.len() })) },
            ),
        );
        let sns = crate::query::QueryService::new("urn:test", ())
            .action("Echo", |_, ctx: RequestContext, params| async move {
                let mut xml = crate::query::Xml::new();
                xml.element("Service", &ctx.service)
                    .optional("Name", params.get("Name"));
                if params.get("Fail").is_some() {
                    return Err(ApiError::new("NotFound", StatusCode::NOT_FOUND, "gone"));
                }
                Ok(xml)
            })
            .into_router();
        let public = Router::new().route("/public/ping", get(|| async { "pong" }));
        let state = ApiState::new(metrics);
        state.set_ready(true);
        ControlPlane::new(admin(), "us-east-1", "000000000000")
            .public(public)
            .service("sns", sns)
            .service("iot", iot)
            .service_routes("iot", contributed)
            .service("iotdata", iotdata)
            .service_with_body_limit("kinesis", kinesis, 2048)
            .service_with_body_limit("lambda", lambda, 8 << 20)
            .into_router(state)
    }

    fn request(
        method: &str,
        target: &str,
        service: &str,
        body: &'static [u8],
        extra: &[(&'static str, &'static str)],
        credentials: &Credentials,
    ) -> Request {
        let mut headers = axum::http::HeaderMap::new();
        for (k, v) in extra {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        sign(
            credentials,
            "us-east-1",
            service,
            method,
            target,
            "localhost",
            &mut headers,
            body,
            SystemTime::now(),
        )
        .expect("sign");
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .body(Body::from(body))
            .expect("request");
        *req.headers_mut() = headers;
        req
    }

    async fn call(app: &Router, req: Request) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = app.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    #[tokio::test]
    async fn routes_by_scope_and_passes_the_context() {
        let app = app();
        let (status, headers, body) = call(
            &app,
            request("POST", "/echo/a%2Fb", "iot", b"12345", &[], &admin()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["name"], "a/b");
        assert_eq!(body["service"], "iot");
        assert_eq!(body["region"], "us-east-1");
        assert_eq!(body["account"], "000000000000");
        assert_eq!(body["bytes"], 5);
        assert!(headers.contains_key(REQUEST_ID_HEADER));
        // the same path signed for iotdata goes to iotdata
        let (status, _, body) = call(
            &app,
            request("POST", "/echo/x", "iotdata", b"", &[], &admin()),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, Value::from("iotdata")));
        // JSON 1.1 by target, whatever the scope says
        let (status, _, body) = call(
            &app,
            request(
                "POST",
                "/",
                "kinesis",
                b"{}",
                &[
                    ("x-amz-target", "Kinesis_20131202.ListStreams"),
                    ("content-type", "application/x-amz-json-1.1"),
                ],
                &admin(),
            ),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, Value::from("kinesis")));
    }

    #[tokio::test]
    async fn query_services_route_by_scope_and_action() {
        let app = app();
        let form = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let (status, _, body) = call(
            &app,
            request(
                "POST",
                "/",
                "sns",
                b"Action=Echo&Version=1&Name=a%3Cb",
                &form,
                &admin(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let text = body.as_str().expect("xml");
        assert!(
            text.contains("<EchoResponse xmlns=\"urn:test\"><EchoResult><Service>sns</Service><Name>a&lt;b</Name></EchoResult>"),
            "{text}"
        );
        let (status, headers, body) = call(
            &app,
            request("POST", "/", "sns", b"Action=Echo&Fail=1", &form, &admin()),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let text = body.as_str().expect("xml");
        assert!(text.contains("<Code>NotFound</Code>"), "{text}");
        let request_id = headers[REQUEST_ID_HEADER].to_str().expect("id");
        assert!(
            text.contains(&format!("<RequestId>{request_id}</RequestId>")),
            "{text}"
        );
        for (body, service, code, status) in [
            (
                &b"Action=ListTopics"[..],
                "sns",
                "UnknownOperationException",
                501,
            ),
            (b"Action=Nonsense", "sns", "InvalidAction", 400),
            (b"Version=1", "sns", "MissingAction", 400),
            (b"Action=ListMetrics", "monitoring", "InvalidAction", 400),
        ] {
            let (got, _, text) =
                call(&app, request("POST", "/", service, body, &form, &admin())).await;
            assert_eq!(got.as_u16(), status, "{text}");
            assert!(
                text.as_str()
                    .is_some_and(|t| t.contains(&format!("<Code>{code}</Code>"))),
                "{text}"
            );
        }
        // a refused signature answers in XML too
        let wrong = Credentials {
            secret_access_key: "wrong".into(),
            ..admin()
        };
        let (status, _, text) = call(
            &app,
            request("POST", "/", "sns", b"Action=Echo", &form, &wrong),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            text.as_str()
                .is_some_and(|t| t.contains("<Type>Sender</Type>")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn contributed_routes_join_the_service() {
        let app = app();
        let (status, _, body) = call(
            &app,
            request("GET", "/contributed", "iot", b"", &[], &admin()),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, Value::from("contributed")));
        // the service's own routes still answer, and other services do not see the addition
        let (status, _, _) =
            call(&app, request("POST", "/echo/x", "iot", b"", &[], &admin())).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = call(
            &app,
            request("GET", "/contributed", "iotdata", b"", &[], &admin()),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn health_and_metrics_need_no_signature() {
        let app = app();
        for path in ["/health", "/metrics", "/public/ping"] {
            let req = Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("req");
            let (status, _, _) = call(&app, req).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn refusals_have_the_aws_shape() {
        let app = app();
        let req = Request::builder()
            .uri("/echo/x")
            .method("POST")
            .body(Body::empty())
            .expect("req");
        let (status, headers, body) = call(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            headers["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
        assert_eq!(body["message"], "Missing Authentication Token");
        assert!(headers.contains_key(REQUEST_ID_HEADER));

        let wrong = Credentials {
            secret_access_key: "wrong".into(),
            ..admin()
        };
        let (status, headers, _) =
            call(&app, request("POST", "/echo/x", "iot", b"", &[], &wrong)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");

        let stranger = Credentials {
            access_key_id: "FCKISTRANGER".into(),
            ..admin()
        };
        let (status, headers, _) =
            call(&app, request("POST", "/echo/x", "iot", b"", &[], &stranger)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "UnrecognizedClientException");

        // JSON 1.1: 400 with __type
        let (status, _, body) = call(
            &app,
            request(
                "POST",
                "/",
                "kinesis",
                b"{}",
                &[("x-amz-target", "Kinesis_20131202.ListStreams")],
                &stranger,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["__type"], "UnrecognizedClientException");
    }

    #[tokio::test]
    async fn unknown_operations_and_services() {
        let app = app();
        for (method, path, service) in [
            ("GET", "/nowhere", "iot"),
            ("GET", "/echo/x", "iot"),
            ("GET", "/streams", "iotanalytics"),
        ] {
            let (status, headers, body) =
                call(&app, request(method, path, service, b"", &[], &admin())).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(headers["x-amzn-errortype"], "UnknownOperationException");
            assert!(
                body["message"].as_str().is_some_and(|m| m.contains(path)),
                "{body}"
            );
        }
        let (status, _, body) = call(
            &app,
            request(
                "POST",
                "/",
                "dynamodb",
                b"{}",
                &[("x-amz-target", "DynamoDB_20120810.ListTables")],
                &admin(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["__type"], "UnknownOperationException");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("DynamoDB_20120810.ListTables")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn unimplemented_aws_operations_are_named_with_501() {
        let app = app();
        for (method, path, service, operation) in [
            ("GET", "/jobs", "iot", "ListJobs"),
            ("POST", "/destinations", "iot", "CreateTopicRuleDestination"),
            ("GET", "/channels", "iotanalytics", "ListChannels"),
        ] {
            let (status, headers, body) =
                call(&app, request(method, path, service, b"", &[], &admin())).await;
            assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{method} {path}");
            assert_eq!(headers["x-amzn-errortype"], "UnknownOperationException");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(operation)),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn extractor_rejections_become_invalid_requests() {
        let app = app();
        let (status, headers, _) = call(
            &app,
            request("GET", "/typed?n=notanumber", "iot", b"", &[], &admin()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["x-amzn-errortype"], "InvalidRequestException");
        let (status, _, body) = call(
            &app,
            request("GET", "/typed?n=7", "iot", b"", &[], &admin()),
        )
        .await;
        assert_eq!((status, body["n"].as_u64()), (StatusCode::OK, Some(7)));
    }

    #[tokio::test]
    async fn a_service_extractor_reads_a_body_up_to_the_services_limit_past_axums_default() {
        let app = app();
        static ZIP: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| vec![b'z'; 3 << 20]);
        let mut req = request("POST", "/size", "lambda", b"", &[], &admin());
        sign(
            &admin(),
            "us-east-1",
            "lambda",
            "POST",
            "/size",
            "localhost",
            req.headers_mut(),
            ZIP.as_slice(),
            SystemTime::now(),
        )
        .expect("sign");
        *req.body_mut() = Body::from(ZIP.as_slice());
        let (status, _, body) = call(&app, req).await;
        assert_eq!(
            (status, body["bytes"].as_u64()),
            (StatusCode::OK, Some(3 << 20))
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let app = app();
        static BIG: [u8; 4096] = [b'x'; 4096];
        let (status, headers, body) = call(
            &app,
            request(
                "POST",
                "/",
                "kinesis",
                &BIG,
                &[("x-amz-target", "Kinesis_20131202.PutRecord")],
                &admin(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["__type"], "RequestEntityTooLargeException");
        assert!(headers.contains_key(REQUEST_ID_HEADER));
        // the default limit applies to iot
        static HUGE: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| vec![b'x'; DEFAULT_BODY_LIMIT + 1]);
        let mut req = request("POST", "/echo/x", "iot", b"", &[], &admin());
        *req.body_mut() = Body::from(HUGE.as_slice());
        let (status, headers, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            headers["x-amzn-errortype"],
            "RequestEntityTooLargeException"
        );
        // an unsigned huge body is refused for the missing signature, unread
        let req = Request::builder()
            .method("POST")
            .uri("/echo/x")
            .body(Body::from(HUGE.as_slice()))
            .expect("req");
        let (status, _, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
