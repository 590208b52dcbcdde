//! Security profiles as AWS writes them (behaviours, criteria, alert targets), their
//! validation with AWS's messages, and the compiled form the detector evaluates.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::DefenderError;
use crate::metric::{CloudMetric, CustomMetricType, DeviceMetric};

/// Most behaviours a profile holds (AWS's limit).
pub const MAX_BEHAVIORS: usize = 100;

/// A behaviour: a metric and the criteria of normal behaviour for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// The behaviour's name, unique in its profile.
    pub name: String,
    /// The metric watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// A dimension narrowing the metric (refused: not built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_dimension: Option<serde_json::Value>,
    /// What normal looks like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<Criteria>,
    /// Violations are recorded but not alerted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_alerts: Option<bool>,
    /// Metric export (refused when true: not built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_metric: Option<bool>,
}

/// The criteria of a behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Criteria {
    /// How the measured value relates to `value` or the statistic when all is normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison_operator: Option<String>,
    /// A static threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<MetricValue>,
    /// The window the metric is accumulated over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Violating datapoints in a row that raise the alarm (1 to 10, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_alarm: Option<i64>,
    /// Normal datapoints in a row that clear it (1 to 10, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_clear: Option<i64>,
    /// A threshold that is a percentile of the targeted devices' values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistical_threshold: Option<StatisticalThreshold>,
    /// ML Detect: `{"confidenceLevel": "LOW" | "MEDIUM" | "HIGH"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_detection_config: Option<serde_json::Value>,
}

/// `statisticalThreshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatisticalThreshold {
    /// `p0` ... `p100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
}

/// A metric value as AWS writes it (`count`, `cidrs`, `ports`, `number`, `numbers`,
/// `strings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// A count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// CIDR blocks (or addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// A number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<Vec<f64>>,
    /// Strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strings: Option<Vec<String>>,
}

/// `alertTargets`: only `SNS` exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertTarget {
    /// The SNS topic's ARN.
    pub alert_target_arn: String,
    /// The role AWS would assume (kept, not used: the server publishes itself).
    pub role_arn: String,
}

/// A comparison of a number with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberComparison {
    /// `less-than`.
    LessThan,
    /// `less-than-equals`.
    LessThanEquals,
    /// `greater-than`.
    GreaterThan,
    /// `greater-than-equals`.
    GreaterThanEquals,
}

impl NumberComparison {
    fn parse(op: &str) -> Option<NumberComparison> {
        Some(match op {
            "less-than" => NumberComparison::LessThan,
            "less-than-equals" => NumberComparison::LessThanEquals,
            "greater-than" => NumberComparison::GreaterThan,
            "greater-than-equals" => NumberComparison::GreaterThanEquals,
            _ => return None,
        })
    }

    /// Whether `value` is normal against `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            NumberComparison::LessThan => value < threshold,
            NumberComparison::LessThanEquals => value <= threshold,
            NumberComparison::GreaterThan => value > threshold,
            NumberComparison::GreaterThanEquals => value >= threshold,
        }
    }
}

/// What a behaviour checks, compiled from its criteria.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The metric against a fixed number.
    Static {
        /// The comparison that holds when all is normal.
        op: NumberComparison,
        /// The threshold.
        threshold: f64,
    },
    /// The metric against a percentile (0 to 100) of the targeted devices' values.
    Statistical {
        /// The comparison that holds when all is normal.
        op: NumberComparison,
        /// The percentile.
        percentile: f64,
    },
    /// Every address in (or, with `inside` false, outside) the CIDR blocks.
    Cidrs {
        /// `in-cidr-set` (true) or `not-in-cidr-set`.
        inside: bool,
        /// The blocks.
        nets: Vec<IpNet>,
    },
    /// Every port in (or, with `inside` false, outside) the set.
    Ports {
        /// `in-port-set` (true) or `not-in-port-set`.
        inside: bool,
        /// The ports.
        ports: Vec<u16>,
    },
    /// Every number in (or, with `inside` false, outside) the set.
    Numbers {
        /// `in-set` (true) or `not-in-set`.
        inside: bool,
        /// The numbers.
        numbers: Vec<f64>,
    },
    /// The metric within a band around the learned baseline of the targeted devices (ML
    /// Detect; see [`crate::model`]).
    Learned {
        /// How many spreads from the median are normal.
        band: f64,
    },
    /// Every string in (or, with `inside` false, outside) the set.
    Strings {
        /// `in-set` (true) or `not-in-set`.
        inside: bool,
        /// The strings.
        strings: Vec<String>,
    },
}

