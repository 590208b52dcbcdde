//! Turning a flushed buffer of records into the objects to write: records grouped by their
//! expanded prefix (arrival hour, partition keys), encoded; records that cannot be partitioned
//! or converted go, with the reason, to error objects under `ErrorOutputPrefix`.

use std::collections::BTreeMap;

use fleetcore_stream::Record;
use time::OffsetDateTime;

use crate::config::{Compression, DeliveryPlan, RecordFormat};
use crate::encode::{error_record, json_lines};
use crate::prefix::{ExpandContext, finish_key, object_timestamp};

/// `!{firehose:error-output-type}` of records whose partition keys could not be extracted.
pub const PARTITIONING_FAILED: &str = "partitioning-failed";
/// `!{firehose:error-output-type}` of records that could not be converted to Parquet.
pub const FORMAT_CONVERSION_FAILED: &str = "format-conversion-failed";

/// An object ready to write. Its key is fixed when it is built, so a retried write replaces the
/// same object instead of adding a second one.
#[derive(Debug, Clone)]
pub struct PendingObject {
    /// Full key in the bucket.
    pub key: String,
    /// The whole body.
    pub body: Vec<u8>,
    /// Records it holds.
    pub records: usize,
    /// Their input bytes.
    pub input_bytes: usize,
    /// For error objects, the error output type.
    pub error_output_type: Option<&'static str>,
}

/// Failed records that share an error object.
struct ErrorGroup {
    kind: &'static str,
    indices: Vec<usize>,
    lines: Vec<Vec<u8>>,
}

/// A record that goes to the error output instead of the destination, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its index in the flushed records.
    pub index: usize,
    /// `!{firehose:error-output-type}`.
    pub kind: &'static str,
    /// The error record's `errorCode`.
    pub code: &'static str,
    /// The error record's `errorMessage`.
    pub message: String,
}

/// Builds the objects for `records` of delivery stream `stream` (version `version`); the
/// `rejected` ones (a processor failed them) go to the error output.
pub fn build_objects(
    plan: &DeliveryPlan,
    stream: &str,
    version: u64,
    records: &[Record],
    rejected: Vec<Rejection>,
) -> Result<Vec<PendingObject>, String> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut skip = vec![false; records.len()];
    for r in &rejected {
        if let Some(s) = skip.get_mut(r.index) {
            *s = true;
        }
    }
    let mut failed: Vec<Rejection> = rejected;
    for (index, record) in records.iter().enumerate() {
        if skip[index] {
            continue;
        }
        let keys = match &plan.extraction {
            Some(query) => match query.extract(&record.data) {
                Ok(keys) => Some(keys),
                Err(e) => {
                    failed.push(Rejection {
                        index,
                        kind: PARTITIONING_FAILED,
                        code: "DynamicPartitioning.MetadataExtractionFailed",
                        message: e.0,
                    });
                    continue;
                }
            },
            None => None,
        };
        let ctx = ExpandContext {
            arrival: OffsetDateTime::from(record.arrival),
            partition_keys: keys.as_ref(),
            error_output_type: None,
        };
        match plan.prefix.expand(&ctx) {
            Ok(group) => groups.entry(group).or_default().push(index),
            Err(e) => failed.push(Rejection {
                index,
                kind: PARTITIONING_FAILED,
                code: "DynamicPartitioning.PrefixEvaluationFailed",
                message: e.0,
            }),
        }
    }

    let mut objects = Vec::new();
    for (group, indices) in groups {
        let body = match &plan.format {
            RecordFormat::JsonLines(compression) => {
                json_lines(indices.iter().map(|&i| &records[i].data[..]), *compression)
                    .map_err(|e| format!("encoding: {e}"))?
            }
            RecordFormat::Parquet {
                compression,
                columns,
            } => {
                let data: Vec<&[u8]> = indices.iter().map(|&i| &records[i].data[..]).collect();
                let converted = crate::parquet::convert(&data, columns.as_deref(), *compression)?;
                let failed_here: Vec<usize> = converted
                    .failures
                    .iter()
                    .map(|(i, _)| indices[*i])
                    .collect();
                for (i, why) in converted.failures {
                    failed.push(Rejection {
                        index: indices[i],
                        kind: FORMAT_CONVERSION_FAILED,
                        code: "DataFormatConversion.MalformedData",
                        message: why,
                    });
                }
                let Some(file) = converted.file else { continue };
                let kept: Vec<usize> = indices
                    .iter()
                    .copied()
                    .filter(|i| !failed_here.contains(i))
                    .collect();
                objects.push(pending(
                    stream,
                    version,
                    &group,
                    &plan.extension,
                    file,
                    records,
                    &kept,
                    None,
                ));
                continue;
            }
        };
        objects.push(pending(
            stream,
            version,
            &group,
            &plan.extension,
            body,
            records,
            &indices,
            None,
        ));
    }

    let error_compression = match plan.format {
        RecordFormat::JsonLines(c) => c,
        RecordFormat::Parquet { .. } => Compression::Uncompressed,
    };
    let mut error_groups: BTreeMap<String, ErrorGroup> = BTreeMap::new();
    for f in failed {
        let record = &records[f.index];
        let ctx = ExpandContext {
            arrival: OffsetDateTime::from(record.arrival),
            partition_keys: None,
            error_output_type: Some(f.kind),
        };
        let group = plan
            .error_prefix
            .expand(&ctx)
            .map_err(|e| format!("ErrorOutputPrefix: {}", e.0))?;
        let entry = error_groups.entry(group).or_insert_with(|| ErrorGroup {
            kind: f.kind,
            indices: Vec::new(),
            lines: Vec::new(),
        });
        entry.indices.push(f.index);
        let line = error_record(&record.data, record.arrival, f.code, &f.message);
        entry.lines.push(line);
    }
    for (
        group,
        ErrorGroup {
            kind,
            indices,
            lines,
        },
    ) in error_groups
    {
        let body = json_lines(lines.iter().map(Vec::as_slice), error_compression)
            .map_err(|e| format!("encoding: {e}"))?;
        objects.push(pending(
            stream,
            version,
            &group,
            extension_of(error_compression),
            body,
            records,
            &indices,
            Some(kind),
        ));
    }
    Ok(objects)
}

