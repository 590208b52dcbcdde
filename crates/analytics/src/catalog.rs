//! The resources' records in the store: one table, keys `<kind>/<name>` holding JSON.

use std::sync::Arc;

use fleetcore_core::{KvStore, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AnalyticsError;

/// The store table of the analytics capability.
pub(crate) const TABLE: &str = "iotanalytics";

/// Typed access to the records.
#[derive(Clone)]
pub(crate) struct Catalog {
    store: Arc<dyn KvStore>,
}

fn key(kind: &str, name: &str) -> Vec<u8> {
    format!("{kind}/{name}").into_bytes()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnalyticsError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AnalyticsError::Invalid(format!("a stored record does not parse: {e}")))
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and JSON values: serializing cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

impl Catalog {
    /// The catalog over `store`.
    pub(crate) fn new(store: Arc<dyn KvStore>) -> Catalog {
        Catalog { store }
    }

    /// The record `kind/name`, if any.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, AnalyticsError> {
        self.store
            .get(TABLE, &key(kind, name))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every record of `kind` (names starting with `prefix`), in name order.
    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
        prefix: &str,
    ) -> Result<Vec<T>, AnalyticsError> {
        self.store
            .scan_prefix(TABLE, &key(kind, prefix))?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Adds the write of `record` as `kind/name` to `batch`.
    pub(crate) fn stage<T: Serialize>(batch: &mut WriteBatch, kind: &str, name: &str, record: &T) {
        batch.put(TABLE, key(kind, name), encode(record));
    }

    /// Adds the delete of `kind/name` to `batch`.
    pub(crate) fn stage_delete(batch: &mut WriteBatch, kind: &str, name: &str) {
        batch.delete(TABLE, key(kind, name));
    }

    /// Adds the delete of every `kind/prefix...` to `batch`.
    pub(crate) fn stage_delete_prefix(batch: &mut WriteBatch, kind: &str, prefix: &str) {
        batch.delete_prefix(TABLE, key(kind, prefix));
    }

    /// Writes `record` as `kind/name`, durably.
    pub(crate) fn put<T: Serialize>(
        &self,
        kind: &str,
        name: &str,
        record: &T,
    ) -> Result<(), AnalyticsError> {
        let mut batch = WriteBatch::new();
        Catalog::stage(&mut batch, kind, name, record);
        self.apply(batch)
    }

    /// Applies `batch` durably.
    pub(crate) fn apply(&self, batch: WriteBatch) -> Result<(), AnalyticsError> {
        Ok(self.store.apply(batch)?)
    }
}
