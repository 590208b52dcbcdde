//! The shadow document and its AWS semantics: nested merge, `null` deletes (and a section left
//! empty disappears), arrays replaced whole, per-leaf metadata timestamps, the delta between
//! `desired` and `reported`, and the size and depth limits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ShadowError;
use crate::request::{SectionPatch, UpdateRequest};

/// A JSON object.
pub type Object = Map<String, Value>;

/// Limits on shadow documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest state (`desired` + `reported` as JSON, metadata excluded), in bytes. AWS: 8 KB.
    pub max_state_bytes: usize,
    /// Deepest nesting of objects within `desired` or `reported`. AWS: 6 levels.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_state_bytes: 8 * 1024,
            max_depth: 6,
        }
    }
}

/// One section (`desired` or `reported`) with its metadata tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// The state; empty means the section is absent.
    #[serde(default)]
    pub state: Object,
    /// Mirrors `state`: every leaf is `{"timestamp": <epoch seconds>}`.
    #[serde(default)]
    pub metadata: Object,
}

impl Section {
    fn apply(&mut self, patch: &SectionPatch, timestamp: u64) {
        match patch {
            SectionPatch::Absent => {}
            SectionPatch::Clear => {
                self.state.clear();
                self.metadata.clear();
            }
            SectionPatch::Merge(p) => merge(&mut self.state, &mut self.metadata, p, timestamp),
        }
    }
}

/// A shadow document as stored: the two sections and the version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowDocument {
    /// Starts at 1 with the first update, +1 per accepted update.
    pub version: u64,
    /// What the application wants.
    #[serde(default)]
    pub desired: Section,
    /// What the device reports.
    #[serde(default)]
    pub reported: Section,
}

/// What an accepted update produced, for the responses.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The metadata of exactly the leaves the update touched (`/update/accepted`).
    pub touched: Value,
}

impl ShadowDocument {
    /// Applies an update in place (the caller checked the version) and checks the limits on
    /// the result. On error the document is left half-changed: apply to a working copy and
    /// drop it on error (the service does).
    pub fn apply(
        &mut self,
        request: &UpdateRequest,
        timestamp: u64,
        limits: &Limits,
    ) -> Result<Applied, ShadowError> {
        self.desired.apply(&request.desired, timestamp);
        self.reported.apply(&request.reported, timestamp);
        if self.state_size() > limits.max_state_bytes {
            return Err(ShadowError::TooLarge);
        }
        self.version += 1;
        let mut touched = Object::new();
        for (name, patch) in [
            ("desired", &request.desired),
            ("reported", &request.reported),
        ] {
            match patch {
                SectionPatch::Absent => {}
                SectionPatch::Clear => {
                    touched.insert(name.into(), json!({ "timestamp": timestamp }));
                }
                SectionPatch::Merge(p) => {
                    touched.insert(name.into(), Value::Object(touched_metadata(p, timestamp)));
                }
            }
        }
        Ok(Applied {
            touched: Value::Object(touched),
        })
    }

    /// Size of the state as AWS counts it: `desired` and `reported` as JSON.
    pub fn state_size(&self) -> usize {
        json_len(&self.desired.state) + json_len(&self.reported.state)
    }

    /// Keys of `desired` whose value differs from `reported`, nested; empty when in sync.
    pub fn delta(&self) -> Object {
        delta(&self.desired.state, &self.reported.state)
    }

    /// The metadata of the delta's leaves (taken from `desired`'s metadata).
    pub fn delta_metadata(&self, delta: &Object) -> Object {
        project(&self.desired.metadata, delta)
    }

    /// `{"desired"?, "reported"?}` (absent sections left out), plus `"delta"` when asked and
    /// not empty.
    pub fn state_json(&self, with_delta: bool) -> Value {
        let mut state = Object::new();
        if !self.desired.state.is_empty() {
            state.insert("desired".into(), Value::Object(self.desired.state.clone()));
        }
        if !self.reported.state.is_empty() {
            state.insert(
                "reported".into(),
                Value::Object(self.reported.state.clone()),
            );
        }
        if with_delta {
            let delta = self.delta();
            if !delta.is_empty() {
                state.insert("delta".into(), Value::Object(delta));
            }
        }
        Value::Object(state)
    }

