//! Provisioning templates and their versions in the shared store, with the parsed default
//! version of each template cached in memory (the claim flow reads it per device); in a
//! cluster, a change made by another node drops the cached template ([`TemplateStore::forget`]).

use std::collections::HashMap;
use std::sync::Arc;

use fleetcore_core::{KvStore, WriteBatch};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::ProvisioningError;
use crate::template::Template;

/// The store table of the templates (key: name; value: [`TemplateRecord`] as JSON).
pub const TEMPLATES: &str = "provisioning_templates";
/// The store table of their versions (key: `<name>/<version, 10 digits>`).
pub const VERSIONS: &str = "provisioning_template_versions";

/// Most versions a template keeps (AWS: 5).
pub const MAX_VERSIONS: usize = 5;

/// `FLEET_PROVISIONING` (by claim, RegisterThing) or `JITP` (a CA's just-in-time template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateType {
    /// Provisioning by claim and by RegisterThing.
    FleetProvisioning,
    /// Just-in-time provisioning for a registered CA.
    Jitp,
}

impl TemplateType {
    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateType::FleetProvisioning => "FLEET_PROVISIONING",
            TemplateType::Jitp => "JITP",
        }
    }

    /// Reads AWS's spelling.
    pub fn parse(text: &str) -> Result<TemplateType, ProvisioningError> {
        match text {
            "FLEET_PROVISIONING" => Ok(TemplateType::FleetProvisioning),
            "JITP" => Ok(TemplateType::Jitp),
            other => Err(ProvisioningError::Invalid(format!(
                "type must be FLEET_PROVISIONING or JITP, not {other:?}"
            ))),
        }
    }
}

/// The pre-provisioning hook: a function called before each device is provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreProvisioningHook {
    /// The function's ARN (or name).
    pub target_arn: String,
    /// The request format; AWS knows only `2020-04-01`.
    pub payload_version: String,
}

/// A template as stored (its body lives in its versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRecord {
    /// The name.
    pub name: String,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether devices may be provisioned with it.
    pub enabled: bool,
    /// The role AWS would assume (kept, shown, not used: fleetcore has no IAM).
    pub provisioning_role_arn: String,
    /// The type.
    pub template_type: TemplateType,
    /// The hook, if any.
    #[serde(default)]
    pub pre_provisioning_hook: Option<PreProvisioningHook>,
    /// Seconds since the epoch.
    pub creation_date: f64,
    /// Seconds since the epoch.
    pub last_modified_date: f64,
    /// The version devices are provisioned with.
    pub default_version_id: u32,
    /// The id the next version gets.
    pub next_version_id: u32,
}

/// One version of a template's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    /// 1, 2, ...
    pub version_id: u32,
    /// The template body (a JSON document as a string).
    pub body: String,
    /// Seconds since the epoch.
    pub creation_date: f64,
}

/// A template ready to provision with: its record and its parsed default version.
#[derive(Debug)]
pub struct LoadedTemplate {
    /// The record.
    pub record: TemplateRecord,
    /// The default version, parsed.
    pub template: Template,
}

/// The stored templates.
pub struct TemplateStore {
    store: Arc<dyn KvStore>,
    writer: Mutex<()>,
    cache: RwLock<HashMap<String, Arc<LoadedTemplate>>>,
}