impl Check {
    /// Whether one address is normal.
    pub fn address_is_normal(inside: bool, nets: &[IpNet], ip: IpAddr) -> bool {
        nets.iter().any(|n| n.contains(&ip)) == inside
    }
}

/// The metric a behaviour watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A cloud-side metric the broker measures.
    Cloud(CloudMetric),
    /// A device-side metric of the devices' reports.
    Device(DeviceMetric),
    /// A custom metric (`cmet:<name>`) of the devices' reports.
    Custom {
        /// The name, without `cmet:`.
        name: String,
        /// Its type.
        kind: CustomMetricType,
    },
}

/// The shape of a metric's values, which fixes its operators and its `value` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `value.count`.
    Count,
    /// `value.number`.
    Number,
    /// `value.cidrs`.
    Addresses,
    /// `value.ports`.
    Ports,
    /// `value.numbers`.
    Numbers,
    /// `value.strings`.
    Strings,
}

impl Metric {
    fn shape(&self) -> Shape {
        match self {
            Metric::Cloud(CloudMetric::SourceIpAddress) => Shape::Addresses,
            Metric::Cloud(_) => Shape::Count,
            Metric::Device(DeviceMetric::DestinationIpAddresses) => Shape::Addresses,
            Metric::Device(DeviceMetric::ListeningTcpPorts | DeviceMetric::ListeningUdpPorts) => {
                Shape::Ports
            }
            Metric::Device(_) => Shape::Count,
            Metric::Custom { kind, .. } => match kind {
                CustomMetricType::Number => Shape::Number,
                CustomMetricType::NumberList => Shape::Numbers,
                CustomMetricType::StringList => Shape::Strings,
                CustomMetricType::IpAddressList => Shape::Addresses,
            },
        }
    }

    /// Whether `durationSeconds` is required (a window the metric is folded over), refused
    /// (`Some(false)`), or optional (`None`: the window in which the latest report counts).
    fn needs_duration(&self) -> Option<bool> {
        match self {
            Metric::Cloud(m) => Some(m.is_windowed()),
            Metric::Device(m) if m.is_windowed() => Some(true),
            _ => None,
        }
    }
}

/// A behaviour ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledBehavior {
    /// The behaviour as written (echoed in violations).
    pub behavior: Behavior,
    /// The metric.
    pub metric: Metric,
    /// The check.
    pub check: Check,
    /// The window in seconds (`durationSeconds`; 0 when not given).
    pub duration_seconds: u64,
    /// Violating datapoints in a row that raise the alarm.
    pub to_alarm: u32,
    /// Normal datapoints in a row that clear it.
    pub to_clear: u32,
}

impl CompiledBehavior {
    /// The AWS `behaviorCriteriaType` of the behaviour.
    pub fn criteria_type(&self) -> &'static str {
        match self.check {
            Check::Statistical { .. } => "STATISTICAL",
            Check::Learned { .. } => "MACHINE_LEARNING",
            _ => "STATIC",
        }
    }
}

fn invalid(message: impl Into<String>) -> DefenderError {
    DefenderError::Invalid(message.into())
}

/// Checks a profile or behaviour name against AWS's `[a-zA-Z0-9:_-]{1,128}`.
pub fn validate_name(field: &str, name: &str) -> Result<(), DefenderError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
    {
        return Err(invalid(format!(
            "{field} {name:?} must be 1 to 128 characters of [a-zA-Z0-9:_-]"
        )));
    }
    Ok(())
}

