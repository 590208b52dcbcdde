//! Extractors for service handlers whose rejections are AWS-shaped [`ApiError`]s (axum's own
//! answer in plain text, which SDKs cannot parse).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::context::RequestContext;
use crate::error::{ApiError, Protocol};

/// A JSON request body. Unlike `axum::Json` it does not require a `Content-Type` (boto3 sends
/// none on some operations) and reads an empty body as `{}` (all members absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let protocol = req
            .extensions()
            .get::<RequestContext>()
            .map_or(Protocol::RestJson, |c| c.protocol);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid_request(e.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Json)
            .map_err(|e| match protocol {
                Protocol::RestJson | Protocol::Query => {
                    ApiError::invalid_request(format!("The request body is not valid: {e}"))
                        .shaped(protocol)
                }
                Protocol::Json11 => ApiError::new(
                    "SerializationException",
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("The request body is not valid: {e}"),
                )
                .json11(),
            })
    }
}

/// Query parameters; a missing or malformed one is a 400 `InvalidRequestException`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Body {
        thing_type_name: Option<String>,
    }

    async fn extract(body: &'static str) -> Result<Body, ApiError> {
        let req = Request::builder()
            .body(axum::body::Body::from(body))
            .expect("request");
        Json::<Body>::from_request(req, &()).await.map(|Json(b)| b)
    }

    #[tokio::test]
    async fn json_needs_no_content_type_and_reads_empty_as_no_members() {
        assert_eq!(extract("").await.expect("empty"), Body::default());
        assert_eq!(
            extract(r#"{"thingTypeName":"sensor"}"#)
                .await
                .expect("json")
                .thing_type_name
                .as_deref(),
            Some("sensor")
        );
        let err = extract("{nope").await.expect_err("malformed");
        assert_eq!(err.code, "InvalidRequestException");
    }

    #[tokio::test]
    async fn query_rejections_are_invalid_requests() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Q {
            n: u32,
        }
        let (mut parts, ()) = Request::builder()
            .uri("/x?n=abc")
            .body(())
            .expect("request")
            .into_parts();
        let err = Query::<Q>::from_request_parts(&mut parts, &())
            .await
            .err()
            .expect("rejected");
        assert_eq!(err.code, "InvalidRequestException");
    }
}
