//! The data lake: where objects are written, through `object_store`. A local folder by default
//! (`<data dir>/lake/<bucket>/<key>`), or any S3-compatible endpoint.
//!
//! Every object is one `put` of the whole body: on S3 a single PUT, in the local folder a
//! temporary file renamed into place (`object_store`'s `LocalFileSystem`), so an object appears
//! whole or not at all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use parking_lot::Mutex;

/// Where the lake is.
#[derive(Clone, PartialEq, Eq)]
pub enum LakeConfig {
    /// A folder; each bucket is a subfolder.
    Local {
        /// The lake's root folder.
        root: PathBuf,
    },
    /// An S3-compatible object store.
    S3 {
        /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
        endpoint: String,
        /// Signing region.
        region: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Path-style requests (`endpoint/bucket/key`, MinIO and moto) instead of virtual-hosted.
        path_style: bool,
    },
}

/// Shows everything but the secret key.
impl std::fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeConfig::Local { root } => f.debug_struct("Local").field("root", root).finish(),
            LakeConfig::S3 {
                endpoint,
                region,
                access_key_id,
                path_style,
                ..
            } => f
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field("path_style", path_style)
                .finish(),
        }
    }
}

/// Object writer over the configured lake; one `object_store` client per bucket.
pub struct Lake {
    config: LakeConfig,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Lake {
    /// A lake at `config`; nothing is contacted until the first write.
    pub fn new(config: LakeConfig) -> Lake {
        Lake {
            config,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// Where the lake is.
    pub fn config(&self) -> &LakeConfig {
        &self.config
    }

    /// Writes `body` as `bucket/key`, whole. Errors are messages for logs and retries.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
        let store = self.store(bucket)?;
        store
            .put(&Path::from(key), PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        let mut stores = self.stores.lock();
        if let Some(store) = stores.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = match &self.config {
            LakeConfig::Local { root } => {
                let dir = root.join(bucket);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?)
            }
            LakeConfig::S3 {
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                path_style,
            } => Arc::new(
                AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_region(region)
                    .with_bucket_name(bucket)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key)
                    .with_virtual_hosted_style_request(!path_style)
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(endpoint.starts_with("http://"))
                            .with_timeout(Duration::from_secs(60)),
                    )
                    // The delivery task retries with its own backoff and keeps the records;
                    // the client gives up quickly so an outage shows in the metrics at once.
                    .with_retry(RetryConfig {
                        max_retries: 1,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
        };
        stores.insert(bucket.to_string(), Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_objects_land_under_the_bucket_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::new(LakeConfig::Local {
            root: dir.path().join("lake"),
        });
        lake.put("b", "p/year=2026/x.json", b"{}\n".to_vec())
            .await
            .expect("put");
        let path = dir.path().join("lake/b/p/year=2026/x.json");
        assert_eq!(std::fs::read(path).expect("read"), b"{}\n");
    }
}