fn version_key(name: &str, version: u32) -> String {
    format!("{name}/{version:010}")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProvisioningError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProvisioningError::Internal(format!("unreadable stored template: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProvisioningError> {
    serde_json::to_vec(value).map_err(|e| ProvisioningError::Internal(e.to_string()))
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

/// Checks a template name: 1-36 of `[0-9A-Za-z_-]`.
pub fn validate_name(name: &str) -> Result<(), ProvisioningError> {
    if name.is_empty()
        || name.len() > 36
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ProvisioningError::Invalid(format!(
            "templateName {name:?} must be 1 to 36 characters of [0-9A-Za-z_-]"
        )));
    }
    Ok(())
}

impl TemplateStore {
    /// The templates in `store` (tables `provisioning_templates*`).
    pub fn new(store: Arc<dyn KvStore>) -> TemplateStore {
        TemplateStore {
            store,
            writer: Mutex::new(()),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Drops the parsed template `name` (another node changed it or its versions): the next
    /// use reads it again.
    pub fn forget(&self, name: &str) {
        self.cache.write().remove(name);
    }

    /// Drops every parsed template (another node may have changed any).
    pub fn forget_all(&self) {
        self.cache.write().clear();
    }

    fn not_found(name: &str) -> ProvisioningError {
        ProvisioningError::NotFound(format!("The provisioning template {name} does not exist"))
    }

    /// The record of template `name`.
    pub fn record(&self, name: &str) -> Result<TemplateRecord, ProvisioningError> {
        validate_name(name)?;
        match self.store.get(TEMPLATES, name.as_bytes())? {
            Some(bytes) => decode(&bytes),
            None => Err(Self::not_found(name)),
        }
    }

    /// Version `version` of template `name`.
    pub fn version(&self, name: &str, version: u32) -> Result<VersionRecord, ProvisioningError> {
        match self
            .store
            .get(VERSIONS, version_key(name, version).as_bytes())?
        {
            Some(bytes) => decode(&bytes),
            None => Err(ProvisioningError::NotFound(format!(
                "The provisioning template {name} has no version {version}"
            ))),
        }
    }

    /// Every version of template `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, ProvisioningError> {
        self.record(name)?;
        self.store
            .scan_prefix(VERSIONS, format!("{name}/").as_bytes())?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// Every template, by name.
    pub fn list(&self) -> Result<Vec<TemplateRecord>, ProvisioningError> {
        self.store
            .scan_prefix(TEMPLATES, b"")?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// The template `name` with its default version parsed (cached).
    pub fn load(&self, name: &str) -> Result<Arc<LoadedTemplate>, ProvisioningError> {
        if let Some(t) = self.cache.read().get(name) {
            return Ok(Arc::clone(t));
        }
        let record = self.record(name)?;
        let body = self.version(name, record.default_version_id)?.body;
        let template = Template::parse(&body)?;
        let loaded = Arc::new(LoadedTemplate { record, template });
        self.cache
            .write()
            .insert(name.to_string(), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Creates template `record.name` with `body` as version 1.
    pub fn create(&self, record: TemplateRecord, body: String) -> Result<(), ProvisioningError> {
        let _w = self.writer.lock();
        if self.store.get(TEMPLATES, record.name.as_bytes())?.is_some() {
            return Err(ProvisioningError::AlreadyExists(format!(
                "The provisioning template {} already exists",
                record.name
            )));
        }
        let version = VersionRecord {
            version_id: 1,
            body,
            creation_date: record.creation_date,
        };
        // The name is claimed by compare-and-set, so of two nodes creating it at once exactly
        // one wins; then version 1 and the record again in one batch (which, in a cluster,
        // announces the change to the other nodes).
        let encoded = encode(&record)?;
        if !self
            .store
            .compare_and_set(TEMPLATES, record.name.as_bytes(), None, encoded.clone())?
        {
            return Err(ProvisioningError::AlreadyExists(format!(
                "The provisioning template {} already exists",
                record.name
            )));
        }
        let mut batch = WriteBatch::new();
        batch.put(
            VERSIONS,
            version_key(&record.name, 1).into_bytes(),
            encode(&version)?,
        );
        batch.put(TEMPLATES, record.name.clone().into_bytes(), encoded);
        self.store.apply(batch)?;
        Ok(())
    }

    /// Changes template `name` with `change` (under the writer lock) and stores it.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut TemplateRecord) -> Result<(), ProvisioningError>,
    ) -> Result<TemplateRecord, ProvisioningError> {
        let _w = self.writer.lock();
        let mut record = self.record(name)?;
        change(&mut record)?;
        if self
            .store
            .get(
                VERSIONS,
                version_key(name, record.default_version_id).as_bytes(),
            )?
            .is_none()
        {
            return Err(ProvisioningError::NotFound(format!(
                "The provisioning template {name} has no version {}",
                record.default_version_id
            )));
        }
        record.last_modified_date = now();
        let mut batch = WriteBatch::new();
        batch.put(TEMPLATES, name.as_bytes().to_vec(), encode(&record)?);
        self.store.apply(batch)?;
        self.cache.write().remove(name);
        Ok(record)
    }

    /// Adds a version with `body`; it becomes the default with `set_as_default`.
    pub fn add_version(
        &self,
        name: &str,
        body: String,
        set_as_default: bool,
    ) -> Result<(TemplateRecord, VersionRecord), ProvisioningError> {
        let _w = self.writer.lock();
        let mut record = self.record(name)?;
        let count = self
            .store
            .scan_prefix(VERSIONS, format!("{name}/").as_bytes())?
            .len();
        if count >= MAX_VERSIONS {
            return Err(ProvisioningError::VersionsLimit(format!(
                "The provisioning template {name} already has the maximum of {MAX_VERSIONS} versions: delete one first"
            )));
        }
        let version = VersionRecord {
            version_id: record.next_version_id,
            body,
            creation_date: now(),
        };
        record.next_version_id += 1;
        if set_as_default {
            record.default_version_id = version.version_id;
        }
        record.last_modified_date = version.creation_date;
        let mut batch = WriteBatch::new();
        batch.put(
            VERSIONS,
            version_key(name, version.version_id).into_bytes(),
            encode(&version)?,
        );
        batch.put(TEMPLATES, name.as_bytes().to_vec(), encode(&record)?);
        self.store.apply(batch)?;
        self.cache.write().remove(name);
        Ok((record, version))
    }

    /// Deletes version `version` (not the default one).
    pub fn delete_version(&self, name: &str, version: u32) -> Result<(), ProvisioningError> {
        let _w = self.writer.lock();
        let record = self.record(name)?;
        self.version(name, version)?;
        if record.default_version_id == version {
            return Err(ProvisioningError::Conflict(format!(
                "Version {version} is the default version of provisioning template {name} and cannot be deleted"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(VERSIONS, version_key(name, version).into_bytes());
        self.store.apply(batch)?;
        Ok(())
    }

    /// Deletes template `name` and its versions.
    pub fn delete(&self, name: &str) -> Result<(), ProvisioningError> {
        let _w = self.writer.lock();
        self.record(name)?;
        let mut batch = WriteBatch::new();
        batch.delete_prefix(VERSIONS, format!("{name}/").into_bytes());
        batch.delete(TEMPLATES, name.as_bytes().to_vec());
        self.store.apply(batch)?;
        self.cache.write().remove(name);
        Ok(())
    }
}
