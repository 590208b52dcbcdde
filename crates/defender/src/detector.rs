//! The detector: once per period it takes one datapoint per device (the fleet meter's
//! cloud-side counts and the period's device metrics reports), folds each behaviour's window,
//! compares with the behaviour's criteria (a fixed number, a percentile of the targeted
//! devices, or a set of addresses, ports, numbers or strings) and raises or clears alarms after
//! the behaviour's consecutive datapoints. A behaviour on a device-side or custom metric is
//! evaluated for a device when a report in its window says the value; without one the device's
//! streak and alarm stay as they are. The period's alarm changes are committed in one batch
//! before their alerts go out.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use fleetcore_core::WriteBatch;

use crate::alerts::Alerts;
use crate::device_metrics::{CustomValue, DeviceSample};
use crate::meter::Datapoint;
use crate::metric::{CloudMetric, DeviceMetric};
use crate::model::{self, Models, SharedSummaries};
use crate::profile::{AlertTarget, Check, CompiledBehavior, Metric, MetricValue};
use crate::store::{ProfileRecord, Target};
use crate::violations::{AlarmKey, EventType, ViolationEvent, Violations};

/// Most periods a behaviour's window spans (longer `durationSeconds` are cut to it).
pub const MAX_WINDOW: usize = 288;

/// What the detector needs to know about things to resolve targets.
pub trait ThingDirectory: Send + Sync + 'static {
    /// Whether `name` is a thing in the registry.
    fn is_thing(&self, name: &str) -> bool;
    /// The groups `name` belongs to, with their ancestors.
    fn groups(&self, name: &str) -> Vec<String>;
    /// Whether thing group `name` exists.
    fn group_exists(&self, name: &str) -> bool;
}

/// A profile ready to evaluate.
#[derive(Debug, Clone)]
pub struct ProfileEntry {
    /// The stored profile.
    pub record: ProfileRecord,
    /// Its behaviours, compiled.
    pub behaviors: Vec<CompiledBehavior>,
    /// What it is attached to.
    pub targets: Vec<Target>,
}

/// Every profile, as the detector sees them this period.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The profiles.
    pub profiles: Vec<ProfileEntry>,
}

#[derive(Default)]
struct Streak {
    violating: u32,
    normal: u32,
}

enum Measured {
    Count(u64),
    Number(f64),
    Addresses(Vec<IpAddr>),
    Ports(Vec<u16>),
    Numbers(Vec<f64>),
    Strings(Vec<String>),
}

impl Measured {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Measured::Count(n) => Some(*n as f64),
            Measured::Number(n) => Some(*n),
            _ => None,
        }
    }
}

struct Membership {
    is_thing: bool,
    groups: Vec<String>,
}

/// The detector's state between periods (owned by its task).
pub struct Detector {
    period_seconds: f64,
    history: HashMap<Arc<str>, VecDeque<Datapoint>>,
    streaks: HashMap<AlarmKey, Streak>,
    violations: Arc<Violations>,
    alerts: Alerts,
    directory: Arc<dyn ThingDirectory>,
    /// The period's alerts, sent once its changes are committed.
    outbox: Vec<(ViolationEvent, BTreeMap<String, AlertTarget>)>,
    /// ML Detect models by (profile, behaviour).
    models: Models,
    /// The period's writes of models, committed with its violations.
    staged: WriteBatch,
    summaries: SharedSummaries,
}

impl Detector {
    /// A detector evaluating every `period_seconds`.
    pub fn new(
        period_seconds: f64,
        violations: Arc<Violations>,
        alerts: Alerts,
        directory: Arc<dyn ThingDirectory>,
    ) -> Detector {
        Detector {
            period_seconds,
            history: HashMap::new(),
            streaks: HashMap::new(),
            violations,
            alerts,
            directory,
            outbox: Vec::new(),
            models: Models::new(),
            staged: WriteBatch::new(),
            summaries: SharedSummaries::default(),
        }
    }

    /// Starts from the ML Detect `models` kept in the store.
    pub fn with_models(mut self, models: Models) -> Detector {
        self.models = models;
        self
    }

    /// Publishes the ML Detect models' training summaries to `summaries`.
    pub fn with_summaries(mut self, summaries: SharedSummaries) -> Detector {
        self.summaries = summaries;
        self
    }

