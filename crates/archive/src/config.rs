//! A delivery stream's configuration in Firehose's own JSON shape (so it is stored, validated and
//! described back exactly as the client sent it), and the validated [`DeliveryPlan`] the delivery
//! task runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ArchiveError;
use crate::parquet::{Column, ParquetCompression};
use crate::prefix::PrefixTemplate;
use crate::query::ExtractionQuery;
use crate::transform::LambdaProcessor;

/// The tag whose value lists the Parquet columns, `name:type` separated by spaces (Firehose
/// reads them from a Glue table, which fleetcore does not have).
pub const PARQUET_SCHEMA_TAG: &str = "fleetcore:parquet-schema";

/// `ExtendedS3DestinationConfiguration` (also accepts the members of the older
/// `S3DestinationConfiguration`, a subset). Members fleetcore does not act on (encryption,
/// CloudWatch logging, S3 backup) are kept and described back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct S3Destination {
    /// IAM role (required by the API; not used).
    #[serde(rename = "RoleARN", default)]
    pub role_arn: String,
    /// `arn:aws:s3:::bucket`.
    #[serde(rename = "BucketARN", default)]
    pub bucket_arn: String,
    /// Key prefix, possibly with `!{...}` expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Key prefix of records that failed (`!{firehose:error-output-type}` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_output_prefix: Option<String>,
    /// When to flush.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffering_hints: Option<BufferingHints>,
    /// UNCOMPRESSED, GZIP, Snappy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_format: Option<String>,
    /// Processors; fleetcore runs MetadataExtraction and AppendDelimiterToRecord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_configuration: Option<ProcessingConfiguration>,
    /// Record format conversion (Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_format_conversion_configuration: Option<DataFormatConversion>,
    /// Dynamic partitioning switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_partitioning_configuration: Option<DynamicPartitioning>,
    /// Overrides the object name's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// Everything else, kept as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `BufferingHints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BufferingHints {
    /// 1..=128 (default 5).
    #[serde(rename = "SizeInMBs", default, skip_serializing_if = "Option::is_none")]
    pub size_in_mbs: Option<i64>,
    /// 0..=900 (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_in_seconds: Option<i64>,
}

/// `ProcessingConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingConfiguration {
    /// Processors run only when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The processors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<Processor>,
}

/// `Processor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Processor {
    /// Processor type.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ProcessorParameter>,
}

/// `ProcessorParameter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessorParameter {
    /// Parameter name.
    pub parameter_name: String,
    /// Parameter value.
    pub parameter_value: String,
}

/// `DynamicPartitioningConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DynamicPartitioning {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Kept as sent (fleetcore retries until delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_options: Option<Value>,
}

/// `DataFormatConversionConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DataFormatConversion {
    /// On unless false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Glue table reference (kept; the columns come from [`PARQUET_SCHEMA_TAG`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_configuration: Option<Value>,
    /// Input deserializer (JSON either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format_configuration: Option<Value>,
    /// `{"Serializer": {"ParquetSerDe": {...}}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format_configuration: Option<Value>,
}

/// A delivery stream tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// How object bodies are compressed (`CompressionFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As is.
    Uncompressed,
    /// gzip (`.gz`).
    Gzip,
    /// Snappy framing format (`.snappy`).
    Snappy,
}

/// What an object holds.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordFormat {
    /// Records one after another, each ending in `\n`.
    JsonLines(Compression),
    /// One Parquet file per object; columns from the schema tag, or inferred per object.
    Parquet {
        /// Column chunk compression.
        compression: ParquetCompression,
        /// The columns, if configured.
        columns: Option<Vec<Column>>,
    },
}

/// The validated, ready-to-run form of a destination.
#[derive(Debug, Clone)]
pub struct DeliveryPlan {
    /// The bucket name (from the BucketARN).
    pub bucket: String,
    /// Where records go.
    pub prefix: PrefixTemplate,
    /// Where failed records go.
    pub error_prefix: PrefixTemplate,
    /// Flush when this many bytes are buffered.
    pub buffer_bytes: usize,
    /// Flush this long after the first buffered record arrived.
    pub buffer_interval: Duration,
    /// Object format.
    pub format: RecordFormat,
    /// Partition-key extraction (dynamic partitioning).
    pub extraction: Option<ExtractionQuery>,
    /// Object name extension, dot included.
    pub extension: String,
    /// The Lambda processor records go through before delivery.
    pub transform: Option<LambdaProcessor>,
}