/// Checks `alertTargets`: only the `SNS` key, each with an SNS topic ARN and a role ARN.
pub fn validate_alert_targets(
    targets: &BTreeMap<String, AlertTarget>,
) -> Result<(), DefenderError> {
    for (kind, target) in targets {
        if kind != "SNS" {
            return Err(invalid(format!(
                "alertTargets key {kind:?} is not a valid AlertTargetType (SNS)"
            )));
        }
        if !target.alert_target_arn.starts_with("arn:")
            || !target.alert_target_arn.contains(":sns:")
        {
            return Err(invalid(format!(
                "alertTargetArn {:?} is not an SNS topic ARN",
                target.alert_target_arn
            )));
        }
        if !target.role_arn.starts_with("arn:") {
            return Err(invalid(format!(
                "roleArn {:?} is not a role ARN",
                target.role_arn
            )));
        }
    }
    Ok(())
}

/// The types of the custom metrics that exist, by name.
pub trait CustomMetricTypes {
    /// The type of custom metric `name`, if it exists.
    fn custom_metric_type(&self, name: &str) -> Option<CustomMetricType>;
}

impl<F: Fn(&str) -> Option<CustomMetricType>> CustomMetricTypes for F {
    fn custom_metric_type(&self, name: &str) -> Option<CustomMetricType> {
        self(name)
    }
}

/// Validates `behaviors` and compiles each, or says what is wrong with the first bad one;
/// `custom` says which custom metrics exist.
pub fn compile_behaviors(
    behaviors: &[Behavior],
    custom: &dyn CustomMetricTypes,
) -> Result<Vec<CompiledBehavior>, DefenderError> {
    if behaviors.len() > MAX_BEHAVIORS {
        return Err(invalid(format!(
            "a security profile holds at most {MAX_BEHAVIORS} behaviors, not {}",
            behaviors.len()
        )));
    }
    let mut names = HashSet::new();
    behaviors
        .iter()
        .map(|b| {
            if !names.insert(b.name.as_str()) {
                return Err(invalid(format!("behavior name {:?} is used twice", b.name)));
            }
            compile(b, custom)
        })
        .collect()
}

fn parse_metric(
    name: &str,
    custom: &dyn CustomMetricTypes,
    at: &dyn Fn(&str) -> String,
) -> Result<Metric, DefenderError> {
    if let Some(m) = CloudMetric::parse(name) {
        return Ok(Metric::Cloud(m));
    }
    if let Some(m) = DeviceMetric::parse(name) {
        return Ok(Metric::Device(m));
    }
    if let Some(custom_name) = name.strip_prefix("cmet:") {
        let kind = custom.custom_metric_type(custom_name).ok_or_else(|| {
            invalid(at(&format!(
                "custom metric {custom_name} does not exist (CreateCustomMetric first)"
            )))
        })?;
        return Ok(Metric::Custom {
            name: custom_name.to_string(),
            kind,
        });
    }
    Err(invalid(at(&format!("unknown metric {name:?}"))))
}

/// `in-<set>` (true) or `not-in-<set>` (false).
fn set_operator(op: &str, set: &str) -> Option<bool> {
    if op == format!("in-{set}") {
        Some(true)
    } else if op == format!("not-in-{set}") {
        Some(false)
    } else {
        None
    }
}

