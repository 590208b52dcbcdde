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
//!   collection percentage).
//! - **Kept**: each period's training datapoints are written with the period's violations in
//!   one batch (one record per model and period, [`stage_learned`]; the period that falls out
//!   of the window is deleted), and [`load`] reads them back at start, so after a restart (even
//!   a SIGKILL) a model is as ACTIVE as it was at the last period's commit.
//! - **Confidence**: a datapoint is anomalous when it lies more than `k` spreads from the
//!   median, either side: `LOW` k = 2.5 (more alarms), `MEDIUM` k = 3.5, `HIGH` k = 5 (fewer
//!   alarms, only the clearest outliers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Models by (profile, behaviour).
pub type Models = HashMap<(String, String), Model>;

/// Each model's header (`{profile}\n{behavior}` -> [`Header`]).
const MODELS_TABLE: &str = "defender_ml_models";
/// Each model's periods (`{profile}\n{behavior}\n` + big-endian sequence number -> datapoints).
const PERIODS_TABLE: &str = "defender_ml_periods";

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
    /// The sequence number the next period gets in the store.
    next: u64,
}

/// What the store keeps of a model besides its periods.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    started: Option<f64>,
    refreshed: Option<f64>,
    next: u64,
}

fn model_key(key: &(String, String)) -> String {
    format!("{}\n{}", key.0, key.1)
}

fn periods_prefix(key: &(String, String)) -> Vec<u8> {
    format!("{}\n{}\n", key.0, key.1).into_bytes()
}

/// Stages the writes that record `model`'s latest [`Model::learn`] (of model `key`).
pub fn stage_learned(key: &(String, String), model: &Model, batch: &mut WriteBatch) {
    let Some(latest) = model.periods.back() else {
        return;
    };
    let seq = model.next - 1;
    let mut period_key = periods_prefix(key);
    period_key.extend_from_slice(&seq.to_be_bytes());
    // Serializing plain numbers and options cannot fail.
    batch.put(
        PERIODS_TABLE,
        period_key,
        serde_json::to_vec(latest).unwrap_or_default(),
    );
    if model.periods.len() == TRAINING_PERIODS
        && let Some(dropped) = seq.checked_sub(TRAINING_PERIODS as u64)
    {
        let mut dropped_key = periods_prefix(key);
        dropped_key.extend_from_slice(&dropped.to_be_bytes());
        batch.delete(PERIODS_TABLE, dropped_key);
    }
    let header = Header {
        started: model.started,
        refreshed: model.refreshed,
        next: model.next,
    };
    batch.put(
        MODELS_TABLE,
        model_key(key).into_bytes(),
        serde_json::to_vec(&header).unwrap_or_default(),
    );
}

/// Stages the writes that forget model `key` (its behaviour is gone).
pub fn stage_forget(key: &(String, String), batch: &mut WriteBatch) {
    batch.delete(MODELS_TABLE, model_key(key).into_bytes());
    batch.delete_prefix(PERIODS_TABLE, periods_prefix(key));
}

/// The models kept in `store`; a record that does not parse is skipped (and logged), so a
/// damaged model trains again rather than stopping Defender.
pub fn load(store: &dyn KvStore) -> Result<Models, StoreError> {
    let mut models = Models::new();
    for (key, value) in store.scan_prefix(MODELS_TABLE, b"")? {
        let text = String::from_utf8_lossy(&key);
        let Some((profile, behavior)) = text.split_once('\n') else {
            continue;
        };
        let key = (profile.to_string(), behavior.to_string());
        let header: Header = match serde_json::from_slice(&value) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(profile, behavior, error = %e, "a stored ML Detect model does not parse; it trains again");
                continue;
            }
        };
        let mut periods = VecDeque::new();
        for (_, datapoints) in store.scan_prefix(PERIODS_TABLE, &periods_prefix(&key))? {
            match serde_json::from_slice::<Vec<f64>>(&datapoints) {
                Ok(values) => periods.push_back(values),
                Err(e) => {
                    tracing::warn!(profile, behavior, error = %e, "a stored ML Detect training period does not parse; it is skipped");
                }
            }
        }
        while periods.len() > TRAINING_PERIODS {
            periods.pop_front();
        }
        models.insert(
            key,
            Model {
                periods,
                started: header.started,
                refreshed: header.refreshed,
                next: header.next,
            },
        );
    }
    Ok(models)
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
        self.next += 1;
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
    /// Replaces the summaries with those of `models`.
    pub fn set_from(&self, models: &Models) {
        self.set(
            models
                .iter()
                .map(|((p, b), m)| ((p.clone(), b.clone()), m.summary(p, b)))
                .collect(),
        );
    }

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

    #[test]
    fn models_are_kept_a_period_at_a_time_and_loaded_back() {
        let dir = tempfile::tempdir().expect("dir");
        let store = fleetcore_core::RedbStore::open(&dir.path().join("s.redb")).expect("store");
        let key = ("p".to_string(), "b".to_string());
        let other = ("p".to_string(), "b2".to_string());
        let mut m = Model::default();
        let mut o = Model::default();
        for p in 0..TRAINING_PERIODS + 3 {
            let mut batch = WriteBatch::new();
            m.learn(vec![p as f64; 5], p as f64);
            stage_learned(&key, &m, &mut batch);
            o.learn(vec![1.0], p as f64);
            stage_learned(&other, &o, &mut batch);
            store.apply(batch).expect("apply");
        }
        let loaded = load(&store).expect("load");
        let back = &loaded[&key];
        assert_eq!(
            back.periods, m.periods,
            "the window, oldest periods dropped"
        );
        assert_eq!(
            (back.started, back.refreshed, back.next),
            (m.started, m.refreshed, m.next)
        );
        assert_eq!(back.baseline(), m.baseline());
        assert_eq!(back.summary("p", "b"), m.summary("p", "b"));
        let mut batch = WriteBatch::new();
        stage_forget(&key, &mut batch);
        store.apply(batch).expect("apply");
        let loaded = load(&store).expect("load");
        assert!(!loaded.contains_key(&key));
        assert_eq!(loaded[&other].periods.len(), TRAINING_PERIODS);
    }
}