impl S3Destination {
    /// This destination with the members of an `ExtendedS3DestinationUpdate` (or
    /// `S3DestinationUpdate`) replacing its own; members the update leaves out are kept, as
    /// Firehose merges an update into a destination of the same type.
    pub fn merged(&self, update: &Map<String, Value>) -> Result<S3Destination, ArchiveError> {
        let mut current = match serde_json::to_value(self) {
            Ok(Value::Object(members)) => members,
            Ok(_) | Err(_) => {
                return Err(ArchiveError::Internal(
                    "the stored destination is not a JSON object".into(),
                ));
            }
        };
        for (name, value) in update {
            current.insert(name.clone(), value.clone());
        }
        serde_json::from_value(Value::Object(current)).map_err(|e| {
            ArchiveError::InvalidArgument(format!("the destination update is not valid: {e}"))
        })
    }

    /// Validates the destination as Firehose does and compiles it.
    pub fn plan(&self, tags: &[Tag]) -> Result<DeliveryPlan, ArchiveError> {
        let invalid = |m: String| Err(ArchiveError::InvalidArgument(m));
        let bucket = match self.bucket_arn.strip_prefix("arn:aws:s3:::") {
            Some(b) if is_bucket_name(b) => b.to_string(),
            _ => {
                return invalid(format!(
                    "BucketARN {:?} is not an S3 bucket ARN (arn:aws:s3:::bucket)",
                    self.bucket_arn
                ));
            }
        };
        if self.role_arn.is_empty() {
            return invalid("RoleARN is required".into());
        }
        let hints = self.buffering_hints.unwrap_or(BufferingHints {
            size_in_mbs: None,
            interval_in_seconds: None,
        });
        let size_mb = hints.size_in_mbs.unwrap_or(5);
        let interval = hints.interval_in_seconds.unwrap_or(300);
        if !(1..=128).contains(&size_mb) {
            return invalid(format!(
                "BufferingHints.SizeInMBs must be 1..=128, not {size_mb}"
            ));
        }
        if !(0..=900).contains(&interval) {
            return invalid(format!(
                "BufferingHints.IntervalInSeconds must be 0..=900, not {interval}"
            ));
        }
        let prefix = PrefixTemplate::parse("Prefix", self.prefix.as_deref().unwrap_or(""))?;
        let error_text = self.error_output_prefix.as_deref().unwrap_or("");
        let error_prefix = PrefixTemplate::parse("ErrorOutputPrefix", error_text)?;
        if prefix.uses_error_output_type() {
            return invalid("Prefix cannot use !{firehose:error-output-type}".into());
        }
        if error_prefix.uses_partition_keys() {
            return invalid("ErrorOutputPrefix cannot use !{partitionKeyFromQuery:...}".into());
        }
        if prefix.has_expressions() && error_text.is_empty() {
            return invalid(
                "ErrorOutputPrefix is required when Prefix contains expressions".into(),
            );
        }
        let dynamic = self
            .dynamic_partitioning_configuration
            .as_ref()
            .and_then(|d| d.enabled)
            .unwrap_or(false);
        let (extraction, transform) = self.processors()?;
        if dynamic {
            let Some(query) = &extraction else {
                return invalid("dynamic partitioning needs a MetadataExtraction processor with a MetadataExtractionQuery".into());
            };
            if !prefix.uses_partition_keys() {
                return invalid("dynamic partitioning is enabled, but Prefix uses no !{partitionKeyFromQuery:...}".into());
            }
            for key in prefix.partition_key_names() {
                if !query.key_names().any(|k| k == key) {
                    return invalid(format!(
                        "Prefix uses partition key {key:?}, which the MetadataExtractionQuery does not extract"
                    ));
                }
            }
        } else if prefix.uses_partition_keys() {
            return invalid("Prefix uses !{partitionKeyFromQuery:...}, but DynamicPartitioningConfiguration is not enabled".into());
        }
        let compression = match self.compression_format.as_deref().unwrap_or("UNCOMPRESSED") {
            "UNCOMPRESSED" => Compression::Uncompressed,
            "GZIP" => Compression::Gzip,
            "Snappy" => Compression::Snappy,
            other => {
                return invalid(format!(
                    "CompressionFormat {other} is not supported (UNCOMPRESSED, GZIP, Snappy)"
                ));
            }
        };
        let format = match &self.data_format_conversion_configuration {
            Some(conversion) if conversion.enabled != Some(false) => {
                if compression != Compression::Uncompressed {
                    return invalid("CompressionFormat must be UNCOMPRESSED when record format conversion is enabled (the Parquet serializer compresses)".into());
                }
                RecordFormat::Parquet {
                    compression: parquet_compression(conversion)?,
                    columns: schema_from_tags(tags)?,
                }
            }
            _ => RecordFormat::JsonLines(compression),
        };
        let extension = match &self.file_extension {
            Some(ext) if !ext.is_empty() => {
                if !ext.starts_with('.')
                    || !ext[1..].bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"!-_.*'()".contains(&b)
                    })
                {
                    return invalid(format!("FileExtension {ext:?} must look like .ext"));
                }
                ext.clone()
            }
            _ => match &format {
                RecordFormat::JsonLines(Compression::Uncompressed) => String::new(),
                RecordFormat::JsonLines(Compression::Gzip) => ".gz".into(),
                RecordFormat::JsonLines(Compression::Snappy) => ".snappy".into(),
                RecordFormat::Parquet { .. } => ".parquet".into(),
            },
        };
        Ok(DeliveryPlan {
            bucket,
            prefix,
            error_prefix,
            buffer_bytes: usize::try_from(size_mb).unwrap_or(5) << 20,
            buffer_interval: Duration::from_secs(u64::try_from(interval).unwrap_or(300)),
            format,
            extraction: if dynamic { extraction } else { None },
            extension,
            transform,
        })
    }

    /// The MetadataExtraction processor's query and the Lambda processor, if processing is
    /// enabled and has them.
    fn processors(
        &self,
    ) -> Result<(Option<ExtractionQuery>, Option<LambdaProcessor>), ArchiveError> {
        let Some(processing) = &self.processing_configuration else {
            return Ok((None, None));
        };
        if processing.enabled == Some(false) {
            return Ok((None, None));
        }
        let mut query = None;
        let mut lambda = None;
        for processor in &processing.processors {
            match processor.kind.as_str() {
                "MetadataExtraction" => {
                    for p in &processor.parameters {
                        match p.parameter_name.as_str() {
                            "MetadataExtractionQuery" => {
                                query = Some(ExtractionQuery::parse(&p.parameter_value)?);
                            }
                            "JsonParsingEngine" if p.parameter_value == "JQ-1.6" => {}
                            other => {
                                return Err(ArchiveError::InvalidArgument(format!(
                                    "MetadataExtraction parameter {other}={} is not supported",
                                    p.parameter_value
                                )));
                            }
                        }
                    }
                }
                // Records are always newline-delimited (see the crate docs).
                "AppendDelimiterToRecord" => {}
                "Lambda" if lambda.is_some() => {
                    return Err(ArchiveError::InvalidArgument(
                        "only one Lambda processor is allowed".into(),
                    ));
                }
                "Lambda" => {
                    lambda = Some(LambdaProcessor::from_parameters(
                        processor
                            .parameters
                            .iter()
                            .map(|p| (p.parameter_name.as_str(), p.parameter_value.as_str())),
                    )?);
                }
                other => {
                    return Err(ArchiveError::InvalidArgument(format!(
                        "processor {other} is not supported (Lambda, MetadataExtraction, AppendDelimiterToRecord)"
                    )));
                }
            }
        }
        Ok((query, lambda))
    }
}