fn compile(
    b: &Behavior,
    custom: &dyn CustomMetricTypes,
) -> Result<CompiledBehavior, DefenderError> {
    validate_name("behavior name", &b.name)?;
    let at = |what: &str| format!("behavior {:?}: {what}", b.name);
    let metric_name = b
        .metric
        .as_deref()
        .ok_or_else(|| invalid(at("metric is required")))?;
    let metric = parse_metric(metric_name, custom, &at)?;
    if b.metric_dimension.is_some() {
        return Err(invalid(at(
            "metricDimension is not supported by this server",
        )));
    }
    if b.export_metric == Some(true) {
        return Err(invalid(at("exportMetric is not supported by this server")));
    }
    let c = b
        .criteria
        .as_ref()
        .ok_or_else(|| invalid(at("criteria is required")))?;
    if let Some(ml) = &c.ml_detection_config {
        return compile_learned(b, metric, c, ml, &at);
    }
    let datapoints = |field: &str, v: Option<i64>| -> Result<u32, DefenderError> {
        match v {
            None => Ok(1),
            Some(n @ 1..=10) => Ok(n as u32),
            Some(n) => Err(invalid(at(&format!(
                "{field} must be between 1 and 10, not {n}"
            )))),
        }
    };
    let to_alarm = datapoints(
        "consecutiveDatapointsToAlarm",
        c.consecutive_datapoints_to_alarm,
    )?;
    let to_clear = datapoints(
        "consecutiveDatapointsToClear",
        c.consecutive_datapoints_to_clear,
    )?;
    let op = c
        .comparison_operator
        .as_deref()
        .ok_or_else(|| invalid(at("criteria.comparisonOperator is required")))?;
    let duration_seconds = match (metric.needs_duration(), c.duration_seconds) {
        (_, Some(d)) if d <= 0 => {
            return Err(invalid(at(&format!(
                "durationSeconds must be positive, not {d}"
            ))));
        }
        (Some(false), Some(_)) => {
            return Err(invalid(at(&format!(
                "durationSeconds cannot be used with {metric_name}"
            ))));
        }
        (Some(true), None) => {
            return Err(invalid(at(&format!(
                "durationSeconds is required for {metric_name}"
            ))));
        }
        (_, d) => d.map_or(0, |d| d as u64),
    };
    let shape = metric.shape();
    let numeric = matches!(shape, Shape::Count | Shape::Number);
    let check = match (&c.value, &c.statistical_threshold) {
        (Some(_), Some(_)) => {
            return Err(invalid(at(
                "criteria takes either value or statisticalThreshold, not both",
            )));
        }
        (None, None) => {
            return Err(invalid(at(
                "criteria needs a value or a statisticalThreshold",
            )));
        }
        (Some(value), None) if numeric => {
            let op = NumberComparison::parse(op).ok_or_else(|| {
                invalid(at(&format!(
                    "comparisonOperator {op:?} does not apply to {metric_name} (less-than, less-than-equals, greater-than, greater-than-equals)"
                )))
            })?;
            let threshold = if shape == Shape::Count {
                value.count.map(|c| c as f64).ok_or_else(|| {
                    invalid(at(&format!("{metric_name} is compared with value.count")))
                })?
            } else {
                value.number.ok_or_else(|| {
                    invalid(at(&format!("{metric_name} is compared with value.number")))
                })?
            };
            Check::Static { op, threshold }
        }
        (Some(value), None) => {
            let (set, field) = match shape {
                Shape::Addresses => ("cidr-set", "cidrs"),
                Shape::Ports => ("port-set", "ports"),
                _ => (
                    "set",
                    if shape == Shape::Numbers {
                        "numbers"
                    } else {
                        "strings"
                    },
                ),
            };
            let inside = set_operator(op, set).ok_or_else(|| {
                invalid(at(&format!(
                    "comparisonOperator {op:?} does not apply to {metric_name} (in-{set}, not-in-{set})"
                )))
            })?;
            let missing = || invalid(at(&format!("value.{field} is required")));
            match shape {
                Shape::Addresses => {
                    let cidrs = value
                        .cidrs
                        .as_ref()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(missing)?;
                    let nets = cidrs
                        .iter()
                        .map(|c| {
                            parse_cidr(c)
                                .ok_or_else(|| invalid(at(&format!("{c:?} is not a CIDR block"))))
                        })
                        .collect::<Result<_, _>>()?;
                    Check::Cidrs { inside, nets }
                }
                Shape::Ports => Check::Ports {
                    inside,
                    ports: value
                        .ports
                        .clone()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(missing)?,
                },
                Shape::Numbers => Check::Numbers {
                    inside,
                    numbers: value
                        .numbers
                        .clone()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(missing)?,
                },
                _ => Check::Strings {
                    inside,
                    strings: value
                        .strings
                        .clone()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(missing)?,
                },
            }
        }
        (None, Some(stat)) => {
            if !numeric {
                return Err(invalid(at(&format!(
                    "statisticalThreshold does not apply to {metric_name}"
                ))));
            }
            let op = NumberComparison::parse(op).ok_or_else(|| {
                invalid(at(&format!(
                    "comparisonOperator {op:?} does not apply to a statisticalThreshold"
                )))
            })?;
            let statistic = stat.statistic.as_deref().unwrap_or_default();
            let percentile = parse_statistic(statistic).ok_or_else(|| {
                invalid(at(&format!(
                    "statisticalThreshold.statistic {statistic:?} must be one of p0, p0.1, p0.01, p1, p10, p50, p90, p99, p99.9, p99.99, p100"
                )))
            })?;
            Check::Statistical { op, percentile }
        }
    };
    Ok(CompiledBehavior {
        behavior: b.clone(),
        metric,
        check,
        duration_seconds,
        to_alarm,
        to_clear,
    })
}

