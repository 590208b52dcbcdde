//! PutMetricData, GetMetricData, GetMetricStatistics and ListMetrics.

use std::collections::{BTreeMap, HashMap};

use fleetcore_api::rpcv2::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::expr::{self, Series, Value};
use super::{Dimension, now_secs};
use crate::error::{ObserveError, invalid};
use crate::series::{STATISTICS, SeriesKey, StatSet};
use crate::store::{MetricStore, Point};

/// Most metric data items in one PutMetricData (AWS's limit).
const MAX_DATA: usize = 1000;
/// Most datapoints a query returns (AWS: 100,800 per GetMetricData call).
const MAX_DATAPOINTS: i64 = 100_800;

/// A metric as the API names it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metric {
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub metric_name: Option<String>,
    /// Its dimensions.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

impl Metric {
    /// The series this metric names.
    pub fn key(&self) -> Result<SeriesKey, ObserveError> {
        let namespace = self
            .namespace
            .clone()
            .ok_or_else(|| ObserveError::MissingParameter("Namespace is required.".into()))?;
        let name = self
            .metric_name
            .clone()
            .ok_or_else(|| ObserveError::MissingParameter("MetricName is required.".into()))?;
        dimensions_key(namespace, name, &self.dimensions)
    }
}

fn dimensions_key(
    namespace: String,
    name: String,
    dimensions: &[Dimension],
) -> Result<SeriesKey, ObserveError> {
    if dimensions.len() > 30 {
        return Err(invalid("A metric has at most 30 dimensions."));
    }
    let mut map = BTreeMap::new();
    for d in dimensions {
        let value = d
            .value
            .clone()
            .ok_or_else(|| invalid(format!("Dimension {} has no value.", d.name)))?;
        if map.insert(d.name.clone(), value).is_some() {
            return Err(invalid(format!("Dimension {} is given twice.", d.name)));
        }
    }
    Ok(SeriesKey {
        namespace,
        name,
        dimensions: map,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatisticValues {
    sample_count: f64,
    sum: f64,
    minimum: f64,
    maximum: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDatum {
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    timestamp: Option<Timestamp>,
    value: Option<f64>,
    statistic_values: Option<StatisticValues>,
    values: Option<Vec<f64>>,
    counts: Option<Vec<f64>>,
    unit: Option<String>,
    storage_resolution: Option<i64>,
}

/// PutMetricData's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutMetricDataInput {
    namespace: Option<String>,
    #[serde(default)]
    metric_data: Vec<MetricDatum>,
    #[serde(default)]
    entity_metric_data: Vec<Json>,
}

const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Refuses a unit CloudWatch does not know.
pub fn check_unit(unit: Option<&str>) -> Result<(), ObserveError> {
    match unit {
        Some(u) if !UNITS.contains(&u) => Err(invalid(format!(
            "The unit '{u}' is not a CloudWatch unit (StandardUnit)."
        ))),
        _ => Ok(()),
    }
}

fn check_value(v: f64) -> Result<f64, ObserveError> {
    // AWS: values must lie in -2^360..2^360; NaN and infinities are refused.
    if v.is_finite() && v.abs() <= 2f64.powi(360) {
        Ok(v)
    } else {
        Err(invalid(format!(
            "The value {v} is out of CloudWatch's range."
        )))
    }
}

/// Validates PutMetricData's input into points (nothing is stored if any datum is bad).
pub fn points(input: PutMetricDataInput, now: f64) -> Result<Vec<Point>, ObserveError> {
    let namespace = input
        .namespace
        .ok_or_else(|| ObserveError::MissingParameter("Namespace is required.".into()))?;
    if namespace.starts_with("AWS/") {
        return Err(invalid(
            "The namespace AWS/ is reserved for the platform's own metrics.",
        ));
    }
    if !input.entity_metric_data.is_empty() {
        return Err(invalid(
            "EntityMetricData is not supported by this server; use MetricData.",
        ));
    }
    if input.metric_data.is_empty() {
        return Err(ObserveError::MissingParameter(
            "MetricData is required.".into(),
        ));
    }
    if input.metric_data.len() > MAX_DATA {
        return Err(invalid(format!(
            "At most {MAX_DATA} metric data items per request."
        )));
    }
    let mut points = Vec::with_capacity(input.metric_data.len());
    for datum in input.metric_data {
        let name = datum
            .metric_name
            .ok_or_else(|| ObserveError::MissingParameter("MetricName is required.".into()))?;
        let series = dimensions_key(namespace.clone(), name, &datum.dimensions)?;
        check_unit(datum.unit.as_deref())?;
        let high_resolution = match datum.storage_resolution {
            None | Some(60) => false,
            Some(1) => true,
            Some(other) => {
                return Err(invalid(format!(
                    "StorageResolution must be 1 or 60, not {other}."
                )));
            }
        };
        let timestamp = datum.timestamp.map_or(now, |t| t.0);
        if timestamp < now - 14.0 * 86_400.0 || timestamp > now + 2.0 * 3600.0 {
            return Err(invalid(
                "The timestamp must be within the last two weeks and the next two hours.",
            ));
        }
        let stats = match (datum.value, datum.statistic_values, datum.values) {
            (Some(v), None, None) => vec![StatSet::one(check_value(v)?)],
            (None, Some(s), None) => {
                if s.sample_count <= 0.0 || s.minimum > s.maximum {
                    return Err(invalid(
                        "StatisticValues needs SampleCount > 0 and Minimum <= Maximum.",
                    ));
                }
                vec![StatSet {
                    count: check_value(s.sample_count)?,
                    sum: check_value(s.sum)?,
                    min: check_value(s.minimum)?,
                    max: check_value(s.maximum)?,
                }]
            }
            (None, None, Some(values)) => {
                if values.len() > 150 {
                    return Err(invalid("At most 150 Values per metric datum."));
                }
                let counts = datum.counts.unwrap_or_else(|| vec![1.0; values.len()]);
                if counts.len() != values.len() {
                    return Err(ObserveError::InvalidCombination(
                        "Counts must have as many items as Values.".into(),
                    ));
                }
                values
                    .iter()
                    .zip(&counts)
                    .map(|(v, c)| Ok(StatSet::repeated(check_value(*v)?, check_value(*c)?)))
                    .collect::<Result<Vec<_>, ObserveError>>()?
            }
            (None, None, None) => {
                return Err(ObserveError::MissingParameter(
                    "A metric datum needs Value, StatisticValues or Values.".into(),
                ));
            }
            _ => {
                return Err(ObserveError::InvalidCombination(
                    "Value, StatisticValues and Values are mutually exclusive.".into(),
                ));
            }
        };
        for stats in stats {
            points.push(Point {
                series: series.clone(),
                unit: datum.unit.clone(),
                timestamp,
                stats,
                high_resolution,
            });
        }
    }
    Ok(points)
}

/// The statistic sets of `key` per period in `[start, end)`, periods aligned to `start`.
pub fn period_stats(
    store: &MetricStore,
    key: &SeriesKey,
    start: i64,
    end: i64,
    period: i64,
) -> Result<BTreeMap<i64, StatSet>, ObserveError> {
    let mut out: BTreeMap<i64, StatSet> = BTreeMap::new();
    let Some(id) = store.id(key) else {
        return Ok(out);
    };
    for (ts, stats) in store.buckets(id, start, end, now_secs() as i64)? {
        let slot = start + (ts - start).div_euclid(period) * period;
        out.entry(slot)
            .and_modify(|s| s.merge(&stats))
            .or_insert(stats);
    }
    Ok(out)
}

fn check_period(period: i64, start: i64, end: i64) -> Result<(), ObserveError> {
    if period <= 0
        || (period >= 60 && period % 60 != 0)
        || (period < 60 && ![1, 5, 10, 30].contains(&period))
    {
        return Err(invalid(
            "The period must be 1, 5, 10, 30 or a multiple of 60 seconds.",
        ));
    }
    if end <= start {
        return Err(invalid("The start time must be before the end time."));
    }
    if (end - start) / period > MAX_DATAPOINTS {
        return Err(invalid(
            "The request would return too many datapoints; raise the period.",
        ));
    }
    Ok(())
}

/// GetMetricStatistics' input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMetricStatisticsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    start_time: Option<Timestamp>,
    end_time: Option<Timestamp>,
    period: Option<i64>,
    #[serde(default)]
    statistics: Vec<String>,
    #[serde(default)]
    extended_statistics: Vec<String>,
    unit: Option<String>,
}

/// GetMetricStatistics.
pub fn get_statistics(
    store: &MetricStore,
    input: GetMetricStatisticsInput,
) -> Result<Json, ObserveError> {
    let metric = Metric {
        namespace: input.namespace,
        metric_name: input.metric_name,
        dimensions: input.dimensions,
    };
    let key = metric.key()?;
    let (Some(start), Some(end), Some(period)) = (input.start_time, input.end_time, input.period)
    else {
        return Err(ObserveError::MissingParameter(
            "StartTime, EndTime and Period are required.".into(),
        ));
    };
    if !input.extended_statistics.is_empty() {
        return Err(invalid(
            "ExtendedStatistics (percentiles) are not supported by this server: it stores statistic sets.",
        ));
    }
    if input.statistics.is_empty() {
        return Err(ObserveError::MissingParameter(
            "Statistics is required.".into(),
        ));
    }
    for s in &input.statistics {
        if !STATISTICS.contains(&s.as_str()) {
            return Err(invalid(format!("Unknown statistic {s}.")));
        }
    }
    check_unit(input.unit.as_deref())?;
    let (start, end) = (start.0.floor() as i64, end.0.ceil() as i64);
    check_period(period, start, end)?;
    let unit = stored_unit(store, &key);
    if input.unit.is_some() && input.unit != unit {
        return Ok(json!({"Label": key.name, "Datapoints": []}));
    }
    let mut datapoints = Vec::new();
    for (ts, stats) in period_stats(store, &key, start, end, period)? {
        let mut point = serde_json::Map::new();
        point.insert("Timestamp".into(), json!(ts));
        for s in &input.statistics {
            point.insert(s.clone(), json!(stats.statistic(s)));
        }
        point.insert("Unit".into(), json!(unit.as_deref().unwrap_or("None")));
        datapoints.push(Json::Object(point));
    }
    Ok(json!({"Label": key.name, "Datapoints": datapoints}))
}

fn stored_unit(store: &MetricStore, key: &SeriesKey) -> Option<String> {
    store
        .series(Some(&key.namespace), Some(&key.name))
        .ok()?
        .into_iter()
        .find(|(_, info)| info.key == *key)
        .and_then(|(_, info)| info.unit)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricStat {
    metric: Metric,
    period: Option<i64>,
    stat: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDataQuery {
    id: String,
    metric_stat: Option<MetricStat>,
    expression: Option<String>,
    label: Option<String>,
    return_data: Option<bool>,
    period: Option<i64>,
}

/// GetMetricData's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMetricDataInput {
    #[serde(default)]
    metric_data_queries: Vec<MetricDataQuery>,
    start_time: Option<Timestamp>,
    end_time: Option<Timestamp>,
    scan_by: Option<String>,
    max_datapoints: Option<i64>,
}

/// GetMetricData: every MetricStat query read from the store, then every expression in the
/// order given (an expression may use any query's id, including later expressions' ids only
/// once they are computed).
pub fn get_data(store: &MetricStore, input: GetMetricDataInput) -> Result<Json, ObserveError> {
    let (Some(start), Some(end)) = (input.start_time, input.end_time) else {
        return Err(ObserveError::MissingParameter(
            "StartTime and EndTime are required.".into(),
        ));
    };
    let (start, end) = (start.0.floor() as i64, end.0.ceil() as i64);
    if input.metric_data_queries.is_empty() || input.metric_data_queries.len() > 500 {
        return Err(invalid("MetricDataQueries must hold 1 to 500 queries."));
    }
    let mut values: HashMap<String, Value> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for q in &input.metric_data_queries {
        if q.id.is_empty() || !q.id.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid(format!(
                "The id '{}' must start with a lowercase letter.",
                q.id
            )));
        }
        if !seen.insert(q.id.clone()) {
            return Err(invalid(format!("The id '{}' is used twice.", q.id)));
        }
        match (&q.metric_stat, &q.expression) {
            (Some(stat), None) => {
                let period = stat.period.or(q.period).ok_or_else(|| {
                    ObserveError::MissingParameter("MetricStat.Period is required.".into())
                })?;
                check_period(period, start, end)?;
                let name = stat.stat.clone().ok_or_else(|| {
                    ObserveError::MissingParameter("MetricStat.Stat is required.".into())
                })?;
                if !STATISTICS.contains(&name.as_str()) {
                    return Err(invalid(format!(
                        "The statistic {name} is not supported (supported: {}).",
                        STATISTICS.join(", ")
                    )));
                }
                let key = stat.metric.key()?;
                let series: Series = period_stats(store, &key, start, end, period)?
                    .into_iter()
                    .filter_map(|(t, s)| s.statistic(&name).map(|v| (t, v)))
                    .collect();
                values.insert(q.id.clone(), Value::Series(series));
            }
            (None, Some(_)) => {}
            _ => {
                return Err(ObserveError::InvalidCombination(format!(
                    "Query '{}' needs exactly one of MetricStat and Expression.",
                    q.id
                )));
            }
        }
    }
    for q in &input.metric_data_queries {
        if let Some(text) = &q.expression {
            let value = expr::evaluate(text, &values)?;
            values.insert(q.id.clone(), value);
        }
    }
    let grid: Vec<i64> = {
        let mut all = std::collections::BTreeSet::new();
        for v in values.values() {
            if let Value::Series(s) = v {
                all.extend(s.keys().copied());
            }
        }
        all.into_iter().collect()
    };
    let descending = input.scan_by.as_deref() != Some("TimestampAscending");
    let limit = input.max_datapoints.unwrap_or(MAX_DATAPOINTS).max(1) as usize;
    let mut results = Vec::new();
    for q in &input.metric_data_queries {
        if q.return_data == Some(false) {
            continue;
        }
        let mut points: Vec<(i64, f64)> = match values.get(&q.id) {
            Some(Value::Series(s)) => s.iter().map(|(t, v)| (*t, *v)).collect(),
            // A number is drawn as a flat line over the other queries' timestamps.
            Some(Value::Scalar(v)) if v.is_finite() => grid.iter().map(|t| (*t, *v)).collect(),
            Some(Value::Array(_)) => {
                return Err(invalid(format!(
                    "Query '{}' returns several time series; reduce it with SUM, AVG, MIN or MAX.",
                    q.id
                )));
            }
            _ => Vec::new(),
        };
        if descending {
            points.reverse();
        }
        points.truncate(limit);
        let label = q.label.clone().unwrap_or_else(|| {
            q.metric_stat
                .as_ref()
                .and_then(|s| s.metric.metric_name.clone())
                .unwrap_or_else(|| q.id.clone())
        });
        results.push(json!({
            "Id": q.id,
            "Label": label,
            "Timestamps": points.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            "Values": points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "StatusCode": "Complete",
        }));
    }
    Ok(json!({"MetricDataResults": results, "Messages": []}))
}

/// ListMetrics' input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListMetricsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    next_token: Option<String>,
}

