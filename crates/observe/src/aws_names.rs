//! The platform's series that AWS also publishes, under AWS's namespace, metric name and
//! dimensions. One table: Prometheus name, AWS namespace and name, label renames, unit, scale.

use std::collections::BTreeMap;

use crate::series::SeriesKey;

/// One mapping row.
struct Mapping {
    prometheus: &'static str,
    namespace: &'static str,
    name: &'static str,
    /// Prometheus label to AWS dimension; labels not listed are dropped (and their values
    /// summed by the store's bucket aggregation).
    dimensions: &'static [(&'static str, &'static str)],
    /// Only samples whose label has this value (e.g. `outcome=success`).
    only: Option<(&'static str, &'static str)>,
    unit: &'static str,
    /// Multiplies the value (seconds to AWS's milliseconds).
    scale: f64,
    /// AWS also publishes the series without dimensions, summed over them (Lambda's
    /// metrics across all functions).
    also_summed: bool,
}

const fn map(
    prometheus: &'static str,
    namespace: &'static str,
    name: &'static str,
    dimensions: &'static [(&'static str, &'static str)],
) -> Mapping {
    Mapping {
        prometheus,
        namespace,
        name,
        dimensions,
        only: None,
        unit: "Count",
        scale: 1.0,
        also_summed: false,
    }
}

const RULE: &[(&str, &str)] = &[("rule", "RuleName")];
const RULE_ACTION: &[(&str, &str)] = &[("rule", "RuleName"), ("action", "ActionType")];
const DELIVERY_STREAM: &[(&str, &str)] = &[("delivery_stream", "DeliveryStreamName")];
const STREAM: &[(&str, &str)] = &[("stream", "StreamName")];
const FUNCTION: &[(&str, &str)] = &[("function", "FunctionName")];

/// The table (docs/METRICS.md lists it too).
const MAPPINGS: &[Mapping] = &[
    map(
        "fleetcore_mqtt_messages_received_total",
        "AWS/IoT",
        "PublishIn.Success",
        &[],
    ),
    map(
        "fleetcore_mqtt_messages_sent_total",
        "AWS/IoT",
        "PublishOut.Success",
        &[],
    ),
    map(
        "fleetcore_mqtt_connections_accepted_total",
        "AWS/IoT",
        "Connect.Success",
        &[],
    ),
    map(
        "fleetcore_rules_matched_total",
        "AWS/IoT",
        "TopicMatch",
        RULE,
    ),
    map(
        "fleetcore_ingest_shed_total",
        "AWS/IoT",
        "RuleMessageThrottled",
        &[],
    ),
    map(
        "fleetcore_rules_action_succeeded_total",
        "AWS/IoT",
        "Success",
        RULE_ACTION,
    ),
    map(
        "fleetcore_rules_action_failed_total",
        "AWS/IoT",
        "Failure",
        RULE_ACTION,
    ),
    // The stream store counts all streams together (no `stream` label yet): AWS's
    // stream-less aggregate.
    map(
        "fleetcore_stream_records_appended_total",
        "AWS/Kinesis",
        "IncomingRecords",
        STREAM,
    ),
    Mapping {
        unit: "Bytes",
        ..map(
            "fleetcore_stream_bytes_appended_total",
            "AWS/Kinesis",
            "IncomingBytes",
            STREAM,
        )
    },
    map(
        "fleetcore_archive_incoming_records_total",
        "AWS/Firehose",
        "IncomingRecords",
        DELIVERY_STREAM,
    ),
    map(
        "fleetcore_archive_delivered_records_total",
        "AWS/Firehose",
        "DeliveryToS3.Records",
        DELIVERY_STREAM,
    ),
    Mapping {
        only: Some(("outcome", "success")),
        ..map(
            "fleetcore_archive_objects_total",
            "AWS/Firehose",
            "DeliveryToS3.Success",
            DELIVERY_STREAM,
        )
    },
    // Lambda's metrics per FunctionName and, as AWS has them too, across all functions.
    Mapping {
        also_summed: true,
        ..map(
            "fleetcore_functions_invocations_total",
            "AWS/Lambda",
            "Invocations",
            FUNCTION,
        )
    },
    Mapping {
        also_summed: true,
        ..map(
            "fleetcore_functions_failures_total",
            "AWS/Lambda",
            "Errors",
            FUNCTION,
        )
    },
    Mapping {
        unit: "Milliseconds",
        scale: 1000.0,
        also_summed: true,
        ..map(
            "fleetcore_functions_invocation_seconds_sum",
            "AWS/Lambda",
            "Duration",
            FUNCTION,
        )
    },
];

