//! Customer-managed storage (`customerManagedS3`): a channel's or datastore's objects in a bucket
//! of the server's lake (the S3-compatible store it is configured with, or the lake's local
//! folder), reached through the [`Buckets`] seam the binary implements over that lake. Each
//! resource keeps its objects under `<keyPrefix><name>/` ([`Placed`]): a channel its numbered
//! message files (`<seq>.jsonl`), a datastore its Hive partitions
//! (`__dt=YYYY-MM-DD[/<attribute>=<value>]/<file>.parquet|.json`).

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

use crate::error::AnalyticsError;

/// The lake's buckets, as customer-managed storage uses them.
#[async_trait]
pub trait Buckets: Send + Sync {
    /// The store of `bucket`, for reading, listing and deleting; the error says why it cannot
    /// be reached.
    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String>;

    /// Writes `body` as `bucket/key`, whole (a single PUT, or a local file renamed into place
    /// and fsynced) before it returns.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String>;
}

/// A `customerManagedS3` storage member, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerS3 {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (empty, or ending with `/`).
    pub key_prefix: String,
}

impl CustomerS3 {
    /// The customer-managed bucket of a `datastoreStorage`/`channelStorage` value, if it names
    /// one (`None`: service-managed). The error says what is wrong with it.
    pub fn of(kind: &str, storage: &Value) -> Result<Option<CustomerS3>, String> {
        let member = format!("{kind}Storage");
        let Some(object) = storage.as_object() else {
            return match storage {
                Value::Null => Ok(None),
                _ => Err(format!("{member} must be an object")),
            };
        };
        for key in object.keys() {
            if key != "serviceManagedS3" && key != "customerManagedS3" {
                return Err(format!(
                    "{member}.{key} is not supported by this server: use serviceManagedS3 or customerManagedS3"
                ));
            }
        }
        let Some(customer) = object.get("customerManagedS3").filter(|c| !c.is_null()) else {
            return Ok(None);
        };
        if object.get("serviceManagedS3").is_some_and(|s| !s.is_null()) {
            return Err(format!(
                "{member} is either serviceManagedS3 or customerManagedS3, not both"
            ));
        }
        let text = |name: &str| customer.get(name).and_then(Value::as_str);
        let at = format!("{member}.customerManagedS3");
        let bucket = text("bucket").ok_or_else(|| format!("{at}.bucket is required"))?;
        if !(3..=255).contains(&bucket.len())
            || !bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!(
                "{at}.bucket `{bucket}` is not a bucket name: 3 to 255 letters, digits, '.', '-' and '_'"
            ));
        }
        let role = text("roleArn").ok_or_else(|| format!("{at}.roleArn is required"))?;
        if !(20..=2048).contains(&role.len()) {
            return Err(format!(
                "{at}.roleArn must be 20 to 2048 characters (an IAM role ARN)"
            ));
        }
        let key_prefix = match customer.get("keyPrefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(p)) if is_key_prefix(p) => p.clone(),
            Some(_) => {
                return Err(format!(
                    "{at}.keyPrefix must be 1 to 255 of letters, digits and !_.*'()/{{}}:- ending with /"
                ));
            }
        };
        Ok(Some(CustomerS3 {
            bucket: bucket.to_string(),
            key_prefix,
        }))
    }

    /// The key prefix of the objects of channel or datastore `name` (ends with `/`).
    pub fn prefix_of(&self, name: &str) -> String {
        format!("{}{name}/", self.key_prefix)
    }

    /// The URL DataFusion reads the objects under `prefix` from.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

/// AWS's pattern for a key prefix: `[a-zA-Z0-9!_.*'()/{}:-]*/`, 1 to 255 characters.
fn is_key_prefix(prefix: &str) -> bool {
    (1..=255).contains(&prefix.len())
        && prefix.ends_with('/')
        && !prefix.starts_with('/')
        && !prefix.contains("//")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!_.*'()/{}:-".contains(c))
}

