//! Invoke: `RequestResponse` (the result, `X-Amz-Function-Error` when the function failed,
//! `X-Amz-Log-Result` with `LogType: Tail`), `Event` (queued, 202) and `DryRun` (checked, 204).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use fleetcore_api::ApiError;
use fleetcore_api::extract::Query;

use super::LambdaState;
use super::functions::QualifierQuery;
use crate::FunctionsError;
use crate::logs;
use crate::model::FunctionRef;
use crate::runtime::WhenBusy;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) async fn invoke(
    State(state): State<LambdaState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reference = FunctionRef::parse(&name, query.qualifier())?;
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(ApiError::new(
                "InvalidRequestContentException",
                StatusCode::BAD_REQUEST,
                "Could not parse request body into json: the payload is not valid JSON",
            )
            .with_field("Type", "User"));
        }
        body
    };
    let client_context = header(&headers, "x-amz-client-context")
        .map(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| {
                    FunctionsError::InvalidParameter(
                        "Client context must be a valid Base64-encoded JSON object.".into(),
                    )
                })
        })
        .transpose()?;
    match header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => {}
        "Event" => {
            state.functions.invoke_async(reference, payload).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "DryRun" => {
            state.functions.resolve(&reference)?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        other => {
            return Err(FunctionsError::InvalidParameter(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to \
                 satisfy constraint: Member must satisfy enum value set: [Event, \
                 RequestResponse, DryRun]"
            ))
            .into());
        }
    }
    let tail = match header(&headers, "x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(FunctionsError::InvalidParameter(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy \
                 constraint: Member must satisfy enum value set: [Tail, None]"
            ))
            .into());
        }
    };
    let invoked = state
        .functions
        .invoke(&reference, payload, client_context, WhenBusy::Refuse)
        .await?;
    let mut response = (StatusCode::OK, invoked.outcome.payload).into_response();
    let out = response.headers_mut();
    out.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&invoked.executed_version) {
        out.insert("x-amz-executed-version", v);
    }
    if let Some(kind) = invoked.outcome.function_error {
        out.insert("x-amz-function-error", HeaderValue::from_static(kind));
    }
    if tail {
        let encoded = base64::engine::general_purpose::STANDARD.encode(logs::tail(&invoked.log));
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            out.insert("x-amz-log-result", v);
        }
    }
    Ok(response)
}
