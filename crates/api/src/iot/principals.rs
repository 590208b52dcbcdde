//! Thing principals: AttachThingPrincipal, DetachThingPrincipal, ListThingPrincipals(V2),
//! ListPrincipalThings(V2). The principal (a certificate ARN) travels in the
//! `x-amzn-principal` header.

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::get;
use fleetcore_identity::registry::{PageRequest, ThingPrincipalType};
use serde::Deserialize;
use serde_json::{Value, json};

use super::IotState;
use super::things::{Identity, TokenPage, with_next_token};
use crate::error::ApiError;
use crate::extract::Query;

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route(
            "/things/{thingName}/principals",
            get(list_thing_principals)
                .put(attach_thing_principal)
                .delete(detach_thing_principal),
        )
        .route(
            "/things/{thingName}/principals-v2",
            get(list_thing_principals_v2),
        )
        .route("/principals/things", get(list_principal_things))
        .route("/principals/things-v2", get(list_principal_things_v2))
}

/// The `x-amzn-principal` header; `InvalidRequest` when missing or not text.
fn principal(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("x-amzn-principal")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_request("the x-amzn-principal header is required"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TypedPage {
    max_results: Option<i64>,
    next_token: Option<String>,
    thing_principal_type: Option<String>,
}

impl TypedPage {
    fn parts(&self) -> Result<(Option<ThingPrincipalType>, PageRequest), ApiError> {
        let principal_type = self
            .thing_principal_type
            .as_deref()
            .map(ThingPrincipalType::parse)
            .transpose()?;
        let page = PageRequest {
            max_results: self.max_results,
            next_token: self.next_token.clone(),
        };
        Ok((principal_type, page))
    }
}

/// PUT `/things/{thingName}/principals?thingPrincipalType` with `x-amzn-principal`.
async fn attach_thing_principal(
    identity: Identity,
    Path(thing): Path<String>,
    headers: HeaderMap,
    Query(query): Query<TypedPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = principal(&headers)?;
    let (principal_type, _) = query.parts()?;
    identity
        .run(move |svc| {
            svc.registry().attach_thing_principal(
                &thing,
                &principal,
                principal_type.unwrap_or_default(),
            )
        })
        .await?;
    Ok(axum::Json(json!({})))
}

/// DELETE `/things/{thingName}/principals` with `x-amzn-principal`.
async fn detach_thing_principal(
    identity: Identity,
    Path(thing): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = principal(&headers)?;
    identity
        .run(move |svc| svc.registry().detach_thing_principal(&thing, &principal))
        .await?;
    Ok(axum::Json(json!({})))
}

/// GET `/things/{thingName}/principals?maxResults&nextToken` → `principals` (ARNs).
async fn list_thing_principals(
    identity: Identity,
    Path(thing): Path<String>,
    Query(page): Query<TokenPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = svc
                .registry()
                .list_thing_principals(&thing, None, &page.request())?;
            let principals: Vec<String> = page.items.into_iter().map(|p| p.principal).collect();
            Ok(with_next_token(
                json!({ "principals": principals }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/things/{thingName}/principals-v2?thingPrincipalType&maxResults&nextToken`.
async fn list_thing_principals_v2(
    identity: Identity,
    Path(thing): Path<String>,
    Query(query): Query<TypedPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let (principal_type, page) = query.parts()?;
    let body = identity
        .run(move |svc| {
            let page = svc
                .registry()
                .list_thing_principals(&thing, principal_type, &page)?;
            let objects: Vec<Value> = page
                .items
                .into_iter()
                .map(|p| {
                    json!({"principal": p.principal,
                           "thingPrincipalType": p.principal_type.as_str()})
                })
                .collect();
            Ok(with_next_token(
                json!({ "thingPrincipalObjects": objects }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/principals/things?maxResults&nextToken` with `x-amzn-principal` → `things` (names).
async fn list_principal_things(
    identity: Identity,
    headers: HeaderMap,
    Query(page): Query<TokenPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = principal(&headers)?;
    let body = identity
        .run(move |svc| {
            let page = svc
                .registry()
                .list_principal_things(&principal, None, &page.request())?;
            let things: Vec<String> = page.items.into_iter().map(|t| t.thing_name).collect();
            Ok(with_next_token(
                json!({ "things": things }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/principals/things-v2?thingPrincipalType&maxResults&nextToken` with `x-amzn-principal`.
async fn list_principal_things_v2(
    identity: Identity,
    headers: HeaderMap,
    Query(query): Query<TypedPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = principal(&headers)?;
    let (principal_type, page) = query.parts()?;
    let body = identity
        .run(move |svc| {
            let page = svc
                .registry()
                .list_principal_things(&principal, principal_type, &page)?;
            let objects: Vec<Value> = page
                .items
                .into_iter()
                .map(|t| {
                    json!({"thingName": t.thing_name,
                           "thingPrincipalType": t.principal_type.as_str()})
                })
                .collect();
            Ok(with_next_token(
                json!({ "principalThingObjects": objects }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::iot::things::tests::TestApi;

    #[tokio::test]
    async fn attach_list_detach_over_http() {
        let api = TestApi::new();
        api.call(Method::POST, "/things/t1", &[], None).await;
        let (_, _, made) = api
            .call(
                Method::POST,
                "/keys-and-certificate?setAsActive=true",
                &[],
                None,
            )
            .await;
        let arn = made["certificateArn"].as_str().expect("arn").to_owned();
        let principal = [("x-amzn-principal", arn.as_str())];

        let (status, _, _) = api
            .call(Method::PUT, "/things/t1/principals", &principal, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, listed) = api
            .call(Method::GET, "/things/t1/principals", &[], None)
            .await;
        assert_eq!(listed, json!({ "principals": [arn] }));
        let (_, _, things) = api
            .call(Method::GET, "/principals/things", &principal, None)
            .await;
        assert_eq!(things, json!({ "things": ["t1"] }));
        let (_, _, v2) = api
            .call(Method::GET, "/principals/things-v2", &principal, None)
            .await;
        assert_eq!(
            v2,
            json!({"principalThingObjects": [{"thingName": "t1",
                                              "thingPrincipalType": "NON_EXCLUSIVE_THING"}]})
        );
        let (_, _, v2) = api
            .call(
                Method::GET,
                "/things/t1/principals-v2?thingPrincipalType=NON_EXCLUSIVE_THING",
                &[],
                None,
            )
            .await;
        assert_eq!(v2["thingPrincipalObjects"][0]["principal"], arn.as_str());

        // The thing cannot go while the principal is attached, nor the certificate.
        let (status, code, _) = api.call(Method::DELETE, "/things/t1", &[], None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));
        let id = made["certificateId"].as_str().expect("id");
        api.call(
            Method::PUT,
            &format!("/certificates/{id}?newStatus=INACTIVE"),
            &[],
            None,
        )
        .await;
        let (status, code, _) = api
            .call(Method::DELETE, &format!("/certificates/{id}"), &[], None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("DeleteConflictException"));

        let (status, _, _) = api
            .call(Method::DELETE, "/things/t1/principals", &principal, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, listed) = api
            .call(Method::GET, "/things/t1/principals", &[], None)
            .await;
        assert_eq!(listed, json!({ "principals": [] }));
    }

    #[tokio::test]
    async fn missing_and_unknown_principals() {
        let api = TestApi::new();
        api.call(Method::POST, "/things/t1", &[], None).await;
        let (status, code, _) = api
            .call(Method::PUT, "/things/t1/principals", &[], None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));
        let unknown = format!("arn:aws:iot:us-east-1:000000000000:cert/{}", "a".repeat(64));
        let header = [("x-amzn-principal", unknown.as_str())];
        let (status, code, _) = api
            .call(Method::PUT, "/things/t1/principals", &header, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
        let (status, code, _) = api
            .call(Method::GET, "/principals/things", &header, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
        let (status, code, _) = api
            .call(Method::GET, "/things/nope/principals", &[], None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
        let (status, code, _) = api
            .call(
                Method::PUT,
                "/things/t1/principals?thingPrincipalType=SOMETIMES",
                &header,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));
    }
}
