//! Topic rule destinations: CreateTopicRuleDestination, GetTopicRuleDestination,
//! ListTopicRuleDestinations, UpdateTopicRuleDestination, ConfirmTopicRuleDestination,
//! DeleteTopicRuleDestination (HTTP destinations; VPC destinations are refused). Shapes follow
//! the botocore `iot` 2015-05-28 model; the one mapping of [`DestinationError`] is here.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use fleetcore_rules::destinations::{DestinationError, DestinationRecord, TopicRuleDestinations};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

impl From<DestinationError> for ApiError {
    fn from(error: DestinationError) -> ApiError {
        let message = error.to_string();
        match error {
            DestinationError::InvalidRequest(_) => ApiError::invalid_request(message),
            DestinationError::NotFound(_) => ApiError::not_found(message),
            DestinationError::AlreadyExists { .. } => ApiError::new(
                "ResourceAlreadyExistsException",
                StatusCode::CONFLICT,
                message,
            ),
            DestinationError::Conflict(_) => ApiError::conflict(message),
            DestinationError::Store(_) | DestinationError::Corrupt { .. } => {
                tracing::error!(error = %message, "topic rule destination operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

/// The destinations, taken from [`IotState`]; 500 when the binary did not configure them.
struct Destinations {
    destinations: Arc<TopicRuleDestinations>,
    state: IotState,
}

impl FromRequestParts<IotState> for Destinations {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &IotState) -> Result<Self, ApiError> {
        let destinations = state
            .destinations
            .clone()
            .ok_or_else(|| ApiError::internal("topic rule destinations are not configured"))?;
        Ok(Destinations {
            destinations,
            state: state.clone(),
        })
    }
}

impl Destinations {
    /// Runs `op` on a blocking thread (store writes fsync), inside the runtime (confirmation
    /// messages are spawned on it).
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Arc<TopicRuleDestinations>, &str) -> Result<T, DestinationError>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        let destinations = Arc::clone(&self.destinations);
        let base = self.state.api_base_url.to_string();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _entered = runtime.enter();
            op(&destinations, &base)
        })
        .await
        .map_err(|e| ApiError::internal(format!("destination operation aborted: {e}")))?
        .map_err(ApiError::from)
    }
}

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route(
            "/destinations",
            get(list_destinations)
                .post(create_destination)
                .patch(update_destination),
        )
        .route(
            "/destinations/{*arn}",
            get(get_destination).delete(delete_destination),
        )
        .route("/confirmdestination/{*token}", get(confirm_destination))
}

fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// The `TopicRuleDestination` shape.
fn shape(record: &DestinationRecord) -> Value {
    let mut body = Map::new();
    body.insert("arn".into(), json!(record.arn));
    body.insert("status".into(), json!(record.status.as_str()));
    body.insert("createdAt".into(), seconds(record.created_at_ms));
    body.insert("lastUpdatedAt".into(), seconds(record.last_updated_at_ms));
    if let Some(reason) = &record.status_reason {
        body.insert("statusReason".into(), json!(reason));
    }
    body.insert(
        "httpUrlProperties".into(),
        json!({"confirmationUrl": record.confirmation_url}),
    );
    Value::Object(body)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    destination_configuration: Option<Value>,
}

/// POST `/destinations`.
async fn create_destination(
    destinations: Destinations,
    Json(input): Json<CreateInput>,
) -> Result<axum::Json<Value>, ApiError> {
    let configuration = input.destination_configuration.unwrap_or(Value::Null);
    if configuration.get("vpcConfiguration").is_some() {
        return Err(ApiError::invalid_request(
            "VPC topic rule destinations are not supported by this server",
        ));
    }
    let url = configuration
        .get("httpUrlConfiguration")
        .and_then(|h| h.get("confirmationUrl"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid_request(
                "destinationConfiguration.httpUrlConfiguration.confirmationUrl is required",
            )
        })?
        .to_string();
    let prefix = destinations
        .state
        .account
        .iot_arn("ruledestination/http/")
        .to_string();
    let record = destinations
        .run(move |d, base| d.create(&prefix, &url, base))
        .await?;
    Ok(axum::Json(json!({"topicRuleDestination": shape(&record)})))
}

/// GET `/destinations/{arn+}`.
async fn get_destination(
    destinations: Destinations,
    Path(arn): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = destinations.run(move |d, _| d.get(&arn)).await?;
    Ok(axum::Json(json!({"topicRuleDestination": shape(&record)})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListParams {
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// GET `/destinations?maxResults&nextToken` (the token is the last ARN of the page).
async fn list_destinations(
    destinations: Destinations,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = params.max_results.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("maxResults must be 1 to 1000"));
    }
    let all = destinations.run(|d, _| Ok(d.list())).await?;
    let page: Vec<&DestinationRecord> = all
        .iter()
        .filter(|r| params.next_token.as_ref().is_none_or(|t| r.arn > *t))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let items: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|r| {
            let mut summary = shape(r);
            if let Some(map) = summary.as_object_mut()
                && let Some(http) = map.remove("httpUrlProperties")
            {
                map.insert("httpUrlSummary".into(), http);
            }
            summary
        })
        .collect();
    let mut body = json!({"destinationSummaries": items});
    if more && let (Some(last), Some(map)) = (page.get(limit - 1), body.as_object_mut()) {
        map.insert("nextToken".into(), json!(last.arn));
    }
    Ok(axum::Json(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateInput {
    arn: String,
    status: String,
}

/// PATCH `/destinations` with `{arn, status}`.
async fn update_destination(
    destinations: Destinations,
    Json(input): Json<UpdateInput>,
) -> Result<axum::Json<Value>, ApiError> {
    destinations
        .run(move |d, base| d.update(&input.arn, &input.status, base))
        .await?;
    Ok(axum::Json(json!({})))
}

/// GET `/confirmdestination/{confirmationToken+}`.
async fn confirm_destination(
    destinations: Destinations,
    Path(token): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    destinations.run(move |d, _| d.confirm(&token)).await?;
    Ok(axum::Json(json!({})))
}

/// DELETE `/destinations/{arn+}`.
async fn delete_destination(
    destinations: Destinations,
    Path(arn): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    destinations.run(move |d, _| d.delete(&arn)).await?;
    Ok(axum::Json(json!({})))
}