/// Checks that `bucket` is there and takes writes: lists it and writes and deletes a probe
/// object under `prefix`. The error says what failed.
pub async fn check(buckets: &dyn Buckets, bucket: &str, prefix: &str) -> Result<(), String> {
    let store = buckets.store(bucket)?;
    store
        .list_with_delimiter(Some(&Path::from(prefix)))
        .await
        .map_err(|e| format!("listing it failed: {e}"))?;
    let probe = format!("{prefix}.fleetcore-probe");
    buckets
        .put(bucket, &probe, Vec::new())
        .await
        .map_err(|e| format!("writing to it failed: {e}"))?;
    store
        .delete(&Path::from(probe.as_str()))
        .await
        .map_err(|e| format!("deleting from it failed: {e}"))
}

/// One resource's objects: a prefix of a customer's bucket, and the lake that writes there.
#[derive(Clone)]
pub(crate) struct Placed {
    /// The bucket and key prefix the resource was created with.
    pub s3: CustomerS3,
    /// The resource's key prefix (`<keyPrefix><name>/`).
    pub prefix: String,
    /// The bucket's store, for reading, listing and deleting.
    pub store: Arc<dyn ObjectStore>,
    /// The lake, for durable writes.
    pub buckets: Arc<dyn Buckets>,
}

impl Placed {
    /// The objects of resource `name` stored as `s3` in the lake `buckets`; the error says
    /// why the bucket cannot be reached.
    pub(crate) fn new(
        buckets: Option<&Arc<dyn Buckets>>,
        s3: CustomerS3,
        name: &str,
    ) -> Result<Placed, AnalyticsError> {
        let buckets = buckets.cloned().ok_or_else(|| {
            AnalyticsError::Invalid("this server has no lake for customerManagedS3 storage".into())
        })?;
        let store = buckets
            .store(&s3.bucket)
            .map_err(|message| AnalyticsError::Bucket {
                bucket: s3.bucket.clone(),
                message,
            })?;
        Ok(Placed {
            prefix: s3.prefix_of(name),
            s3,
            store,
            buckets,
        })
    }

    /// The objects of a resource being created, checked to be usable now (a bucket that is
    /// missing or refuses writes is refused at create, not at the first write): `kind` is
    /// `channel` or `datastore`.
    pub(crate) async fn prepare(
        kind: &str,
        buckets: Option<&Arc<dyn Buckets>>,
        s3: CustomerS3,
        name: &str,
    ) -> Result<Placed, AnalyticsError> {
        let unusable = |bucket: &str, why: String| {
            AnalyticsError::Invalid(format!(
                "{kind}Storage.customerManagedS3.bucket `{bucket}` cannot be used: {why}"
            ))
        };
        let placed = match Placed::new(buckets, s3, name) {
            Ok(placed) => placed,
            Err(AnalyticsError::Bucket { bucket, message }) => {
                return Err(unusable(&bucket, message));
            }
            Err(e) => return Err(e),
        };
        check(placed.buckets.as_ref(), &placed.s3.bucket, &placed.prefix)
            .await
            .map_err(|why| unusable(&placed.s3.bucket, why))?;
        Ok(placed)
    }

    fn failed(&self, message: String) -> AnalyticsError {
        AnalyticsError::Bucket {
            bucket: self.s3.bucket.clone(),
            message,
        }
    }

