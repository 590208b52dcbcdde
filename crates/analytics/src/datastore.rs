//! Datastore storage: Hive-style partitioned folders of plain files any engine reads, Parquet
//! (the default) or newline-delimited JSON (`fileFormatConfiguration.jsonConfiguration`):
//! `<datastore>/__dt=YYYY-MM-DD[/<attribute>=<value>]/<pipeline>-<first>-<last>.parquet|.json`,
//! in the server's data folder (service-managed) or as objects of a bucket of the lake
//! (`customerManagedS3`, see [`crate::bucket`]).
//! The day comes from the timestamp partition's attribute (epoch seconds or milliseconds, or
//! an RFC 3339 text) or else the arrival time; a partition attribute leaves the file's columns
//! and comes back as the partition column. A JSON file holds one object per row, its members
//! the datastore's columns (typed as the table has them; a null is left out). A file appears
//! whole (a local file is written under a temporary name, fsynced and renamed; an object is one
//! PUT); its name is fixed by the channel files it came from, so a pipeline that redoes a batch
//! after a crash replaces it instead of adding rows twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use time::OffsetDateTime;

use crate::bucket::{Buckets, Placed};
use crate::channel::Stored;
use crate::columns;
use crate::error::AnalyticsError;
use crate::model::DatastoreRecord;
use crate::query::{FileFormat, Source};

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
    /// Objects under `<keyPrefix><datastore>/` in a bucket of the lake.
    Bucket(Placed),
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
        Ok(match datastore.customer_s3() {
            None => Location::Folder(self.dir(&datastore.name)),
            Some(s3) => Location::Bucket(Placed::new(self.buckets.as_ref(), s3, &datastore.name)?),
        })
    }

    /// Where a query reads `datastore` from.
    pub(crate) fn source(&self, datastore: &DatastoreRecord) -> Result<Source, AnalyticsError> {
        Ok(match self.location(datastore)? {
            Location::Folder(dir) => Source::Folder(dir),
            Location::Bucket(placed) => Source::Objects {
                url: placed.s3.url(&placed.prefix),
                store: placed.store,
            },
        })
    }

    /// Makes the place of a new datastore: its folder, or checks that its bucket is there and
    /// takes writes (a bucket that cannot be used is refused now, not at the first write).
    pub(crate) async fn create(&self, datastore: &DatastoreRecord) -> Result<(), AnalyticsError> {
        match datastore.customer_s3() {
            None => std::fs::create_dir_all(self.dir(&datastore.name)).map_err(|e| {
                AnalyticsError::io(format!("creating datastore {}", datastore.name), e)
            }),
            Some(s3) => {
                Placed::prepare("datastore", self.buckets.as_ref(), s3, &datastore.name).await?;
                Ok(())
            }
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

    /// Writes `rows` into `datastore`'s partitions as files named `<stem>.<format>`, with the
    /// datastore's columns (already widened to hold them); the bytes written.
    pub(crate) async fn write(
        &self,
        datastore: &DatastoreRecord,
        stem: &str,
        rows: Vec<Stored>,
    ) -> Result<u64, AnalyticsError> {
        let location = self.location(datastore)?;
        let format = datastore.format();
        let record = datastore.clone();
        let name = format!("{stem}.{}", format.extension());
        let what = format!("writing datastore {}", datastore.name);
        let failed = move |e| AnalyticsError::io(what.clone(), e);
        let files = tokio::task::spawn_blocking(move || {
            partition_batches(&record, &rows)?
                .into_iter()
                .map(|(partition, batch)| {
                    let body = encode(format, &batch).map_err(&failed)?;
                    Ok((partition, body))
                })
                .collect::<Result<Vec<_>, AnalyticsError>>()
        })
        .await
        .map_err(|e| AnalyticsError::Invalid(e.to_string()))??;
        let mut bytes = 0;
        match location {
            Location::Folder(dir) => {
                let what = format!("writing datastore {}", datastore.name);
                tokio::task::spawn_blocking(move || {
                    for (partition, body) in files {
                        bytes += body.len() as u64;
                        write_file(&dir.join(partition), &name, &body)?;
                    }
                    Ok(bytes)
                })
                .await
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))?
                .map_err(|e| AnalyticsError::io(what, e))
            }
            Location::Bucket(placed) => {
                for (partition, body) in files {
                    bytes += body.len() as u64;
                    placed.put(&format!("{partition}/{name}"), body).await?;
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
            // Its partitions' files (a channel of the same name may share the prefix).
            Location::Bucket(placed) => Ok(placed
                .all()
                .await?
                .iter()
                .filter(|(key, _)| key.as_ref()[placed.prefix.len()..].contains('/'))
                .map(|(_, size)| size)
                .sum()),
        }
    }
}

/// `batch` as the bytes of a file of `format`: Snappy Parquet, or one JSON object a line.
fn encode(format: FileFormat, batch: &RecordBatch) -> Result<Vec<u8>, std::io::Error> {
    match format {
        FileFormat::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))
                .map_err(std::io::Error::other)?;
            writer.write(batch).map_err(std::io::Error::other)?;
            writer.into_inner().map_err(std::io::Error::other)
        }
        FileFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
            writer.write(batch).map_err(std::io::Error::other)?;
            writer.finish().map_err(std::io::Error::other)?;
            Ok(writer.into_inner())
        }
    }
}

