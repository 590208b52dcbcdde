//! Datastore storage: Hive-style partitioned Parquet folders, plain files any Parquet engine
//! reads: `<datastore>/__dt=YYYY-MM-DD[/<attribute>=<value>]/<pipeline>-<first>-<last>.parquet`,
//! in the server's data folder (service-managed) or as objects of a bucket of the lake
//! (`customerManagedS3`, see [`crate::bucket`]).
//! The day comes from the timestamp partition's attribute (epoch seconds or milliseconds, or
//! an RFC 3339 text) or else the arrival time; a partition attribute leaves the file's columns
//! and comes back as the partition column. A file appears whole (a local file is written under a
//! temporary name, fsynced and renamed; an object is one PUT); its name is fixed by the channel
//! files it came from, so a pipeline that redoes a batch after a crash replaces it instead of
//! adding rows twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use time::OffsetDateTime;

use crate::bucket::{self, Buckets, CustomerS3};
use crate::channel::Stored;
use crate::columns;
use crate::error::AnalyticsError;
use crate::model::DatastoreRecord;
use crate::query::Source;

/// The name of the time partition column.
pub const DAY_COLUMN: &str = "__dt";

/// Hive's folder name for a missing partition value.
const NO_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// The datastores' folders, and the lake's buckets for customer-managed ones.
pub(crate) struct DatastoreFiles {
    root: PathBuf,
    buckets: Option<Arc<dyn Buckets>>,
}

/// Where one datastore's files are.
pub(crate) enum Location {
    /// A folder of the data folder.
    Folder(PathBuf),
    /// Objects under `prefix` in a bucket of the lake.
    Bucket {
        /// The bucket and key prefix the datastore was created with.
        s3: CustomerS3,
        /// The datastore's key prefix (`<keyPrefix><datastore>/`).
        prefix: String,
        /// The bucket's store.
        store: Arc<dyn ObjectStore>,
        /// The lake, for durable writes.
        buckets: Arc<dyn Buckets>,
    },
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

/// The rows of each partition as a batch of the datastore's columns, by the partition's
/// relative folder (`__dt=.../attr=...`).
fn partition_batches(
    datastore: &DatastoreRecord,
    rows: &[Stored],
) -> Result<Vec<(String, RecordBatch)>, AnalyticsError> {
    let mut partitions: BTreeMap<String, Vec<&serde_json::Map<String, Value>>> = BTreeMap::new();
    for row in rows {
        let ms = datastore
            .timestamp_partition
            .as_ref()
            .and_then(|a| row.message.get(a))
            .and_then(timestamp_ms)
            .unwrap_or(row.arrival_ms);
        let mut path = format!("{DAY_COLUMN}={}", day_of(ms));
        if let Some(attribute) = &datastore.attribute_partition {
            let value = match row.message.get(attribute) {
                None | Some(Value::Null) => NO_VALUE.to_string(),
                Some(Value::String(s)) => escape(s),
                Some(other) => escape(&other.to_string()),
            };
            path.push_str(&format!("/{attribute}={value}"));
        }
        partitions.entry(path).or_default().push(&row.message);
    }
    partitions
        .into_iter()
        .map(|(path, messages)| {
            columns::batch(&datastore.columns, &messages)
                .map(|batch| (path, batch))
                .map_err(AnalyticsError::Invalid)
        })
        .collect()
}

impl DatastoreFiles {
    /// Datastores under `root`, and in the lake's `buckets` if the server has them.
    pub(crate) fn new(root: PathBuf, buckets: Option<Arc<dyn Buckets>>) -> DatastoreFiles {
        DatastoreFiles { root, buckets }
    }

    /// The folder of service-managed datastore `name`.
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where `datastore`'s files are.
    pub(crate) fn location(&self, datastore: &DatastoreRecord) -> Result<Location, AnalyticsError> {
        let Some(s3) = datastore.customer_s3() else {
            return Ok(Location::Folder(self.dir(&datastore.name)));
        };
        let buckets = self.buckets.clone().ok_or_else(|| {
            AnalyticsError::Invalid("this server has no lake for customerManagedS3 storage".into())
        })?;
        let store = buckets
            .store(&s3.bucket)
            .map_err(|message| AnalyticsError::Bucket {
                bucket: s3.bucket.clone(),
                message,
            })?;
        Ok(Location::Bucket {
            prefix: s3.datastore_prefix(&datastore.name),
            s3,
            store,
            buckets,
        })
    }

    /// Where a query reads `datastore` from.
    pub(crate) fn source(&self, datastore: &DatastoreRecord) -> Result<Source, AnalyticsError> {
        Ok(match self.location(datastore)? {
            Location::Folder(dir) => Source::Folder(dir),
            Location::Bucket {
                s3, prefix, store, ..
            } => Source::Objects {
                url: s3.url(&prefix),
                store,
            },
        })
    }