    /// Writes `body` as the object `key` (under the prefix), whole and durable.
    pub(crate) async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), AnalyticsError> {
        let key = format!("{}{key}", self.prefix);
        self.buckets
            .put(&self.s3.bucket, &key, body)
            .await
            .map_err(|e| self.failed(format!("writing {key}: {e}")))
    }

    /// The object `key` (under the prefix); `None` when it is not there.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, AnalyticsError> {
        let key = format!("{}{key}", self.prefix);
        let fetched = match self.store.get(&Path::from(key.as_str())).await {
            Ok(fetched) => fetched,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(format!("reading {key}: {e}"))),
        };
        fetched
            .bytes()
            .await
            .map(Some)
            .map_err(|e| self.failed(format!("reading {key}: {e}")))
    }

    /// The names and sizes of the objects right under the prefix (not in its folders).
    pub(crate) async fn top(&self) -> Result<Vec<(String, u64)>, AnalyticsError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(self.prefix.as_str())))
            .await
            .map_err(|e| self.failed(format!("listing {}: {e}", self.prefix)))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| Some((meta.location.filename()?.to_string(), meta.size)))
            .collect())
    }

    /// Every object under the prefix, at any depth: (key, size).
    pub(crate) async fn all(&self) -> Result<Vec<(Path, u64)>, AnalyticsError> {
        objects(self.store.as_ref(), &self.prefix)
            .await
            .map_err(|e| self.failed(format!("listing {}: {e}", self.prefix)))
    }
}