/// Metrics per ListMetrics page (AWS: 500).
const LIST_PAGE: usize = 500;

/// ListMetrics: the series whose dimensions include every filter (a filter without a value
/// matches any value of that dimension).
pub fn list(store: &MetricStore, input: ListMetricsInput) -> Result<Json, ObserveError> {
    let skip = match &input.next_token {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ObserveError::InvalidParameter("The NextToken is not valid.".into()))?,
        None => 0,
    };
    let matching: Vec<_> = store
        .series(input.namespace.as_deref(), input.metric_name.as_deref())?
        .into_iter()
        .filter(|(_, info)| {
            input.dimensions.iter().all(|f| {
                info.key
                    .dimensions
                    .get(&f.name)
                    .is_some_and(|v| f.value.as_ref().is_none_or(|want| want == v))
            })
        })
        .collect();
    let metrics: Vec<Json> = matching
        .iter()
        .skip(skip)
        .take(LIST_PAGE)
        .map(|(_, info)| {
            json!({
                "Namespace": info.key.namespace,
                "MetricName": info.key.name,
                "Dimensions": info.key.dimensions.iter()
                    .map(|(k, v)| json!({"Name": k, "Value": v}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = json!({ "Metrics": metrics });
    if skip + LIST_PAGE < matching.len() {
        out["NextToken"] = json!((skip + LIST_PAGE).to_string());
    }
    Ok(out)
}
