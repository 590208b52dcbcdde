//! The `firehose` service (JSON 1.1, `X-Amz-Target: Firehose_20150804.<Op>`): delivery streams
//! served by [`fleetcore_archive::Archive`]. One `POST /` route dispatches on the operation name.

mod shapes;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use fleetcore_archive::{
    Archive, ArchiveError, CreateDeliveryStream, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::Json;
use shapes::{
    CreateInput, DeleteInput, DescribeInput, ListInput, PutRecordBatchInput, PutRecordInput,
    UpdateInput, describe,
};

/// Largest request body: PutRecordBatch carries up to 4 MiB of records, base64-encoded.
pub const BODY_LIMIT: usize = 6 << 20;

const TARGET_PREFIX: &str = "Firehose_20150804.";

/// The router of the `firehose` service; register it with
/// `ControlPlane::service_with_body_limit("firehose", routes(archive), BODY_LIMIT)`.
pub fn routes(archive: Arc<Archive>) -> Router {
    Router::new().route("/", post(handle)).with_state(archive)
}

async fn handle(
    State(archive): State<Arc<Archive>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or("");
    let result = match operation {
        "CreateDeliveryStream" => create(&archive, body).await,
        "DescribeDeliveryStream" => input(body).and_then(|i: DescribeInput| {
            let stream = archive.describe(&i.delivery_stream_name).map_err(error)?;
            Ok(json!({ "DeliveryStreamDescription": describe(&stream) }))
        }),
        "ListDeliveryStreams" => input(body).and_then(|i: ListInput| list(&archive, &i)),
        "DeleteDeliveryStream" => match input::<DeleteInput>(body) {
            Ok(i) => archive
                .delete(&i.delivery_stream_name)
                .await
                .map(|()| json!({}))
                .map_err(error),
            Err(e) => Err(e),
        },
        "UpdateDestination" => update_destination(&archive, body).await,
        "PutRecord" => put_record(&archive, body).await,
        "PutRecordBatch" => put_record_batch(&archive, body).await,
        other => Err(ApiError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            format!("Firehose has no operation {other:?}"),
        )
        .json11()),
    };
    match result {
        Ok(value) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            )],
            value.to_string(),
        )
            .into_response(),
        Err(e) => e.json11().into_response(),
    }
}

async fn create(archive: &Archive, body: Value) -> Result<Value, ApiError> {
    let i: CreateInput = input(body)?;
    let request: CreateDeliveryStream = i.into_request()?;
    let stream = archive.create(request).await.map_err(error)?;
    Ok(json!({ "DeliveryStreamARN": stream.arn }))
}

async fn update_destination(archive: &Archive, body: Value) -> Result<Value, ApiError> {
    let i: UpdateInput = input(body)?;
    archive
        .update_destination(i.into_request()?)
        .await
        .map_err(error)?;
    Ok(json!({}))
}

fn list(archive: &Archive, i: &ListInput) -> Result<Value, ApiError> {
    let limit = i.limit.unwrap_or(10);
    if !(1..=10_000).contains(&limit) {
        return Err(invalid(format!("Limit must be 1..=10000, not {limit}")));
    }
    let (names, more) = archive.list(
        i.delivery_stream_type.as_deref(),
        i.exclusive_start_delivery_stream_name.as_deref(),
        usize::try_from(limit).unwrap_or(10),
    );
    Ok(json!({ "DeliveryStreamNames": names, "HasMoreDeliveryStreams": more }))
}

async fn put_record(archive: &Archive, body: Value) -> Result<Value, ApiError> {
    let i: PutRecordInput = input(body)?;
    let data = decode_record(&i.record.data)?;
    let mut outcomes = archive
        .put_records(&i.delivery_stream_name, vec![data])
        .await
        .map_err(error)?;
    match outcomes.pop() {
        Some(Ok(id)) => Ok(json!({ "RecordId": id, "Encrypted": false })),
        Some(Err(refusal)) => Err(ApiError::new(
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.message,
        )),
        None => Err(ApiError::internal("the record was not stored")),
    }
}

async fn put_record_batch(archive: &Archive, body: Value) -> Result<Value, ApiError> {
    let i: PutRecordBatchInput = input(body)?;
    if i.records.is_empty() || i.records.len() > MAX_BATCH_RECORDS {
        return Err(invalid(format!(
            "Records must hold 1 to {MAX_BATCH_RECORDS} records, not {}",
            i.records.len()
        )));
    }
    let records = i
        .records
        .iter()
        .map(|r| decode_record(&r.data))
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = records.iter().map(Bytes::len).sum();
    if total > MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "the records add up to {total} bytes, more than the limit of {MAX_BATCH_BYTES}"
        )));
    }
    let outcomes = archive
        .put_records(&i.delivery_stream_name, records)
        .await
        .map_err(error)?;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    let responses: Vec<Value> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(id) => json!({ "RecordId": id }),
            Err(refusal) => json!({ "ErrorCode": refusal.code, "ErrorMessage": refusal.message }),
        })
        .collect();
    Ok(json!({ "FailedPutCount": failed, "Encrypted": false, "RequestResponses": responses }))
}