    /// Makes the place of a new datastore: its folder, or checks that its bucket is there and
    /// takes writes (a bucket that cannot be used is refused now, not at the first write).
    pub(crate) async fn create(&self, datastore: &DatastoreRecord) -> Result<(), AnalyticsError> {
        match self.location(datastore) {
            Ok(Location::Folder(dir)) => std::fs::create_dir_all(dir).map_err(|e| {
                AnalyticsError::io(format!("creating datastore {}", datastore.name), e)
            }),
            Ok(Location::Bucket {
                s3,
                prefix,
                buckets,
                ..
            }) => bucket::check(buckets.as_ref(), &s3.bucket, &prefix)
                .await
                .map_err(|e| {
                    AnalyticsError::Invalid(format!(
                        "datastoreStorage.customerManagedS3.bucket `{}` cannot be used: {e}",
                        s3.bucket
                    ))
                }),
            Err(AnalyticsError::Bucket { bucket, message }) => {
                Err(AnalyticsError::Invalid(format!(
                    "datastoreStorage.customerManagedS3.bucket `{bucket}` cannot be used: {message}"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the files of a service-managed datastore. A customer-managed datastore's
    /// objects stay in the customer's bucket.
    pub(crate) fn remove(&self, datastore: &DatastoreRecord) -> Result<(), AnalyticsError> {
        if datastore.customer_s3().is_some() {
            return Ok(());
        }
        let name = &datastore.name;
        match std::fs::remove_dir_all(self.dir(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AnalyticsError::io(format!("removing datastore {name}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Writes `rows` into `datastore`'s partitions as files named `<stem>.parquet`, with the
    /// datastore's columns (already widened to hold them); the bytes written.
    pub(crate) async fn write(
        &self,
        datastore: &DatastoreRecord,
        stem: &str,
        rows: Vec<Stored>,
    ) -> Result<u64, AnalyticsError> {
        let location = self.location(datastore)?;
        let record = datastore.clone();
        let stem = stem.to_string();
        let what = format!("writing datastore {}", datastore.name);
        let failed = move |e| AnalyticsError::io(what.clone(), e);
        match location {
            Location::Folder(dir) => tokio::task::spawn_blocking(move || {
                let mut bytes = 0;
                for (partition, batch) in partition_batches(&record, &rows)? {
                    bytes += write_parquet(&dir.join(partition), &stem, &batch).map_err(&failed)?;
                }
                Ok(bytes)
            })
            .await
            .map_err(|e| AnalyticsError::Invalid(e.to_string()))?,
            Location::Bucket {
                s3,
                prefix,
                buckets,
                ..
            } => {
                let objects = tokio::task::spawn_blocking(move || {
                    partition_batches(&record, &rows)?
                        .into_iter()
                        .map(|(partition, batch)| {
                            let body = encode(Vec::new(), &batch).map_err(&failed)?;
                            Ok((format!("{prefix}{partition}/{stem}.parquet"), body))
                        })
                        .collect::<Result<Vec<_>, AnalyticsError>>()
                })
                .await
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))??;
                let mut bytes = 0;
                for (key, body) in objects {
                    bytes += body.len() as u64;
                    buckets
                        .put(&s3.bucket, &key, body)
                        .await
                        .map_err(|message| AnalyticsError::Bucket {
                            bucket: s3.bucket.clone(),
                            message: format!("writing {key}: {message}"),
                        })?;
                }
                Ok(bytes)
            }
        }
    }

    /// Bytes of every file of `datastore`.
    pub(crate) async fn size(&self, datastore: &DatastoreRecord) -> Result<u64, AnalyticsError> {
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
        match self.location(datastore)? {
            Location::Folder(dir) => Ok(walk(&dir)),
            Location::Bucket {
                s3, prefix, store, ..
            } => bucket::objects(store.as_ref(), &prefix)
                .await
                .map(|objects| objects.iter().map(|(_, size)| size).sum())
                .map_err(|e| AnalyticsError::Bucket {
                    bucket: s3.bucket,
                    message: e.to_string(),
                }),
        }
    }
}

/// `batch` as a Snappy Parquet file written to `out`.
fn encode<W: std::io::Write + Send>(out: W, batch: &RecordBatch) -> Result<W, std::io::Error> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(out, batch.schema(), Some(props)).map_err(std::io::Error::other)?;
    writer.write(batch).map_err(std::io::Error::other)?;
    writer.into_inner().map_err(std::io::Error::other)
}

fn write_parquet(dir: &Path, stem: &str, batch: &RecordBatch) -> Result<u64, std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{stem}.tmp"));
    let file = encode(std::fs::File::create(&tmp)?, batch)?;
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