    /// Evaluates one period's datapoints against `catalog` at `now` (epoch seconds).
    pub fn run_period(&mut self, points: Vec<(Arc<str>, Datapoint)>, catalog: &Catalog, now: f64) {
        let mut history = HashMap::with_capacity(points.len());
        for (thing, point) in points {
            let mut window = self.history.remove(&thing).unwrap_or_default();
            if window.len() == MAX_WINDOW {
                window.pop_front();
            }
            window.push_back(point);
            history.insert(thing, window);
        }
        // A thing known from its reports only stays while a report is in its history.
        for (thing, mut window) in self.history.drain() {
            if window.iter().any(|p| p.report.is_some()) {
                if window.len() == MAX_WINDOW {
                    window.pop_front();
                }
                window.push_back(Datapoint::default());
                history.insert(thing, window);
            }
        }
        self.history = history;
        let mut members: HashMap<Arc<str>, Membership> = HashMap::new();
        let mut evaluated: HashSet<AlarmKey> = HashSet::new();
        for entry in &catalog.profiles {
            if entry.targets.is_empty() || entry.behaviors.is_empty() {
                continue;
            }
            let devices: Vec<Arc<str>> = self
                .history
                .keys()
                .filter(|thing| {
                    let m = members
                        .entry(Arc::clone(thing))
                        .or_insert_with(|| Membership {
                            is_thing: self.directory.is_thing(thing),
                            groups: self.directory.groups(thing),
                        });
                    entry.targets.iter().any(|t| match t {
                        Target::AllThings => true,
                        Target::RegisteredThings => m.is_thing,
                        Target::UnregisteredThings => !m.is_thing,
                        Target::ThingGroup(g) => m.groups.contains(g),
                    })
                })
                .cloned()
                .collect();
            for behavior in &entry.behaviors {
                let window = self.window(behavior);
                let measured: Vec<(&Arc<str>, Option<Measured>)> = devices
                    .iter()
                    .map(|thing| {
                        (
                            thing,
                            measure(&self.history[thing], &behavior.metric, window),
                        )
                    })
                    .collect();
                let threshold = match &behavior.check {
                    Check::Statistical { percentile, .. } => {
                        let mut values: Vec<f64> = measured
                            .iter()
                            .filter_map(|(_, m)| m.as_ref().and_then(Measured::as_f64))
                            .collect();
                        values.sort_unstable_by(f64::total_cmp);
                        percentile_of(&values, *percentile)
                    }
                    _ => None,
                };
                let model_key = (entry.record.name.clone(), behavior.behavior.name.clone());
                let learned = matches!(behavior.check, Check::Learned { .. });
                let baseline = if learned {
                    self.models.entry(model_key.clone()).or_default().baseline()
                } else {
                    None
                };
                let training: Vec<f64> = measured
                    .iter()
                    .filter_map(|(_, m)| m.as_ref().and_then(Measured::as_f64))
                    .collect();
                for (thing, m) in measured {
                    let key = (
                        entry.record.name.clone(),
                        behavior.behavior.name.clone(),
                        thing.to_string(),
                    );
                    let judged = match (m, &behavior.check, baseline) {
                        (None, ..) | (Some(_), Check::Learned { .. }, None) => None,
                        (Some(m), Check::Learned { band }, Some(b)) => {
                            let v = m.as_f64().unwrap_or_default();
                            Some((b.is_normal(v, *band), number_value(&m)))
                        }
                        (Some(m), check, _) => Some(judge(check, threshold, m)),
                    };
                    if let Some((normal, value)) = judged {
                        self.step(entry, behavior, key.clone(), normal, value, now);
                    }
                    evaluated.insert(key);
                }
                if learned && let Some(model) = self.models.get_mut(&model_key) {
                    model.learn(training, now);
                    model::stage_learned(&model_key, model, &mut self.staged);
                }
            }
        }
        self.publish_summaries(catalog);
        self.invalidate_unevaluated(catalog, &evaluated, now);
        self.violations.stage(std::mem::take(&mut self.staged));
        match self.violations.commit() {
            Ok(()) => metrics::counter!("fleetcore_defender_periods_committed_total").increment(1),
            Err(e) => {
                tracing::error!(error = %e, "writing the period's Defender violations, sightings and models failed; they are served from memory and may not survive a restart");
            }
        }
        for (event, targets) in std::mem::take(&mut self.outbox) {
            self.alerts.send(&event, &targets);
        }
    }

