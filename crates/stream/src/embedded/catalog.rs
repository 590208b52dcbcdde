//! The embedded backend's metadata: streams, shards, sequence reservations, checkpoints and
//! leases, in one small JSON file (`catalog.json`) replaced atomically on every change (write a
//! temporary file, fsync, rename, fsync the directory).
//!
//! Concurrent changes share writes: each change bumps a version and snapshots the catalog; a
//! writer that finds a newer snapshot already on disk has nothing left to do.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{
    HashKeyRange, Lease, SequenceNumber, ShardId, ShardInfo, StreamError, StreamInfo, StreamMode,
    StreamStatus,
};

/// Sequence counters are reserved this far ahead of use, so one catalog write covers many
/// appends and a restart never hands out a number that was handed out before.
pub const RESERVATION: u64 = 1 << 24;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Everything the catalog file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatalogData {
    /// The epoch the next created stream gets (epochs are never reused).
    pub next_epoch: u64,
    /// Streams by name.
    pub streams: BTreeMap<String, StreamMeta>,
}

/// One stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamMeta {
    /// High 64 bits of every sequence number of the stream; its directory is `s<epoch>`.
    pub epoch: u64,
    /// `PROVISIONED` or `ON_DEMAND`.
    pub on_demand: bool,
    pub retention_hours: u32,
    pub created_ms: u64,
    /// Low 64 bits of sequence numbers below this may have been handed out.
    pub reserved: u64,
    /// The id the next new shard gets.
    pub next_shard: u32,
    pub shards: Vec<ShardMeta>,
    /// Consumer groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupMeta>,
}

/// One shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMeta {
    pub id: u32,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    #[serde(with = "decimal")]
    pub hash_start: u128,
    #[serde(with = "decimal")]
    pub hash_end: u128,
    #[serde(with = "decimal")]
    pub starting_sequence: u128,
    #[serde(with = "optional_decimal")]
    pub ending_sequence: Option<u128>,
    /// When the shard was closed.
    pub closed_ms: Option<u64>,
}

/// A consumer group's checkpoints and leases, by shard id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupMeta {
    #[serde(with = "decimal_map")]
    pub checkpoints: BTreeMap<u32, u128>,
    pub leases: BTreeMap<u32, LeaseMeta>,
}

/// One lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseMeta {
    pub owner: String,
    pub expires_ms: u64,
}

impl StreamMeta {
    /// The directory name of the stream's shards.
    pub fn dir_name(&self) -> String {
        format!("s{}", self.epoch)
    }

    /// The full sequence number for a counter value.
    pub fn sequence(&self, counter: u64) -> u128 {
        u128::from(self.epoch) << 64 | u128::from(counter)
    }

    /// The shard with this id.
    pub fn shard(&self, id: ShardId) -> Result<&ShardMeta, StreamError> {
        self.shards
            .iter()
            .find(|shard| shard.id == id.0)
            .ok_or_else(|| StreamError::NotFound(format!("shard {id} not found")))
    }

    /// The description the trait hands out.
    pub fn info(&self, name: &str) -> StreamInfo {
        StreamInfo {
            name: name.to_owned(),
            status: StreamStatus::Active,
            mode: if self.on_demand {
                StreamMode::OnDemand
            } else {
                StreamMode::Provisioned
            },
            retention_hours: self.retention_hours,
            created_at: from_unix_ms(self.created_ms),
            shards: self.shards.iter().map(ShardMeta::info).collect(),
        }
    }

    /// Leases of a group as the trait shows them.
    pub fn leases(&self, group: &str) -> Vec<Lease> {
        self.groups.get(group).map_or_else(Vec::new, |group| {
            group
                .leases
                .iter()
                .map(|(shard, lease)| Lease {
                    shard: ShardId(*shard),
                    owner: lease.owner.clone(),
                    expires: from_unix_ms(lease.expires_ms),
                })
                .collect()
        })
    }
}

impl ShardMeta {
    /// The description the trait hands out.
    pub fn info(&self) -> ShardInfo {
        ShardInfo {
            id: ShardId(self.id),
            parent: self.parent.map(ShardId),
            adjacent_parent: self.adjacent_parent.map(ShardId),
            hash_range: HashKeyRange {
                start: self.hash_start,
                end: self.hash_end,
            },
            starting_sequence: SequenceNumber(self.starting_sequence),
            ending_sequence: self.ending_sequence.map(SequenceNumber),
        }
    }

    /// The shard's directory name.
    pub fn dir_name(&self) -> String {
        format!("{}", ShardId(self.id))
    }
}

/// The catalog in memory plus its file.
pub struct Catalog {
    path: PathBuf,
    state: Mutex<Versioned>,
    /// The version last written to disk (writes happen under this lock, in version order).
    written: Mutex<u64>,
}

struct Versioned {
    data: CatalogData,
    version: u64,
}

