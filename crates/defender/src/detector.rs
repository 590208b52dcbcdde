//! The detector: once per period it takes one datapoint per device from the fleet meter,
//! folds each behaviour's window, compares with the behaviour's criteria (a fixed number, a
//! percentile of the targeted devices, or a CIDR set) and raises or clears alarms after the
//! behaviour's consecutive datapoints.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::alerts::Alerts;
use crate::meter::Datapoint;
use crate::metric::CloudMetric;
use crate::profile::{Check, CompiledBehavior, MetricValue};
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
    Number(u64),
    Addresses(Vec<IpAddr>),
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
        }
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
                let measured: Vec<(&Arc<str>, Measured)> = devices
                    .iter()
                    .map(|thing| {
                        (
                            thing,
                            measure(&self.history[thing], behavior.metric, window),
                        )
                    })
                    .collect();
                let threshold = match &behavior.check {
                    Check::Statistical { percentile, .. } => {
                        let mut values: Vec<u64> = measured
                            .iter()
                            .filter_map(|(_, m)| match m {
                                Measured::Number(n) => Some(*n),
                                Measured::Addresses(_) => None,
                            })
                            .collect();
                        values.sort_unstable();
                        percentile_of(&values, *percentile)
                    }
                    _ => None,
                };
                for (thing, m) in measured {
                    let (normal, value) = judge(&behavior.check, threshold, m);
                    let key = (
                        entry.record.name.clone(),
                        behavior.behavior.name.clone(),
                        thing.to_string(),
                    );
                    self.step(entry, behavior, key.clone(), normal, value, now);
                    evaluated.insert(key);
                }
            }
        }
        self.invalidate_unevaluated(catalog, &evaluated, now);
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
            criteria_type: behavior.criteria_type(),
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
        self.alerts.send(&event, &entry.record.alert_targets);
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
            self.alerts.send(&event, &targets);
        }
    }
}

/// The metric over the last `window` datapoints.
fn measure(history: &VecDeque<Datapoint>, metric: CloudMetric, window: usize) -> Measured {
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
        CloudMetric::DisconnectDuration => {
            Measured::Number(history.back().map_or(0, |p| p.value(metric)))
        }
        m if m.folds_by_max() => Measured::Number(recent.map(|p| p.value(m)).max().unwrap_or(0)),
        m => Measured::Number(recent.map(|p| p.value(m)).sum()),
    }
}

/// Nearest-rank percentile of sorted `values` (`None` when empty).
fn percentile_of(values: &[u64], percentile: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((percentile / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1] as f64)
}

/// Whether the measurement is normal, and the value to report.
fn judge(check: &Check, threshold: Option<f64>, m: Measured) -> (bool, MetricValue) {
    match (check, m) {
        (Check::Static { op, threshold }, Measured::Number(n)) => (
            op.holds(n as f64, *threshold),
            MetricValue {
                count: Some(n),
                ..MetricValue::default()
            },
        ),
        (Check::Statistical { op, .. }, Measured::Number(n)) => (
            threshold.is_none_or(|t| op.holds(n as f64, t)),
            MetricValue {
                count: Some(n),
                ..MetricValue::default()
            },
        ),
        (Check::Cidrs { inside, nets }, Measured::Addresses(addresses)) => {
            let outside: Vec<String> = addresses
                .iter()
                .filter(|a| !Check::address_is_normal(*inside, nets, **a))
                .map(|a| a.to_string())
                .collect();
            let normal = outside.is_empty();
            let shown = if normal {
                addresses.iter().map(|a| a.to_string()).collect()
            } else {
                outside
            };
            (
                normal,
                MetricValue {
                    cidrs: Some(shown),
                    ..MetricValue::default()
                },
            )
        }
        // Compilation pairs address checks with the address metric only.
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
                behaviors: compile_behaviors(&behaviors).expect("valid"),
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
                values,
                addresses: Vec::new(),
            },
        )
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
        let violations = Arc::new(Violations::default());
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
        let violations = Arc::new(Violations::default());
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
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile_of(&v, 90.0), Some(9.0));
        assert_eq!(percentile_of(&v, 100.0), Some(10.0));
        assert_eq!(percentile_of(&v, 0.0), Some(1.0));
        assert_eq!(percentile_of(&[], 50.0), None);
    }
}