fn extension_of(compression: Compression) -> &'static str {
    match compression {
        Compression::Uncompressed => "",
        Compression::Gzip => ".gz",
        Compression::Snappy => ".snappy",
    }
}

#[allow(clippy::too_many_arguments)]
fn pending(
    stream: &str,
    version: u64,
    group: &str,
    extension: &str,
    body: Vec<u8>,
    records: &[Record],
    indices: &[usize],
    error_output_type: Option<&'static str>,
) -> PendingObject {
    let oldest = indices
        .iter()
        .map(|&i| records[i].arrival)
        .min()
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let key = format!(
        "{}{stream}-{version}-{}-{}{}",
        finish_key(group),
        object_timestamp(OffsetDateTime::from(oldest)),
        uuid::Uuid::new_v4(),
        extension
    );
    PendingObject {
        key,
        body,
        records: indices.len(),
        input_bytes: indices.iter().map(|&i| records[i].data.len()).sum(),
        error_output_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::S3Destination;
    use bytes::Bytes;
    use fleetcore_stream::SequenceNumber;
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn record(n: u128, secs: u64, data: &str) -> Record {
        Record {
            sequence: SequenceNumber(n),
            arrival: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            partition_key: "k".into(),
            data: Bytes::from(data.to_string()),
        }
    }

    fn plan(v: serde_json::Value) -> DeliveryPlan {
        let mut base = json!({"RoleARN": "arn:aws:iam::000000000000:role/f", "BucketARN": "arn:aws:s3:::lake"});
        base.as_object_mut()
            .expect("object")
            .extend(v.as_object().expect("object").clone());
        serde_json::from_value::<S3Destination>(base)
            .expect("shape")
            .plan(&[])
            .expect("plan")
    }

    #[test]
    fn records_are_split_by_arrival_hour_in_hive_layout() {
        let p = plan(json!({"Prefix": "raw/", "CompressionFormat": "GZIP"}));
        // 2026-11-27 03:59:59 and 04:00:00 UTC
        let records = [
            record(1, 1_795_751_999, "{\"a\":1}"),
            record(2, 1_795_752_000, "{\"a\":2}"),
        ];
        let objects = build_objects(&p, "s", 1, &records, Vec::new()).expect("build");
        assert_eq!(objects.len(), 2);
        assert!(
            objects[0]
                .key
                .starts_with("raw/year=2026/month=11/day=27/hour=03/s-1-2026-11-27-03-59-59-"),
            "{}",
            objects[0].key
        );
        assert!(objects[1].key.contains("hour=04/"), "{}", objects[1].key);
        assert!(
            objects
                .iter()
                .all(|o| o.key.ends_with(".gz") && o.records == 1)
        );
    }

    #[test]
    fn unpartitionable_records_go_to_the_error_output() {
        let p = plan(json!({
            "Prefix": "dev=!{partitionKeyFromQuery:device}/",
            "ErrorOutputPrefix": "err/!{firehose:error-output-type}/",
            "DynamicPartitioningConfiguration": {"Enabled": true},
            "ProcessingConfiguration": {"Enabled": true, "Processors": [{"Type": "MetadataExtraction",
                "Parameters": [{"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{device: .device}"}]}]}
        }));
        let records = [
            record(1, 0, r#"{"device":"a"}"#),
            record(2, 0, r#"{"device":"b"}"#),
            record(3, 0, r#"{"other":1}"#),
            record(4, 0, r#"{"device":"a"}"#),
        ];
        let objects = build_objects(&p, "s", 1, &records, Vec::new()).expect("build");
        let keys: Vec<(&str, usize)> = objects
            .iter()
            .map(|o| (o.key.split("/s-").next().expect("key"), o.records))
            .collect();
        assert_eq!(
            keys,
            [("dev=a", 2), ("dev=b", 1), ("err/partitioning-failed", 1)]
        );
        let err: serde_json::Value = serde_json::from_slice(&objects[2].body).expect("error line");
        assert_eq!(
            err["errorCode"],
            "DynamicPartitioning.MetadataExtractionFailed"
        );
        assert_eq!(objects[2].error_output_type, Some(PARTITIONING_FAILED));
    }
}
