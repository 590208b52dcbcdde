//! Wiring of the analytics capability (IoT Analytics) in `fleetcore serve`: its enrich
//! activities read the registry and the shadows through core's DeviceDirectory (implemented
//! here), its lambda activity calls the functions, and its channels receive the rules'
//! iotAnalytics action; channels tagged with a stream read it. Its files live under
//! `<data dir>/analytics/`; customer-managed datastores are objects in the lake's buckets
//! (`LakeBuckets`, written through the archive's `Lake`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use fleetcore_analytics::bucket::Buckets;
use fleetcore_analytics::{Analytics, AnalyticsConfig, Services};
use fleetcore_archive::lake::{Lake, LakeConfig};
use fleetcore_core::{AccountContext, DeviceDirectory, FunctionInvoker, KvStore};
use fleetcore_identity::IdentityService;
use fleetcore_shadow::ShadowService;

use crate::config::Settings;

/// The registry and shadows as enrich activities read them.
struct Devices {
    identity: Arc<IdentityService>,
    shadows: ShadowService,
}

impl DeviceDirectory for Devices {
    fn thing(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(thing) = self.identity.thing(name).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let document = serde_json::json!({
            "thingName": thing.name,
            "thingId": thing.id,
            "thingArn": self.identity.registry().thing_arn(&thing.name),
            "thingTypeName": thing.thing_type_name,
            "attributes": thing.attributes,
            "version": thing.version,
            "defaultClientId": thing.name,
        });
        Ok(Some(document.to_string().into_bytes()))
    }

    fn shadow(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match self.shadows.get(name, None) {
            Ok(document) => Ok(document.map(|d| d.to_string().into_bytes())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The lake's buckets as customer-managed datastores use them.
pub struct LakeBuckets(Lake);

impl LakeBuckets {
    /// The buckets of the lake at `config`.
    pub fn new(config: LakeConfig) -> LakeBuckets {
        LakeBuckets(Lake::new(config))
    }
}

#[async_trait::async_trait]
impl Buckets for LakeBuckets {
    fn store(&self, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, String> {
        self.0.object_store(bucket)
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
        self.0.put(bucket, key, body).await
    }
}

/// The folder of the analytics capability in the data folder.
pub fn root(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("analytics")
}

/// Starts analytics (pipelines resume from their checkpoints). `(http_addr, node_id)` is where
/// this node is: the HTTP listener dataset contents download from, and its id (its member name
/// in the channel sources' consumer groups).
pub fn start(
    settings: &Settings,
    store: &Arc<dyn KvStore>,
    identity: &Arc<IdentityService>,
    shadows: &ShadowService,
    functions: Arc<dyn FunctionInvoker>,
    streams: &Arc<dyn fleetcore_stream::Stream>,
    (http_addr, node_id): (SocketAddr, &str),
) -> anyhow::Result<Arc<Analytics>> {
    Analytics::start(
        Arc::clone(store),
        AnalyticsConfig {
            root: root(&settings.data_dir),
            account: AccountContext::new(&settings.region, &settings.account_id),
            content_base_url: format!("http://{http_addr}"),
            consumer_owner: node_id.to_owned(),
        },
        Services {
            functions: Some(functions),
            devices: Some(Arc::new(Devices {
                identity: Arc::clone(identity),
                shadows: shadows.clone(),
            })),
            streams: Some(Arc::clone(streams)),
            buckets: Some(Arc::new(LakeBuckets::new(settings.lake.clone()))),
        },
    )
    .context("starting analytics")
}