/// A sample's AWS twin.
pub struct AwsSeries {
    /// Namespace, name and dimensions as AWS has them.
    pub series: SeriesKey,
    /// The AWS unit.
    pub unit: &'static str,
    /// The factor the value is multiplied by.
    pub scale: f64,
}

/// The AWS series a Prometheus sample is also published as: none when AWS has no such
/// series, two when AWS publishes it both with and without its dimensions.
pub fn aws_series(name: &str, labels: &BTreeMap<String, String>) -> Vec<AwsSeries> {
    let Some(mapping) = MAPPINGS.iter().find(|m| m.prometheus == name) else {
        return Vec::new();
    };
    let Some(dimensioned) = mapped(mapping, labels) else {
        return Vec::new();
    };
    let mut series = Vec::with_capacity(2);
    if mapping.also_summed && !dimensioned.series.dimensions.is_empty() {
        series.push(AwsSeries {
            series: SeriesKey::new(mapping.namespace, mapping.name, BTreeMap::new()),
            unit: mapping.unit,
            scale: mapping.scale,
        });
    }
    series.push(dimensioned);
    series
}

/// The series of `mapping` with the sample's labels as dimensions, unless the mapping's filter
/// excludes the sample.
fn mapped(mapping: &Mapping, labels: &BTreeMap<String, String>) -> Option<AwsSeries> {
    if let Some((label, value)) = mapping.only
        && labels.get(label).map(String::as_str) != Some(value)
    {
        return None;
    }
    let dimensions = mapping.dimensions.iter().filter_map(|(label, dimension)| {
        let value = labels.get(*label)?;
        let value = if *dimension == "ActionType" {
            action_type(value)
        } else {
            value.clone()
        };
        Some((dimension.to_string(), value))
    });
    Some(AwsSeries {
        series: SeriesKey::new(mapping.namespace, mapping.name, dimensions),
        unit: mapping.unit,
        scale: mapping.scale,
    })
}

/// The rules runtime labels an action `index:kind` (`0:kinesis`); AWS's ActionType is the
/// kind's name (`Kinesis`).
fn action_type(label: &str) -> String {
    let kind = label.split_once(':').map_or(label, |(_, k)| k);
    let mut chars = kind.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_labels_become_action_types() {
        let labels: BTreeMap<String, String> = [
            ("rule".to_string(), "r1".to_string()),
            ("action".to_string(), "1:republish".to_string()),
        ]
        .into();
        let mut found = aws_series("fleetcore_rules_action_failed_total", &labels);
        assert_eq!(found.len(), 1);
        let aws = found.remove(0);
        assert_eq!(aws.series.namespace, "AWS/IoT");
        assert_eq!(aws.series.name, "Failure");
        assert_eq!(aws.series.dimensions["ActionType"], "Republish");
        assert_eq!(aws.series.dimensions["RuleName"], "r1");
    }

    #[test]
    fn filtered_rows_need_their_label() {
        let ok: BTreeMap<String, String> = [
            ("delivery_stream".to_string(), "d".to_string()),
            ("outcome".to_string(), "success".to_string()),
        ]
        .into();
        assert_eq!(aws_series("fleetcore_archive_objects_total", &ok).len(), 1);
        let failed: BTreeMap<String, String> = [
            ("delivery_stream".to_string(), "d".to_string()),
            ("outcome".to_string(), "failure".to_string()),
        ]
        .into();
        assert!(aws_series("fleetcore_archive_objects_total", &failed).is_empty());
        assert!(aws_series("fleetcore_mqtt_connections", &BTreeMap::new()).is_empty());
    }

    #[test]
    fn lambda_series_come_per_function_and_summed() {
        let labels: BTreeMap<String, String> =
            [("function".to_string(), "enrich".to_string())].into();
        let found = aws_series("fleetcore_functions_invocations_total", &labels);
        let dimensions: Vec<_> = found.iter().map(|a| &a.series.dimensions).collect();
        assert_eq!(found.len(), 2);
        assert!(dimensions[0].is_empty());
        assert_eq!(dimensions[1]["FunctionName"], "enrich");
    }
}
