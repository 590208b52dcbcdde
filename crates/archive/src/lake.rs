//! The data lake: where objects are written, through `object_store`. A local folder by default
//! (`<data dir>/lake/<bucket>/<key>`), or any S3-compatible endpoint.
//!
//! Every object is one `put` of the whole body: on S3 a single PUT, in the local folder a
//! temporary file renamed into place, so an object appears whole or not at all. A local object
//! is on disk (file and folder entries fsynced) before `put` returns, because the delivery is
//! checkpointed right after: a power loss must not take an object whose records are already
//! marked done.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
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
    stores: Mutex<HashMap<String, Bucket>>,
}

/// One bucket's writer: a local folder (its `LocalFileSystem` maps keys to file names, the
/// same names every reader of the lake uses) or an S3 client.
#[derive(Clone)]
enum Bucket {
    Local(Arc<LocalFileSystem>, PathBuf),
    Remote(Arc<dyn ObjectStore>),
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
        match self.store(bucket)? {
            Bucket::Local(fs, dir) => {
                let path = fs
                    .path_to_filesystem(&Path::from(key))
                    .map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || write_durably(&dir, &path, &body))
                    .await
                    .map_err(|e| format!("writing {key}: {e}"))?
            }
            Bucket::Remote(store) => store
                .put(&Path::from(key), PutPayload::from(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// The object store of `bucket`, for reading, listing and deleting its objects (writes go
    /// through [`Lake::put`], which makes a local object durable).
    pub fn object_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        Ok(match self.store(bucket)? {
            Bucket::Local(fs, _) => fs,
            Bucket::Remote(store) => store,
        })
    }

    fn store(&self, bucket: &str) -> Result<Bucket, String> {
        let mut stores = self.stores.lock();
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let store = match &self.config {
            LakeConfig::Local { root } => {
                let dir = root.join(bucket);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
                Bucket::Local(Arc::new(fs), dir)
            }
            LakeConfig::S3 {
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                path_style,
            } => Bucket::Remote(Arc::new(
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
            )),
        };
        stores.insert(bucket.to_string(), store.clone());
        Ok(store)
    }
}

/// Writes `body` to `path` (inside the bucket folder `bucket_dir`) as a staged file
/// `<path>#<n>` that is fsynced, renamed into place, and whose folder entries are fsynced up to
/// the bucket folder. Readers of the lake skip names with `#` (`object_store` stages the same
/// way); a crash leaves at most such a staged file, never a partial object.
fn write_durably(
    bucket_dir: &std::path::Path,
    path: &std::path::Path,
    body: &[u8],
) -> Result<(), String> {
    let failed =
        |what: &str, p: &std::path::Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let parent = path
        .parent()
        .ok_or_else(|| format!("{} has no folder", path.display()))?;
    let mut created = Vec::new();
    let mut missing = Some(parent);
    while let Some(dir) = missing.filter(|d| !d.exists() && d.starts_with(bucket_dir)) {
        created.push(dir);
        missing = dir.parent();
    }
    std::fs::create_dir_all(parent).map_err(|e| failed("creating", parent, e))?;
    let mut n = 1u32;
    let (mut file, staged) = loop {
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        let staged = PathBuf::from(staged);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
        {
            Ok(file) => break (file, staged),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(failed("creating", &staged, e)),
        }
    };
    let written = file
        .write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed("writing", &staged, e))
        .and_then(|()| std::fs::rename(&staged, path).map_err(|e| failed("renaming", &staged, e)));
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    // The new name, and any folder made for it, persist only once their folders are synced.
    let mut sync = vec![parent];
    sync.extend(created.iter().filter_map(|d| d.parent()));
    for dir in sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("syncing", dir, e))?;
    }
    Ok(())
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

    #[tokio::test]
    async fn a_put_leaves_only_the_object_and_replaces_an_earlier_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::new(LakeConfig::Local {
            root: dir.path().to_path_buf(),
        });
        lake.put("b", "k/o.gz", b"one".to_vec()).await.expect("put");
        lake.put("b", "k/o.gz", b"two".to_vec())
            .await
            .expect("put again");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("b/k"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["o.gz"]);
        assert_eq!(
            std::fs::read(dir.path().join("b/k/o.gz")).expect("read"),
            b"two"
        );
    }
}