/// Every object under `prefix`: (key, size).
pub async fn objects(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<(Path, u64)>, object_store::Error> {
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use serde_json::json;

    /// One in-memory bucket, `lake`; any other name is missing.
    struct Memory(Arc<InMemory>);

    #[async_trait]
    impl Buckets for Memory {
        fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
            match bucket {
                "lake" => Ok(Arc::clone(&self.0) as Arc<dyn ObjectStore>),
                _ => Err(format!("NoSuchBucket: {bucket}")),
            }
        }

        async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
            self.store(bucket)?
                .put(&Path::from(key), body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    #[tokio::test]
    async fn a_datastore_in_a_bucket_is_written_and_queried_there_and_outlives_its_delete() {
        let memory = Arc::new(InMemory::new());
        let (analytics, _dir) = crate::test_support::analytics_with(crate::Services {
            buckets: Some(Arc::new(Memory(Arc::clone(&memory)))),
            ..Default::default()
        });
        let storage = |bucket: &str| json!({"customerManagedS3": {"bucket": bucket, "keyPrefix": "iot/", "roleArn": ROLE}});
        let new = |name: &str, bucket: &str| crate::resources::NewDatastore {
            name: name.into(),
            storage: storage(bucket),
            partitions: json!({"partitions": [{"attributePartition": {"attributeName": "site"}}]}),
            ..Default::default()
        };
        let err = analytics
            .create_datastore(new("gone", "missing"), Default::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("`missing` cannot be used"),
            "{err}"
        );
        assert!(analytics.datastore("gone").is_err());
        analytics
            .create_datastore(new("t", "lake"), Default::default())
            .await
            .unwrap();
        // The probe object is gone again.
        assert!(objects(memory.as_ref(), "iot/").await.unwrap().is_empty());

        let day_ms = 1_765_000_000_000; // 2025-12-06
        let rows = (0..6)
            .map(|i| {
                let site = if i % 2 == 0 { "a" } else { "b" };
                crate::channel::Stored {
                    arrival_ms: if i < 4 { day_ms } else { 86_400_000 },
                    message: json!({"seq": i, "site": site}).as_object().unwrap().clone(),
                }
            })
            .collect();
        crate::runner::write(&analytics, "t", "p-1-1", rows)
            .await
            .unwrap();
        let mut keys: Vec<String> = objects(memory.as_ref(), "iot/t/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "iot/t/__dt=1970-01-02/site=a/p-1-1.parquet",
                "iot/t/__dt=1970-01-02/site=b/p-1-1.parquet",
                "iot/t/__dt=2025-12-06/site=a/p-1-1.parquet",
                "iot/t/__dt=2025-12-06/site=b/p-1-1.parquet",
            ]
        );
        let count = |sql: &'static str| {
            let analytics = Arc::clone(&analytics);
            async move {
                let batches = crate::query::run(&analytics.tables().unwrap(), sql)
                    .await
                    .unwrap();
                crate::columns::json_value(batches[0].column(0), 0)
            }
        };
        assert_eq!(count("SELECT count(*) FROM t").await, json!(6));
        assert_eq!(
            count("SELECT count(*) FROM t WHERE site = 'a' AND __dt = '2025-12-06'").await,
            json!(2)
        );
        assert!(analytics.datastore_size("t").await.unwrap() > 0);

        // The customer's objects outlive the datastore.
        analytics.delete_datastore("t").unwrap();
        assert_eq!(objects(memory.as_ref(), "iot/t/").await.unwrap().len(), 4);
    }

    const ROLE: &str = "arn:aws:iam::000000000000:role/analytics";

    /// The `seq` values of a datastore's rows, sorted (none before its first rows).
    async fn seqs(analytics: &crate::Analytics, datastore: &str) -> Vec<i64> {
        if analytics.datastore(datastore).unwrap().columns.is_empty() {
            return Vec::new();
        }
        let sql = format!("SELECT seq FROM {datastore} ORDER BY seq");
        let batches = crate::query::run(&analytics.tables().unwrap(), &sql)
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(|i| crate::columns::json_value(b.column(0), i)))
            .map(|v| v.as_i64().unwrap())
            .collect()
    }

    /// Waits (up to 20 s) until `datastore` holds `count` rows; their `seq` values.
    async fn seqs_eventually(
        analytics: &crate::Analytics,
        datastore: &str,
        count: usize,
    ) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let seqs = seqs(analytics, datastore).await;
            if seqs.len() >= count || tokio::time::Instant::now() > deadline {
                return seqs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 20 s) until the newest reprocessing of `pipeline` has succeeded; its id.
    async fn finished(analytics: &crate::Analytics, pipeline: &str) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let newest = analytics.reprocessings(pipeline).unwrap().remove(0);
            if newest.status == crate::reprocess::ReprocessingStatus::Succeeded {
                return newest.id;
            }
            assert!(tokio::time::Instant::now() < deadline, "{newest:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn messages(seqs: std::ops::Range<i64>) -> Vec<fleetcore_core::ChannelMessage> {
        seqs.map(|i| fleetcore_core::ChannelMessage {
            message_id: i.to_string(),
            payload: json!({ "seq": i }).to_string().into_bytes(),
        })
        .collect()
    }

    #[tokio::test]
    async fn a_channel_in_a_bucket_feeds_pipelines_and_reprocessing_and_outlives_its_delete() {
        let memory = Arc::new(InMemory::new());
        let (analytics, dir) = crate::test_support::analytics_with(crate::Services {
            buckets: Some(Arc::new(Memory(Arc::clone(&memory)))),
            ..Default::default()
        });
        let storage = |bucket: &str| json!({"customerManagedS3": {"bucket": bucket, "keyPrefix": "raw/", "roleArn": ROLE}});
        let err = analytics
            .create_channel("gone", storage("missing"), json!({}), Default::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("channelStorage.customerManagedS3.bucket `missing` cannot be used"),
            "{err}"
        );
        assert!(analytics.channel("gone").is_err());

        analytics
            .create_channel(
                "c",
                storage("lake"),
                json!({"numberOfDays": 1}),
                Default::default(),
            )
            .await
            .unwrap();
        analytics
            .create_datastore(
                crate::resources::NewDatastore {
                    name: "d".into(),
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let activities = vec![
            json!({"channel": {"name": "in", "channelName": "c", "next": "out"}}),
            json!({"datastore": {"name": "out", "datastoreName": "d"}}),
        ];
        analytics
            .create_pipeline("p", activities, Default::default())
            .await
            .unwrap();
        let outcomes = analytics.put_messages("c", messages(0..5)).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(seqs_eventually(&analytics, "d", 5).await, [0, 1, 2, 3, 4]);

        // The raw messages are objects of the bucket, none in the data folder.
        let keys: Vec<String> = objects(memory.as_ref(), "raw/c/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, ["raw/c/00000000000000000001.jsonl"]);
        assert!(!dir.path().join("analytics/channels/c").exists());
        assert!(analytics.channel_size("c").await.unwrap() > 0);
        let sample = analytics.sample("c", 2, None, None).await.unwrap();
        let sample: Vec<Value> = sample
            .iter()
            .map(|p| serde_json::from_slice(p).unwrap())
            .collect();
        assert_eq!(sample, [json!({"seq": 3}), json!({"seq": 4})]);

        // A reprocessing reads the bucket again: every message lands a second time.
        let window = crate::reprocess::Input::Window {
            start: None,
            end: None,
        };
        let id = analytics.start_reprocessing("p", window).await.unwrap();
        assert_eq!(seqs_eventually(&analytics, "d", 10).await.len(), 10);
        assert_eq!(finished(&analytics, "p").await, id);

        // channelMessages.s3Paths name the objects by their keys in the bucket: a key that is
        // not one of the channel's objects fails the call; the named object lands once more.
        for (bad, says) in [
            ("c/00000000000000000001.jsonl", "its keys are raw/c/"),
            ("raw/c/1.jsonl", "its keys are raw/c/"),
            (
                "raw/c/00000000000000000002.jsonl",
                "is not stored in channel c",
            ),
        ] {
            let paths = crate::reprocess::Input::Paths(vec![bad.into()]);
            let err = analytics.start_reprocessing("p", paths).await.unwrap_err();
            assert!(matches!(err, AnalyticsError::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
        let paths = crate::reprocess::Input::Paths(vec![keys[0].clone(), keys[0].clone()]);
        let id = analytics.start_reprocessing("p", paths).await.unwrap();
        assert_eq!(finished(&analytics, "p").await, id);
        let mut thrice: Vec<i64> = (0..5).flat_map(|i| [i, i, i]).collect();
        thrice.sort_unstable();
        assert_eq!(seqs(&analytics, "d").await, thrice);

        // Retention is ignored for the customer's bucket, and the objects outlive the channel.
        analytics
            .sweep(crate::retention::now_ms() + 10 * 86_400_000)
            .await
            .unwrap();
        assert_eq!(objects(memory.as_ref(), "raw/c/").await.unwrap().len(), 1);
        analytics.delete_pipeline("p").unwrap();
        analytics.delete_channel("c").unwrap();
        assert_eq!(objects(memory.as_ref(), "raw/c/").await.unwrap().len(), 1);
    }

    #[test]
    fn storage_members_are_checked() {
        assert_eq!(CustomerS3::of("datastore", &json!(null)), Ok(None));
        assert_eq!(
            CustomerS3::of("datastore", &json!({"serviceManagedS3": {}})),
            Ok(None)
        );
        let s = CustomerS3::of(
            "datastore",
            &json!({"customerManagedS3": {"bucket": "my-lake", "keyPrefix": "iot/", "roleArn": ROLE}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.prefix_of("t"), "iot/t/");
        assert_eq!(s.url("iot/t/"), "s3://my-lake/iot/t/");
        let no_prefix = CustomerS3::of(
            "channel",
            &json!({"customerManagedS3": {"bucket": "b.b", "roleArn": ROLE}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(no_prefix.prefix_of("t"), "t/");
        for (bad, says) in [
            (
                json!({"customerManagedS3": {"roleArn": ROLE}}),
                "bucket is required",
            ),
            (json!({"customerManagedS3": {"bucket": "b"}}), "bucket `b`"),
            (
                json!({"customerManagedS3": {"bucket": "bbb"}}),
                "roleArn is required",
            ),
            (
                json!({"customerManagedS3": {"bucket": "bbb", "roleArn": ROLE, "keyPrefix": "x"}}),
                "keyPrefix",
            ),
            (
                json!({"customerManagedS3": {"bucket": "b/b", "roleArn": ROLE}}),
                "not a bucket name",
            ),
            (
                json!({"serviceManagedS3": {}, "customerManagedS3": {"bucket": "bbb", "roleArn": ROLE}}),
                "not both",
            ),
            (json!({"iotSiteWiseMultiLayerStorage": {}}), "not supported"),
            (json!("s3"), "must be an object"),
        ] {
            let err = CustomerS3::of("datastore", &bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
