//! Thing types: CreateThingType, DescribeThingType, ListThingTypes, DeprecateThingType,
//! DeleteThingType.

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use fleetcore_identity::registry::{PageRequest, Tag, ThingTypeProperties, ThingTypeRecord};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::IotState;
use super::things::{Identity, epoch, with_next_token};
use crate::error::ApiError;
use crate::extract::{Json, Query};

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route("/thing-types", get(list_thing_types))
        .route(
            "/thing-types/{thingTypeName}",
            post(create_thing_type)
                .get(describe_thing_type)
                .delete(delete_thing_type),
        )
        .route(
            "/thing-types/{thingTypeName}/deprecate",
            post(deprecate_thing_type),
        )
}

/// A tag as sent (`Key`, `Value`).
#[derive(Debug, Deserialize)]
pub(super) struct TagBody {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
}

/// The domain form of sent tags.
pub(super) fn tags(body: Vec<TagBody>) -> Vec<Tag> {
    body.into_iter()
        .map(|t| Tag {
            key: t.key,
            value: t.value,
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PropertiesBody {
    thing_type_description: Option<String>,
    searchable_attributes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CreateThingTypeBody {
    thing_type_properties: Option<PropertiesBody>,
    tags: Vec<TagBody>,
}

/// POST `/thing-types/{thingTypeName}`.
async fn create_thing_type(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<CreateThingTypeBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let properties = body
        .thing_type_properties
        .map(|p| ThingTypeProperties {
            description: p.thing_type_description,
            searchable_attributes: p.searchable_attributes,
        })
        .unwrap_or_default();
    let tags = tags(body.tags);
    let body = identity
        .run(move |svc| {
            let record = svc.registry().create_thing_type(&name, properties, tags)?;
            Ok(json!({
                "thingTypeName": record.name,
                "thingTypeArn": svc.registry().thing_type_arn(&record.name),
                "thingTypeId": record.id,
            }))
        })
        .await?;
    Ok(axum::Json(body))
}

fn properties(record: &ThingTypeRecord) -> Value {
    let mut properties = Map::new();
    if let Some(description) = &record.properties.description {
        properties.insert("thingTypeDescription".into(), json!(description));
    }
    properties.insert(
        "searchableAttributes".into(),
        json!(record.properties.searchable_attributes),
    );
    Value::Object(properties)
}

fn metadata(record: &ThingTypeRecord) -> Value {
    let mut metadata = Map::new();
    metadata.insert("deprecated".into(), json!(record.deprecated));
    if let Some(date) = record.deprecation_date {
        metadata.insert("deprecationDate".into(), epoch(date));
    }
    metadata.insert("creationDate".into(), epoch(record.creation_date));
    Value::Object(metadata)
}

/// GET `/thing-types/{thingTypeName}`.
async fn describe_thing_type(
    identity: Identity,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let record = svc.registry().describe_thing_type(&name)?;
            Ok(json!({
                "thingTypeName": record.name,
                "thingTypeId": record.id,
                "thingTypeArn": svc.registry().thing_type_arn(&record.name),
                "thingTypeProperties": properties(&record),
                "thingTypeMetadata": metadata(&record),
            }))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListThingTypesQuery {
    max_results: Option<i64>,
    next_token: Option<String>,
    thing_type_name: Option<String>,
}

/// GET `/thing-types?thingTypeName&maxResults&nextToken`.
async fn list_thing_types(
    identity: Identity,
    Query(query): Query<ListThingTypesQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = PageRequest {
                max_results: query.max_results,
                next_token: query.next_token,
            };
            let page = svc
                .registry()
                .list_thing_types(query.thing_type_name.as_deref(), &page)?;
            let types: Vec<Value> = page
                .items
                .iter()
                .map(|t| {
                    json!({
                        "thingTypeName": t.name,
                        "thingTypeArn": svc.registry().thing_type_arn(&t.name),
                        "thingTypeProperties": properties(t),
                        "thingTypeMetadata": metadata(t),
                    })
                })
                .collect();
            Ok(with_next_token(
                json!({ "thingTypes": types }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DeprecateBody {
    undo_deprecate: bool,
}

/// POST `/thing-types/{thingTypeName}/deprecate` (`undoDeprecate` in the body).
async fn deprecate_thing_type(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<DeprecateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| {
            svc.registry()
                .deprecate_thing_type(&name, body.undo_deprecate)
        })
        .await?;
    Ok(axum::Json(json!({})))
}

/// DELETE `/thing-types/{thingTypeName}`.
async fn delete_thing_type(
    identity: Identity,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| svc.registry().delete_thing_type(&name))
        .await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::iot::things::tests::TestApi;

    #[tokio::test]
    async fn thing_type_lifecycle_over_http() {
        let api = TestApi::new();
        let (status, _, created) = api
            .call(
                Method::POST,
                "/thing-types/sensor",
                &[],
                Some(json!({
                    "thingTypeProperties": {"thingTypeDescription": "a sensor",
                                            "searchableAttributes": ["model"]},
                    "tags": [{"Key": "team", "Value": "ops"}],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        assert_eq!(
            created["thingTypeArn"],
            "arn:aws:iot:us-east-1:000000000000:thingtype/sensor"
        );
        let (status, code, _) = api
            .call(Method::POST, "/thing-types/sensor", &[], None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("ResourceAlreadyExistsException"));

        let (_, _, described) = api
            .call(Method::GET, "/thing-types/sensor", &[], None)
            .await;
        assert_eq!(described["thingTypeId"], created["thingTypeId"]);
        assert_eq!(
            described["thingTypeProperties"],
            json!({"thingTypeDescription": "a sensor", "searchableAttributes": ["model"]})
        );
        assert_eq!(described["thingTypeMetadata"]["deprecated"], false);
        assert!(described["thingTypeMetadata"]["creationDate"].is_number());
        assert!(
            described["thingTypeMetadata"]
                .get("deprecationDate")
                .is_none()
        );

        let (status, code, _) = api
            .call(Method::DELETE, "/thing-types/sensor", &[], None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));

        let (status, _, _) = api
            .call(Method::POST, "/thing-types/sensor/deprecate", &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, listed) = api
            .call(Method::GET, "/thing-types?thingTypeName=sensor", &[], None)
            .await;
        assert_eq!(
            listed["thingTypes"][0]["thingTypeMetadata"]["deprecated"],
            true
        );
        assert!(listed["thingTypes"][0]["thingTypeMetadata"]["deprecationDate"].is_number());

        let (status, _, _) = api
            .call(
                Method::POST,
                "/thing-types/sensor/deprecate",
                &[],
                Some(json!({"undoDeprecate": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        api.call(Method::POST, "/thing-types/sensor/deprecate", &[], None)
            .await;
        let (status, _, _) = api
            .call(Method::DELETE, "/thing-types/sensor", &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = api
            .call(Method::GET, "/thing-types/sensor", &[], None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
    }

    #[tokio::test]
    async fn too_many_searchable_attributes() {
        let api = TestApi::new();
        let (status, code, _) = api
            .call(
                Method::POST,
                "/thing-types/t",
                &[],
                Some(
                    json!({"thingTypeProperties": {"searchableAttributes": ["a", "b", "c", "d"]}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));
    }
}
