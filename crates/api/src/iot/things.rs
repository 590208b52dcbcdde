//! Things: CreateThing, DescribeThing, UpdateThing, ListThings, DeleteThing. Also the glue the
//! registry and certificate handlers share: the one mapping of [`RegistryError`] to AWS error
//! codes, the [`Identity`] extractor, and running blocking store calls off the async workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use fleetcore_identity::IdentityService;
use fleetcore_identity::registry::{
    AttributePayload, NewThing, PageRequest, RegistryError, ThingFilter, ThingRecord, ThingUpdate,
    Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        let message = error.to_string();
        match error {
            RegistryError::NotFound(_) => ApiError::not_found(message),
            RegistryError::AlreadyExists { message, id, arn } => {
                ApiError::already_exists(message, &id, &arn)
            }
            RegistryError::Conflict(_) => ApiError::conflict(message),
            RegistryError::VersionConflict(_) => {
                ApiError::new("VersionConflictException", StatusCode::CONFLICT, message)
            }
            RegistryError::InvalidRequest(_) => ApiError::invalid_request(message),
            RegistryError::CertificateState(_) => ApiError::new(
                "CertificateStateException",
                StatusCode::NOT_ACCEPTABLE,
                message,
            ),
            RegistryError::CertificateValidation(_) => ApiError::new(
                "CertificateValidationException",
                StatusCode::BAD_REQUEST,
                message,
            ),
            RegistryError::RegistrationCodeValidation(_) => ApiError::new(
                "RegistrationCodeValidationException",
                StatusCode::BAD_REQUEST,
                message,
            ),
            RegistryError::DeleteConflict(_) => {
                ApiError::new("DeleteConflictException", StatusCode::CONFLICT, message)
            }
            other => {
                tracing::error!(error = %other, "identity operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

/// The identity service, taken from [`IotState`]; 500 when the binary did not configure one.
pub(super) struct Identity(pub Arc<IdentityService>);

impl FromRequestParts<IotState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &IotState) -> Result<Self, ApiError> {
        state
            .identity
            .clone()
            .map(Identity)
            .ok_or_else(|| ApiError::internal("the identity service is not configured"))
    }
}

impl Identity {
    /// Runs `op` on a blocking thread (store calls may fsync) and maps its error.
    pub(super) async fn run<T: Send + 'static>(
        self,
        op: impl FnOnce(&IdentityService) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let service = self.0;
        tokio::task::spawn_blocking(move || op(&service))
            .await
            .map_err(|e| ApiError::internal(format!("identity operation aborted: {e}")))?
            .map_err(ApiError::from)
    }
}

/// A timestamp as rest-json sends it: epoch seconds.
pub(super) fn epoch(at: Timestamp) -> Value {
    json!(at.epoch_seconds())
}

/// `maxResults` + `nextToken`, as most registry list operations take them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct TokenPage {
    max_results: Option<i64>,
    next_token: Option<String>,
}

impl TokenPage {
    pub(super) fn request(&self) -> PageRequest {
        PageRequest {
            max_results: self.max_results,
            next_token: self.next_token.clone(),
        }
    }
}

/// Adds `nextToken` to a list response when there is a next page.
pub(super) fn with_next_token(mut body: Value, token: Option<String>) -> Value {
    if let (Some(token), Some(map)) = (token, body.as_object_mut()) {
        map.insert("nextToken".into(), Value::String(token));
    }
    body
}

/// `attributePayload` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AttributePayloadBody {
    attributes: BTreeMap<String, String>,
    merge: bool,
}

impl From<AttributePayloadBody> for AttributePayload {
    fn from(body: AttributePayloadBody) -> AttributePayload {
        AttributePayload {
            attributes: body.attributes,
            merge: body.merge,
        }
    }
}

pub(super) fn routes() -> Router<IotState> {
    Router::new().route("/things", get(list_things)).route(
        "/things/{thingName}",
        post(create_thing)
            .get(describe_thing)
            .patch(update_thing)
            .delete(delete_thing),
    )
}

/// CreateThing's body. `billingGroupName` is not modelled and, like any unknown member, ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CreateThingBody {
    thing_type_name: Option<String>,
    attribute_payload: Option<AttributePayloadBody>,
}

/// POST `/things/{thingName}`.
async fn create_thing(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<CreateThingBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (thing, arn) = identity
        .run(move |svc| {
            let new = NewThing {
                thing_type_name: body.thing_type_name,
                attributes: body
                    .attribute_payload
                    .map(|p| p.attributes)
                    .unwrap_or_default(),
            };
            let thing = svc.registry().create_thing(&name, new)?;
            let arn = svc.registry().thing_arn(&thing.name);
            Ok((thing, arn))
        })
        .await?;
    Ok(axum::Json(json!({
        "thingName": thing.name,
        "thingArn": arn,
        "thingId": thing.id,
    })))
}

