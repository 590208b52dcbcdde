//! A fleetcore stream's description as the JetStream backend keeps it: one JSON value per
//! stream in the KV bucket [`META_BUCKET`], keyed by the hex of the stream name (KV keys allow
//! fewer characters than stream names). Changes are compare-and-set on the entry's revision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::sequence;
use crate::{HashKeyRange, ShardId, ShardInfo, StreamError, StreamInfo, StreamMode, StreamStatus};

/// KV bucket of stream descriptions.
pub(super) const META_BUCKET: &str = "fleetcore_streams";

/// The stored description of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct StreamMeta {
    pub name: String,
    /// Set from the revision of the entry's creation; 0 while the stream is being created.
    pub epoch: u64,
    pub on_demand: bool,
    pub retention_hours: u32,
    pub created_ms: u64,
    pub shards: Vec<ShardMeta>,
}

/// One shard of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct ShardMeta {
    pub id: u32,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    /// Hash key range bounds, as decimal strings (JSON numbers cannot hold 128 bits).
    pub start: String,
    pub end: String,
    /// The last JetStream sequence of the shard once it is closed.
    pub closed_at: Option<u64>,
}

impl ShardMeta {
    pub fn new(id: u32, range: HashKeyRange, parents: &[u32]) -> ShardMeta {
        ShardMeta {
            id,
            parent: parents.first().copied(),
            adjacent_parent: parents.get(1).copied(),
            start: range.start.to_string(),
            end: range.end.to_string(),
            closed_at: None,
        }
    }

    pub fn range(&self) -> Result<HashKeyRange, StreamError> {
        let parse = |s: &str| {
            s.parse::<u128>()
                .map_err(|_| StreamError::Storage(format!("corrupt hash key {s:?} in metadata")))
        };
        Ok(HashKeyRange {
            start: parse(&self.start)?,
            end: parse(&self.end)?,
        })
    }

    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }
}

impl StreamMeta {
    /// The KV key of the stream `name`.
    pub fn key(name: &str) -> String {
        hex(name)
    }

    /// The stream name of KV key `key`, if it is one.
    pub fn name_of_key(key: &str) -> Option<String> {
        unhex(key)
    }

    pub fn shard(&self, id: ShardId) -> Result<&ShardMeta, StreamError> {
        self.shards.iter().find(|s| s.id == id.0).ok_or_else(|| {
            StreamError::NotFound(format!(
                "Could not find shard {id} in stream {} under account.",
                self.name
            ))
        })
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_hours) * 3600)
    }

    pub fn info(&self) -> Result<StreamInfo, StreamError> {
        let mut shards = Vec::with_capacity(self.shards.len());
        for s in &self.shards {
            let id = ShardId(s.id);
            let starting = sequence::encode(self.epoch, id, 1);
            shards.push(ShardInfo {
                id,
                parent: s.parent.map(ShardId),
                adjacent_parent: s.adjacent_parent.map(ShardId),
                hash_range: s.range()?,
                starting_sequence: starting,
                ending_sequence: s.closed_at.map(|last| {
                    if last == 0 {
                        starting
                    } else {
                        sequence::encode(self.epoch, id, last)
                    }
                }),
            });
        }
        Ok(StreamInfo {
            name: self.name.clone(),
            status: if self.epoch == 0 {
                StreamStatus::Creating
            } else {
                StreamStatus::Active
            },
            mode: if self.on_demand {
                StreamMode::OnDemand
            } else {
                StreamMode::Provisioned
            },
            retention_hours: self.retention_hours,
            created_at: UNIX_EPOCH + Duration::from_millis(self.created_ms),
            shards,
        })
    }

    pub fn to_json(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn from_json(bytes: &[u8]) -> Result<StreamMeta, StreamError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StreamError::Storage(format!("corrupt stream metadata: {e}")))
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lower-case hex of a name (KV keys and subjects allow only a few characters).
pub(super) fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_names() {
        for name in ["orders", "a.b-c_d", ".x.", "Z9"] {
            assert_eq!(
                StreamMeta::name_of_key(&StreamMeta::key(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(StreamMeta::name_of_key("zz"), None);
        assert_eq!(StreamMeta::name_of_key("abc"), None);
    }
}
