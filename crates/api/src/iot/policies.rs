//! IoT policies: CreatePolicy, GetPolicy, ListPolicies, DeletePolicy, the policy version
//! operations, AttachPolicy / DetachPolicy, ListAttachedPolicies and ListTargetsForPolicy.
//! Shapes follow the botocore `iot` 2015-05-28 model; the one mapping of [`PolicyError`] to AWS
//! error codes is here.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use fleetcore_core::Arn;
use fleetcore_identity::IdentityService;
use fleetcore_identity::policy::{Page, PageSpec, Policies, PolicyError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

impl From<PolicyError> for ApiError {
    fn from(error: PolicyError) -> ApiError {
        let message = error.to_string();
        match error {
            PolicyError::InvalidName { .. }
            | PolicyError::InvalidVersionId(_)
            | PolicyError::InvalidTarget { .. } => ApiError::invalid_request(message),
            PolicyError::Malformed(_) => {
                ApiError::new("MalformedPolicyException", StatusCode::BAD_REQUEST, message)
            }
            PolicyError::AlreadyExists { name } => ApiError::new(
                "ResourceAlreadyExistsException",
                StatusCode::CONFLICT,
                message,
            )
            .with_field("resourceId", name),
            PolicyError::NotFound { .. } | PolicyError::VersionNotFound { .. } => {
                ApiError::not_found(message)
            }
            PolicyError::VersionsLimitExceeded { .. } => ApiError::new(
                "VersionsLimitExceededException",
                StatusCode::CONFLICT,
                message,
            ),
            PolicyError::DeleteConflict(_) => {
                ApiError::new("DeleteConflictException", StatusCode::CONFLICT, message)
            }
            PolicyError::TargetLimitExceeded { .. } => {
                ApiError::new("LimitExceededException", StatusCode::GONE, message)
            }
            PolicyError::Store(_) | PolicyError::Corrupt { .. } => {
                tracing::error!(error = %message, "policy operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

/// The policy store, taken from [`IotState`]; 500 when the binary did not configure one.
struct PolicyStore {
    policies: Arc<Policies>,
    identity: Option<Arc<IdentityService>>,
    state: IotState,
}

impl FromRequestParts<IotState> for PolicyStore {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &IotState) -> Result<Self, ApiError> {
        let policies = state
            .policies
            .clone()
            .ok_or_else(|| ApiError::internal("the policy store is not configured"))?;
        Ok(PolicyStore {
            policies,
            identity: state.identity.clone(),
            state: state.clone(),
        })
    }
}

impl PolicyStore {
    /// Runs `op` on a blocking thread (store calls may fsync).
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Policies) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let policies = self.policies.clone();
        tokio::task::spawn_blocking(move || op(&policies))
            .await
            .map_err(|e| ApiError::internal(format!("policy operation aborted: {e}")))?
    }

    fn policy_arn(&self, name: &str) -> String {
        policy_arn(&self.state, name)
    }
}

fn policy_arn(state: &IotState, name: &str) -> String {
    state.account.iot_arn(format!("policy/{name}")).to_string()
}

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route("/policies", get(list_policies))
        .route(
            "/policies/{policyName}",
            post(create_policy).get(get_policy).delete(delete_policy),
        )
        .route(
            "/policies/{policyName}/version",
            post(create_policy_version).get(list_policy_versions),
        )
        .route(
            "/policies/{policyName}/version/{policyVersionId}",
            get(get_policy_version)
                .delete(delete_policy_version)
                .patch(set_default_policy_version),
        )
        .route(
            "/target-policies/{policyName}",
            axum::routing::put(attach_policy).post(detach_policy),
        )
        .route("/attached-policies/{target}", post(list_attached_policies))
        .route(
            "/policy-targets/{policyName}",
            post(list_targets_for_policy),
        )
}

/// A timestamp as rest-json sends it: epoch seconds.
fn epoch(at: SystemTime) -> Value {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0);
    json!(seconds)
}

/// An empty 200 answer, for operations without output members.
fn ok() -> axum::Json<Value> {
    axum::Json(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DocumentBody {
    policy_document: Option<String>,
    // Policy tags are not modelled; accepted and ignored.
    #[allow(dead_code)]
    tags: Option<Value>,
}

impl DocumentBody {
    fn document(self) -> Result<String, ApiError> {
        self.policy_document
            .ok_or_else(|| ApiError::invalid_request("policyDocument is required"))
    }
}

/// POST `/policies/{policyName}` → `{policyName, policyArn, policyDocument, policyVersionId}`.
async fn create_policy(
    store: PolicyStore,
    Path(name): Path<String>,
    Json(body): Json<DocumentBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let document = body.document()?;
    let arn = store.policy_arn(&name);
    let error_arn = arn.clone();
    let info = store
        .run(move |p| {
            p.create(&name, &document).map_err(|e| {
                let exists = matches!(e, PolicyError::AlreadyExists { .. });
                let error = ApiError::from(e);
                if exists {
                    error.with_field("resourceArn", error_arn)
                } else {
                    error
                }
            })
        })
        .await?;
    Ok(axum::Json(json!({
        "policyName": info.name,
        "policyArn": arn,
        "policyDocument": info.document,
        "policyVersionId": info.default_version_id,
    })))
}

/// GET `/policies/{policyName}`.
async fn get_policy(
    store: PolicyStore,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let info = store.run(move |p| Ok(p.get(&name)?)).await?;
    Ok(axum::Json(json!({
        "policyName": info.name,
        "policyArn": store.policy_arn(&info.name),
        "policyDocument": info.document,
        "defaultVersionId": info.default_version_id,
        "creationDate": epoch(info.created),
        "lastModifiedDate": epoch(info.last_modified),
        "generationId": info.generation_id,
    })))
}

/// `marker` + `pageSize` (+ `isAscendingOrder`), as the policy listings take them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MarkerPage {
    marker: Option<String>,
    page_size: Option<i64>,
    is_ascending_order: Option<bool>,
    recursive: Option<bool>,
}

/// Page size when the caller gives none, and the largest AWS accepts (`PageSize` 1..=250).
const MAX_PAGE_SIZE: i64 = 250;

impl MarkerPage {
    /// The decoded marker and the page size.
    fn decode(&self) -> Result<(Option<String>, usize), ApiError> {
        let size = self.page_size.unwrap_or(MAX_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(ApiError::invalid_request(format!(
                "pageSize must be between 1 and {MAX_PAGE_SIZE}, not {size}"
            )));
        }
        let after = match &self.marker {
            None => None,
            Some(m) if m.is_empty() => None,
            Some(m) => Some(
                base64_decode(m)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "invalid marker {m:?}: pass the nextMarker of the previous page"
                        ))
                    })?,
            ),
        };
        Ok((after, usize::try_from(size).unwrap_or(1)))
    }
}

