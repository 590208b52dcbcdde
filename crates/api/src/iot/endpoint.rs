//! `DescribeEndpoint`: the host devices connect to.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::Query;

/// The endpoint types AWS IoT knows. All are served by this one host.
const ENDPOINT_TYPES: &[&str] = &[
    "iot:Data",
    "iot:Data-ATS",
    "iot:CredentialProvider",
    "iot:Jobs",
];

pub(super) fn routes() -> Router<IotState> {
    Router::new().route("/endpoint", get(describe_endpoint))
}

#[derive(Deserialize)]
struct DescribeEndpointQuery {
    #[serde(rename = "endpointType")]
    endpoint_type: Option<String>,
}

/// GET `/endpoint?endpointType=` (default `iot:Data-ATS`) → `{"endpointAddress": host}`.
async fn describe_endpoint(
    State(state): State<IotState>,
    Query(query): Query<DescribeEndpointQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    if let Some(kind) = &query.endpoint_type
        && !ENDPOINT_TYPES.iter().any(|t| t.eq_ignore_ascii_case(kind))
    {
        return Err(ApiError::invalid_request(format!(
            "Invalid endpointType '{kind}': expected one of {}.",
            ENDPOINT_TYPES.join(", ")
        )));
    }
    Ok(axum::Json(
        json!({ "endpointAddress": &*state.endpoint_host }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use fleetcore_core::AccountContext;
    use tower::ServiceExt;

    async fn get(uri: &str) -> (StatusCode, Value) {
        let app = super::super::routes(IotState::new(
            "iot.example.test",
            AccountContext::new("us-east-1", "000000000000"),
        ));
        let response = app
            .oneshot(
                Request::builder()
                    .uri(uri)
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn answers_the_host_for_every_endpoint_type() {
        for uri in [
            "/endpoint",
            "/endpoint?endpointType=iot%3AData-ATS",
            "/endpoint?endpointType=iot:Data",
            "/endpoint?endpointType=iot%3ACredentialProvider",
            "/endpoint?endpointType=iot%3AJobs",
        ] {
            let (status, body) = get(uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(
                body,
                json!({"endpointAddress": "iot.example.test"}),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_type_is_an_invalid_request() {
        let (status, body) = get("/endpoint?endpointType=iot%3ANope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("iot:Nope")),
            "{body}"
        );
    }
}