    /// Forgets the models of behaviours that are gone and publishes the others' summaries.
    fn publish_summaries(&mut self, catalog: &Catalog) {
        let live: HashSet<(String, String)> = catalog
            .profiles
            .iter()
            .flat_map(|p| {
                p.behaviors
                    .iter()
                    .filter(|b| matches!(b.check, Check::Learned { .. }))
                    .map(|b| (p.record.name.clone(), b.behavior.name.clone()))
            })
            .collect();
        let staged = &mut self.staged;
        self.models.retain(|k, _| {
            let keep = live.contains(k);
            if !keep {
                model::stage_forget(k, staged);
            }
            keep
        });
        self.summaries.set_from(&self.models);
    }

    /// Periods in `behavior`'s window.
    fn window(&self, behavior: &CompiledBehavior) -> usize {
        let periods = (behavior.duration_seconds as f64 / self.period_seconds).ceil() as usize;
        periods.clamp(1, MAX_WINDOW)
    }

    fn step(
        &mut self,
        entry: &ProfileEntry,
        behavior: &CompiledBehavior,
        key: AlarmKey,
        normal: bool,
        value: MetricValue,
        now: f64,
    ) {
        let active = self.violations.active(&key);
        let streak = self.streaks.entry(key.clone()).or_default();
        let event_type = if normal {
            streak.violating = 0;
            streak.normal += 1;
            match &active {
                Some(_) if streak.normal >= behavior.to_clear => Some(EventType::AlarmCleared),
                Some(_) => None,
                None => {
                    self.streaks.remove(&key);
                    return;
                }
            }
        } else {
            streak.normal = 0;
            streak.violating += 1;
            match &active {
                Some(_) => {
                    self.violations.still_violating(&key, value.clone(), now);
                    None
                }
                None if streak.violating >= behavior.to_alarm => Some(EventType::InAlarm),
                None => None,
            }
        };
        let Some(event_type) = event_type else { return };
        if event_type == EventType::AlarmCleared {
            self.streaks.remove(&key);
        }
        let event = ViolationEvent {
            violation_id: active
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), |a| a.violation_id),
            thing_name: key.2,
            security_profile_name: key.0,
            behavior: behavior.behavior.clone(),
            criteria_type: behavior.criteria_type().to_string(),
            metric_value: value,
            event_type,
            time: now,
        };
        tracing::info!(
            thing = %event.thing_name,
            profile = %event.security_profile_name,
            behavior = %event.behavior.name,
            event = event_type.as_str(),
            "Device Defender alarm change"
        );
        self.violations.record(&event);
        self.outbox
            .push((event, entry.record.alert_targets.clone()));
    }

    /// Alarms whose behaviour, profile or attachment is gone (or whose device is forgotten)
    /// end as `alarm-invalidated`.
    fn invalidate_unevaluated(
        &mut self,
        catalog: &Catalog,
        evaluated: &HashSet<AlarmKey>,
        now: f64,
    ) {
        let stale = self.violations.active_where(|v| {
            !evaluated.contains(&(
                v.security_profile_name.clone(),
                v.behavior.name.clone(),
                v.thing_name.clone(),
            ))
        });
        for v in stale {
            let key = (
                v.security_profile_name.clone(),
                v.behavior.name.clone(),
                v.thing_name.clone(),
            );
            self.streaks.remove(&key);
            let event = ViolationEvent {
                violation_id: v.violation_id,
                thing_name: v.thing_name,
                security_profile_name: v.security_profile_name,
                behavior: v.behavior,
                criteria_type: v.criteria_type,
                metric_value: v.last_violation_value,
                event_type: EventType::AlarmInvalidated,
                time: now,
            };
            self.violations.record(&event);
            let targets = catalog
                .profiles
                .iter()
                .find(|p| p.record.name == event.security_profile_name)
                .map(|p| p.record.alert_targets.clone())
                .unwrap_or_default();
            self.outbox.push((event, targets));
        }
    }
}