/// An ML Detect behaviour: a numeric metric that is not custom, no threshold of its own.
fn compile_learned(
    b: &Behavior,
    metric: Metric,
    c: &Criteria,
    ml: &serde_json::Value,
    at: &dyn Fn(&str) -> String,
) -> Result<CompiledBehavior, DefenderError> {
    let confidence = ml["confidenceLevel"].as_str().unwrap_or_default();
    let band = crate::model::band_of(confidence).ok_or_else(|| {
        invalid(at(&format!(
            "mlDetectionConfig.confidenceLevel {confidence:?} must be LOW, MEDIUM or HIGH"
        )))
    })?;
    if matches!(metric, Metric::Custom { .. }) || metric.shape() != Shape::Count {
        return Err(invalid(at(
            "ML Detect applies to the numeric cloud-side and device-side metrics only",
        )));
    }
    if c.comparison_operator.is_some()
        || c.value.is_some()
        || c.statistical_threshold.is_some()
        || c.duration_seconds.is_some()
    {
        return Err(invalid(at(
            "an ML Detect behavior takes no comparisonOperator, value, statisticalThreshold or durationSeconds",
        )));
    }
    let datapoints = |field: &str, v: Option<i64>| -> Result<u32, DefenderError> {
        match v {
            None => Ok(1),
            Some(n @ 1..=10) => Ok(n as u32),
            Some(n) => Err(invalid(at(&format!(
                "{field} must be between 1 and 10, not {n}"
            )))),
        }
    };
    Ok(CompiledBehavior {
        behavior: b.clone(),
        metric,
        check: Check::Learned { band },
        duration_seconds: 0,
        to_alarm: datapoints(
            "consecutiveDatapointsToAlarm",
            c.consecutive_datapoints_to_alarm,
        )?,
        to_clear: datapoints(
            "consecutiveDatapointsToClear",
            c.consecutive_datapoints_to_clear,
        )?,
    })
}

/// `p50` -> 50.0, for the statistics AWS allows.
fn parse_statistic(text: &str) -> Option<f64> {
    const ALLOWED: [&str; 11] = [
        "p0", "p0.1", "p0.01", "p1", "p10", "p50", "p90", "p99", "p99.9", "p99.99", "p100",
    ];
    ALLOWED
        .contains(&text)
        .then(|| text[1..].parse().ok())
        .flatten()
}

