//! Named, versioned IoT policies and their attachments, kept in the shared [`KvStore`].
//!
//! Tables (JSON values):
//! - `iot_policy`: policy name → [`PolicyRecord`] (default version, next version id, dates);
//! - `iot_policy_version`: `name \0 version` (zero-padded) → [`VersionRecord`] (the document);
//! - `iot_policy_target`: `target \0 name` → empty: the policies attached to a target;
//! - `iot_policy_attachment`: `name \0 target` → empty: the same facts, by policy.
//!
//! Mutations are serialised by one writer lock, so checks (version limit, attachments) and the
//! writes they guard are atomic. Each committed mutation bumps [`Policies::generation`] and then
//! calls the change listeners, outside every lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::document::{DocumentError, PolicyDocument};
use super::engine::CompiledPolicy;

/// Most versions a policy can have (AWS: "A managed policy can have up to five versions",
/// CreatePolicyVersion API reference).
pub const MAX_POLICY_VERSIONS: usize = 5;

/// Most policies attached to one target (AWS IoT Core quotas: 10 policies per certificate or
/// identity).
pub const MAX_POLICIES_PER_TARGET: usize = 10;

/// Longest policy name (AWS `PolicyName` shape: 1 to 128 characters of `[\w+=,.@-]`).
pub const MAX_POLICY_NAME_LEN: usize = 128;

const POLICIES: &str = "iot_policy";
const VERSIONS: &str = "iot_policy_version";
const BY_TARGET: &str = "iot_policy_target";
const BY_POLICY: &str = "iot_policy_attachment";

/// Separates the parts of composite keys; no name or target may contain it.
const SEP: u8 = 0;

/// Called after a committed change to policies or attachments.
pub type PolicyChangeListener = Arc<dyn Fn() + Send + Sync>;

/// Why a policy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy name breaks AWS's rules.
    #[error("invalid policy name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A version id that is not a number.
    #[error("invalid policy version id {0:?}: expected a number such as \"1\"")]
    InvalidVersionId(String),
    /// An unusable attachment target.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target given.
        target: String,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// The policy document is malformed.
    #[error(transparent)]
    Malformed(#[from] DocumentError),
    /// A policy with this name exists.
    #[error("policy {name} already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// No policy with this name.
    #[error("policy {name} does not exist")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The policy has no such version.
    #[error("policy {name} has no version {version_id}")]
    VersionNotFound {
        /// The policy.
        name: String,
        /// The version asked for.
        version_id: String,
    },
    /// The policy already has [`MAX_POLICY_VERSIONS`] versions.
    #[error(
        "policy {name} already has the maximum of {max} versions: delete one with DeletePolicyVersion first",
        max = MAX_POLICY_VERSIONS
    )]
    VersionsLimitExceeded {
        /// The policy.
        name: String,
    },
    /// The deletion would leave something dangling.
    #[error("{0}")]
    DeleteConflict(String),
    /// The target already has [`MAX_POLICIES_PER_TARGET`] policies.
    #[error(
        "{target} already has the maximum of {max} policies attached: detach one first",
        max = MAX_POLICIES_PER_TARGET
    )]
    TargetLimitExceeded {
        /// The target.
        target: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record could not be decoded.
    #[error("stored policy data is corrupt ({table} {key}): {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The key, lossily decoded.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PolicyRecord {
    default_version: u32,
    next_version: u32,
    created_ms: u64,
    modified_ms: u64,
    /// Bumped whenever the policy's effective document changes.
    generation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRecord {
    document: String,
    created_ms: u64,
}

/// A policy as GetPolicy reports it: its default version's document and dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The policy name.
    pub name: String,
    /// The default version's document, as it was submitted.
    pub document: String,
    /// The default version id.
    pub default_version_id: String,
    /// When the policy was created.
    pub created: SystemTime,
    /// When the policy (a version or its default) last changed.
    pub last_modified: SystemTime,
    /// Changes whenever the default document changes (AWS `generationId`).
    pub generation_id: String,
}

/// One version of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionInfo {
    /// The policy name.
    pub name: String,
    /// The version id (`"1"`, `"2"`, ...).
    pub version_id: String,
    /// The document, as it was submitted.
    pub document: String,
    /// Whether this is the default (operative) version.
    pub is_default: bool,
    /// When the version was created.
    pub created: SystemTime,
    /// When the policy last changed.
    pub last_modified: SystemTime,
    /// The policy's `generationId`.
    pub generation_id: String,
}