/// Adds `nextMarker` to a list response when there is a next page.
fn with_next_marker(mut body: Value, next: Option<String>) -> Value {
    if let (Some(next), Some(map)) = (next, body.as_object_mut()) {
        map.insert("nextMarker".into(), json!(base64_encode(next.as_bytes())));
    }
    body
}

/// GET `/policies?marker&pageSize&isAscendingOrder` → `{policies: [{policyName, policyArn}],
/// nextMarker}`, in name order.
async fn list_policies(
    store: PolicyStore,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let (after, limit) = query.decode()?;
    let ascending = query.is_ascending_order.unwrap_or(true);
    let page = store
        .run(move |p| {
            Ok(p.list(PageSpec {
                after: after.as_deref(),
                limit,
                ascending,
            })?)
        })
        .await?;
    Ok(axum::Json(policies_page(&store.state, page)))
}

fn policies_page(state: &IotState, page: Page<String>) -> Value {
    let policies: Vec<Value> = page
        .items
        .iter()
        .map(|name| json!({"policyName": name, "policyArn": policy_arn(state, name)}))
        .collect();
    with_next_marker(json!({ "policies": policies }), page.next)
}

/// DELETE `/policies/{policyName}`.
async fn delete_policy(
    store: PolicyStore,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    store.run(move |p| Ok(p.delete(&name)?)).await?;
    Ok(ok())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SetAsDefaultQuery {
    set_as_default: Option<bool>,
}

/// POST `/policies/{policyName}/version?setAsDefault` → `{policyArn, policyDocument,
/// policyVersionId, isDefaultVersion}`.
async fn create_policy_version(
    store: PolicyStore,
    Path(name): Path<String>,
    Query(query): Query<SetAsDefaultQuery>,
    Json(body): Json<DocumentBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let document = body.document()?;
    let set_as_default = query.set_as_default.unwrap_or(false);
    let version = store
        .run(move |p| Ok(p.create_version(&name, &document, set_as_default)?))
        .await?;
    Ok(axum::Json(json!({
        "policyArn": store.policy_arn(&version.name),
        "policyDocument": version.document,
        "policyVersionId": version.version_id,
        "isDefaultVersion": version.is_default,
    })))
}

/// GET `/policies/{policyName}/version/{policyVersionId}`.
async fn get_policy_version(
    store: PolicyStore,
    Path((name, version_id)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let version = store
        .run(move |p| Ok(p.get_version(&name, &version_id)?))
        .await?;
    Ok(axum::Json(json!({
        "policyArn": store.policy_arn(&version.name),
        "policyName": version.name,
        "policyDocument": version.document,
        "policyVersionId": version.version_id,
        "isDefaultVersion": version.is_default,
        "creationDate": epoch(version.created),
        "lastModifiedDate": epoch(version.last_modified),
        "generationId": version.generation_id,
    })))
}

/// GET `/policies/{policyName}/version` → `{policyVersions: [{versionId, isDefaultVersion,
/// createDate}]}`.
async fn list_policy_versions(
    store: PolicyStore,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let versions = store.run(move |p| Ok(p.list_versions(&name)?)).await?;
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|v| {
            json!({
                "versionId": v.version_id,
                "isDefaultVersion": v.is_default,
                "createDate": epoch(v.created),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "policyVersions": versions })))
}

/// DELETE `/policies/{policyName}/version/{policyVersionId}`.
async fn delete_policy_version(
    store: PolicyStore,
    Path((name, version_id)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    store
        .run(move |p| Ok(p.delete_version(&name, &version_id)?))
        .await?;
    Ok(ok())
}

/// PATCH `/policies/{policyName}/version/{policyVersionId}`.
async fn set_default_policy_version(
    store: PolicyStore,
    Path((name, version_id)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    store
        .run(move |p| Ok(p.set_default_version(&name, &version_id)?))
        .await?;
    Ok(ok())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TargetBody {
    target: Option<String>,
}

impl TargetBody {
    fn target(self) -> Result<String, ApiError> {
        match self.target {
            Some(t) if !t.is_empty() => Ok(t),
            _ => Err(ApiError::invalid_request("target is required")),
        }
    }
}

/// What an attachment target is.
enum Target {
    /// A certificate of this installation, by id.
    Certificate(String),
    /// A thing group of this installation, by name.
    ThingGroup(String),
    /// Anything else that is not an ARN (an Amazon Cognito identity id): kept as given.
    Other,
}

fn classify_target(state: &IotState, target: &str) -> Result<Target, ApiError> {
    if !target.starts_with("arn:") {
        return Ok(Target::Other);
    }
    let invalid = || {
        ApiError::invalid_request(format!(
            "invalid target {target:?}: expected a certificate ARN (arn:aws:iot:{}:{}:cert/<id>) \
             or a thing group ARN (...:thinggroup/<name>)",
            state.account.region, state.account.account_id
        ))
    };
    let arn = Arn::parse(target).map_err(|_| invalid())?;
    if arn.service != "iot" {
        return Err(invalid());
    }
    let Some(id) = arn.resource_id().filter(|id| !id.is_empty()) else {
        return Err(invalid());
    };
    let foreign = arn.region != state.account.region || arn.account_id != state.account.account_id;
    match arn.resource_type() {
        "cert" if foreign => Err(ApiError::not_found(format!(
            "certificate {target} does not exist in this account and region"
        ))),
        "thinggroup" if foreign => Err(ApiError::not_found(format!(
            "thing group {target} does not exist in this account and region"
        ))),
        "cert" => Ok(Target::Certificate(id.to_string())),
        "thinggroup" => Ok(Target::ThingGroup(id.to_string())),
        _ => Err(invalid()),
    }
}

/// Checks that a certificate or thing group target exists (the policy store does not know the
/// registry); without an identity service configured nothing can be checked.
fn check_target_exists(
    identity: Option<&IdentityService>,
    target: &Target,
) -> Result<(), ApiError> {
    let Some(identity) = identity else {
        return Ok(());
    };
    match target {
        Target::Certificate(id) => match identity.certificate_status_by_id(id)? {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(format!(
                "certificate {id} does not exist"
            ))),
        },
        Target::ThingGroup(name) => {
            identity.registry().describe_thing_group(name)?;
            Ok(())
        }
        Target::Other => Ok(()),
    }
}

/// PUT `/target-policies/{policyName}` body `{target}`.
async fn attach_policy(
    store: PolicyStore,
    Path(name): Path<String>,
    Json(body): Json<TargetBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let target = body.target()?;
    let kind = classify_target(&store.state, &target)?;
    let identity = store.identity.clone();
    store
        .run(move |p| {
            check_target_exists(identity.as_deref(), &kind)?;
            Ok(p.attach(&name, &target)?)
        })
        .await?;
    Ok(ok())
}

/// POST `/target-policies/{policyName}` body `{target}`.
async fn detach_policy(
    store: PolicyStore,
    Path(name): Path<String>,
    Json(body): Json<TargetBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let target = body.target()?;
    store.run(move |p| Ok(p.detach(&name, &target)?)).await?;
    Ok(ok())
}

/// POST `/attached-policies/{target}?recursive&marker&pageSize` → `{policies, nextMarker}`.
/// With `recursive`, a thing group's ancestors' policies are included.
async fn list_attached_policies(
    store: PolicyStore,
    Path(target): Path<String>,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let (after, limit) = query.decode()?;
    let kind = classify_target(&store.state, &target)?;
    let recursive = query.recursive.unwrap_or(false);
    let identity = store.identity.clone();
    let page = store
        .run(move |p| {
            check_target_exists(identity.as_deref(), &kind)?;
            let mut targets = vec![target];
            if let (true, Target::ThingGroup(group), Some(identity)) =
                (recursive, &kind, identity.as_deref())
            {
                for ancestor in identity.registry().thing_group_ancestors(group)? {
                    targets.push(identity.thing_group_arn(&ancestor));
                }
            }
            let mut names = Vec::new();
            for t in &targets {
                names.extend(p.attached_names(t)?);
            }
            names.sort_unstable();
            names.dedup();
            Ok(page_of(
                names,
                PageSpec {
                    after: after.as_deref(),
                    limit,
                    ascending: true,
                },
            ))
        })
        .await?;
    Ok(axum::Json(policies_page(&store.state, page)))
}

/// The page of sorted, unique `items` after `spec.after`.
fn page_of(items: Vec<String>, spec: PageSpec<'_>) -> Page<String> {
    let start = spec
        .after
        .map_or(0, |after| items.partition_point(|i| i.as_str() <= after));
    let end = (start + spec.limit.max(1)).min(items.len());
    let next = (end < items.len()).then(|| items[end - 1].clone());
    Page {
        items: items[start..end].to_vec(),
        next,
    }
}

/// POST `/policy-targets/{policyName}?marker&pageSize` → `{targets, nextMarker}`.
async fn list_targets_for_policy(
    store: PolicyStore,
    Path(name): Path<String>,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let (after, limit) = query.decode()?;
    let page = store
        .run(move |p| {
            Ok(p.list_targets(
                &name,
                PageSpec {
                    after: after.as_deref(),
                    limit,
                    ascending: true,
                },
            )?)
        })
        .await?;
    Ok(axum::Json(with_next_marker(
        json!({ "targets": page.items }),
        page.next,
    )))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding: AWS markers match `[A-Za-z0-9+/]+={0,2}`.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (index, chunk) in text.chunks(4).enumerate() {
        let last = index == text.len() / 4 - 1;
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - padding] {
            let v = BASE64.iter().position(|&a| a == c)?;
            n = (n << 6) | v as u32;
        }
        n <<= 6 * padding as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use fleetcore_core::{AccountContext, RedbStore};
    use tower::ServiceExt;

    const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;

    struct App {
        router: Router,
        _dir: tempfile::TempDir,
    }

    fn app() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("store");
        let policies = Arc::new(Policies::new(Arc::new(store)));
        let state = IotState::new(
            "iot.example.test",
            AccountContext::new("us-east-1", "000000000000"),
        )
        .with_policies(policies);
        App {
            router: super::super::routes(state),
            _dir: dir,
        }
    }

    impl App {
        async fn call(
            &self,
            method: Method,
            uri: &str,
            body: Value,
        ) -> (StatusCode, Value, String) {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body.to_string()))
                .expect("request");
            let resp = self.router.clone().oneshot(req).await.expect("response");
            let status = resp.status();
            let code = resp
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("json body")
            };
            (status, value, code)
        }
    }

    #[tokio::test]
    async fn create_get_list_delete() {
        let app = app();
        let (s, v, _) = app
            .call(Method::POST, "/policies/p1", json!({"policyDocument": DOC}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v["policyArn"],
            "arn:aws:iot:us-east-1:000000000000:policy/p1"
        );
        assert_eq!(v["policyVersionId"], "1");
        assert_eq!(v["policyDocument"], DOC);

        let (s, v, code) = app
            .call(Method::POST, "/policies/p1", json!({"policyDocument": DOC}))
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "ResourceAlreadyExistsException")
        );
        assert_eq!(v["resourceId"], "p1");
        assert_eq!(
            v["resourceArn"],
            "arn:aws:iot:us-east-1:000000000000:policy/p1"
        );

        let (s, v, _) = app.call(Method::GET, "/policies/p1", Value::Null).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["defaultVersionId"], "1");
        assert!(v["creationDate"].is_f64());
        assert!(v["generationId"].is_string());

        let (s, _, code) = app
            .call(
                Method::POST,
                "/policies/bad",
                json!({"policyDocument": "{"}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "MalformedPolicyException")
        );
        let (s, _, code) = app.call(Method::POST, "/policies/bad", json!({})).await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequestException")
        );
        let (s, _, code) = app
            .call(Method::GET, "/policies/missing", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );

        for n in ["p2", "p3"] {
            app.call(
                Method::POST,
                &format!("/policies/{n}"),
                json!({"policyDocument": DOC}),
            )
            .await;
        }
        let (_, v, _) = app
            .call(Method::GET, "/policies?pageSize=2", Value::Null)
            .await;
        assert_eq!(v["policies"].as_array().expect("list").len(), 2);
        let marker = v["nextMarker"].as_str().expect("marker").to_string();
        let (_, v, _) = app
            .call(
                Method::GET,
                &format!(
                    "/policies?pageSize=2&marker={}",
                    marker
                        .replace('=', "%3D")
                        .replace('+', "%2B")
                        .replace('/', "%2F")
                ),
                Value::Null,
            )
            .await;
        assert_eq!(v["policies"][0]["policyName"], "p3");
        assert!(v.get("nextMarker").is_none());
        let (_, v, _) = app
            .call(Method::GET, "/policies?isAscendingOrder=false", Value::Null)
            .await;
        assert_eq!(v["policies"][0]["policyName"], "p3");
        let (s, _, code) = app
            .call(Method::GET, "/policies?pageSize=0", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequestException")
        );

        let (s, _, _) = app.call(Method::DELETE, "/policies/p2", Value::Null).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = app.call(Method::DELETE, "/policies/p2", Value::Null).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn versions() {
        let app = app();
        app.call(Method::POST, "/policies/p", json!({"policyDocument": DOC}))
            .await;
        for expected in 2..=5 {
            let (s, v, _) = app
                .call(
                    Method::POST,
                    "/policies/p/version",
                    json!({"policyDocument": DOC}),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(v["policyVersionId"], expected.to_string());
            assert_eq!(v["isDefaultVersion"], false);
        }
        let (s, _, code) = app
            .call(
                Method::POST,
                "/policies/p/version?setAsDefault=true",
                json!({"policyDocument": DOC}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "VersionsLimitExceededException")
        );
        let (s, _, code) = app
            .call(Method::DELETE, "/policies/p/version/1", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "DeleteConflictException")
        );
        let (s, _, code) = app.call(Method::DELETE, "/policies/p", Value::Null).await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "DeleteConflictException")
        );
        let (s, _, _) = app
            .call(Method::PATCH, "/policies/p/version/3", Value::Null)
            .await;
        assert_eq!(s, StatusCode::OK);
        let (_, v, _) = app
            .call(Method::GET, "/policies/p/version/3", Value::Null)
            .await;
        assert_eq!(v["isDefaultVersion"], true);
        assert_eq!(v["policyName"], "p");
        let (_, v, _) = app
            .call(Method::GET, "/policies/p/version", Value::Null)
            .await;
        let versions = v["policyVersions"].as_array().expect("versions");
        assert_eq!(versions.len(), 5);
        assert_eq!(versions[2]["versionId"], "3");
        assert_eq!(versions[2]["isDefaultVersion"], true);
        assert!(versions[0]["createDate"].is_f64());
        let (s, _, code) = app
            .call(Method::GET, "/policies/p/version/9", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );
        let (s, _, code) = app
            .call(Method::GET, "/policies/p/version/x", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequestException")
        );
    }

    #[tokio::test]
    async fn attachments() {
        let app = app();
        app.call(Method::POST, "/policies/p", json!({"policyDocument": DOC}))
            .await;
        let cert = "arn:aws:iot:us-east-1:000000000000:cert/abc";
        let (s, _, _) = app
            .call(Method::PUT, "/target-policies/p", json!({"target": cert}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, code) = app
            .call(
                Method::PUT,
                "/target-policies/missing",
                json!({"target": cert}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );
        let (s, _, code) = app
            .call(
                Method::PUT,
                "/target-policies/p",
                json!({"target": "arn:aws:iot:us-east-1:000000000000:thing/t"}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequestException")
        );
        let (s, _, code) = app.call(Method::PUT, "/target-policies/p", json!({})).await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequestException")
        );

        let encoded = "arn%3Aaws%3Aiot%3Aus-east-1%3A000000000000%3Acert%2Fabc";
        let (_, v, _) = app
            .call(
                Method::POST,
                &format!("/attached-policies/{encoded}"),
                Value::Null,
            )
            .await;
        assert_eq!(v["policies"][0]["policyName"], "p");
        assert_eq!(
            v["policies"][0]["policyArn"],
            "arn:aws:iot:us-east-1:000000000000:policy/p"
        );
        let (_, v, _) = app
            .call(Method::POST, "/policy-targets/p", Value::Null)
            .await;
        assert_eq!(v["targets"], json!([cert]));
        let (s, _, code) = app.call(Method::DELETE, "/policies/p", Value::Null).await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "DeleteConflictException")
        );

        let (s, _, _) = app
            .call(Method::POST, "/target-policies/p", json!({"target": cert}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (_, v, _) = app
            .call(Method::POST, "/policy-targets/p", Value::Null)
            .await;
        assert_eq!(v["targets"], json!([]));
        let (s, _, code) = app
            .call(Method::POST, "/policy-targets/missing", Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );
    }

    /// Policies and the identity service over one store, wired as the binary wires them.
    fn app_with_identity() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = fleetcore_identity::Pki::load_or_create(
            &dir.path().join("data"),
            &["localhost".to_owned()],
        )
        .expect("pki");
        let kv: Arc<dyn fleetcore_core::KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let account = AccountContext::new("us-east-1", "000000000000");
        let identity = Arc::new(IdentityService::new(
            kv.clone(),
            Arc::new(pki),
            account.clone(),
        ));
        let policies = Arc::new(Policies::new(kv));
        identity.set_attachment_check(policies.clone());
        let state = IotState::new("localhost", account)
            .with_identity(identity)
            .with_policies(policies);
        App {
            router: super::super::routes(state),
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn targets_must_exist_and_groups_list_recursively() {
        let app = app_with_identity();
        app.call(Method::POST, "/policies/p", json!({"policyDocument": DOC}))
            .await;
        app.call(
            Method::POST,
            "/policies/root-p",
            json!({"policyDocument": DOC}),
        )
        .await;
        let (s, cert, _) = app
            .call(
                Method::POST,
                "/keys-and-certificate?setAsActive=false",
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let cert_arn = cert["certificateArn"].as_str().expect("arn").to_string();
        let (s, _, _) = app
            .call(
                Method::PUT,
                "/target-policies/p",
                json!({"target": cert_arn}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let missing = "arn:aws:iot:us-east-1:000000000000:cert/0000";
        let (s, _, code) = app
            .call(
                Method::PUT,
                "/target-policies/p",
                json!({"target": missing}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );
        let foreign = "arn:aws:iot:eu-west-1:111111111111:cert/0000";
        let (s, _, _) = app
            .call(
                Method::PUT,
                "/target-policies/p",
                json!({"target": foreign}),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // DeleteCertificate refuses while policies are attached, and forceDelete detaches them.
        let id = cert["certificateId"].as_str().expect("id").to_string();
        let (s, _, code) = app
            .call(Method::DELETE, &format!("/certificates/{id}"), Value::Null)
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::CONFLICT, "DeleteConflictException")
        );
        let (s, _, _) = app
            .call(
                Method::DELETE,
                &format!("/certificates/{id}?forceDelete=true"),
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let (_, v, _) = app
            .call(Method::POST, "/policy-targets/p", Value::Null)
            .await;
        assert_eq!(v["targets"], json!([]));

        app.call(Method::POST, "/thing-groups/root", json!({}))
            .await;
        app.call(
            Method::POST,
            "/thing-groups/leaf",
            json!({"parentGroupName": "root"}),
        )
        .await;
        let root = "arn:aws:iot:us-east-1:000000000000:thinggroup/root";
        let leaf = "arn:aws:iot:us-east-1:000000000000:thinggroup/leaf";
        for (policy, target) in [("root-p", root), ("p", leaf)] {
            let (s, _, _) = app
                .call(
                    Method::PUT,
                    &format!("/target-policies/{policy}"),
                    json!({"target": target}),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
        }
        let (s, _, code) = app
            .call(
                Method::PUT,
                "/target-policies/p",
                json!({"target": "arn:aws:iot:us-east-1:000000000000:thinggroup/nope"}),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        );
        let leaf_path =
            "/attached-policies/arn%3Aaws%3Aiot%3Aus-east-1%3A000000000000%3Athinggroup%2Fleaf";
        let names = |v: &Value| -> Vec<String> {
            v["policies"]
                .as_array()
                .expect("policies")
                .iter()
                .map(|p| p["policyName"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let (_, v, _) = app.call(Method::POST, leaf_path, Value::Null).await;
        assert_eq!(names(&v), ["p"]);
        let (_, v, _) = app
            .call(
                Method::POST,
                &format!("{leaf_path}?recursive=true"),
                Value::Null,
            )
            .await;
        assert_eq!(names(&v), ["p", "root-p"]);
        let (_, v, _) = app
            .call(
                Method::POST,
                &format!("{leaf_path}?recursive=true&pageSize=1"),
                Value::Null,
            )
            .await;
        assert_eq!(names(&v), ["p"]);
        assert!(v["nextMarker"].is_string());
    }

    #[test]
    fn base64_round_trips() {
        for text in ["", "a", "ab", "abc", "abcd", "policy-name_1.2@x=y,z+w"] {
            let encoded = base64_encode(text.as_bytes());
            assert!(encoded.len().is_multiple_of(4));
            if !text.is_empty() {
                assert_eq!(base64_decode(&encoded).expect("decodes"), text.as_bytes());
            }
        }
        assert_eq!(base64_encode(b"abcd"), "YWJjZA==");
        assert_eq!(base64_decode("YWJjZA=="), Some(b"abcd".to_vec()));
        assert_eq!(base64_decode("YWJjZA="), None);
        assert_eq!(base64_decode("YW=jZA=="), None);
        assert_eq!(base64_decode("!!!!"), None);
    }
}
