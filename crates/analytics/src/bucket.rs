//! Customer-managed storage (`customerManagedS3`): a datastore's Parquet objects in a bucket of
//! the server's lake (the S3-compatible store it is configured with, or the lake's local folder),
//! reached through the [`Buckets`] seam the binary implements over that lake. Objects are
//! `<keyPrefix><datastore>/__dt=YYYY-MM-DD[/<attribute>=<value>]/<file>.parquet`.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

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

    /// The key prefix of datastore `name`'s objects (ends with `/`).
    pub fn datastore_prefix(&self, name: &str) -> String {
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

/// Deletes every object under `prefix`; how many it deleted.
pub async fn delete_all(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<usize, object_store::Error> {
    let keys = objects(store, prefix).await?;
    for (key, _) in &keys {
        store.delete(key).await?;
    }
    Ok(keys.len())
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
        assert_eq!(s.datastore_prefix("t"), "iot/t/");
        assert_eq!(s.url("iot/t/"), "s3://my-lake/iot/t/");
        let no_prefix = CustomerS3::of(
            "channel",
            &json!({"customerManagedS3": {"bucket": "b.b", "roleArn": ROLE}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(no_prefix.datastore_prefix("t"), "t/");
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