/// A version as ListPolicyVersions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionSummary {
    /// The version id.
    pub version_id: String,
    /// Whether it is the default.
    pub is_default: bool,
    /// When it was created.
    pub created: SystemTime,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Which part of a listing to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSpec<'a> {
    /// The `next` of the previous page.
    pub after: Option<&'a str>,
    /// Most items to return (at least 1).
    pub limit: usize,
    /// Name order, ascending (`true`) or descending.
    pub ascending: bool,
}

impl Default for PageSpec<'_> {
    fn default() -> Self {
        PageSpec {
            after: None,
            limit: 250,
            ascending: true,
        }
    }
}

/// Named, versioned IoT policies and their attachments to certificates and thing groups.
pub struct Policies {
    store: Arc<dyn KvStore>,
    writer: Mutex<()>,
    /// Compiled default versions by policy name; invalidated, with the generation bump, under
    /// its write lock so a reader never caches a document older than the generation it saw.
    compiled: RwLock<HashMap<String, Arc<CompiledPolicy>>>,
    generation: AtomicU64,
    listeners: RwLock<Vec<PolicyChangeListener>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Policies kept in `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Policies {
        Policies {
            store,
            writer: Mutex::new(()),
            compiled: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            listeners: RwLock::new(Vec::new()),
        }
    }

    /// Registers `f`, called after every committed change to policies or attachments.
    pub fn on_change(&self, f: Arc<dyn Fn() + Send + Sync>) {
        self.listeners.write().push(f);
    }

    /// Another node sharing the store changed policies or attachments: every compiled document
    /// is forgotten, grants see a new generation, and the change listeners run.
    pub fn changed_elsewhere(&self) {
        {
            let mut cache = self.compiled.write();
            cache.clear();
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.notify();
    }

    /// Counts committed changes since startup; grants compare it to know their cache is current.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Creates policy `name` with `document` as version 1, the default.
    pub fn create(&self, name: &str, document: &str) -> Result<PolicyInfo, PolicyError> {
        validate_name(name)?;
        PolicyDocument::parse(document)?;
        let info = {
            let _w = self.writer.lock();
            if self.record(name)?.is_some() {
                return Err(PolicyError::AlreadyExists { name: name.into() });
            }
            let now = now_ms();
            let record = PolicyRecord {
                default_version: 1,
                next_version: 2,
                created_ms: now,
                modified_ms: now,
                generation: 1,
            };
            let version = VersionRecord {
                document: document.to_string(),
                created_ms: now,
            };
            let mut batch = WriteBatch::new();
            batch.put(POLICIES, name.as_bytes(), encode(&record));
            batch.put(VERSIONS, version_key(name, 1), encode(&version));
            self.store.apply(batch)?;
            self.committed(Some(name));
            policy_info(name, &record, version.document)
        };
        self.notify();
        Ok(info)
    }

    /// The policy and its default version's document.
    pub fn get(&self, name: &str) -> Result<PolicyInfo, PolicyError> {
        let record = self.existing(name)?;
        let version = self.version_record(name, record.default_version)?;
        Ok(policy_info(name, &record, version.document))
    }

    /// Policy names, paged by name.
    pub fn list(&self, page: PageSpec<'_>) -> Result<Page<String>, PolicyError> {
        let names = self
            .store
            .scan_prefix(POLICIES, b"")?
            .into_iter()
            .map(|(k, _)| key_string(POLICIES, &k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(names, page))
    }

    /// Deletes a policy: refused while it is attached or has versions besides the default.
    pub fn delete(&self, name: &str) -> Result<(), PolicyError> {
        {
            let _w = self.writer.lock();
            let record = self.existing(name)?;
            let targets = self.store.scan_prefix(BY_POLICY, &prefix_key(name))?;
            if !targets.is_empty() {
                return Err(PolicyError::DeleteConflict(format!(
                    "policy {name} is attached to {} target(s): detach it first (ListTargetsForPolicy lists them)",
                    targets.len()
                )));
            }
            let versions = self.version_ids(name)?;
            if versions.iter().any(|v| *v != record.default_version) {
                return Err(PolicyError::DeleteConflict(format!(
                    "policy {name} has versions besides the default: delete them with DeletePolicyVersion first"
                )));
            }
            let mut batch = WriteBatch::new();
            batch.delete(POLICIES, name.as_bytes());
            batch.delete_prefix(VERSIONS, prefix_key(name));
            self.store.apply(batch)?;
            self.committed(Some(name));
        }
        self.notify();
        Ok(())
    }

    /// Adds a version; with `set_as_default` it becomes the operative one.
    pub fn create_version(
        &self,
        name: &str,
        document: &str,
        set_as_default: bool,
    ) -> Result<PolicyVersionInfo, PolicyError> {
        let info = {
            let _w = self.writer.lock();
            let mut record = self.existing(name)?;
            PolicyDocument::parse(document)?;
            if self.version_ids(name)?.len() >= MAX_POLICY_VERSIONS {
                return Err(PolicyError::VersionsLimitExceeded { name: name.into() });
            }
            let now = now_ms();
            let id = record.next_version;
            record.next_version += 1;
            record.modified_ms = now;
            if set_as_default {
                record.default_version = id;
                record.generation += 1;
            }
            let version = VersionRecord {
                document: document.to_string(),
                created_ms: now,
            };
            let mut batch = WriteBatch::new();
            batch.put(POLICIES, name.as_bytes(), encode(&record));
            batch.put(VERSIONS, version_key(name, id), encode(&version));
            self.store.apply(batch)?;
            self.committed(set_as_default.then_some(name));
            version_info(name, id, &record, version)
        };
        self.notify();
        Ok(info)
    }

    /// One version of a policy.
    pub fn get_version(
        &self,
        name: &str,
        version_id: &str,
    ) -> Result<PolicyVersionInfo, PolicyError> {
        let id = parse_version_id(version_id)?;
        let record = self.existing(name)?;
        let version = self.version_record(name, id)?;
        Ok(version_info(name, id, &record, version))
    }

    /// Every version of a policy, oldest first.
    pub fn list_versions(&self, name: &str) -> Result<Vec<PolicyVersionSummary>, PolicyError> {
        let record = self.existing(name)?;
        self.store
            .scan_prefix(VERSIONS, &prefix_key(name))?
            .into_iter()
            .map(|(k, v)| {
                let id = version_of_key(&k)?;
                let version: VersionRecord = decode(VERSIONS, &k, &v)?;
                Ok(PolicyVersionSummary {
                    version_id: id.to_string(),
                    is_default: id == record.default_version,
                    created: time_of(version.created_ms),
                })
            })
            .collect()
    }

    /// Deletes a version other than the default.
    pub fn delete_version(&self, name: &str, version_id: &str) -> Result<(), PolicyError> {
        let id = parse_version_id(version_id)?;
        {
            let _w = self.writer.lock();
            let mut record = self.existing(name)?;
            self.version_record(name, id)?;
            if id == record.default_version {
                return Err(PolicyError::DeleteConflict(format!(
                    "version {id} is the default version of policy {name}: make another version the \
                     default with SetDefaultPolicyVersion first, or delete the policy"
                )));
            }
            record.modified_ms = now_ms();
            let mut batch = WriteBatch::new();
            batch.put(POLICIES, name.as_bytes(), encode(&record));
            batch.delete(VERSIONS, version_key(name, id));
            self.store.apply(batch)?;
            self.committed(None);
        }
        self.notify();
        Ok(())
    }

    /// Makes an existing version the default.
    pub fn set_default_version(&self, name: &str, version_id: &str) -> Result<(), PolicyError> {
        let id = parse_version_id(version_id)?;
        {
            let _w = self.writer.lock();
            let mut record = self.existing(name)?;
            self.version_record(name, id)?;
            if record.default_version != id {
                record.default_version = id;
                record.generation += 1;
            }
            record.modified_ms = now_ms();
            let mut batch = WriteBatch::new();
            batch.put(POLICIES, name.as_bytes(), encode(&record));
            self.store.apply(batch)?;
            self.committed(Some(name));
        }
        self.notify();
        Ok(())
    }

    /// Attaches policy `name` to `target` (a certificate or thing-group ARN, whose existence
    /// the caller checked). Attaching twice is not an error.
    pub fn attach(&self, name: &str, target: &str) -> Result<(), PolicyError> {
        validate_target(target)?;
        {
            let _w = self.writer.lock();
            self.existing(name)?;
            if self
                .store
                .get(BY_TARGET, &pair_key(target, name))?
                .is_some()
            {
                return Ok(());
            }
            let attached = self.store.scan_prefix(BY_TARGET, &prefix_key(target))?;
            if attached.len() >= MAX_POLICIES_PER_TARGET {
                return Err(PolicyError::TargetLimitExceeded {
                    target: target.into(),
                });
            }
            let mut batch = WriteBatch::new();
            batch.put(BY_TARGET, pair_key(target, name), Vec::new());
            batch.put(BY_POLICY, pair_key(name, target), Vec::new());
            self.store.apply(batch)?;
            self.committed(None);
        }
        self.notify();
        Ok(())
    }

    /// Detaches policy `name` from `target`; detaching what is not attached is not an error
    /// (AWS DetachPolicy declares no ResourceNotFoundException).
    pub fn detach(&self, name: &str, target: &str) -> Result<(), PolicyError> {
        validate_target(target)?;
        {
            let _w = self.writer.lock();
            if self
                .store
                .get(BY_TARGET, &pair_key(target, name))?
                .is_none()
            {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            batch.delete(BY_TARGET, pair_key(target, name));
            batch.delete(BY_POLICY, pair_key(name, target));
            self.store.apply(batch)?;
            self.committed(None);
        }
        self.notify();
        Ok(())
    }

    /// Detaches every policy from `target` (when the target itself is deleted); returns how
    /// many were attached.
    pub fn detach_all(&self, target: &str) -> Result<usize, PolicyError> {
        validate_target(target)?;
        let detached = {
            let _w = self.writer.lock();
            let names = self.attached_names(target)?;
            if names.is_empty() {
                return Ok(0);
            }
            let mut batch = WriteBatch::new();
            for name in &names {
                batch.delete(BY_TARGET, pair_key(target, name));
                batch.delete(BY_POLICY, pair_key(name, target));
            }
            self.store.apply(batch)?;
            self.committed(None);
            names.len()
        };
        self.notify();
        Ok(detached)
    }

    /// The targets policy `name` is attached to, paged in target order.
    pub fn list_targets(
        &self,
        name: &str,
        page: PageSpec<'_>,
    ) -> Result<Page<String>, PolicyError> {
        self.existing(name)?;
        let prefix = prefix_key(name);
        let targets = self
            .store
            .scan_prefix(BY_POLICY, &prefix)?
            .into_iter()
            .map(|(k, _)| key_string(BY_POLICY, &k[prefix.len()..]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(targets, page))
    }

    /// The policies attached to `target`, paged by name.
    pub fn list_attached(
        &self,
        target: &str,
        page: PageSpec<'_>,
    ) -> Result<Page<String>, PolicyError> {
        validate_target(target)?;
        Ok(paginate(self.attached_names(target)?, page))
    }

    /// The names of the policies attached to `target`, in name order.
    pub fn attached_names(&self, target: &str) -> Result<Vec<String>, PolicyError> {
        let prefix = prefix_key(target);
        self.store
            .scan_prefix(BY_TARGET, &prefix)?
            .into_iter()
            .map(|(k, _)| key_string(BY_TARGET, &k[prefix.len()..]))
            .collect()
    }

    /// The compiled default version of policy `name`, or `None` if there is no such policy.
    /// Compiled once per version and shared by every connection.
    pub fn compiled(&self, name: &str) -> Result<Option<Arc<CompiledPolicy>>, PolicyError> {
        if let Some(found) = self.compiled.read().get(name) {
            return Ok(Some(found.clone()));
        }
        let seen = self.generation();
        let Some(record) = self.record(name)? else {
            return Ok(None);
        };
        let version = match self.version_record(name, record.default_version) {
            Ok(v) => v,
            // Deleted between the two reads: as if it never existed.
            Err(PolicyError::VersionNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let compiled = Arc::new(CompiledPolicy::parse(&version.document).map_err(|e| {
            PolicyError::Corrupt {
                table: VERSIONS,
                key: name.to_string(),
                reason: e.to_string(),
            }
        })?);
        let mut cache = self.compiled.write();
        // Only cache what is still current: mutations invalidate and bump under this lock.
        if self.generation() == seen {
            cache.insert(name.to_string(), compiled.clone());
        }
        Ok(Some(compiled))
    }

    /// The compiled policies that apply to a principal: those attached to any of `targets`,
    /// plus those named in `names` (e.g. the anonymous policy); each once, missing ones skipped.
    pub fn effective(
        &self,
        targets: &[String],
        names: &[String],
    ) -> Result<Vec<Arc<CompiledPolicy>>, PolicyError> {
        let mut all: Vec<String> = names.to_vec();
        for target in targets {
            all.extend(self.attached_names(target)?);
        }
        all.sort_unstable();
        all.dedup();
        let mut out = Vec::with_capacity(all.len());
        for name in &all {
            if let Some(policy) = self.compiled(name)? {
                out.push(policy);
            }
        }
        Ok(out)
    }

    fn record(&self, name: &str) -> Result<Option<PolicyRecord>, PolicyError> {
        match self.store.get(POLICIES, name.as_bytes())? {
            Some(bytes) => Ok(Some(decode(POLICIES, name.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    fn existing(&self, name: &str) -> Result<PolicyRecord, PolicyError> {
        self.record(name)?
            .ok_or_else(|| PolicyError::NotFound { name: name.into() })
    }

    fn version_record(&self, name: &str, id: u32) -> Result<VersionRecord, PolicyError> {
        let key = version_key(name, id);
        match self.store.get(VERSIONS, &key)? {
            Some(bytes) => decode(VERSIONS, &key, &bytes),
            None => Err(PolicyError::VersionNotFound {
                name: name.into(),
                version_id: id.to_string(),
            }),
        }
    }

    fn version_ids(&self, name: &str) -> Result<Vec<u32>, PolicyError> {
        self.store
            .scan_prefix(VERSIONS, &prefix_key(name))?
            .into_iter()
            .map(|(k, _)| version_of_key(&k))
            .collect()
    }

    /// After a commit: forget the compiled document of `changed` (if its default changed) and
    /// bump the generation, atomically with respect to [`Policies::compiled`].
    fn committed(&self, changed: Option<&str>) {
        let mut cache = self.compiled.write();
        if let Some(name) = changed {
            cache.remove(name);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn notify(&self) {
        let listeners = self.listeners.read().clone();
        for listener in listeners {
            listener();
        }
    }
}

/// The registry's view of attachments: DeleteCertificate and DeleteThingGroup ask which policies
/// a target has and detach them (install with `IdentityService::set_attachment_check`).
impl crate::service::AttachmentCheck for Policies {
    fn attached_policies(&self, target: &str) -> Result<Vec<String>, StoreError> {
        self.attached_names(target).map_err(store_error)
    }

    fn detach_all(&self, target: &str) -> Result<(), StoreError> {
        Policies::detach_all(self, target)
            .map(|_| ())
            .map_err(store_error)
    }
}

fn store_error(error: PolicyError) -> StoreError {
    match error {
        PolicyError::Store(e) => e,
        other => StoreError::Backend {
            operation: "policy attachments",
            message: other.to_string(),
        },
    }
}

fn validate_name(name: &str) -> Result<(), PolicyError> {
    let invalid = |reason| PolicyError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it must not be empty"));
    }
    if name.len() > MAX_POLICY_NAME_LEN {
        return Err(invalid("it must be at most 128 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return Err(invalid(
            "it may contain only letters, digits and the characters _ + = , . @ -",
        ));
    }
    Ok(())
}

fn validate_target(target: &str) -> Result<(), PolicyError> {
    let invalid = |reason| PolicyError::InvalidTarget {
        target: target.to_string(),
        reason,
    };
    if target.is_empty() {
        return Err(invalid("it must not be empty"));
    }
    if target.as_bytes().contains(&SEP) {
        return Err(invalid("it must not contain NUL characters"));
    }
    Ok(())
}

fn parse_version_id(version_id: &str) -> Result<u32, PolicyError> {
    if version_id.is_empty() || !version_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyError::InvalidVersionId(version_id.to_string()));
    }
    version_id
        .parse()
        .map_err(|_| PolicyError::InvalidVersionId(version_id.to_string()))
}

fn prefix_key(first: &str) -> Vec<u8> {
    let mut key = first.as_bytes().to_vec();
    key.push(SEP);
    key
}

fn pair_key(first: &str, second: &str) -> Vec<u8> {
    let mut key = prefix_key(first);
    key.extend_from_slice(second.as_bytes());
    key
}

fn version_key(name: &str, id: u32) -> Vec<u8> {
    pair_key(name, &format!("{id:010}"))
}

fn version_of_key(key: &[u8]) -> Result<u32, PolicyError> {
    let digits = key
        .iter()
        .rposition(|b| *b == SEP)
        .map(|at| &key[at + 1..])
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok());
    digits.ok_or_else(|| PolicyError::Corrupt {
        table: VERSIONS,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "no version number in key".into(),
    })
}

fn key_string(table: &'static str, key: &[u8]) -> Result<String, PolicyError> {
    String::from_utf8(key.to_vec()).map_err(|_| PolicyError::Corrupt {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "key is not UTF-8".into(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty value would be caught on decode.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, PolicyError> {
    serde_json::from_slice(bytes).map_err(|e| PolicyError::Corrupt {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn paginate(mut items: Vec<String>, page: PageSpec<'_>) -> Page<String> {
    if !page.ascending {
        items.reverse();
    }
    let start = match page.after {
        None => 0,
        Some(after) => items
            .iter()
            .position(|item| {
                if page.ascending {
                    item.as_str() > after
                } else {
                    item.as_str() < after
                }
            })
            .unwrap_or(items.len()),
    };
    let limit = page.limit.max(1);
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| items[end - 1].clone());
    let items = items.drain(start..end).collect();
    Page { items, next }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn policy_info(name: &str, record: &PolicyRecord, document: String) -> PolicyInfo {
    PolicyInfo {
        name: name.to_string(),
        document,
        default_version_id: record.default_version.to_string(),
        created: time_of(record.created_ms),
        last_modified: time_of(record.modified_ms),
        generation_id: generation_id(record),
    }
}

fn version_info(
    name: &str,
    id: u32,
    record: &PolicyRecord,
    version: VersionRecord,
) -> PolicyVersionInfo {
    PolicyVersionInfo {
        name: name.to_string(),
        version_id: id.to_string(),
        document: version.document,
        is_default: id == record.default_version,
        created: time_of(version.created_ms),
        last_modified: time_of(record.modified_ms),
        generation_id: generation_id(record),
    }
}

/// An opaque id that changes with the default document: the policy's creation time and its
/// own generation, so a recreated policy never repeats an old id.
fn generation_id(record: &PolicyRecord) -> String {
    format!("{:x}{:08x}", record.created_ms, record.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;
    use std::sync::atomic::AtomicUsize;

    const DOC: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}"#;
    const DOC2: &str =
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"iot:*","Resource":"*"}}"#;
    const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/abc";
    const GROUP: &str = "arn:aws:iot:us-east-1:123456789012:thinggroup/floor3";

    fn policies() -> (tempfile::TempDir, Policies) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
        (dir, Policies::new(Arc::new(store)))
    }

    #[test]
    fn create_get_and_duplicate() {
        let (_d, p) = policies();
        let created = p.create("device.policy@v=1,x+y-z", DOC).expect("create");
        assert_eq!(created.default_version_id, "1");
        let got = p.get("device.policy@v=1,x+y-z").expect("get");
        assert_eq!(got.document, DOC);
        assert_eq!(got.generation_id, created.generation_id);
        assert!(matches!(
            p.create("device.policy@v=1,x+y-z", DOC),
            Err(PolicyError::AlreadyExists { .. })
        ));
        assert!(matches!(p.get("nope"), Err(PolicyError::NotFound { .. })));
    }

    #[test]
    fn names_and_documents_are_validated() {
        let (_d, p) = policies();
        for bad in ["", "has space", "slash/", "colon:", &"a".repeat(129)] {
            assert!(
                matches!(p.create(bad, DOC), Err(PolicyError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(p.create(&"a".repeat(128), DOC).is_ok());
        assert!(matches!(
            p.create("bad-doc", "{}"),
            Err(PolicyError::Malformed(DocumentError::MissingVersion))
        ));
        assert!(matches!(
            p.get("bad-doc"),
            Err(PolicyError::NotFound { .. })
        ));
    }

    #[test]
    fn versions_limit_default_rules_and_ids_never_reused() {
        let (_d, p) = policies();
        p.create("p", DOC).expect("create");
        for expected in 2..=5 {
            let v = p.create_version("p", DOC2, false).expect("version");
            assert_eq!(v.version_id, expected.to_string());
            assert!(!v.is_default);
        }
        assert!(matches!(
            p.create_version("p", DOC2, true),
            Err(PolicyError::VersionsLimitExceeded { .. })
        ));
        assert!(matches!(
            p.delete_version("p", "1"),
            Err(PolicyError::DeleteConflict(_))
        ));
        p.delete_version("p", "2").expect("delete non-default");
        let v6 = p.create_version("p", DOC2, true).expect("version 6");
        assert_eq!(v6.version_id, "6");
        assert!(v6.is_default);
        assert_eq!(p.get("p").expect("get").default_version_id, "6");
        assert_eq!(p.get("p").expect("get").document, DOC2);
        let listed = p.list_versions("p").expect("list");
        let ids: Vec<_> = listed.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(ids, ["1", "3", "4", "5", "6"]);
        assert_eq!(
            listed.iter().filter(|v| v.is_default).count(),
            1,
            "exactly one default"
        );
        p.set_default_version("p", "3").expect("set default");
        let v3 = p.get_version("p", "3").expect("get version");
        assert!(v3.is_default);
        assert!(!p.get_version("p", "6").expect("v6").is_default);
        assert!(matches!(
            p.get_version("p", "2"),
            Err(PolicyError::VersionNotFound { .. })
        ));
        assert!(matches!(
            p.set_default_version("p", "2"),
            Err(PolicyError::VersionNotFound { .. })
        ));
        assert!(matches!(
            p.get_version("p", "x"),
            Err(PolicyError::InvalidVersionId(_))
        ));
        assert!(matches!(
            p.create_version("p", "not json", false),
            Err(PolicyError::Malformed(_))
        ));
        assert!(matches!(
            p.create_version("nope", DOC, false),
            Err(PolicyError::NotFound { .. })
        ));
    }

    #[test]
    fn generation_id_changes_with_the_default_document() {
        let (_d, p) = policies();
        let g1 = p.create("p", DOC).expect("create").generation_id;
        p.create_version("p", DOC2, false).expect("v2");
        assert_eq!(p.get("p").expect("get").generation_id, g1);
        p.set_default_version("p", "2").expect("default");
        assert_ne!(p.get("p").expect("get").generation_id, g1);
    }

    #[test]
    fn delete_conflicts_while_attached_or_versioned() {
        let (_d, p) = policies();
        p.create("p", DOC).expect("create");
        p.attach("p", CERT).expect("attach");
        let e = p.delete("p").unwrap_err();
        assert!(matches!(e, PolicyError::DeleteConflict(_)), "{e}");
        p.detach("p", CERT).expect("detach");
        p.create_version("p", DOC2, false).expect("v2");
        assert!(matches!(p.delete("p"), Err(PolicyError::DeleteConflict(_))));
        p.delete_version("p", "2").expect("delete v2");
        p.delete("p").expect("delete");
        assert!(matches!(p.get("p"), Err(PolicyError::NotFound { .. })));
        assert!(matches!(p.delete("p"), Err(PolicyError::NotFound { .. })));
        // The name is free again, starting from version 1.
        assert_eq!(
            p.create("p", DOC2).expect("recreate").default_version_id,
            "1"
        );
        assert_eq!(p.list_versions("p").expect("versions").len(), 1);
    }

    #[test]
    fn attach_detach_and_list_both_ways() {
        let (_d, p) = policies();
        p.create("a", DOC).expect("a");
        p.create("b", DOC).expect("b");
        p.attach("a", CERT).expect("attach");
        p.attach("a", CERT).expect("attach twice is fine");
        p.attach("b", CERT).expect("attach");
        p.attach("a", GROUP).expect("attach group");
        assert!(matches!(
            p.attach("missing", CERT),
            Err(PolicyError::NotFound { .. })
        ));
        assert!(matches!(
            p.attach("a", ""),
            Err(PolicyError::InvalidTarget { .. })
        ));
        let attached = p.list_attached(CERT, PageSpec::default()).expect("list");
        assert_eq!(attached.items, ["a", "b"]);
        let targets = p.list_targets("a", PageSpec::default()).expect("targets");
        assert_eq!(targets.items, [CERT, GROUP]);
        assert!(matches!(
            p.list_targets("missing", PageSpec::default()),
            Err(PolicyError::NotFound { .. })
        ));
        p.detach("a", CERT).expect("detach");
        p.detach("a", CERT).expect("detach twice is fine");
        p.detach("missing", CERT).expect("detach unknown is fine");
        assert_eq!(p.attached_names(CERT).expect("names"), ["b"]);
        assert_eq!(
            p.list_targets("a", PageSpec::default()).expect("t").items,
            [GROUP]
        );
        assert_eq!(p.detach_all(GROUP).expect("detach all"), 1);
        assert!(
            p.list_targets("a", PageSpec::default())
                .expect("t")
                .items
                .is_empty()
        );
    }

    #[test]
    fn a_target_has_at_most_ten_policies() {
        let (_d, p) = policies();
        for i in 0..=MAX_POLICIES_PER_TARGET {
            p.create(&format!("p{i:02}"), DOC).expect("create");
        }
        for i in 0..MAX_POLICIES_PER_TARGET {
            p.attach(&format!("p{i:02}"), CERT).expect("attach");
        }
        assert!(matches!(
            p.attach("p10", CERT),
            Err(PolicyError::TargetLimitExceeded { .. })
        ));
        p.attach("p00", CERT)
            .expect("re-attaching an attached policy is fine");
    }

    #[test]
    fn listing_pages_by_name_both_ways() {
        let (_d, p) = policies();
        for name in ["d", "a", "c", "b", "e"] {
            p.create(name, DOC).expect("create");
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = p
                .list(PageSpec {
                    after: after.as_deref(),
                    limit: 2,
                    ascending: true,
                })
                .expect("page");
            assert!(page.items.len() <= 2);
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        let first = p
            .list(PageSpec {
                after: None,
                limit: 3,
                ascending: false,
            })
            .expect("desc");
        assert_eq!(first.items, ["e", "d", "c"]);
        let second = p
            .list(PageSpec {
                after: first.next.as_deref(),
                limit: 3,
                ascending: false,
            })
            .expect("desc 2");
        assert_eq!(second.items, ["b", "a"]);
        assert_eq!(second.next, None);
    }

    #[test]
    fn mutations_bump_the_generation_and_call_listeners() {
        let (_d, p) = policies();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        p.on_change(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let g0 = p.generation();
        p.create("p", DOC).expect("create");
        p.create_version("p", DOC2, false).expect("v2");
        p.set_default_version("p", "2").expect("default");
        p.attach("p", CERT).expect("attach");
        p.detach("p", CERT).expect("detach");
        p.delete_version("p", "1").expect("delete v1");
        p.delete("p").expect("delete");
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(p.generation(), g0 + 7);
        // Failed and no-op operations change nothing.
        let _ = p.delete("p");
        p.detach("p", CERT).expect("no-op detach");
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(p.generation(), g0 + 7);
    }

    #[test]
    fn listeners_may_read_policies() {
        let (_d, p) = policies();
        let p = Arc::new(p);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (reader, log) = (Arc::downgrade(&p), seen.clone());
        p.on_change(Arc::new(move || {
            if let Some(p) = reader.upgrade() {
                log.lock()
                    .push(p.get("p").map(|i| i.default_version_id).ok());
            }
        }));
        p.create("p", DOC).expect("create");
        p.create_version("p", DOC2, true).expect("v2");
        assert_eq!(*seen.lock(), [Some("1".to_string()), Some("2".to_string())]);
    }

    #[test]
    fn compiled_documents_follow_the_default_version() {
        let (_d, p) = policies();
        p.create("p", DOC).expect("create");
        p.attach("p", CERT).expect("attach");
        let allow = p.effective(&[CERT.to_string()], &[]).expect("effective");
        assert_eq!(allow.len(), 1);
        let first = p.compiled("p").expect("compiled").expect("exists");
        assert!(
            Arc::ptr_eq(&first, &p.compiled("p").expect("again").expect("exists")),
            "cached"
        );
        p.create_version("p", DOC2, true).expect("v2");
        let second = p.compiled("p").expect("compiled").expect("exists");
        assert!(
            !Arc::ptr_eq(&first, &second),
            "recompiled after the default changed"
        );
        assert!(p.compiled("missing").expect("ok").is_none());
        // Named and attached policies are merged without duplicates.
        let both = p
            .effective(
                &[CERT.to_string(), GROUP.to_string()],
                &["p".to_string(), "gone".to_string()],
            )
            .expect("effective");
        assert_eq!(both.len(), 1);
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        {
            let p = Policies::new(Arc::new(RedbStore::open(&path).expect("store")));
            p.create("p", DOC).expect("create");
            p.create_version("p", DOC2, true).expect("v2");
            p.attach("p", CERT).expect("attach");
        }
        let p = Policies::new(Arc::new(RedbStore::open(&path).expect("reopen")));
        let info = p.get("p").expect("get");
        assert_eq!(info.default_version_id, "2");
        assert_eq!(info.document, DOC2);
        assert_eq!(p.list_versions("p").expect("versions").len(), 2);
        assert_eq!(p.attached_names(CERT).expect("attached"), ["p"]);
        assert_eq!(
            p.list_targets("p", PageSpec::default())
                .expect("targets")
                .items,
            [CERT]
        );
        assert_eq!(
            p.create_version("p", DOC, false).expect("v3").version_id,
            "3"
        );
    }
}
