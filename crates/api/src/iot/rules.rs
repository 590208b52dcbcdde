//! Topic rules: CreateTopicRule, GetTopicRule, ListTopicRules, ReplaceTopicRule,
//! DeleteTopicRule, EnableTopicRule, DisableTopicRule. Shapes follow the botocore `iot`
//! 2015-05-28 model; the one mapping of [`RuleError`] to AWS error codes is here.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use fleetcore_rules::registry::{ListQuery, RuleError, RuleRegistry, TopicRule, TopicRulePayload};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

impl From<RuleError> for ApiError {
    fn from(error: RuleError) -> ApiError {
        let message = error.to_string();
        match error {
            RuleError::Sql(_) => {
                ApiError::new("SqlParseException", StatusCode::BAD_REQUEST, message)
            }
            RuleError::InvalidRequest(_) => ApiError::invalid_request(message),
            RuleError::AlreadyExists { .. } => ApiError::new(
                "ResourceAlreadyExistsException",
                StatusCode::CONFLICT,
                message,
            ),
            RuleError::NotFound { .. } => ApiError::not_found(message),
            RuleError::Store(_) | RuleError::Corrupt { .. } => {
                tracing::error!(error = %message, "topic rule operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

/// The rule registry, taken from [`IotState`]; 500 when the binary did not configure one.
struct Rules {
    registry: Arc<RuleRegistry>,
    state: IotState,
}

impl FromRequestParts<IotState> for Rules {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &IotState) -> Result<Self, ApiError> {
        let registry = state
            .rules
            .clone()
            .ok_or_else(|| ApiError::internal("the rules engine is not configured"))?;
        Ok(Rules {
            registry,
            state: state.clone(),
        })
    }
}

impl Rules {
    /// Runs `op` on a blocking thread (store writes fsync).
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&RuleRegistry) -> Result<T, RuleError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || op(&registry))
            .await
            .map_err(|e| ApiError::internal(format!("rule operation aborted: {e}")))?
            .map_err(ApiError::from)
    }

    fn arn(&self, name: &str) -> String {
        self.state
            .account
            .iot_arn(format!("rule/{name}"))
            .to_string()
    }
}

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route("/rules", get(list_topic_rules))
        .route(
            "/rules/{ruleName}",
            post(create_topic_rule)
                .get(get_topic_rule)
                .patch(replace_topic_rule)
                .delete(delete_topic_rule),
        )
        .route("/rules/{ruleName}/enable", post(enable_topic_rule))
        .route("/rules/{ruleName}/disable", post(disable_topic_rule))
}

/// `createdAt`: epoch seconds, as rest-json timestamps are sent.
fn created_at(rule: &TopicRule) -> Value {
    json!(rule.record.created_at_ms as f64 / 1000.0)
}

/// POST `/rules/{ruleName}`: the body is the `topicRulePayload`; tags in `x-amz-tagging`.
async fn create_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(payload): Json<TopicRulePayload>,
) -> Result<axum::Json<Value>, ApiError> {
    let tags = headers
        .get("x-amz-tagging")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid_request("x-amz-tagging is not valid text"))
        })
        .transpose()?;
    let arn = rules.arn(&name);
    let id = name.clone();
    rules
        .run(move |r| r.create(&name, &payload, tags))
        .await
        .map_err(|e| {
            if e.code == "ResourceAlreadyExistsException" {
                e.with_field("resourceId", id)
                    .with_field("resourceArn", arn)
            } else {
                e
            }
        })?;
    Ok(axum::Json(json!({})))
}