/// The metric over the last `window` datapoints, or `None` when they do not say it.
fn measure(history: &VecDeque<Datapoint>, metric: &Metric, window: usize) -> Option<Measured> {
    let recent = history.iter().rev().take(window);
    match metric {
        Metric::Cloud(m) => history
            .back()
            .filter(|p| p.metered)
            .map(|latest| measure_cloud(history, latest, *m, window)),
        Metric::Device(m) if m.is_windowed() => recent
            .filter_map(|p| p.report.as_ref()?.count(*m))
            .reduce(u64::saturating_add)
            .map(Measured::Count),
        Metric::Device(m) => recent
            .filter_map(|p| p.report.as_deref())
            .find_map(|r| measure_device(r, *m)),
        Metric::Custom { name, .. } => recent
            .filter_map(|p| p.report.as_ref()?.custom.get(name))
            .next()
            .map(|v| match v {
                CustomValue::Number(n) => Measured::Number(*n),
                CustomValue::Numbers(n) => Measured::Numbers(n.clone()),
                CustomValue::Strings(s) => Measured::Strings(s.clone()),
                CustomValue::Addresses(a) => Measured::Addresses(a.clone()),
            }),
    }
}

/// A cloud-side metric over the last `window` datapoints.
fn measure_cloud(
    history: &VecDeque<Datapoint>,
    latest: &Datapoint,
    metric: CloudMetric,
    window: usize,
) -> Measured {
    let recent = history.iter().rev().take(window);
    match metric {
        CloudMetric::SourceIpAddress => {
            let mut seen = Vec::new();
            for p in recent {
                for a in &p.addresses {
                    if !seen.contains(a) {
                        seen.push(*a);
                    }
                }
            }
            Measured::Addresses(seen)
        }
        CloudMetric::DisconnectDuration => Measured::Count(latest.value(metric)),
        m if m.folds_by_max() => Measured::Count(recent.map(|p| p.value(m)).max().unwrap_or(0)),
        m => Measured::Count(recent.map(|p| p.value(m)).sum()),
    }
}

/// A device-side metric that is the latest report's, if `report` says it.
fn measure_device(report: &DeviceSample, metric: DeviceMetric) -> Option<Measured> {
    match metric {
        DeviceMetric::ListeningTcpPorts => report.tcp_ports.clone().map(Measured::Ports),
        DeviceMetric::ListeningUdpPorts => report.udp_ports.clone().map(Measured::Ports),
        DeviceMetric::DestinationIpAddresses => {
            report.destinations.clone().map(Measured::Addresses)
        }
        m => report.count(m).map(Measured::Count),
    }
}