fn parquet_compression(
    conversion: &DataFormatConversion,
) -> Result<ParquetCompression, ArchiveError> {
    let serializer = conversion
        .output_format_configuration
        .as_ref()
        .and_then(|o| o.get("Serializer"));
    if serializer.and_then(|s| s.get("OrcSerDe")).is_some() {
        return Err(ArchiveError::InvalidArgument(
            "OrcSerDe is not supported: use ParquetSerDe".into(),
        ));
    }
    let compression = serializer
        .and_then(|s| s.get("ParquetSerDe"))
        .and_then(|p| p.get("Compression"))
        .and_then(Value::as_str)
        .unwrap_or("SNAPPY");
    match compression {
        "SNAPPY" => Ok(ParquetCompression::Snappy),
        "GZIP" => Ok(ParquetCompression::Gzip),
        "UNCOMPRESSED" => Ok(ParquetCompression::Uncompressed),
        other => Err(ArchiveError::InvalidArgument(format!(
            "ParquetSerDe.Compression {other} is not supported"
        ))),
    }
}

/// Columns from the [`PARQUET_SCHEMA_TAG`] tag, e.g. `device:string temp:double ts:timestamp`.
pub fn schema_from_tags(tags: &[Tag]) -> Result<Option<Vec<Column>>, ArchiveError> {
    let Some(tag) = tags.iter().find(|t| t.key == PARQUET_SCHEMA_TAG) else {
        return Ok(None);
    };
    let text = tag.value.as_deref().unwrap_or("");
    let mut columns: Vec<Column> = Vec::new();
    for item in text.split_whitespace() {
        let column = Column::parse(item).map_err(|why| {
            ArchiveError::InvalidArgument(format!("tag {PARQUET_SCHEMA_TAG}: {why}"))
        })?;
        if columns.iter().any(|c| c.name == column.name) {
            return Err(ArchiveError::InvalidArgument(format!(
                "tag {PARQUET_SCHEMA_TAG}: column {} appears twice",
                column.name
            )));
        }
        columns.push(column);
    }
    if columns.is_empty() {
        return Err(ArchiveError::InvalidArgument(format!(
            "tag {PARQUET_SCHEMA_TAG} lists no column (expected `name:type name:type`)"
        )));
    }
    Ok(Some(columns))
}

fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && !b.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dest(v: Value) -> S3Destination {
        serde_json::from_value(v).expect("shape")
    }

    fn base() -> Value {
        json!({"RoleARN": "arn:aws:iam::000000000000:role/f", "BucketARN": "arn:aws:s3:::lake"})
    }

    #[test]
    fn defaults_are_five_megabytes_and_five_minutes_uncompressed() {
        let plan = dest(base()).plan(&[]).expect("plan");
        assert_eq!(plan.bucket, "lake");
        assert_eq!(plan.buffer_bytes, 5 << 20);
        assert_eq!(plan.buffer_interval, Duration::from_secs(300));
        assert_eq!(
            plan.format,
            RecordFormat::JsonLines(Compression::Uncompressed)
        );
        assert_eq!(plan.extension, "");
    }

    #[test]
    fn dynamic_partitioning_needs_query_prefix_and_error_prefix() {
        let mut v = base();
        v["Prefix"] = json!("d=!{partitionKeyFromQuery:device}/");
        v["ErrorOutputPrefix"] = json!("err/");
        v["DynamicPartitioningConfiguration"] = json!({"Enabled": true});
        let no_query = dest(v.clone()).plan(&[]).expect_err("no processor");
        assert!(
            no_query.to_string().contains("MetadataExtraction"),
            "{no_query}"
        );
        v["ProcessingConfiguration"] = json!({"Enabled": true, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{device: .device.id}"},
            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]});
        let plan = dest(v.clone()).plan(&[]).expect("plan");
        assert!(plan.extraction.is_some());
        v["ErrorOutputPrefix"] = json!("");
        assert!(dest(v.clone()).plan(&[]).is_err());
        v["ErrorOutputPrefix"] = json!("err/");
        v["Prefix"] = json!("d=!{partitionKeyFromQuery:site}/");
        assert!(
            dest(v)
                .plan(&[])
                .expect_err("unknown key")
                .to_string()
                .contains("site")
        );
    }

    #[test]
    fn parquet_needs_uncompressed_and_reads_the_schema_tag() {
        let mut v = base();
        v["DataFormatConversionConfiguration"] = json!({"Enabled": true,
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "GZIP"}}}});
        let tags = [Tag {
            key: PARQUET_SCHEMA_TAG.into(),
            value: Some("device:string temp:double".into()),
        }];
        let plan = dest(v.clone()).plan(&tags).expect("plan");
        match plan.format {
            RecordFormat::Parquet {
                compression,
                columns,
            } => {
                assert_eq!(compression, ParquetCompression::Gzip);
                assert_eq!(columns.expect("columns").len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.extension, ".parquet");
        v["CompressionFormat"] = json!("GZIP");
        assert!(dest(v).plan(&tags).is_err());
        let bad = [Tag {
            key: PARQUET_SCHEMA_TAG.into(),
            value: Some("a:uuid".into()),
        }];
        assert!(schema_from_tags(&bad).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for (field, value) in [
            ("BucketARN", json!("arn:aws:s3:::Bad_Bucket")),
            ("BucketARN", json!("bucket")),
            ("BufferingHints", json!({"SizeInMBs": 0})),
            ("BufferingHints", json!({"IntervalInSeconds": 901})),
            ("CompressionFormat", json!("ZIP")),
            ("Prefix", json!("!{timestamp:yyyy}/")),
            ("FileExtension", json!("gz")),
        ] {
            let mut v = base();
            v[field] = value;
            assert!(
                matches!(dest(v).plan(&[]), Err(ArchiveError::InvalidArgument(_))),
                "{field}"
            );
        }
    }

    #[test]
    fn unknown_members_are_kept() {
        let mut v = base();
        v["EncryptionConfiguration"] = json!({"NoEncryptionConfig": "NoEncryption"});
        let d = dest(v.clone());
        assert_eq!(serde_json::to_value(&d).expect("ser"), v);
    }
}
