//! Datastore storage: Hive-style partitioned Parquet folders, plain files any Parquet engine
//! reads: `<datastore>/__dt=YYYY-MM-DD[/<attribute>=<value>]/<pipeline>-<first>-<last>.parquet`.
//! The day comes from the timestamp partition's attribute (epoch seconds or milliseconds, or
//! an RFC 3339 text) or else the arrival time; a partition attribute leaves the file's columns
//! and comes back as the partition column. Files are written under a temporary name, fsynced
//! and renamed; their name is fixed by the channel files they came from, so a pipeline that
//! redoes a batch after a crash replaces them instead of adding rows twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use time::OffsetDateTime;

use crate::channel::Stored;
use crate::columns;
use crate::error::AnalyticsError;
use crate::model::DatastoreRecord;

/// The name of the time partition column.
pub const DAY_COLUMN: &str = "__dt";

/// Hive's folder name for a missing partition value.
const NO_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// The datastores' folders.
pub(crate) struct DatastoreFiles {
    root: PathBuf,
}

/// The time of a timestamp attribute value, epoch milliseconds.
fn timestamp_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            let v = n.as_f64()?;
            // Seconds until 5138 AD read as seconds, larger values as milliseconds.
            Some(if v.abs() < 1e11 {
                (v * 1000.0) as i64
            } else {
                v as i64
            })
        }
        Value::String(s) => string_to_timestamp_nanos(s)
            .ok()
            .map(|nanos| nanos.div_euclid(1_000_000)),
        _ => None,
    }
}

/// `YYYY-MM-DD` of epoch milliseconds (UTC).
pub fn day_of(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A partition value as a folder name part: percent-encoded outside `[A-Za-z0-9_.-]`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl DatastoreFiles {
    /// Datastores under `root`.
    pub(crate) fn new(root: PathBuf) -> DatastoreFiles {
        DatastoreFiles { root }
    }

    /// The folder of datastore `name`.
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the folder of `name`.
    pub(crate) fn create(&self, name: &str) -> Result<(), AnalyticsError> {
        std::fs::create_dir_all(self.dir(name))
            .map_err(|e| AnalyticsError::io(format!("creating datastore {name}"), e))
    }

    /// Removes the folder of `name` and every file in it.
    pub(crate) fn remove(&self, name: &str) -> Result<(), AnalyticsError> {
        match std::fs::remove_dir_all(self.dir(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AnalyticsError::io(format!("removing datastore {name}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Writes `rows` into `datastore`'s partitions as files named `<stem>.parquet`, with the
    /// datastore's columns (already widened to hold them).
    pub(crate) fn write(
        &self,
        datastore: &DatastoreRecord,
        stem: &str,
        rows: &[Stored],
    ) -> Result<u64, AnalyticsError> {
        let mut partitions: BTreeMap<PathBuf, Vec<&serde_json::Map<String, Value>>> =
            BTreeMap::new();
        for row in rows {
            let ms = datastore
                .timestamp_partition
                .as_ref()
                .and_then(|a| row.message.get(a))
                .and_then(timestamp_ms)
                .unwrap_or(row.arrival_ms);
            let mut path = PathBuf::from(format!("{DAY_COLUMN}={}", day_of(ms)));
            if let Some(attribute) = &datastore.attribute_partition {
                let value = match row.message.get(attribute) {
                    None | Some(Value::Null) => NO_VALUE.to_string(),
                    Some(Value::String(s)) => escape(s),
                    Some(other) => escape(&other.to_string()),
                };
                path.push(format!("{attribute}={value}"));
            }
            partitions.entry(path).or_default().push(&row.message);
        }
        let mut bytes = 0;
        for (partition, messages) in partitions {
            let batch =
                columns::batch(&datastore.columns, &messages).map_err(AnalyticsError::Invalid)?;
            let dir = self.dir(&datastore.name).join(partition);
            bytes += write_parquet(&dir, stem, &batch).map_err(|e| {
                AnalyticsError::io(format!("writing datastore {}", datastore.name), e)
            })?;
        }
        Ok(bytes)
    }

    /// Bytes of every file of `name`.
    pub(crate) fn size(&self, name: &str) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        walk(&self.dir(name))
    }
}

fn write_parquet(
    dir: &Path,
    stem: &str,
    batch: &arrow_array::RecordBatch,
) -> Result<u64, std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{stem}.tmp"));
    let file = std::fs::File::create(&tmp)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(std::io::Error::other)?;
    writer.write(batch).map_err(std::io::Error::other)?;
    let file = writer.into_inner().map_err(std::io::Error::other)?;
    file.sync_data()?;
    let len = file.metadata()?.len();
    std::fs::rename(&tmp, dir.join(format!("{stem}.parquet")))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn days_and_escapes() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_765_000_000_000), "2025-12-06");
        assert_eq!(timestamp_ms(&json!(1_765_000_000)), Some(1_765_000_000_000));
        assert_eq!(
            timestamp_ms(&json!(1_765_000_000_123_i64)),
            Some(1_765_000_000_123)
        );
        assert_eq!(
            timestamp_ms(&json!("1970-01-02T00:00:00Z")),
            Some(86_400_000)
        );
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
    }
}
