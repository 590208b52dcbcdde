//! ML Detect: a learned baseline per behaviour with `mlDetectionConfig`. AWS's model is not
//! public; this one is a robust statistical baseline, said plainly:
//!
//! - **Training data**: each period, the behaviour's metric for every device the profile
//!   targets (one datapoint per device per period), kept for the last [`TRAINING_PERIODS`]
//!   periods.
//! - **Model**: the median and the median absolute deviation (MAD) of those datapoints,
//!   rebuilt every period from the periods before the current one. The spread is
//!   `1.4826 × MAD` (the standard deviation for normal data), at least 5 % of the median and at
//!   least 1, so a fleet of identical values does not flag every wobble.
//! - **Status**: `PENDING_BUILD` until [`MIN_PERIODS`] periods and [`MIN_DATAPOINTS`]
//!   datapoints are collected, then `ACTIVE` (GetBehaviorModelTrainingSummaries shows the
//!   collection percentage). Models are in memory: a restart trains them again.
//! - **Confidence**: a datapoint is anomalous when it lies more than `k` spreads from the
//!   median, either side: `LOW` k = 2.5 (more alarms), `MEDIUM` k = 3.5, `HIGH` k = 5 (fewer
//!   alarms, only the clearest outliers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

/// Periods of training data kept.
pub const TRAINING_PERIODS: usize = 288;
/// Periods collected before a model is built.
pub const MIN_PERIODS: usize = 5;
/// Datapoints collected before a model is built.
pub const MIN_DATAPOINTS: usize = 25;

/// `mlDetectionConfig.confidenceLevel`, as the band width it means.
pub fn band_of(confidence: &str) -> Option<f64> {
    Some(match confidence {
        "LOW" => 2.5,
        "MEDIUM" => 3.5,
        "HIGH" => 5.0,
        _ => return None,
    })
}

/// The baseline a model gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// The median of the training datapoints.
    pub median: f64,
    /// The spread (see the module doc).
    pub spread: f64,
}

impl Baseline {
    /// Whether `value` is normal with band width `band`.
    pub fn is_normal(&self, value: f64, band: f64) -> bool {
        (value - self.median).abs() <= band * self.spread
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One behaviour's model.
#[derive(Debug, Default)]
pub struct Model {
    periods: VecDeque<Vec<f64>>,
    started: Option<f64>,
    refreshed: Option<f64>,
}

impl Model {
    fn datapoints(&self) -> usize {
        self.periods.iter().map(Vec::len).sum()
    }

    /// The baseline, once enough data is collected.
    pub fn baseline(&self) -> Option<Baseline> {
        if self.periods.len() < MIN_PERIODS || self.datapoints() < MIN_DATAPOINTS {
            return None;
        }
        let mut values: Vec<f64> = self.periods.iter().flatten().copied().collect();
        values.sort_unstable_by(f64::total_cmp);
        let m = median(&values);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
        deviations.sort_unstable_by(f64::total_cmp);
        let mad = median(&deviations);
        Some(Baseline {
            median: m,
            spread: (1.4826 * mad).max(0.05 * m.abs()).max(1.0),
        })
    }

    /// Adds one period's datapoints (after they were judged) at `now`.
    pub fn learn(&mut self, values: Vec<f64>, now: f64) {
        self.started.get_or_insert(now);
        if self.periods.len() == TRAINING_PERIODS {
            self.periods.pop_front();
        }
        self.periods.push_back(values);
        if self.baseline().is_some() {
            self.refreshed = Some(now);
        }
    }

    /// The training summary, as GetBehaviorModelTrainingSummaries writes it.
    pub fn summary(&self, profile: &str, behavior: &str) -> Value {
        let collected = (self.periods.len() as f64 / MIN_PERIODS as f64)
            .min(self.datapoints() as f64 / MIN_DATAPOINTS as f64)
            .min(1.0);
        let mut out = json!({
            "securityProfileName": profile,
            "behaviorName": behavior,
            "modelStatus": if self.baseline().is_some() { "ACTIVE" } else { "PENDING_BUILD" },
            "datapointsCollectionPercentage": (collected * 100.0).floor(),
        });
        if let Some(s) = self.started {
            out["trainingDataCollectionStartDate"] = json!(s);
        }
        if let Some(r) = self.refreshed {
            out["lastModelRefreshDate"] = json!(r);
        }
        out
    }
}

/// The training summaries of every model, by (profile, behaviour): written by the detector
/// each period, read by the API.
#[derive(Default)]
pub struct TrainingSummaries(Mutex<BTreeMap<(String, String), Value>>);

impl TrainingSummaries {
    /// Replaces the summaries.
    pub fn set(&self, summaries: BTreeMap<(String, String), Value>) {
        *self.0.lock() = summaries;
    }

    /// The summaries of `profile` (or all), in order.
    pub fn of(&self, profile: Option<&str>) -> Vec<Value> {
        self.0
            .lock()
            .iter()
            .filter(|((p, _), _)| profile.is_none_or(|q| q == p))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Shared summaries.
pub type SharedSummaries = Arc<TrainingSummaries>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_after_enough_data_and_flags_only_far_values() {
        let mut m = Model::default();
        for p in 0..MIN_PERIODS {
            assert!(m.baseline().is_none());
            m.learn(
                (0..10).map(|d| 100.0 + ((d + p) % 5) as f64).collect(),
                p as f64,
            );
        }
        let b = m.baseline().expect("active");
        assert!((b.median - 102.0).abs() < 1.0, "{b:?}");
        assert!(b.is_normal(104.0, band_of("HIGH").expect("band")));
        assert!(!b.is_normal(400.0, band_of("HIGH").expect("band")));
        // a narrower band flags what a wider one allows
        let near = b.median + 3.0 * b.spread;
        assert!(!b.is_normal(near, band_of("LOW").expect("band")));
        assert!(b.is_normal(near, band_of("HIGH").expect("band")));
        assert_eq!(m.summary("p", "b")["modelStatus"], "ACTIVE");
    }
}
