//! `DescribeEndpoint`: the host devices connect to, for the endpoint types this server serves.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::IotState;
use crate::error::ApiError;
use crate::extract::Query;

/// The endpoint types this server serves: the MQTT broker and device data (one host).
const ENDPOINT_TYPES: &[&str] = &["iot:Data", "iot:Data-ATS"];

/// Endpoint types AWS IoT has and this server does not serve, with what is missing.
const UNSERVED: &[(&str, &str)] = &[
    (
        "iot:CredentialProvider",
        "the credentials provider (role aliases exchanging a device certificate for AWS credentials)",
    ),
    ("iot:Jobs", "the jobs service"),
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
        if let Some((name, missing)) = UNSERVED.iter().find(|(t, _)| t.eq_ignore_ascii_case(kind)) {
            return Err(ApiError::invalid_request(format!(
                "This server does not serve endpoint type '{name}': it has no {missing}. Served: {}.",
                ENDPOINT_TYPES.join(", ")
            )));
        }
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
    async fn answers_the_host_for_every_served_endpoint_type() {
        for uri in [
            "/endpoint",
            "/endpoint?endpointType=iot%3AData-ATS",
            "/endpoint?endpointType=iot:Data",
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
    async fn an_unserved_type_is_an_invalid_request_saying_what_is_missing() {
        for (uri, words) in [
            (
                "/endpoint?endpointType=iot%3ACredentialProvider",
                "credentials provider",
            ),
            ("/endpoint?endpointType=iot%3AJobs", "jobs"),
        ] {
            let (status, body) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains(words), "{uri}: {body}");
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
