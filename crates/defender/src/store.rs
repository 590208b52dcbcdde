//! Security profiles, their targets and custom metrics in the key-value store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetcore_core::{KvStore, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::error::DefenderError;
use crate::metric::CustomMetricType;
use crate::profile::{AlertTarget, Behavior, CustomMetricTypes};

const PROFILES: &str = "defender_profiles";
const TARGETS: &str = "defender_targets";
const CUSTOM_METRICS: &str = "defender_custom_metrics";

/// A stored security profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The profile's name.
    pub name: String,
    /// `securityProfileDescription`.
    pub description: Option<String>,
    /// The behaviours (validated at write).
    pub behaviors: Vec<Behavior>,
    /// `alertTargets` by type (`SNS`).
    pub alert_targets: BTreeMap<String, AlertTarget>,
    /// Starts at 1, one more per update.
    pub version: u64,
    /// Seconds since the epoch.
    pub creation_date: f64,
    /// Seconds since the epoch.
    pub last_modified_date: f64,
}

/// A stored custom metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomMetricRecord {
    /// The metric's name.
    pub name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `metricType` as AWS spells it.
    pub metric_type: String,
    /// Seconds since the epoch.
    pub creation_date: f64,
    /// Seconds since the epoch.
    pub last_modified_date: f64,
}

/// What a profile is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `all/things`: every device.
    AllThings,
    /// `all/registered-things`: devices whose client id is a thing in the registry.
    RegisteredThings,
    /// `all/unregistered-things`: devices whose client id is not a thing.
    UnregisteredThings,
    /// `thinggroup/<name>`: things in the group or a group below it.
    ThingGroup(String),
}

impl Target {
    /// The target named by the resource part of its ARN (`all/things`, `thinggroup/g`).
    pub fn from_resource(resource: &str) -> Option<Target> {
        Some(match resource {
            "all/things" => Target::AllThings,
            "all/registered-things" => Target::RegisteredThings,
            "all/unregistered-things" => Target::UnregisteredThings,
            _ => {
                let group = resource.strip_prefix("thinggroup/")?;
                if group.is_empty() {
                    return None;
                }
                Target::ThingGroup(group.to_string())
            }
        })
    }

    /// The resource part of the target's ARN.
    pub fn resource(&self) -> String {
        match self {
            Target::AllThings => "all/things".into(),
            Target::RegisteredThings => "all/registered-things".into(),
            Target::UnregisteredThings => "all/unregistered-things".into(),
            Target::ThingGroup(g) => format!("thinggroup/{g}"),
        }
    }
}

/// Seconds since the epoch, as AWS's timestamps.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The Defender tables.
pub struct DefenderStore {
    store: Arc<dyn KvStore>,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DefenderError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DefenderError::Store(fleetcore_core::StoreError::Backend {
            operation: "decode",
            message: format!("a stored Defender record does not parse: {e}"),
        })
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn target_key(profile: &str, target: &Target) -> Vec<u8> {
    format!("{profile}\n{}", target.resource()).into_bytes()
}

impl DefenderStore {
    /// The tables in `store`.
    pub fn new(store: Arc<dyn KvStore>) -> DefenderStore {
        DefenderStore { store }
    }

    /// The profile `name`, if any.
    pub fn profile(&self, name: &str) -> Result<Option<ProfileRecord>, DefenderError> {
        self.store
            .get(PROFILES, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> Result<Vec<ProfileRecord>, DefenderError> {
        self.store
            .scan_prefix(PROFILES, b"")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Writes `record` (create or update).
    pub fn put_profile(&self, record: &ProfileRecord) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.put(PROFILES, record.name.as_bytes(), encode(record));
        Ok(self.store.apply(batch)?)
    }

    /// Deletes profile `name` and its attachments.
    pub fn delete_profile(&self, name: &str) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.delete(PROFILES, name.as_bytes());
        batch.delete_prefix(TARGETS, format!("{name}\n").into_bytes());
        Ok(self.store.apply(batch)?)
    }

    /// Attaches profile `name` to `target` (idempotent).
    pub fn attach(&self, name: &str, target: &Target) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.put(TARGETS, target_key(name, target), Vec::new());
        Ok(self.store.apply(batch)?)
    }

    /// Detaches profile `name` from `target`; false when it was not attached.
    pub fn detach(&self, name: &str, target: &Target) -> Result<bool, DefenderError> {
        let key = target_key(name, target);
        if self.store.get(TARGETS, &key)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        batch.delete(TARGETS, key);
        self.store.apply(batch)?;
        Ok(true)
    }

    /// Every attachment, as (profile, target).
    pub fn attachments(&self) -> Result<Vec<(String, Target)>, DefenderError> {
        Ok(self
            .store
            .scan_prefix(TARGETS, b"")?
            .iter()
            .filter_map(|(k, _)| {
                let text = std::str::from_utf8(k).ok()?;
                let (profile, resource) = text.split_once('\n')?;
                Some((profile.to_string(), Target::from_resource(resource)?))
            })
            .collect())
    }

    /// The custom metric `name`, if any.
    pub fn custom_metric(&self, name: &str) -> Result<Option<CustomMetricRecord>, DefenderError> {
        self.store
            .get(CUSTOM_METRICS, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every custom metric, by name.
    pub fn custom_metrics(&self) -> Result<Vec<CustomMetricRecord>, DefenderError> {
        self.store
            .scan_prefix(CUSTOM_METRICS, b"")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Writes `record` (create or update).
    pub fn put_custom_metric(&self, record: &CustomMetricRecord) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.put(CUSTOM_METRICS, record.name.as_bytes(), encode(record));
        Ok(self.store.apply(batch)?)
    }

    /// Deletes custom metric `name` (no error when absent, as on AWS).
    pub fn delete_custom_metric(&self, name: &str) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.delete(CUSTOM_METRICS, name.as_bytes());
        Ok(self.store.apply(batch)?)
    }
}

impl CustomMetricTypes for DefenderStore {
    fn custom_metric_type(&self, name: &str) -> Option<CustomMetricType> {
        match self.custom_metric(name) {
            Ok(record) => record.and_then(|r| CustomMetricType::parse(&r.metric_type)),
            Err(e) => {
                tracing::error!(metric = name, error = %e, "reading a custom metric failed");
                None
            }
        }
    }
}