/// A serialized catalog waiting to be written.
pub struct Snapshot {
    version: u64,
    bytes: Vec<u8>,
}

impl Catalog {
    /// Loads `catalog.json` from `dir` (an empty catalog if there is none yet).
    pub fn open(dir: &Path) -> io::Result<Catalog> {
        let path = dir.join("catalog.json");
        super::segment::remove_if_present(&path.with_extension("json.tmp"))?;
        let data = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a valid catalog: {error}", path.display()),
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => CatalogData::default(),
            Err(error) => return Err(error),
        };
        Ok(Catalog {
            path,
            state: Mutex::new(Versioned { data, version: 0 }),
            written: Mutex::new(0),
        })
    }

    /// Reads the catalog.
    pub fn read<T>(&self, f: impl FnOnce(&CatalogData) -> T) -> T {
        f(&self.state.lock().data)
    }

    /// Changes the catalog in memory; returns the result and, if `f` changed anything (said by
    /// returning `true` beside its result), a snapshot to [`Catalog::persist`].
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut CatalogData) -> Result<(T, bool), StreamError>,
    ) -> Result<(T, Option<Snapshot>), StreamError> {
        let mut state = self.state.lock();
        let (value, changed) = f(&mut state.data)?;
        if !changed {
            return Ok((value, None));
        }
        state.version += 1;
        let bytes = serde_json::to_vec(&state.data)
            .map_err(|error| StreamError::Storage(format!("catalog encoding: {error}")))?;
        Ok((
            value,
            Some(Snapshot {
                version: state.version,
                bytes,
            }),
        ))
    }

    /// Makes a snapshot (or a newer one) durable.
    pub fn persist(&self, snapshot: Option<Snapshot>) -> Result<(), StreamError> {
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        let mut written = self.written.lock();
        if *written >= snapshot.version {
            return Ok(());
        }
        write_atomically(&self.path, &snapshot.bytes).map_err(|error| {
            StreamError::Storage(format!("writing the stream catalog: {error}"))
        })?;
        *written = snapshot.version;
        Ok(())
    }

    /// [`Catalog::update`] then [`Catalog::persist`].
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut CatalogData) -> Result<(T, bool), StreamError>,
    ) -> Result<T, StreamError> {
        let (value, snapshot) = self.update(f)?;
        self.persist(snapshot)?;
        Ok(value)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("json.tmp");
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes the entries of a directory (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// u128 as a decimal string (JSON numbers lose precision past 2^53 in many readers).
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

mod optional_decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(D::Error::custom))
            .transpose()
    }
}

mod decimal_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, u128>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, v.to_string())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u128>, D::Error> {
        BTreeMap::<u32, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.parse().map_err(D::Error::custom)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_stream(data: &mut CatalogData, name: &str) {
        data.streams.insert(
            name.into(),
            StreamMeta {
                epoch: 7,
                on_demand: false,
                retention_hours: 24,
                created_ms: 1,
                reserved: RESERVATION,
                next_shard: 0,
                shards: Vec::new(),
                groups: BTreeMap::new(),
            },
        );
    }

    #[test]
    fn a_newer_snapshot_on_disk_covers_an_older_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        let (_, first) = catalog
            .update(|data| {
                add_stream(data, "a");
                Ok(((), true))
            })
            .expect("update");
        let (_, second) = catalog
            .update(|data| {
                add_stream(data, "b");
                Ok(((), true))
            })
            .expect("update");
        catalog.persist(second).expect("persist newer");
        catalog.persist(first).expect("older is a no-op");
        let reopened = Catalog::open(dir.path()).expect("reopen");
        let names: Vec<String> = reopened.read(|data| data.streams.keys().cloned().collect());
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn large_numbers_survive_the_file_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        catalog
            .change(|data| {
                add_stream(data, "s");
                let stream = data.streams.get_mut("s").expect("stream");
                stream.shards.push(ShardMeta {
                    id: 0,
                    parent: None,
                    adjacent_parent: None,
                    hash_start: 0,
                    hash_end: u128::MAX,
                    starting_sequence: u128::MAX - 1,
                    ending_sequence: Some(u128::MAX - 1),
                    closed_ms: None,
                });
                stream
                    .groups
                    .entry("g".into())
                    .or_default()
                    .checkpoints
                    .insert(0, u128::MAX);
                Ok(((), true))
            })
            .expect("change");
        let reopened = Catalog::open(dir.path()).expect("reopen");
        reopened.read(|data| {
            let stream = &data.streams["s"];
            assert_eq!(stream.shards[0].hash_end, u128::MAX);
            assert_eq!(stream.shards[0].ending_sequence, Some(u128::MAX - 1));
            assert_eq!(stream.groups["g"].checkpoints[&0], u128::MAX);
        });
        fs::write(dir.path().join("catalog.json"), b"{\"next_epoch\": ").expect("damage");
        let error = Catalog::open(dir.path()).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