/// Writes `body` as `dir/name`: under a temporary name, fsynced, renamed, the folder fsynced.
fn write_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), std::io::Error> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(body)?;
    file.sync_data()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
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

    #[tokio::test]
    async fn a_json_datastore_holds_json_lines_that_sql_reads() {
        let (analytics, dir) = crate::test_support::analytics();
        let new = |format: Value| crate::resources::NewDatastore {
            name: "j".into(),
            file_format: format,
            partitions: json!({"partitions": [{"attributePartition": {"attributeName": "site"}}]}),
            ..Default::default()
        };
        let both = json!({"jsonConfiguration": {}, "parquetConfiguration": {}});
        let err = analytics
            .create_datastore(new(both), Default::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let record = analytics
            .create_datastore(new(json!({"jsonConfiguration": {}})), Default::default())
            .await
            .unwrap();
        assert_eq!(record.format(), FileFormat::Json);

        let day_ms = 1_765_000_000_000; // 2025-12-06
        let row = |message: Value| Stored {
            arrival_ms: day_ms,
            message: message.as_object().unwrap().clone(),
        };
        let rows = vec![
            row(json!({"seq": 1, "site": "a", "temp": 20, "ok": true})),
            row(json!({"seq": 2, "site": "a", "label": "x y"})),
            row(json!({"seq": 3, "site": "b", "temp": 21})),
        ];
        crate::runner::write(&analytics, "j", "p-1-1", rows)
            .await
            .unwrap();
        let folder = dir.path().join("analytics/datastores/j/__dt=2025-12-06");
        let lines = |site: &str| -> Vec<Value> {
            let path = folder.join(format!("site={site}/p-1-1.json"));
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        // Each row an object of the datastore's columns (a null left out, the partition in the
        // folder name).
        assert_eq!(
            lines("a"),
            [
                json!({"seq": 1, "temp": 20, "ok": true}),
                json!({"seq": 2, "label": "x y"})
            ]
        );
        assert_eq!(lines("b"), [json!({"seq": 3, "temp": 21})]);

        // A later batch widens temp to a double; the older file's integers read as doubles.
        let later = vec![row(json!({"seq": 4, "site": "b", "temp": 21.5}))];
        crate::runner::write(&analytics, "j", "p-2-2", later)
            .await
            .unwrap();
        let sql = "SELECT seq, site, temp, __dt FROM j WHERE site = 'b' ORDER BY seq";
        let batches = crate::query::run(&analytics.tables().unwrap(), sql)
            .await
            .unwrap();
        let csv = String::from_utf8(crate::query::csv(&batches).unwrap()).unwrap();
        assert_eq!(
            csv,
            "seq,site,temp,__dt\n3,b,21.0,2025-12-06\n4,b,21.5,2025-12-06\n"
        );
    }
}
