//! TagResource, UntagResource, ListTagsForResource (`?resourceArn=`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::no_content;
use crate::Analytics;
use crate::resources::tag_list;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct ArnQuery {
    resource_arn: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TagsBody {
    tags: Value,
}

pub(super) async fn list(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ArnQuery>,
) -> Result<Response, ApiError> {
    let tags: Vec<Value> = analytics
        .tags(&query.resource_arn)?
        .into_iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    Ok(axum::Json(json!({"tags": tags})).into_response())
}

pub(super) async fn tag(
    State(analytics): State<Arc<Analytics>>,
    Query(query): Query<ArnQuery>,
    Json(body): Json<TagsBody>,
) -> Result<Response, ApiError> {
    analytics
        .tag(&query.resource_arn, tag_list(&body.tags)?)
        .await?;
    Ok(no_content())
}

pub(super) async fn untag(
    State(analytics): State<Arc<Analytics>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    // tagKeys repeats (`tagKeys=a&tagKeys=b`), which a struct query cannot hold.
    let mut arn = String::new();
    let mut keys = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "resourceArn" => arn = value.into_owned(),
            "tagKeys" => keys.push(value.into_owned()),
            _ => {}
        }
    }
    analytics.untag(&arn, &keys).await?;
    Ok(no_content())
}
