//! Firehose request shapes and the DeliveryStreamDescription response.

use fleetcore_archive::config::{S3Destination, Tag};
use fleetcore_archive::{
    CreateDeliveryStream, DESTINATION_ID, DeliveryStream, Source, UpdateDestination,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::invalid;
use crate::error::ApiError;

/// Destinations Firehose has and fleetcore does not deliver to.
const OTHER_DESTINATIONS: &[&str] = &[
    "RedshiftDestinationConfiguration",
    "ElasticsearchDestinationConfiguration",
    "AmazonopensearchserviceDestinationConfiguration",
    "SplunkDestinationConfiguration",
    "HttpEndpointDestinationConfiguration",
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
    "IcebergDestinationConfiguration",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateInput {
    delivery_stream_name: Option<String>,
    delivery_stream_type: Option<String>,
    kinesis_stream_source_configuration: Option<KinesisSource>,
    extended_s3_destination_configuration: Option<S3Destination>,
    s3_destination_configuration: Option<S3Destination>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KinesisSource {
    #[serde(rename = "KinesisStreamARN")]
    kinesis_stream_arn: String,
    #[serde(rename = "RoleARN", default)]
    role_arn: String,
}

impl CreateInput {
    pub(super) fn into_request(self) -> Result<CreateDeliveryStream, ApiError> {
        let name = self
            .delivery_stream_name
            .ok_or_else(|| invalid("DeliveryStreamName is required"))?;
        if let Some(other) = OTHER_DESTINATIONS
            .iter()
            .find(|d| self.other.contains_key(**d))
        {
            return Err(invalid(format!(
                "{other} is not supported: fleetcore delivers to S3 (ExtendedS3DestinationConfiguration)"
            )));
        }
        let destination = match (
            self.extended_s3_destination_configuration,
            self.s3_destination_configuration,
        ) {
            (Some(d), None) | (None, Some(d)) => d,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give ExtendedS3DestinationConfiguration or S3DestinationConfiguration, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "a destination is required: ExtendedS3DestinationConfiguration",
                ));
            }
        };
        let kinesis_source = match (
            self.delivery_stream_type.as_deref().unwrap_or("DirectPut"),
            self.kinesis_stream_source_configuration,
        ) {
            ("DirectPut", None) => None,
            ("KinesisStreamAsSource", Some(k)) => Some((k.kinesis_stream_arn, k.role_arn)),
            ("KinesisStreamAsSource", None) => {
                return Err(invalid(
                    "KinesisStreamSourceConfiguration is required for KinesisStreamAsSource",
                ));
            }
            ("DirectPut", Some(_)) => {
                return Err(invalid(
                    "KinesisStreamSourceConfiguration is only for KinesisStreamAsSource",
                ));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "DeliveryStreamType {other} is not supported (DirectPut, KinesisStreamAsSource)"
                )));
            }
        };
        Ok(CreateDeliveryStream {
            name,
            kinesis_source,
            destination,
            tags: self.tags,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UpdateInput {
    delivery_stream_name: String,
    current_delivery_stream_version_id: String,
    destination_id: String,
    extended_s3_destination_update: Option<Map<String, Value>>,
    s3_destination_update: Option<Map<String, Value>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl UpdateInput {
    pub(super) fn into_request(self) -> Result<UpdateDestination, ApiError> {
        if let Some(other) = self.other.keys().find(|k| k.ends_with("DestinationUpdate")) {
            return Err(invalid(format!(
                "{other} is not supported: fleetcore delivers to S3 (ExtendedS3DestinationUpdate)"
            )));
        }
        let update = match (
            self.extended_s3_destination_update,
            self.s3_destination_update,
        ) {
            (Some(u), None) | (None, Some(u)) => u,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give ExtendedS3DestinationUpdate or S3DestinationUpdate, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "a destination update is required: ExtendedS3DestinationUpdate",
                ));
            }
        };
        Ok(UpdateDestination {
            name: self.delivery_stream_name,
            current_version_id: self.current_delivery_stream_version_id,
            destination_id: self.destination_id,
            update,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeInput {
    pub(super) delivery_stream_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DeleteInput {
    pub(super) delivery_stream_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListInput {
    pub(super) limit: Option<i64>,
    pub(super) delivery_stream_type: Option<String>,
    pub(super) exclusive_start_delivery_stream_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RecordInput {
    pub(super) data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PutRecordInput {
    pub(super) delivery_stream_name: String,
    pub(super) record: RecordInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PutRecordBatchInput {
    pub(super) delivery_stream_name: String,
    pub(super) records: Vec<RecordInput>,
}

/// `DeliveryStreamDescription`: the destination as given, with the members Firehose always
/// describes (buffering hints, compression, encryption) filled with their defaults.
pub(super) fn describe(stream: &DeliveryStream) -> Value {
    let mut destination = serde_json::to_value(&stream.destination).unwrap_or_else(|_| json!({}));
    if let Some(d) = destination.as_object_mut() {
        let hints = d.entry("BufferingHints").or_insert_with(|| json!({}));
        if let Some(h) = hints.as_object_mut() {
            h.entry("SizeInMBs").or_insert(json!(5));
            h.entry("IntervalInSeconds").or_insert(json!(300));
        }
        d.entry("CompressionFormat")
            .or_insert(json!("UNCOMPRESSED"));
        d.entry("EncryptionConfiguration")
            .or_insert(json!({"NoEncryptionConfig": "NoEncryption"}));
        d.entry("Prefix").or_insert(json!(""));
    }
    let plain_s3: Map<String, Value> = destination
        .as_object()
        .map(|d| {
            d.iter()
                .filter(|(k, _)| {
                    [
                        "RoleARN",
                        "BucketARN",
                        "Prefix",
                        "ErrorOutputPrefix",
                        "BufferingHints",
                        "CompressionFormat",
                        "EncryptionConfiguration",
                        "CloudWatchLoggingOptions",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let created = stream.created_millis as f64 / 1000.0;
    let mut description = json!({
        "DeliveryStreamName": stream.name,
        "DeliveryStreamARN": stream.arn,
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
        "DeliveryStreamType": stream.source.type_name(),
        "VersionId": stream.version.to_string(),
        "CreateTimestamp": created,
        "Destinations": [{
            "DestinationId": DESTINATION_ID,
            "S3DestinationDescription": plain_s3,
            "ExtendedS3DestinationDescription": destination,
        }],
        "HasMoreDestinations": false,
    });
    if let Source::KinesisStream {
        stream_arn,
        role_arn,
        ..
    } = &stream.source
    {
        description["Source"] = json!({"KinesisStreamSourceDescription": {
            "KinesisStreamARN": stream_arn,
            "RoleARN": role_arn,
            "DeliveryStartTimestamp": created,
        }});
    }
    description
}