fn decode_record(data: &str) -> Result<Bytes, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            ApiError::new(
                "SerializationException",
                StatusCode::BAD_REQUEST,
                format!("Record.Data is not base64: {e}"),
            )
        })?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(invalid(format!(
            "a record holds {} bytes, more than the limit of {MAX_RECORD_BYTES}",
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// Reads the operation's input shape; a wrong member type is an `InvalidArgumentException`.
fn input<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| invalid(format!("the request is not valid: {e}")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidArgumentException", StatusCode::BAD_REQUEST, message)
}

/// The one place archive errors become Firehose error codes.
fn error(e: ArchiveError) -> ApiError {
    let (code, status) = match &e {
        ArchiveError::NotFound(_) => ("ResourceNotFoundException", StatusCode::BAD_REQUEST),
        ArchiveError::InUse(_) => ("ResourceInUseException", StatusCode::BAD_REQUEST),
        ArchiveError::InvalidArgument(_) => ("InvalidArgumentException", StatusCode::BAD_REQUEST),
        ArchiveError::ConcurrentModification(_) => {
            ("ConcurrentModificationException", StatusCode::BAD_REQUEST)
        }
        ArchiveError::LimitExceeded(_) => ("LimitExceededException", StatusCode::BAD_REQUEST),
        ArchiveError::Unavailable(_) => (
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        ArchiveError::Internal(_) => (
            "InternalFailureException",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    };
    ApiError::new(code, status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_archive::{DeliveryStream, Source};

    #[test]
    fn archive_errors_map_to_firehose_codes() {
        for (e, code, status) in [
            (
                ArchiveError::NotFound("x".into()),
                "ResourceNotFoundException",
                400,
            ),
            (
                ArchiveError::InUse("x".into()),
                "ResourceInUseException",
                400,
            ),
            (
                ArchiveError::InvalidArgument("x".into()),
                "InvalidArgumentException",
                400,
            ),
            (
                ArchiveError::ConcurrentModification("x".into()),
                "ConcurrentModificationException",
                400,
            ),
            (
                ArchiveError::LimitExceeded("x".into()),
                "LimitExceededException",
                400,
            ),
            (
                ArchiveError::Unavailable("x".into()),
                "ServiceUnavailableException",
                503,
            ),
            (
                ArchiveError::Internal("x".into()),
                "InternalFailureException",
                500,
            ),
        ] {
            let api = error(e);
            assert_eq!((api.code, api.status.as_u16()), (code, status));
        }
    }

    #[test]
    fn descriptions_fill_the_members_firehose_always_returns() {
        let destination = serde_json::from_value(json!({
            "RoleARN": "arn:aws:iam::000000000000:role/f",
            "BucketARN": "arn:aws:s3:::lake",
            "DynamicPartitioningConfiguration": {"Enabled": false},
        }))
        .expect("destination");
        let stream = DeliveryStream {
            name: "s".into(),
            arn: "arn:aws:firehose:us-east-1:000000000000:deliverystream/s".into(),
            source: Source::DirectPut {
                stream: "__firehose.s".into(),
            },
            created_millis: 1_500,
            version: 1,
            destination,
            tags: Vec::new(),
        };
        let d = describe(&stream);
        let ext = &d["Destinations"][0]["ExtendedS3DestinationDescription"];
        assert_eq!(
            ext["BufferingHints"],
            json!({"SizeInMBs": 5, "IntervalInSeconds": 300})
        );
        assert_eq!(ext["CompressionFormat"], "UNCOMPRESSED");
        assert_eq!(
            ext["DynamicPartitioningConfiguration"],
            json!({"Enabled": false})
        );
        let plain = &d["Destinations"][0]["S3DestinationDescription"];
        assert!(plain.get("DynamicPartitioningConfiguration").is_none());
        assert_eq!(plain["BucketARN"], "arn:aws:s3:::lake");
        assert_eq!(d["CreateTimestamp"], 1.5);
        assert_eq!(d["DeliveryStreamType"], "DirectPut");
        assert!(d.get("Source").is_none());
    }
}