fn describe_body(thing: &ThingRecord, arn: &str) -> Value {
    let mut body = json!({
        "defaultClientId": thing.name,
        "thingName": thing.name,
        "thingId": thing.id,
        "thingArn": arn,
        "attributes": thing.attributes,
        "version": thing.version,
    });
    if let (Some(t), Some(map)) = (&thing.thing_type_name, body.as_object_mut()) {
        map.insert("thingTypeName".into(), json!(t));
    }
    body
}

/// GET `/things/{thingName}`.
async fn describe_thing(
    identity: Identity,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let thing = svc.registry().describe_thing(&name)?;
            Ok(describe_body(
                &thing,
                &svc.registry().thing_arn(&thing.name),
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateThingBody {
    thing_type_name: Option<String>,
    attribute_payload: Option<AttributePayloadBody>,
    expected_version: Option<i64>,
    remove_thing_type: bool,
}

/// PATCH `/things/{thingName}`.
async fn update_thing(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<UpdateThingBody>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| {
            let update = ThingUpdate {
                thing_type_name: body.thing_type_name,
                remove_thing_type: body.remove_thing_type,
                attribute_payload: body.attribute_payload.map(AttributePayload::from),
                expected_version: body.expected_version,
            };
            svc.registry().update_thing(&name, update)
        })
        .await?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListThingsQuery {
    max_results: Option<i64>,
    next_token: Option<String>,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
    thing_type_name: Option<String>,
    use_prefix_attribute_value: bool,
}

/// GET `/things?thingTypeName&attributeName&attributeValue&usePrefixAttributeValue&maxResults&nextToken`.
async fn list_things(
    identity: Identity,
    Query(query): Query<ListThingsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let filter = ThingFilter {
                thing_type_name: query.thing_type_name,
                attribute_name: query.attribute_name,
                attribute_value: query.attribute_value,
                use_prefix_attribute_value: query.use_prefix_attribute_value,
            };
            let page = PageRequest {
                max_results: query.max_results,
                next_token: query.next_token,
            };
            let page = svc.registry().list_things(&filter, &page)?;
            let things: Vec<Value> = page
                .items
                .iter()
                .map(|t| {
                    let mut item = json!({
                        "thingName": t.name,
                        "thingArn": svc.registry().thing_arn(&t.name),
                        "attributes": t.attributes,
                        "version": t.version,
                    });
                    if let (Some(tt), Some(map)) = (&t.thing_type_name, item.as_object_mut()) {
                        map.insert("thingTypeName".into(), json!(tt));
                    }
                    item
                })
                .collect();
            Ok(with_next_token(
                json!({ "things": things }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DeleteThingQuery {
    expected_version: Option<i64>,
}

/// DELETE `/things/{thingName}?expectedVersion`.
async fn delete_thing(
    identity: Identity,
    Path(name): Path<String>,
    Query(query): Query<DeleteThingQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| svc.registry().delete_thing(&name, query.expected_version))
        .await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use fleetcore_core::{AccountContext, RedbStore};
    use fleetcore_identity::Pki;
    use tower::ServiceExt;

    /// The `iot` router over a fresh identity service; keep the tempdir alive.
    pub(in crate::iot) struct TestApi {
        _dir: tempfile::TempDir,
        pub router: Router,
    }

    impl TestApi {
        pub(in crate::iot) fn new() -> TestApi {
            let dir = tempfile::tempdir().expect("tempdir");
            let pki = Pki::load_or_create(&dir.path().join("data"), &["localhost".to_owned()])
                .expect("pki");
            let kv = RedbStore::open(&dir.path().join("store.redb")).expect("store");
            let account = AccountContext::new("us-east-1", "000000000000");
            let identity = Arc::new(IdentityService::new(
                Arc::new(kv),
                Arc::new(pki),
                account.clone(),
            ));
            let state = IotState::new("localhost", account).with_identity(identity);
            TestApi {
                _dir: dir,
                router: super::super::routes(state),
            }
        }

        /// Sends a request; returns the status, the error code header, and the JSON body
        /// (`Value::Null` when empty).
        pub(in crate::iot) async fn call(
            &self,
            method: Method,
            uri: &str,
            headers: &[(&str, &str)],
            body: Option<Value>,
        ) -> (StatusCode, Option<String>, Value) {
            let mut request = Request::builder().method(method).uri(uri);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let body = match body {
                Some(v) => Body::from(v.to_string()),
                None => Body::empty(),
            };
            let response = self
                .router
                .clone()
                .oneshot(request.body(body).expect("request"))
                .await
                .expect("infallible");
            let status = response.status();
            let code = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("json body")
            };
            (status, code, value)
        }
    }

    #[tokio::test]
    async fn thing_lifecycle_over_http() {
        let api = TestApi::new();
        let (status, code, body) = api
            .call(
                Method::POST,
                "/things/t1",
                &[],
                Some(json!({"attributePayload": {"attributes": {"site": "lab"}}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{code:?} {body}");
        assert_eq!(body["thingName"], "t1");
        assert_eq!(
            body["thingArn"],
            "arn:aws:iot:us-east-1:000000000000:thing/t1"
        );
        let id = body["thingId"].as_str().expect("id").to_owned();

        // Same configuration again: same thing. Different: 409.
        let (status, _, again) = api
            .call(
                Method::POST,
                "/things/t1",
                &[],
                Some(json!({"attributePayload": {"attributes": {"site": "lab"}}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["thingId"], id.as_str());
        let (status, code, err) = api.call(Method::POST, "/things/t1", &[], None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("ResourceAlreadyExistsException"));
        assert_eq!(err["resourceId"], id.as_str());

        let (status, _, described) = api.call(Method::GET, "/things/t1", &[], None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            described,
            json!({
                "defaultClientId": "t1",
                "thingName": "t1",
                "thingId": id,
                "thingArn": "arn:aws:iot:us-east-1:000000000000:thing/t1",
                "attributes": {"site": "lab"},
                "version": 1,
            })
        );

        let (status, _, _) = api
            .call(
                Method::PATCH,
                "/things/t1",
                &[],
                Some(
                    json!({"attributePayload": {"attributes": {"floor": "2"}, "merge": true},
                            "expectedVersion": 1}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = api
            .call(
                Method::PATCH,
                "/things/t1",
                &[],
                Some(json!({"expectedVersion": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("VersionConflictException"));

        let (_, _, listed) = api
            .call(
                Method::GET,
                "/things?attributeName=floor&attributeValue=2&maxResults=10",
                &[],
                None,
            )
            .await;
        assert_eq!(listed["things"][0]["thingName"], "t1");
        assert_eq!(listed["things"][0]["version"], 2);
        assert!(listed.get("nextToken").is_none());

        let (status, code, _) = api
            .call(Method::DELETE, "/things/t1?expectedVersion=1", &[], None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("VersionConflictException"));
        let (status, _, _) = api
            .call(Method::DELETE, "/things/t1?expectedVersion=2", &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = api.call(Method::GET, "/things/t1", &[], None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
    }

    #[tokio::test]
    async fn bad_input_is_an_invalid_request() {
        let api = TestApi::new();
        for (method, uri, body) in [
            (Method::POST, "/things/bad%20name", None),
            (
                Method::POST,
                "/things/t1",
                Some(json!({"attributePayload": {"attributes": {"k": 5}}})),
            ),
            (Method::GET, "/things?maxResults=0", None),
            (Method::GET, "/things?maxResults=abc", None),
            (Method::GET, "/things?nextToken=zz", None),
            (Method::GET, "/things?attributeName=a", None),
        ] {
            let (status, code, _) = api.call(method, uri, &[], body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(code.as_deref(), Some("InvalidRequestException"), "{uri}");
        }
    }

    #[tokio::test]
    async fn pages_carry_next_tokens() {
        let api = TestApi::new();
        for i in 0..3 {
            api.call(Method::POST, &format!("/things/t{i}"), &[], None)
                .await;
        }
        let (_, _, first) = api
            .call(Method::GET, "/things?maxResults=2", &[], None)
            .await;
        assert_eq!(first["things"].as_array().map(Vec::len), Some(2));
        let token = first["nextToken"].as_str().expect("token");
        let (_, _, second) = api
            .call(
                Method::GET,
                &format!("/things?maxResults=2&nextToken={token}"),
                &[],
                None,
            )
            .await;
        assert_eq!(second["things"][0]["thingName"], "t2");
        assert!(second.get("nextToken").is_none());
    }

    #[tokio::test]
    async fn without_an_identity_service_the_routes_fail_cleanly() {
        let router = super::super::routes(IotState::new(
            "localhost",
            AccountContext::new("us-east-1", "000000000000"),
        ));
        let response = router
            .oneshot(
                Request::builder()
                    .uri("/things/t1")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