/// Nearest-rank percentile of sorted `values` (`None` when empty).
fn percentile_of(values: &[f64], percentile: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((percentile / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Whether every item of a set is normal, and the items to report: the abnormal ones when
/// some are, else all.
fn judge_set<T: Clone>(items: Vec<T>, is_normal: impl Fn(&T) -> bool) -> (bool, Vec<T>) {
    let abnormal: Vec<T> = items.iter().filter(|i| !is_normal(i)).cloned().collect();
    if abnormal.is_empty() {
        (true, items)
    } else {
        (false, abnormal)
    }
}

/// The value of a number as AWS reports it: `count` for counts, `number` for custom numbers.
fn number_value(m: &Measured) -> MetricValue {
    match m {
        Measured::Count(n) => MetricValue {
            count: Some(*n),
            ..MetricValue::default()
        },
        Measured::Number(n) => MetricValue {
            number: Some(*n),
            ..MetricValue::default()
        },
        _ => MetricValue::default(),
    }
}

/// Whether the measurement is normal, and the value to report.
fn judge(check: &Check, threshold: Option<f64>, m: Measured) -> (bool, MetricValue) {
    match (check, m) {
        (Check::Static { op, threshold }, m) if m.as_f64().is_some() => {
            let n = m.as_f64().unwrap_or_default();
            (op.holds(n, *threshold), number_value(&m))
        }
        (Check::Statistical { op, .. }, m) if m.as_f64().is_some() => {
            let n = m.as_f64().unwrap_or_default();
            (threshold.is_none_or(|t| op.holds(n, t)), number_value(&m))
        }
        (Check::Cidrs { inside, nets }, Measured::Addresses(addresses)) => {
            let (normal, shown) =
                judge_set(addresses, |a| Check::address_is_normal(*inside, nets, *a));
            (
                normal,
                MetricValue {
                    cidrs: Some(shown.iter().map(|a| a.to_string()).collect()),
                    ..MetricValue::default()
                },
            )
        }
        (Check::Ports { inside, ports }, Measured::Ports(seen)) => {
            let (normal, shown) = judge_set(seen, |p| ports.contains(p) == *inside);
            (
                normal,
                MetricValue {
                    ports: Some(shown),
                    ..MetricValue::default()
                },
            )
        }
        (Check::Numbers { inside, numbers }, Measured::Numbers(seen)) => {
            let (normal, shown) = judge_set(seen, |n| numbers.contains(n) == *inside);
            (
                normal,
                MetricValue {
                    numbers: Some(shown),
                    ..MetricValue::default()
                },
            )
        }
        (Check::Strings { inside, strings }, Measured::Strings(seen)) => {
            let (normal, shown) = judge_set(seen, |s| strings.contains(s) == *inside);
            (
                normal,
                MetricValue {
                    strings: Some(shown),
                    ..MetricValue::default()
                },
            )
        }
        // Compilation pairs each check with the metrics of its shape only.
        _ => (true, MetricValue::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::CLOUD_METRICS;
    use crate::profile::{Behavior, compile_behaviors};
    use serde_json::json;
    use std::collections::BTreeMap;

    struct NoThings;
    impl ThingDirectory for NoThings {
        fn is_thing(&self, _: &str) -> bool {
            false
        }
        fn groups(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
        fn group_exists(&self, _: &str) -> bool {
            false
        }
    }

    fn catalog(behaviors: serde_json::Value) -> Catalog {
        let behaviors: Vec<Behavior> = serde_json::from_value(behaviors).expect("behaviors");
        Catalog {
            profiles: vec![ProfileEntry {
                behaviors: compile_behaviors(&behaviors, &|name: &str| {
                    (name == "temp").then_some(crate::metric::CustomMetricType::Number)
                })
                .expect("valid"),
                record: ProfileRecord {
                    name: "p".into(),
                    description: None,
                    behaviors,
                    alert_targets: BTreeMap::new(),
                    version: 1,
                    creation_date: 0.0,
                    last_modified_date: 0.0,
                },
                targets: vec![Target::AllThings],
            }],
        }
    }

    fn sent(thing: &str, n: u64) -> (Arc<str>, Datapoint) {
        let mut values = [0; CLOUD_METRICS.len()];
        values[CloudMetric::MessagesSent.index()] = n;
        (
            Arc::from(thing),
            Datapoint {
                metered: true,
                values,
                ..Datapoint::default()
            },
        )
    }

    fn reported(thing: &str, sample: DeviceSample) -> (Arc<str>, Datapoint) {
        (
            Arc::from(thing),
            Datapoint {
                report: Some(Box::new(sample)),
                ..Datapoint::default()
            },
        )
    }

    fn violations() -> (tempfile::TempDir, Arc<Violations>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fleetcore_core::RedbStore::open(&dir.path().join("s.redb")).expect("store");
        let v = Violations::open(Arc::new(store)).expect("violations");
        (dir, Arc::new(v))
    }

    fn detector(violations: &Arc<Violations>) -> Detector {
        Detector::new(
            1.0,
            Arc::clone(violations),
            Alerts::new(None, None),
            Arc::new(NoThings),
        )
    }

    #[test]
    fn alarms_after_consecutive_datapoints_and_clears_after_normal_ones() {
        let (_dir, violations) = violations();
        let mut d = detector(&violations);
        let c = catalog(json!([{"name": "flood", "metric": "aws:num-messages-sent",
            "criteria": {"comparisonOperator": "less-than", "value": {"count": 10}, "durationSeconds": 1,
                         "consecutiveDatapointsToAlarm": 2, "consecutiveDatapointsToClear": 2}}]));
        let kinds = |v: &Violations| -> Vec<&'static str> {
            v.events_where(|_| true)
                .iter()
                .map(|e| e.event_type.as_str())
                .collect()
        };
        d.run_period(vec![sent("a", 50)], &c, 1.0);
        assert!(violations.active_where(|_| true).is_empty());
        d.run_period(vec![sent("a", 50)], &c, 2.0);
        let active = violations.active_where(|_| true);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].last_violation_value.count, Some(50));
        d.run_period(vec![sent("a", 1)], &c, 3.0);
        assert_eq!(violations.active_where(|_| true).len(), 1);
        d.run_period(vec![sent("a", 1)], &c, 4.0);
        assert!(violations.active_where(|_| true).is_empty());
        assert_eq!(kinds(&violations), ["in-alarm", "alarm-cleared"]);
        d.run_period(vec![sent("a", 50)], &c, 5.0);
        d.run_period(vec![sent("a", 50)], &c, 6.0);
        d.run_period(vec![sent("a", 50)], &Catalog::default(), 7.0);
        assert_eq!(
            kinds(&violations),
            ["in-alarm", "alarm-cleared", "in-alarm", "alarm-invalidated"]
        );
    }

    #[test]
    fn a_statistical_threshold_flags_only_the_outlier() {
        let (_dir, violations) = violations();
        let mut d = detector(&violations);
        let c = catalog(
            json!([{"name": "outlier", "metric": "aws:num-messages-sent",
            "criteria": {"comparisonOperator": "less-than-equals",
                         "statisticalThreshold": {"statistic": "p90"}, "durationSeconds": 1}}]),
        );
        let mut points: Vec<_> = (0..49).map(|i| sent(&format!("d{i}"), 5 + i % 3)).collect();
        points.push(sent("loud", 500));
        d.run_period(points, &c, 1.0);
        let active = violations.active_where(|_| true);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].thing_name, "loud");
    }

    #[test]
    fn device_side_and_custom_metrics_are_evaluated_when_reported() {
        let (_dir, violations) = violations();
        let mut d = detector(&violations);
        let c = catalog(json!([
            {"name": "out", "metric": "aws:all-bytes-out",
             "criteria": {"comparisonOperator": "less-than", "value": {"count": 1000}, "durationSeconds": 2}},
            {"name": "ports", "metric": "aws:listening-tcp-ports",
             "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [443]}}},
            {"name": "temp", "metric": "cmet:temp",
             "criteria": {"comparisonOperator": "less-than", "value": {"number": 80}}}]));
        let mut bad = DeviceSample::default();
        bad.counts[DeviceMetric::BytesOut.index()] = Some(600);
        bad.tcp_ports = Some(vec![22, 443]);
        bad.custom.insert("temp".into(), CustomValue::Number(91.5));
        let mut good = DeviceSample::default();
        good.counts[DeviceMetric::BytesOut.index()] = Some(10);
        good.tcp_ports = Some(vec![443]);
        good.custom.insert("temp".into(), CustomValue::Number(20.0));
        // 600 bytes alone is normal; with the next report's 600 the 2-period window is not.
        d.run_period(vec![reported("dev", bad.clone())], &c, 1.0);
        let names = |v: &Violations| -> Vec<(String, MetricValue)> {
            v.active_where(|_| true)
                .into_iter()
                .map(|a| (a.behavior.name, a.last_violation_value))
                .collect()
        };
        let first = names(&violations);
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[0].1.ports, Some(vec![22]));
        assert_eq!(first[1].1.number, Some(91.5));
        d.run_period(vec![reported("dev", bad)], &c, 2.0);
        let second = names(&violations);
        assert_eq!(second[0].0, "out");
        assert_eq!(second[0].1.count, Some(1200));
        // A period without a report leaves the latest-report alarms as they are; the byte
        // window slides past the first report and is normal again.
        d.run_period(Vec::new(), &c, 3.0);
        let third: Vec<String> = names(&violations).into_iter().map(|n| n.0).collect();
        assert_eq!(third, ["ports", "temp"]);
        d.run_period(vec![reported("dev", good)], &c, 4.0);
        assert!(names(&violations).is_empty());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile_of(&v, 90.0), Some(9.0));
        assert_eq!(percentile_of(&v, 100.0), Some(10.0));
        assert_eq!(percentile_of(&v, 0.0), Some(1.0));
        assert_eq!(percentile_of(&[], 50.0), None);
    }
}