    /// `{"desired"?, "reported"?}` of the metadata.
    pub fn metadata_json(&self) -> Value {
        let mut metadata = Object::new();
        if !self.desired.metadata.is_empty() {
            metadata.insert(
                "desired".into(),
                Value::Object(self.desired.metadata.clone()),
            );
        }
        if !self.reported.metadata.is_empty() {
            metadata.insert(
                "reported".into(),
                Value::Object(self.reported.metadata.clone()),
            );
        }
        Value::Object(metadata)
    }
}

fn json_len(object: &Object) -> usize {
    if object.is_empty() {
        return 0;
    }
    serde_json::to_vec(object).map_or(usize::MAX, |v| v.len())
}

/// The metadata of a value just written: `{"timestamp"}` for a scalar, mirrored for arrays and
/// objects.
pub fn leaf_metadata(value: &Value, timestamp: u64) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), leaf_metadata(v, timestamp)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| leaf_metadata(v, timestamp)).collect())
        }
        _ => json!({ "timestamp": timestamp }),
    }
}

/// Merges `patch` into `state` (and stamps `metadata`): objects merge recursively, `null`
/// removes the key, anything else (scalars, arrays) replaces; objects left empty are removed.
pub fn merge(state: &mut Object, metadata: &mut Object, patch: &Object, timestamp: u64) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                state.remove(key);
                metadata.remove(key);
            }
            Value::Object(inner) => {
                let slot = state
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Object::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Object::new());
                }
                let meta = metadata
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Object::new()));
                // A leaf's metadata ({"timestamp"}) or an array's must not leak into the
                // object's children.
                if !matches!(slot, Value::Object(s) if !s.is_empty()) || !meta.is_object() {
                    *meta = Value::Object(Object::new());
                }
                let (Value::Object(s), Value::Object(m)) = (slot, meta) else {
                    continue;
                };
                merge(s, m, inner, timestamp);
                if s.is_empty() {
                    state.remove(key);
                    metadata.remove(key);
                }
            }
            other => {
                state.insert(key.clone(), other.clone());
                metadata.insert(key.clone(), leaf_metadata(other, timestamp));
            }
        }
    }
}

/// The metadata of what a patch touched: deleted keys get a timestamp too.
fn touched_metadata(patch: &Object, timestamp: u64) -> Object {
    patch
        .iter()
        .map(|(k, v)| {
            let m = match v {
                Value::Object(inner) => Value::Object(touched_metadata(inner, timestamp)),
                other => leaf_metadata(other, timestamp),
            };
            (k.clone(), m)
        })
        .collect()
}

/// Keys of `desired` whose value differs from `reported`; nested objects are compared key by
/// key, anything else (arrays included) as a whole.
pub fn delta(desired: &Object, reported: &Object) -> Object {
    let mut out = Object::new();
    for (key, want) in desired {
        match (want, reported.get(key)) {
            (Value::Object(w), Some(Value::Object(r))) => {
                let inner = delta(w, r);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            (w, Some(r)) if w == r => {}
            (w, _) => {
                out.insert(key.clone(), w.clone());
            }
        }
    }
    out
}

/// The part of `metadata` that mirrors the keys of `shape`.
fn project(metadata: &Object, shape: &Object) -> Object {
    let mut out = Object::new();
    for (key, value) in shape {
        let Some(meta) = metadata.get(key) else {
            continue;
        };
        match (value, meta) {
            (Value::Object(s), Value::Object(m)) if !s.is_empty() => {
                out.insert(key.clone(), Value::Object(project(m, s)));
            }
            _ => {
                out.insert(key.clone(), meta.clone());
            }
        }
    }
    out
}

/// Nesting depth of objects in `value`: 0 for a scalar, 1 for an object of scalars. Arrays add
/// no level of their own; objects inside them count.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