/// GET `/rules/{ruleName}`.
async fn get_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let rule = rules.run(move |r| r.get(&name)).await?;
    let record = &rule.record;
    let mut body = Map::new();
    body.insert("ruleName".into(), json!(record.name));
    body.insert("sql".into(), json!(record.sql));
    if let Some(d) = &record.description {
        body.insert("description".into(), json!(d));
    }
    body.insert("createdAt".into(), created_at(&rule));
    body.insert("actions".into(), json!(record.actions));
    body.insert("ruleDisabled".into(), json!(record.rule_disabled));
    body.insert("awsIotSqlVersion".into(), json!(record.aws_iot_sql_version));
    if let Some(e) = &record.error_action {
        body.insert("errorAction".into(), e.clone());
    }
    Ok(axum::Json(json!({
        "ruleArn": rules.arn(&record.name),
        "rule": Value::Object(body),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListQueryParams {
    topic: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    rule_disabled: Option<bool>,
}

/// GET `/rules?topic&maxResults&nextToken&ruleDisabled`.
async fn list_topic_rules(
    rules: Rules,
    Query(params): Query<ListQueryParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let query = ListQuery {
        topic: params.topic,
        rule_disabled: params.rule_disabled,
        max_results: params.max_results,
        next_token: params.next_token,
    };
    let page = rules.run(move |r| r.list(&query)).await?;
    let items: Vec<Value> = page
        .rules
        .iter()
        .map(|rule| {
            json!({
                "ruleArn": rules.arn(&rule.record.name),
                "ruleName": rule.record.name,
                "topicPattern": rule.topic_pattern(),
                "createdAt": created_at(rule),
                "ruleDisabled": rule.record.rule_disabled,
            })
        })
        .collect();
    let mut body = json!({ "rules": items });
    if let (Some(token), Some(map)) = (page.next_token, body.as_object_mut()) {
        map.insert("nextToken".into(), json!(token));
    }
    Ok(axum::Json(body))
}

/// PATCH `/rules/{ruleName}`: the body is the new `topicRulePayload`.
async fn replace_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
    Json(payload): Json<TopicRulePayload>,
) -> Result<axum::Json<Value>, ApiError> {
    rules.run(move |r| r.replace(&name, &payload)).await?;
    Ok(axum::Json(json!({})))
}

/// DELETE `/rules/{ruleName}`.
async fn delete_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    rules.run(move |r| r.delete(&name)).await?;
    Ok(axum::Json(json!({})))
}

/// POST `/rules/{ruleName}/enable`.
async fn enable_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    rules.run(move |r| r.set_disabled(&name, false)).await?;
    Ok(axum::Json(json!({})))
}

/// POST `/rules/{ruleName}/disable`.
async fn disable_topic_rule(
    rules: Rules,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    rules.run(move |r| r.set_disabled(&name, true)).await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use fleetcore_core::{AccountContext, RedbStore};
    use fleetcore_rules::registry::RuleRegistry;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::iot::IotState;

    async fn call(
        router: &axum::Router,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let code = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            code,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn rule_lifecycle_and_errors_over_http() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
        let registry = Arc::new(RuleRegistry::open(Arc::new(store)).expect("registry"));
        let state = IotState::new(
            "localhost",
            AccountContext::new("us-east-1", "000000000000"),
        )
        .with_rules(registry);
        let router = crate::iot::routes(state);
        let payload = json!({
            "sql": "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"republish": {"roleArn": "arn:aws:iam::1:role/r", "topic": "alerts"}}],
        });
        let (status, _, _) = call(&router, Method::POST, "/rules/hot", Some(payload.clone())).await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, body) = call(&router, Method::POST, "/rules/hot", Some(payload)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code.as_deref(), Some("ResourceAlreadyExistsException"));
        assert_eq!(
            body["resourceArn"],
            "arn:aws:iot:us-east-1:000000000000:rule/hot"
        );

        let (status, _, body) = call(&router, Method::GET, "/rules/hot", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["ruleArn"],
            "arn:aws:iot:us-east-1:000000000000:rule/hot"
        );
        assert_eq!(body["rule"]["ruleName"], "hot");
        assert_eq!(body["rule"]["ruleDisabled"], false);
        assert!(body["rule"]["createdAt"].is_number());

        let (status, code, body) = call(
            &router,
            Method::POST,
            "/rules/bad",
            Some(json!({"sql": "SELECT nope(1) FROM 'a'", "actions": []})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("SqlParseException"));
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("line 1:8")),
            "{body}"
        );

        let (status, _, _) = call(&router, Method::POST, "/rules/hot/disable", None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, listed) = call(&router, Method::GET, "/rules?ruleDisabled=true", None).await;
        assert_eq!(listed["rules"][0]["topicPattern"], "devices/+/telemetry");
        let (_, _, listed) = call(&router, Method::GET, "/rules?ruleDisabled=false", None).await;
        assert_eq!(listed["rules"], json!([]));

        let (status, _, _) = call(&router, Method::DELETE, "/rules/hot", None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = call(&router, Method::GET, "/rules/hot", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
    }
}
