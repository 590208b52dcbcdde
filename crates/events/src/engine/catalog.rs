//! The versions of one kind of model (detector models, alarm models): every version in a store
//! table keyed `name \0 version` (zero-padded, so keys sort by version), and the latest version
//! of each compiled in memory, shared with the shards. Create, update, describe (the latest or a
//! version), list, list versions and delete work the same for both kinds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fleetcore_core::{KvStore, WriteBatch};
use parking_lot::{RwLock, RwLockReadGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::EventsError;
use crate::alarm::{AlarmModel, AlarmModelRecord};
use crate::model::{DetectorModel, DetectorModelRecord};

/// A model version as stored.
pub(crate) trait Versioned: Serialize + DeserializeOwned + Clone {
    /// The model's name.
    fn name(&self) -> &str;
    /// Its version, from 1.
    fn version(&self) -> u32;
}

/// A compiled model and the stored version it was compiled from.
pub(crate) trait Compiled: Send + Sync {
    /// The stored form.
    type Record: Versioned;
    /// What it was compiled from.
    fn record(&self) -> &Self::Record;
}

impl Versioned for DetectorModelRecord {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
}

impl Compiled for DetectorModel {
    type Record = DetectorModelRecord;
    fn record(&self) -> &DetectorModelRecord {
        &self.record
    }
}

impl Versioned for AlarmModelRecord {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
}

impl Compiled for AlarmModel {
    type Record = AlarmModelRecord;
    fn record(&self) -> &AlarmModelRecord {
        &self.record
    }
}

/// The latest compiled version of each model, by name (read by the shards).
pub(crate) type Latest<M> = Arc<RwLock<HashMap<String, Arc<M>>>>;

/// The versions of one kind of model.
pub(crate) struct Catalog<M: Compiled> {
    store: Arc<dyn KvStore>,
    table: &'static str,
    /// "Detector model" or "Alarm model", for error messages.
    kind: &'static str,
    latest: Latest<M>,
}

fn version_key(name: &str, version: u32) -> Vec<u8> {
    format!("{name}\0{version:010}").into_bytes()
}

fn name_prefix(name: &str) -> Vec<u8> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

impl<M: Compiled> Catalog<M> {
    /// Reads the latest stored version of every model of `table` and compiles each with
    /// `compile` (one that no longer compiles is logged and left out).
    pub fn load(
        store: Arc<dyn KvStore>,
        table: &'static str,
        kind: &'static str,
        compile: impl Fn(M::Record) -> Result<M, String>,
    ) -> Result<Catalog<M>, EventsError> {
        let mut stored: BTreeMap<String, M::Record> = BTreeMap::new();
        for (_, value) in store.scan_prefix(table, b"")? {
            match serde_json::from_slice::<M::Record>(&value) {
                // Keys sort by version, so the last one read is the latest.
                Ok(record) => {
                    stored.insert(record.name().to_string(), record);
                }
                Err(e) => tracing::warn!(error = %e, kind, "skipping an unreadable model version"),
            }
        }
        let mut latest = HashMap::new();
        for (name, record) in stored {
            match compile(record) {
                Ok(m) => {
                    latest.insert(name, Arc::new(m));
                }
                Err(e) => {
                    tracing::error!(model = %name, error = %e, kind, "a stored model no longer compiles: its instances stay idle")
                }
            }
        }
        Ok(Catalog {
            store,
            table,
            kind,
            latest: Arc::new(RwLock::new(latest)),
        })
    }

    /// The in-memory table the shards read.
    pub fn latest(&self) -> Latest<M> {
        Arc::clone(&self.latest)
    }

    /// The latest compiled versions, locked for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<M>>> {
        self.latest.read()
    }

    /// The latest compiled version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<M>> {
        self.latest.read().get(name).cloned()
    }

    /// Checks a create (`update` false: the name must be free) or an update (it must exist);
    /// returns the version being replaced. `arn` names the model in AlreadyExists.
    pub fn replacing(
        &self,
        name: &str,
        update: bool,
        arn: impl FnOnce() -> String,
    ) -> Result<Option<Arc<M>>, EventsError> {
        match (self.get(name), update) {
            (Some(_), false) => Err(EventsError::AlreadyExists {
                message: format!("{} {name} already exists", self.kind),
                id: name.to_string(),
                arn: arn(),
            }),
            (None, true) => Err(self.missing(name)),
            (old, _) => Ok(old),
        }
    }

    /// Stores `compiled`'s version and makes it the latest.
    pub fn save(&self, compiled: Arc<M>) -> Result<(), EventsError> {
        let record = compiled.record();
        let mut batch = WriteBatch::new();
        batch.put(
            self.table,
            version_key(record.name(), record.version()),
            serde_json::to_vec(record).map_err(|e| EventsError::Invalid(e.to_string()))?,
        );
        self.store.apply(batch)?;
        self.latest
            .write()
            .insert(record.name().to_string(), compiled);
        Ok(())
    }

    /// The latest version of `name`, or `version`.
    pub fn record(&self, name: &str, version: Option<u32>) -> Result<M::Record, EventsError> {
        let Some(v) = version else {
            return self
                .get(name)
                .map(|m| m.record().clone())
                .ok_or_else(|| self.missing(name));
        };
        let value = self
            .store
            .get(self.table, &version_key(name, v))?
            .ok_or_else(|| {
                EventsError::NotFound(format!("{} {name} version {v} does not exist", self.kind))
            })?;
        serde_json::from_slice(&value).map_err(|e| EventsError::Invalid(e.to_string()))
    }

    /// The latest version of each model, by name.
    pub fn records(&self) -> Vec<M::Record> {
        let mut all: Vec<M::Record> = self
            .latest
            .read()
            .values()
            .map(|m| m.record().clone())
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Every version of `name`, newest first.
    pub fn versions(&self, name: &str) -> Result<Vec<M::Record>, EventsError> {
        self.record(name, None)?;
        let mut versions: Vec<M::Record> = self
            .store
            .scan_prefix(self.table, &name_prefix(name))?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        versions.reverse();
        Ok(versions)
    }

    /// Deletes every version of `name`.
    pub fn delete(&self, name: &str) -> Result<(), EventsError> {
        self.record(name, None)?;
        let mut batch = WriteBatch::new();
        batch.delete_prefix(self.table, name_prefix(name));
        self.store.apply(batch)?;
        self.latest.write().remove(name);
        Ok(())
    }

    fn missing(&self, name: &str) -> EventsError {
        EventsError::NotFound(format!("{} {name} does not exist", self.kind))
    }
}
