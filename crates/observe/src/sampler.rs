//! The sampler: every resolution period it reads the platform's metrics registry (the
//! Prometheus exposition `/metrics` serves), turns counters into per-period deltas, gauges into
//! values and histograms/summaries into their per-period sum and count, and stores them under
//! the namespace `fleetcore` (metric = Prometheus name, dimensions = labels) and, where AWS has
//! the metric, under AWS's namespace and name too ([`crate::aws_names`]).

use std::collections::{BTreeMap, HashMap};

use crate::aws_names;
use crate::series::{SeriesKey, StatSet};
use crate::store::Point;

/// The namespace of the platform's own series.
pub const NAMESPACE: &str = "fleetcore";

/// One sample line of the exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (with `_sum` / `_count` for summaries and histograms).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// True for a cumulative value (counter, summary/histogram sum and count).
    pub cumulative: bool,
}

/// Parses the Prometheus text exposition format (what `metrics-exporter-prometheus` renders).
/// Quantile and bucket lines are skipped: a period's sum and count are what is stored.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                kinds.insert(name, kind);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        if labels.contains_key("quantile") || name.ends_with("_bucket") {
            continue;
        }
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .filter(|b| matches!(kinds.get(b), Some(&"summary") | Some(&"histogram")));
        let cumulative = match base {
            Some(_) => true,
            None => kinds.get(name).is_some_and(|k| *k == "counter"),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            cumulative,
        });
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Turns successive registry readings into stored points.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<String, f64>,
}

impl Sampler {
    /// The points of one reading taken at `now` covering the period that starts at
    /// `period_start`: counters as the increase since the last reading (all of the value at
    /// the first reading: counters start at zero with the process), gauges as they are.
    pub fn points(&mut self, text: &str, period_start: f64) -> Vec<Point> {
        let samples = parse_exposition(text);
        let mut values = Vec::with_capacity(samples.len());
        for sample in &samples {
            let value = if sample.cumulative {
                let key = format!("{}{:?}", sample.name, sample.labels);
                let before = self.previous.insert(key, sample.value).unwrap_or(0.0);
                // A counter that went down was reset: all of its value is new.
                if sample.value >= before {
                    sample.value - before
                } else {
                    sample.value
                }
            } else {
                sample.value
            };
            values.push(value);
        }
        let mut points = Vec::with_capacity(samples.len() * 2);
        let point = |series: SeriesKey, unit: &str, stats: StatSet| Point {
            series,
            unit: Some(unit.to_string()),
            timestamp: period_start,
            stats,
            high_resolution: false,
        };
        for (sample, &value) in samples.iter().zip(&values) {
            let unit = if sample.cumulative { "Count" } else { "None" };
            points.push(point(
                SeriesKey::new(NAMESPACE, &sample.name, sample.labels.clone()),
                unit,
                StatSet::one(value),
            ));
            for aws in aws_names::aws_series(&sample.name, &sample.labels) {
                // A summary's sum is spread over its events (Lambda Duration: one value per
                // invocation, so Average is the mean duration); no events, no datapoint.
                let stats = match sample.name.strip_suffix("_sum") {
                    Some(base) if sample.cumulative => {
                        let count_name = format!("{base}_count");
                        let count = samples
                            .iter()
                            .zip(&values)
                            .find(|(s, _)| s.name == count_name && s.labels == sample.labels)
                            .map_or(0.0, |(_, v)| *v);
                        if count <= 0.0 {
                            break;
                        }
                        let mean = value * aws.scale / count;
                        StatSet {
                            count,
                            sum: value * aws.scale,
                            min: mean,
                            max: mean,
                        }
                    }
                    _ => StatSet::one(value * aws.scale),
                };
                points.push(point(aws.series, aws.unit, stats));
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE fleetcore_mqtt_messages_received_total counter
fleetcore_mqtt_messages_received_total 10
# TYPE fleetcore_mqtt_connections gauge
fleetcore_mqtt_connections 3
# TYPE fleetcore_rules_matched_total counter
fleetcore_rules_matched_total{rule=\"r\\\"1\"} 4
# TYPE fleetcore_functions_invocation_seconds summary
fleetcore_functions_invocation_seconds{quantile=\"0.5\"} 0.1
fleetcore_functions_invocation_seconds_sum 0.5
fleetcore_functions_invocation_seconds_count 2
";

    #[test]
    fn parses_counters_gauges_and_summaries() {
        let samples = parse_exposition(TEXT);
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[2].labels["rule"], "r\"1");
        assert!(samples[0].cumulative);
        assert!(!samples[1].cumulative);
        assert!(samples[3].cumulative && samples[4].cumulative);
    }

    #[test]
    fn counters_become_deltas_and_aws_series_appear() {
        let mut sampler = Sampler::default();
        let first = sampler.points(TEXT, 0.0);
        let publish_in = |points: &[Point]| {
            points
                .iter()
                .find(|p| p.series.namespace == "AWS/IoT" && p.series.name == "PublishIn.Success")
                .map(|p| p.stats.sum)
        };
        assert_eq!(publish_in(&first), Some(10.0));
        let second = sampler.points(
            &TEXT.replace("received_total 10", "received_total 25"),
            10.0,
        );
        assert_eq!(publish_in(&second), Some(15.0));
        let third = sampler.points(TEXT, 20.0);
        assert_eq!(
            publish_in(&third),
            Some(10.0),
            "a reset counter counts whole"
        );
        let gauge = third
            .iter()
            .find(|p| p.series.name == "fleetcore_mqtt_connections")
            .expect("gauge");
        assert_eq!(gauge.stats.sum, 3.0);
        let duration = first
            .iter()
            .find(|p| p.series.name == "Duration")
            .expect("Duration");
        assert_eq!(duration.stats.count, 2.0);
        assert_eq!(duration.stats.statistic("Average"), Some(250.0));
        assert!(
            !second.iter().any(|p| p.series.name == "Duration"),
            "no invocations, no Duration"
        );
        let topic_match = third
            .iter()
            .find(|p| p.series.name == "TopicMatch")
            .expect("TopicMatch");
        assert_eq!(topic_match.series.dimensions["RuleName"], "r\"1");
    }
}
