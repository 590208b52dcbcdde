//! A metric's identity as CloudWatch defines it: namespace, name and the exact set of
//! dimensions; and the statistic set every stored bucket keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Separates the parts of a [`SeriesKey`]'s canonical text (never valid in names).
const SEP: char = '\u{1f}';

/// Namespace, metric name and dimensions (sorted by name): one time series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// `AWS/IoT`, `fleetcore`, or a user's namespace.
    pub namespace: String,
    /// The metric name.
    pub name: String,
    /// Dimension name to value.
    pub dimensions: BTreeMap<String, String>,
}

impl SeriesKey {
    /// The series `namespace`/`name` with `dimensions`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        dimensions: impl IntoIterator<Item = (String, String)>,
    ) -> SeriesKey {
        SeriesKey {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: dimensions.into_iter().collect(),
        }
    }

    /// The unique text the store indexes the series by.
    pub fn canonical(&self) -> String {
        let mut text = String::with_capacity(64);
        text.push_str(&self.namespace);
        text.push(SEP);
        text.push_str(&self.name);
        for (k, v) in &self.dimensions {
            text.push(SEP);
            text.push_str(k);
            text.push('=');
            text.push_str(v);
        }
        text
    }
}

/// The statistics of the values that fell in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatSet {
    /// How many values.
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl StatSet {
    /// The set of one value.
    pub fn one(value: f64) -> StatSet {
        StatSet {
            count: 1.0,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// `value` seen `count` times.
    pub fn repeated(value: f64, count: f64) -> StatSet {
        StatSet {
            count,
            sum: value * count,
            min: value,
            max: value,
        }
    }

    /// Adds `other`'s values to this set.
    pub fn merge(&mut self, other: &StatSet) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The statistic CloudWatch names `name` (`Sum`, `Average`, `SampleCount`, `Minimum`,
    /// `Maximum`), or `None` for another name.
    pub fn statistic(&self, name: &str) -> Option<f64> {
        match name {
            "Sum" => Some(self.sum),
            "SampleCount" => Some(self.count),
            "Minimum" => Some(self.min),
            "Maximum" => Some(self.max),
            "Average" => Some(if self.count > 0.0 {
                self.sum / self.count
            } else {
                0.0
            }),
            _ => None,
        }
    }

    /// The 32 bytes stored per bucket.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, v) in [self.count, self.sum, self.min, self.max]
            .iter()
            .enumerate()
        {
            out[i * 8..(i + 1) * 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads [`StatSet::to_bytes`]'s form; `None` if `bytes` is not 32 long.
    pub fn from_bytes(bytes: &[u8]) -> Option<StatSet> {
        if bytes.len() != 32 {
            return None;
        }
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..(i + 1) * 8]);
            f64::from_le_bytes(b)
        };
        Some(StatSet {
            count: f(0),
            sum: f(1),
            min: f(2),
            max: f(3),
        })
    }
}

/// The statistics CloudWatch computes from a statistic set.
pub const STATISTICS: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_ignores_dimension_order() {
        let a = SeriesKey::new(
            "ns",
            "m",
            [("b".into(), "2".into()), ("a".into(), "1".into())],
        );
        let b = SeriesKey::new(
            "ns",
            "m",
            [("a".into(), "1".into()), ("b".into(), "2".into())],
        );
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), SeriesKey::new("ns", "m", []).canonical());
    }

    #[test]
    fn stat_sets_merge_and_round_trip() {
        let mut s = StatSet::one(3.0);
        s.merge(&StatSet::repeated(1.0, 2.0));
        assert_eq!(s.statistic("Sum"), Some(5.0));
        assert_eq!(s.statistic("SampleCount"), Some(3.0));
        assert_eq!(s.statistic("Minimum"), Some(1.0));
        assert_eq!(s.statistic("Maximum"), Some(3.0));
        assert_eq!(StatSet::from_bytes(&s.to_bytes()), Some(s));
        assert_eq!(s.statistic("p99"), None);
    }
}