/// A CIDR block, or a bare address as a /32 (/128).
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_custom(_: &str) -> Option<CustomMetricType> {
        None
    }

    fn custom(name: &str) -> Option<CustomMetricType> {
        match name {
            "temp" => Some(CustomMetricType::Number),
            "apps" => Some(CustomMetricType::StringList),
            _ => None,
        }
    }

    fn behavior(v: serde_json::Value) -> Behavior {
        serde_json::from_value(v).expect("behavior")
    }

    #[test]
    fn compiles_static_statistical_and_cidr_behaviors() {
        let compiled = compile_behaviors(
            &[
            behavior(json!({"name": "flood", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "less-than", "value": {"count": 100},
                             "durationSeconds": 300, "consecutiveDatapointsToAlarm": 2}})),
            behavior(json!({"name": "outlier", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "less-than-equals",
                             "statisticalThreshold": {"statistic": "p90"}, "durationSeconds": 300}})),
            behavior(json!({"name": "ips", "metric": "aws:source-ip-address",
                "criteria": {"comparisonOperator": "in-cidr-set", "value": {"cidrs": ["10.0.0.0/8", "127.0.0.1"]}}})),
        ],
            &no_custom,
        )
        .expect("valid");
        assert_eq!(
            compiled[0].check,
            Check::Static {
                op: NumberComparison::LessThan,
                threshold: 100.0
            }
        );
        assert_eq!((compiled[0].to_alarm, compiled[0].to_clear), (2, 1));
        assert_eq!(
            compiled[1].check,
            Check::Statistical {
                op: NumberComparison::LessThanEquals,
                percentile: 90.0
            }
        );
        let Check::Cidrs { inside, nets } = &compiled[2].check else {
            panic!("cidrs")
        };
        assert!(*inside);
        assert!(Check::address_is_normal(
            true,
            nets,
            "127.0.0.1".parse().expect("ip")
        ));
        assert!(!Check::address_is_normal(
            true,
            nets,
            "192.168.1.1".parse().expect("ip")
        ));
    }

    #[test]
    fn refuses_what_cannot_be_evaluated_with_the_reason() {
        let cases = [
            (
                json!({"name": "a", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}}}),
                "durationSeconds is required",
            ),
            (
                json!({"name": "a", "metric": "aws:all-bytes-out",
                "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}}}),
                "durationSeconds is required",
            ),
            (
                json!({"name": "a", "metric": "cmet:nope",
                "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}}),
                "does not exist",
            ),
            (
                json!({"name": "a", "metric": "cmet:temp",
                "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}}}),
                "value.number",
            ),
            (
                json!({"name": "a", "metric": "aws:listening-tcp-ports",
                "criteria": {"comparisonOperator": "in-cidr-set", "value": {"ports": [22]}}}),
                "in-port-set",
            ),
            (
                json!({"name": "a", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "in-cidr-set", "value": {"count": 1}, "durationSeconds": 300}}),
                "does not apply",
            ),
            (
                json!({"name": "a", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "less-than", "statisticalThreshold": {"statistic": "p42"}, "durationSeconds": 300}}),
                "p42",
            ),
            (
                json!({"name": "a", "metric": "aws:num-messages-sent",
                "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}, "durationSeconds": 300,
                             "consecutiveDatapointsToAlarm": 11}}),
                "between 1 and 10",
            ),
            (
                json!({"name": "a b", "metric": "aws:num-messages-sent"}),
                "[a-zA-Z0-9:_-]",
            ),
            (
                json!({"name": "a", "metric": "aws:num-messages-sent",
                "criteria": {"mlDetectionConfig": {"confidenceLevel": "SURE"}}}),
                "LOW, MEDIUM or HIGH",
            ),
            (
                json!({"name": "a", "metric": "aws:source-ip-address",
                "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}}),
                "numeric",
            ),
        ];
        for (b, expected) in cases {
            let err = compile_behaviors(&[behavior(b.clone())], &custom).expect_err("invalid");
            assert!(err.to_string().contains(expected), "{b}: {err}");
        }
        let twice = behavior(json!({"name": "a", "metric": "aws:num-disconnects",
            "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}, "durationSeconds": 300}}));
        assert!(compile_behaviors(&[twice.clone(), twice], &no_custom).is_err());
    }

    #[test]
    fn compiles_device_side_and_custom_metric_behaviors() {
        let compiled = compile_behaviors(
            &[
                behavior(json!({"name": "out", "metric": "aws:all-bytes-out",
                    "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 4096},
                                 "durationSeconds": 300}})),
                behavior(json!({"name": "ports", "metric": "aws:listening-tcp-ports",
                    "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [443, 8883]}}})),
                behavior(json!({"name": "temp", "metric": "cmet:temp",
                    "criteria": {"comparisonOperator": "less-than", "value": {"number": 80.5}}})),
                behavior(json!({"name": "apps", "metric": "cmet:apps",
                    "criteria": {"comparisonOperator": "not-in-set", "value": {"strings": ["telnetd"]}}})),
            ],
            &custom,
        )
        .expect("valid");
        assert_eq!(compiled[0].metric, Metric::Device(DeviceMetric::BytesOut));
        assert_eq!(compiled[0].duration_seconds, 300);
        assert_eq!(
            compiled[1].check,
            Check::Ports {
                inside: true,
                ports: vec![443, 8883]
            }
        );
        assert_eq!(
            compiled[2].check,
            Check::Static {
                op: NumberComparison::LessThan,
                threshold: 80.5
            }
        );
        assert_eq!(
            compiled[3].check,
            Check::Strings {
                inside: false,
                strings: vec!["telnetd".into()]
            }
        );
    }
}
