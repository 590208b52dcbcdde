//! The `kinesis` service (JSON 1.1, `X-Amz-Target: Kinesis_20131202.<Op>`, signing name
//! `kinesis`): Kinesis Data Streams over any [`fleetcore_stream::Stream`] backend. Stream
//! management lives in [`streams`], records and iterators in [`records`]; iterators and
//! pagination tokens are sealed by [`token`].

mod errors;
mod names;
mod records;
mod shapes;
mod streams;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetcore_stream::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::RequestContext;
use crate::error::ApiError;
pub use errors::invalid_argument;
use token::TokenCodec;

/// Largest request body: a PutRecords of [`fleetcore_stream::MAX_PUT_BYTES`] in base64 (4/3),
/// plus the JSON envelope of 500 records.
pub const BODY_LIMIT: usize = fleetcore_stream::MAX_PUT_BYTES * 4 / 3 + (512 << 10);

/// What the `kinesis` handlers share.
#[derive(Clone)]
pub struct KinesisState {
    /// The stream store.
    pub streams: Arc<dyn Stream>,
    /// Seals shard iterators and pagination tokens.
    pub tokens: Arc<TokenCodec>,
}

impl KinesisState {
    /// Serves `streams`, sealing tokens with `tokens`.
    pub fn new(streams: Arc<dyn Stream>, tokens: TokenCodec) -> KinesisState {
        KinesisState {
            streams,
            tokens: Arc::new(tokens),
        }
    }
}

/// The router of the `kinesis` service; register it with
/// `ControlPlane::service_with_body_limit("kinesis", routes(state), BODY_LIMIT)`.
pub fn routes(state: KinesisState) -> Router {
    Router::new().route(
        "/",
        post(
            move |ctx: RequestContext, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    match operation(&state, &ctx, &headers, &body).await {
                        Ok(value) => json_response(value),
                        Err(error) => ctx.error(error).into_response(),
                    }
                }
            },
        ),
    )
}

async fn operation(
    state: &KinesisState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let op = target
        .strip_prefix("Kinesis_20131202.")
        .ok_or_else(|| errors::unknown_operation(target))?;
    match op {
        "CreateStream" => streams::create(state, ctx, parse(body)?).await,
        "DeleteStream" => streams::delete(state, ctx, parse(body)?).await,
        "DescribeStream" => streams::describe(state, ctx, parse(body)?).await,
        "DescribeStreamSummary" => streams::describe_summary(state, ctx, parse(body)?).await,
        "ListStreams" => streams::list(state, ctx, parse(body)?).await,
        "ListShards" => streams::list_shards(state, ctx, parse(body)?).await,
        "IncreaseStreamRetentionPeriod" => {
            streams::change_retention(state, ctx, parse(body)?, true).await
        }
        "DecreaseStreamRetentionPeriod" => {
            streams::change_retention(state, ctx, parse(body)?, false).await
        }
        "UpdateShardCount" => streams::update_shard_count(state, ctx, parse(body)?).await,
        "PutRecord" => records::put_record(state, ctx, parse(body)?).await,
        "PutRecords" => records::put_records(state, ctx, parse(body)?).await,
        "GetShardIterator" => records::get_shard_iterator(state, ctx, parse(body)?).await,
        "GetRecords" => records::get_records(state, ctx, parse(body)?).await,
        _ => Err(errors::unknown_operation(target)),
    }
}

/// The request body as `T`; malformed JSON is a `SerializationException` (as AWS answers).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| errors::serialization(format!("{e}")))
}

fn json_response(value: Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}
