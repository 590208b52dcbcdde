//! Thing groups: CreateThingGroup, DescribeThingGroup, UpdateThingGroup, ListThingGroups,
//! DeleteThingGroup, AddThingToThingGroup, RemoveThingFromThingGroup, ListThingsInThingGroup,
//! ListThingGroupsForThing.

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post, put};
use fleetcore_identity::IdentityService;
use fleetcore_identity::registry::{
    AttributePayload, GroupListFilter, PageRequest, RegistryError, ThingGroupProperties,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::IotState;
use super::thing_types::{TagBody, tags};
use super::things::{AttributePayloadBody, Identity, TokenPage, epoch, with_next_token};
use crate::error::ApiError;
use crate::extract::{Json, Query};

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route("/thing-groups", get(list_thing_groups))
        .route(
            "/thing-groups/addThingToThingGroup",
            put(add_thing_to_thing_group),
        )
        .route(
            "/thing-groups/removeThingFromThingGroup",
            put(remove_thing_from_thing_group),
        )
        .route(
            "/thing-groups/{thingGroupName}",
            post(create_thing_group)
                .get(describe_thing_group)
                .patch(update_thing_group)
                .delete(delete_thing_group),
        )
        .route(
            "/thing-groups/{thingGroupName}/things",
            get(list_things_in_thing_group),
        )
        .route(
            "/things/{thingName}/thing-groups",
            get(list_thing_groups_for_thing),
        )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GroupPropertiesBody {
    thing_group_description: Option<String>,
    attribute_payload: Option<AttributePayloadBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CreateThingGroupBody {
    parent_group_name: Option<String>,
    thing_group_properties: Option<GroupPropertiesBody>,
    tags: Vec<TagBody>,
}

/// POST `/thing-groups/{thingGroupName}`.
async fn create_thing_group(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<CreateThingGroupBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let properties = body
        .thing_group_properties
        .map(|p| ThingGroupProperties {
            description: p.thing_group_description,
            attributes: p
                .attribute_payload
                .map(|a| AttributePayload::from(a).attributes)
                .unwrap_or_default(),
        })
        .unwrap_or_default();
    let tags = tags(body.tags);
    let parent = body.parent_group_name;
    let body = identity
        .run(move |svc| {
            let group =
                svc.registry()
                    .create_thing_group(&name, properties, parent.as_deref(), tags)?;
            Ok(json!({
                "thingGroupName": group.name,
                "thingGroupArn": svc.registry().thing_group_arn(&group.name),
                "thingGroupId": group.id,
            }))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/thing-groups/{thingGroupName}`.
async fn describe_thing_group(
    identity: Identity,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let registry = svc.registry();
            let group = registry.describe_thing_group(&name)?;
            let ancestors = registry.thing_group_ancestors(&name)?;
            let mut properties = Map::new();
            if let Some(d) = &group.properties.description {
                properties.insert("thingGroupDescription".into(), json!(d));
            }
            properties.insert(
                "attributePayload".into(),
                json!({ "attributes": group.properties.attributes }),
            );
            let mut metadata = Map::new();
            if let Some(parent) = &group.parent {
                metadata.insert("parentGroupName".into(), json!(parent));
            }
            metadata.insert(
                "rootToParentThingGroups".into(),
                Value::Array(
                    ancestors
                        .iter()
                        .map(|g| json!({"groupName": g, "groupArn": registry.thing_group_arn(g)}))
                        .collect(),
                ),
            );
            metadata.insert("creationDate".into(), epoch(group.creation_date));
            Ok(json!({
                "thingGroupName": group.name,
                "thingGroupId": group.id,
                "thingGroupArn": registry.thing_group_arn(&group.name),
                "version": group.version,
                "thingGroupProperties": properties,
                "thingGroupMetadata": metadata,
            }))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateThingGroupBody {
    thing_group_properties: Option<GroupPropertiesBody>,
    expected_version: Option<i64>,
}

/// PATCH `/thing-groups/{thingGroupName}` → `{"version": N}`.
async fn update_thing_group(
    identity: Identity,
    Path(name): Path<String>,
    Json(body): Json<UpdateThingGroupBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(properties) = body.thing_group_properties else {
        return Err(ApiError::invalid_request(
            "thingGroupProperties is required",
        ));
    };
    let payload = properties.attribute_payload.map(AttributePayload::from);
    let description = properties.thing_group_description;
    let expected = body.expected_version;
    let version = identity
        .run(move |svc| {
            svc.registry()
                .update_thing_group(&name, description, payload.as_ref(), expected)
        })
        .await?;
    Ok(axum::Json(json!({ "version": version })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListThingGroupsQuery {
    max_results: Option<i64>,
    next_token: Option<String>,
    parent_group: Option<String>,
    name_prefix_filter: Option<String>,
    recursive: bool,
}

fn group_summaries(svc: &IdentityService, names: impl IntoIterator<Item = String>) -> Vec<Value> {
    names
        .into_iter()
        .map(|name| json!({"groupArn": svc.registry().thing_group_arn(&name), "groupName": name}))
        .collect()
}

/// GET `/thing-groups?parentGroup&namePrefixFilter&recursive&maxResults&nextToken`.
async fn list_thing_groups(
    identity: Identity,
    Query(query): Query<ListThingGroupsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let filter = GroupListFilter {
                parent_group: query.parent_group,
                name_prefix: query.name_prefix_filter,
                recursive: query.recursive,
            };
            let page = PageRequest {
                max_results: query.max_results,
                next_token: query.next_token,
            };
            let page = svc.registry().list_thing_groups(&filter, &page)?;
            let groups = group_summaries(svc, page.items.into_iter().map(|g| g.name));
            Ok(with_next_token(
                json!({ "thingGroups": groups }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DeleteThingGroupQuery {
    expected_version: Option<i64>,
}

/// DELETE `/thing-groups/{thingGroupName}?expectedVersion`.
async fn delete_thing_group(
    identity: Identity,
    Path(name): Path<String>,
    Query(query): Query<DeleteThingGroupQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| {
            svc.registry()
                .delete_thing_group(&name, query.expected_version)
        })
        .await?;
    Ok(axum::Json(json!({})))
}

/// Add/RemoveThingToThingGroup's body (`overrideDynamicGroups` is ignored: no dynamic groups).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MembershipBody {
    thing_group_name: Option<String>,
    thing_group_arn: Option<String>,
    thing_name: Option<String>,
    thing_arn: Option<String>,
}

impl MembershipBody {
    /// (group, thing) names, from names or ARNs.
    fn resolve(self, svc: &IdentityService) -> Result<(String, String), RegistryError> {
        let registry = svc.registry();
        let group = match (self.thing_group_name, self.thing_group_arn) {
            (Some(name), _) => name,
            (None, Some(arn)) => registry.name_from_arn(&arn, "thinggroup")?,
            (None, None) => {
                return Err(RegistryError::InvalidRequest(
                    "thingGroupName or thingGroupArn is required".into(),
                ));
            }
        };
        let thing = match (self.thing_name, self.thing_arn) {
            (Some(name), _) => name,
            (None, Some(arn)) => registry.name_from_arn(&arn, "thing")?,
            (None, None) => {
                return Err(RegistryError::InvalidRequest(
                    "thingName or thingArn is required".into(),
                ));
            }
        };
        Ok((group, thing))
    }
}

/// PUT `/thing-groups/addThingToThingGroup`.
async fn add_thing_to_thing_group(
    identity: Identity,
    Json(body): Json<MembershipBody>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| {
            let (group, thing) = body.resolve(svc)?;
            svc.registry().add_thing_to_thing_group(&group, &thing)
        })
        .await?;
    Ok(axum::Json(json!({})))
}

/// PUT `/thing-groups/removeThingFromThingGroup`.
async fn remove_thing_from_thing_group(
    identity: Identity,
    Json(body): Json<MembershipBody>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| {
            let (group, thing) = body.resolve(svc)?;
            svc.registry().remove_thing_from_thing_group(&group, &thing)
        })
        .await?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListThingsInGroupQuery {
    max_results: Option<i64>,
    next_token: Option<String>,
    recursive: bool,
}

/// GET `/thing-groups/{thingGroupName}/things?recursive&maxResults&nextToken`.
async fn list_things_in_thing_group(
    identity: Identity,
    Path(name): Path<String>,
    Query(query): Query<ListThingsInGroupQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = PageRequest {
                max_results: query.max_results,
                next_token: query.next_token,
            };
            let page = svc
                .registry()
                .list_things_in_thing_group(&name, query.recursive, &page)?;
            Ok(with_next_token(
                json!({ "things": page.items }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/things/{thingName}/thing-groups?maxResults&nextToken`.
async fn list_thing_groups_for_thing(
    identity: Identity,
    Path(thing): Path<String>,
    Query(page): Query<TokenPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = svc
                .registry()
                .list_thing_groups_for_thing(&thing, &page.request())?;
            let groups = group_summaries(svc, page.items);
            Ok(with_next_token(
                json!({ "thingGroups": groups }),
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
    async fn group_lifecycle_over_http() {
        let api = TestApi::new();
        let (status, _, root) = api
            .call(
                Method::POST,
                "/thing-groups/root",
                &[],
                Some(json!({"thingGroupProperties": {
                    "thingGroupDescription": "all",
                    "attributePayload": {"attributes": {"site": "lab"}}}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{root}");
        assert_eq!(
            root["thingGroupArn"],
            "arn:aws:iot:us-east-1:000000000000:thinggroup/root"
        );
        let (status, _, _) = api
            .call(
                Method::POST,
                "/thing-groups/child",
                &[],
                Some(json!({"parentGroupName": "root"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let (_, _, described) = api
            .call(Method::GET, "/thing-groups/child", &[], None)
            .await;
        assert_eq!(described["version"], 1);
        assert_eq!(described["thingGroupMetadata"]["parentGroupName"], "root");
        assert_eq!(
            described["thingGroupMetadata"]["rootToParentThingGroups"],
            json!([{"groupName": "root",
                    "groupArn": "arn:aws:iot:us-east-1:000000000000:thinggroup/root"}])
        );

        let (_, _, updated) = api
            .call(
                Method::PATCH,
                "/thing-groups/root",
                &[],
                Some(
                    json!({"thingGroupProperties": {"thingGroupDescription": "everything"},
                            "expectedVersion": 1}),
                ),
            )
            .await;
        assert_eq!(updated, json!({"version": 2}));

        api.call(Method::POST, "/things/t1", &[], None).await;
        let (status, _, _) = api
            .call(
                Method::PUT,
                "/thing-groups/addThingToThingGroup",
                &[],
                Some(json!({"thingGroupName": "child",
                            "thingArn": "arn:aws:iot:us-east-1:000000000000:thing/t1"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, in_root) = api
            .call(
                Method::GET,
                "/thing-groups/root/things?recursive=true",
                &[],
                None,
            )
            .await;
        assert_eq!(in_root, json!({"things": ["t1"]}));
        let (_, _, groups) = api
            .call(Method::GET, "/things/t1/thing-groups", &[], None)
            .await;
        assert_eq!(groups["thingGroups"][0]["groupName"], "child");
        let (_, _, children) = api
            .call(Method::GET, "/thing-groups?parentGroup=root", &[], None)
            .await;
        assert_eq!(children["thingGroups"].as_array().map(Vec::len), Some(1));

        let (status, code, _) = api
            .call(
                Method::PUT,
                "/thing-groups/addThingToThingGroup",
                &[],
                Some(json!({"thingGroupName": "child", "thingName": "missing"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
        let (status, code, _) = api
            .call(
                Method::PUT,
                "/thing-groups/removeThingFromThingGroup",
                &[],
                Some(json!({"thingName": "t1"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));

        let (status, _, _) = api
            .call(
                Method::PUT,
                "/thing-groups/removeThingFromThingGroup",
                &[],
                Some(json!({"thingGroupName": "child", "thingName": "t1"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = api
            .call(Method::DELETE, "/thing-groups/root", &[], None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "has a child");
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));
        for name in ["child", "root", "never-existed"] {
            let (status, _, _) = api
                .call(Method::DELETE, &format!("/thing-groups/{name}"), &[], None)
                .await;
            assert_eq!(status, StatusCode::OK, "{name}");
        }
    }
}
