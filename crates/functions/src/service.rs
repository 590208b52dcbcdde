//! The functions service: the registry of functions (one JSON record per function in the
//! store, code in the code folder), their runners (worker pools, compiled modules), invocation
//! (synchronous, and the bounded queue of `Event` invocations) and their logs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_core::{AccountContext, KvStore, WriteBatch};
use parking_lot::{Mutex, RwLock};
use tracing::Instrument;

use crate::FunctionsError;
use crate::code::CodeStore;
use crate::event_queue::{self, EventQueue};
use crate::logs::{self, FunctionLogs, Report};
use crate::model::{
    AliasRecord, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Engine, FunctionRecord, FunctionRef, LATEST,
    VersionConfig, check_alias_name, check_limits, check_name,
};
use crate::runtime::process::{Pool, WorkerSpec};
use crate::runtime::wasm::WasmFunction;
use crate::runtime::{Invocation, Outcome, Runner, WhenBusy};
use crate::targets::{Target, TargetCache};

/// The store table of function records (key: name; value: [`FunctionRecord`] as JSON).
pub const TABLE: &str = "lambda_functions";
/// The store table of deployment packages when they are kept in the store (key: hex SHA-256;
/// value: the zip), so every node sharing the store can unpack them.
const CODE_TABLE: &str = "lambda_code";
/// Largest event of a synchronous invocation (Lambda: 6 MB); `Event` invocations: 256 KB.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest event of an asynchronous invocation.
pub const MAX_ASYNC_PAYLOAD: usize = 256 * 1024;

/// How the functions service runs.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// `<data dir>/functions`: code, logs, worker files.
    pub dir: PathBuf,
    /// The Python interpreter for `python3.x` functions (one that can `import boto3`).
    pub python: PathBuf,
    /// The Node.js binary for `nodejs*` functions.
    pub node: PathBuf,
    /// The control plane's URL, given to functions as `AWS_ENDPOINT_URL`.
    pub endpoint_url: String,
    /// Region and account of the ARNs.
    pub account: AccountContext,
    /// Credentials given to functions (their SDK calls reach this server with them).
    pub access_key_id: String,
    /// See `access_key_id`.
    pub secret_access_key: String,
    /// Most concurrent invocations of one function version without reserved concurrency
    /// (more wait for a worker).
    pub default_concurrency: usize,
    /// Most `Event` invocations waiting or running; more are refused with
    /// `TooManyRequestsException`.
    pub event_queue: usize,
    /// Keep each deployment package in the store too (table `lambda_code`), for the other
    /// nodes sharing it: they unpack it on first use. Off on a node alone (the code folder
    /// holds every package).
    pub code_in_store: bool,
    /// This node's member name in the consumer groups it joins (the event queue, event source
    /// mappings): unique per node and stable across its restarts (the node id), so nodes
    /// reading one shared stream split its shards and a restarted node takes its leases back
    /// at once.
    pub consumer_owner: String,
}

/// Fields of CreateFunction.
#[derive(Debug, Clone)]
pub struct NewFunction {
    /// The name.
    pub name: String,
    /// Runtime, handler, role, description, limits and variables (absent: Lambda's defaults;
    /// `revision_id` is not used).
    pub settings: ConfigurationChange,
    /// The zip.
    pub zip: Vec<u8>,
    /// Publish version 1 at once.
    pub publish: bool,
}

/// Fields of UpdateFunctionConfiguration (absent = unchanged).
#[derive(Debug, Clone, Default)]
pub struct ConfigurationChange {
    /// New runtime.
    pub runtime: Option<String>,
    /// New handler.
    pub handler: Option<String>,
    /// New role.
    pub role: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New timeout.
    pub timeout: Option<u32>,
    /// New memory size.
    pub memory_size: Option<u32>,
    /// New variables (replacing all).
    pub environment: Option<BTreeMap<String, String>>,
    /// Only if the current revision is this one.
    pub revision_id: Option<String>,
}

impl ConfigurationChange {
    /// Sets the fields this change gives on `config`.
    fn apply(self, config: &mut VersionConfig) {
        let set = |target: &mut String, value: Option<String>| {
            if let Some(v) = value {
                *target = v;
            }
        };
        set(&mut config.runtime, self.runtime);
        set(&mut config.handler, self.handler);
        set(&mut config.role, self.role);
        set(&mut config.description, self.description);
        config.timeout = self.timeout.unwrap_or(config.timeout);
        config.memory_size = self.memory_size.unwrap_or(config.memory_size);
        if let Some(v) = self.environment {
            config.environment = v;
        }
    }
}

/// A finished invocation as the API reports it.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// How it ended.
    pub outcome: Outcome,
    /// `$LATEST` or the version number that ran.
    pub executed_version: String,
    /// Its framed log (START ... REPORT).
    pub log: String,
}

/// The running functions service.
pub struct Functions {
    config: FunctionsConfig,
    store: Arc<dyn KvStore>,
    code: CodeStore,
    logs: FunctionLogs,
    records: RwLock<BTreeMap<String, FunctionRecord>>,
    writer: tokio::sync::Mutex<()>,
    runners: Mutex<HashMap<(String, String), (String, Runner)>>,
    pub(crate) events: EventQueue,
    runtime_dir: PathBuf,
    /// Where invocation logs also go (CloudWatch Logs), once the binary wires it.
    log_sink: std::sync::OnceLock<Arc<dyn fleetcore_core::InvocationLogSink>>,
    /// Resolved targets of the seam's callers.
    targets: TargetCache,
    /// The streams WebAssembly modules put records on (`env.put_record`).
    streams: Arc<dyn fleetcore_stream::Stream>,
}

fn decode(bytes: &[u8]) -> Result<FunctionRecord, FunctionsError> {
    serde_json::from_slice(bytes)
        .map_err(|e| FunctionsError::Io(format!("a stored function record cannot be read: {e}")))
}

/// Every stored function by name; a record that cannot be read is skipped (and logged).
fn load_records(store: &dyn KvStore) -> Result<BTreeMap<String, FunctionRecord>, FunctionsError> {
    let mut records = BTreeMap::new();
    for (key, value) in store.scan_prefix(TABLE, b"")? {
        match decode(&value) {
            Ok(record) => {
                records.insert(record.latest.name.clone(), record);
            }
            Err(error) => tracing::error!(
                key = %String::from_utf8_lossy(&key), %error,
                "skipping a function record that cannot be read"
            ),
        }
    }
    Ok(records)
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Functions {
    /// Loads the stored functions and starts the durable queue of `Event` invocations (in
    /// `streams`), running what a previous run left in it.
    pub async fn start(
        config: FunctionsConfig,
        store: Arc<dyn KvStore>,
        streams: Arc<dyn fleetcore_stream::Stream>,
    ) -> Result<Arc<Functions>, FunctionsError> {
        let code = CodeStore::open(&config.dir.join("code"))?;
        let logs = FunctionLogs::open(&config.dir.join("logs"))
            .map_err(|e| FunctionsError::io("opening the function logs", e))?;
        let runtime_dir = config.dir.join("runtime");
        let run_dir = config.dir.join("run");
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&runtime_dir)
            .map_err(|e| FunctionsError::io(runtime_dir.display(), e))?;
        for (file, text) in [
            ("bootstrap.py", include_str!("bootstrap/python.py")),
            ("bootstrap.js", include_str!("bootstrap/node.js")),
        ] {
            let path = runtime_dir.join(file);
            std::fs::write(&path, text).map_err(|e| FunctionsError::io(path.display(), e))?;
        }
        let records = load_records(store.as_ref())?;
        let events = EventQueue::open(Arc::clone(&streams), config.event_queue).await?;
        let functions = Arc::new(Functions {
            config,
            store,
            code,
            logs,
            records: RwLock::new(records),
            writer: tokio::sync::Mutex::new(()),
            runners: Mutex::new(HashMap::new()),
            events,
            runtime_dir,
            log_sink: std::sync::OnceLock::new(),
            targets: TargetCache::default(),
            streams: Arc::clone(&streams),
        });
        tokio::spawn(event_queue::run(
            Arc::downgrade(&functions),
            streams,
            functions.config.consumer_owner.clone(),
        ));
        tokio::spawn(reap_idle_workers(Arc::downgrade(&functions)));
        Ok(functions)
    }

    /// This node's member name in consumer groups (see [`FunctionsConfig::consumer_owner`]).
    pub fn consumer_owner(&self) -> &str {
        &self.config.consumer_owner
    }

    /// Region and account of this service's ARNs.
    pub fn account(&self) -> &AccountContext {
        &self.config.account
    }

    /// `arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]`.
    pub fn arn(&self, name: &str, qualifier: Option<&str>) -> String {
        let base = self
            .config
            .account
            .arn("lambda", format!("function:{name}"))
            .to_string();
        match qualifier {
            Some(q) => format!("{base}:{q}"),
            None => base,
        }
    }

    /// Sends every invocation's log from now on to `sink` too (CloudWatch Logs); once.
    pub fn set_log_sink(&self, sink: Arc<dyn fleetcore_core::InvocationLogSink>) {
        let _ = self.log_sink.set(sink);
    }

    /// The log file of `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path(name)
    }

    /// Where the zip of a version's code is (unpacked here first if another node stored it).
    pub fn code_location(&self, config: &VersionConfig) -> Result<PathBuf, FunctionsError> {
        self.ensure_code(&config.code_id)?;
        Ok(self.code.zip_path(&config.code_id))
    }

    fn record(&self, name: &str) -> Result<FunctionRecord, FunctionsError> {
        self.records
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| FunctionsError::function_not_found(&self.arn(name, None)))
    }

    /// The configuration `reference` names (with its qualifier).
    pub fn resolve(&self, reference: &FunctionRef) -> Result<VersionConfig, FunctionsError> {
        let records = self.records.read();
        let record = records.get(&reference.name).ok_or_else(|| {
            FunctionsError::function_not_found(
                &self.arn(&reference.name, reference.qualifier.as_deref()),
            )
        })?;
        record
            .resolve(reference.qualifier.as_deref())
            .cloned()
            .ok_or_else(|| {
                FunctionsError::function_not_found(
                    &self.arn(&reference.name, reference.qualifier.as_deref()),
                )
            })
    }

    /// The whole record of a function (for GetFunction's concurrency, aliases, policy).
    pub fn get_record(&self, name: &str) -> Result<FunctionRecord, FunctionsError> {
        self.record(name)
    }

    /// Every function's `$LATEST`, by name.
    pub fn list(&self) -> Vec<VersionConfig> {
        self.records
            .read()
            .values()
            .map(|r| r.latest.clone())
            .collect()
    }

    /// The record of `name` as stored, with its bytes (a change is written only over them):
    /// another node sharing the store may have changed it since this node's copy.
    fn stored(&self, name: &str) -> Result<(Vec<u8>, FunctionRecord), FunctionsError> {
        let bytes = self
            .store
            .get(TABLE, name.as_bytes())?
            .ok_or_else(|| FunctionsError::function_not_found(&self.arn(name, None)))?;
        let record = decode(&bytes)?;
        Ok((bytes, record))
    }

    /// Writes `record` to the store over the bytes `expected` (`None`: a new function), then
    /// to memory. A record changed meanwhile (by another node) is not overwritten: the change
    /// is refused with ResourceConflictException, to be made again.
    fn save(&self, expected: Option<&[u8]>, record: FunctionRecord) -> Result<(), FunctionsError> {
        let value = serde_json::to_vec(&record)
            .map_err(|e| FunctionsError::Io(format!("encoding a function record: {e}")))?;
        let written =
            self.store
                .compare_and_set(TABLE, record.latest.name.as_bytes(), expected, value)?;
        if !written {
            return Err(FunctionsError::Conflict(match expected {
                None => format!("Function already exist: {}", record.latest.name),
                Some(_) => format!(
                    "The function {} was changed by another request meanwhile; make the change again.",
                    record.latest.name
                ),
            }));
        }
        let name = record.latest.name.clone();
        self.records.write().insert(name.clone(), record);
        self.runners.lock().retain(|(n, _), _| n != &name);
        self.targets.invalidate();
        Ok(())
    }

    /// Checks a configuration's runtime, handler and limits.
    fn check(&self, config: &VersionConfig) -> Result<(), FunctionsError> {
        check_limits(config.timeout, config.memory_size, &config.environment)?;
        let engine = Engine::of(&config.runtime, &config.handler)?;
        if engine != Engine::Bootstrap && config.handler.is_empty() {
            return Err(FunctionsError::InvalidParameter(
                "The Handler parameter is required for this runtime.".into(),
            ));
        }
        if config.handler.len() > 128 {
            return Err(FunctionsError::InvalidParameter(
                "Value at 'handler' failed to satisfy constraint: Member must have length less \
                 than or equal to 128"
                    .into(),
            ));
        }
        Ok(())
    }

    /// CreateFunction.
    pub async fn create(&self, new: NewFunction) -> Result<VersionConfig, FunctionsError> {
        check_name(&new.name)?;
        let _writer = self.writer.lock().await;
        if self.records.read().contains_key(&new.name) {
            return Err(FunctionsError::Conflict(format!(
                "Function already exist: {}",
                new.name
            )));
        }
        let mut latest = VersionConfig {
            name: new.name.clone(),
            version: LATEST.into(),
            runtime: String::new(),
            handler: String::new(),
            role: String::new(),
            description: String::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_size: DEFAULT_MEMORY,
            environment: BTreeMap::new(),
            code_sha256: String::new(),
            code_id: String::new(),
            code_size: 0,
            last_modified: crate::clock::last_modified_now(),
            revision_id: new_revision(),
        };
        new.settings.apply(&mut latest);
        self.check(&latest)?;
        let code = self.store_code(new.zip).await?;
        latest.code_sha256 = code.sha256;
        latest.code_id = code.id;
        latest.code_size = code.size;
        self.check_wasm(&latest)?;
        let mut record = FunctionRecord {
            latest: latest.clone(),
            versions: BTreeMap::new(),
            next_version: 1,
            aliases: BTreeMap::new(),
            policy: BTreeMap::new(),
            reserved_concurrency: None,
        };
        if new.publish {
            publish(&mut record, String::new());
        }
        if let Err(e) = self.save(None, record) {
            self.collect_stored_code(&[latest.code_id.clone()]);
            return Err(e);
        }
        Ok(latest)
    }

    /// Unpacks `zip` into the code folder and, with `code_in_store`, keeps it in the store.
    async fn store_code(&self, zip: Vec<u8>) -> Result<crate::code::StoredCode, FunctionsError> {
        let code = self.code.clone();
        let (stored, zip) = tokio::task::spawn_blocking(move || code.store(&zip).map(|c| (c, zip)))
            .await
            .map_err(|e| FunctionsError::Io(format!("unpacking the code failed: {e}")))??;
        if self.config.code_in_store {
            let mut batch = WriteBatch::new();
            batch.put(CODE_TABLE, stored.id.as_bytes().to_vec(), zip);
            self.store.apply(batch)?;
        }
        Ok(stored)
    }

    /// Makes sure package `id` is unpacked here: a package another node stored is read from
    /// the store and unpacked on first use (and again for new code, which has a new id).
    fn ensure_code(&self, id: &str) -> Result<(), FunctionsError> {
        if !self.config.code_in_store || self.code.dir(id).is_dir() {
            return Ok(());
        }
        let zip = self.store.get(CODE_TABLE, id.as_bytes())?.ok_or_else(|| {
            FunctionsError::Io(format!("the deployment package {id} is not in the store"))
        })?;
        let stored = self.code.store(&zip)?;
        if stored.id != id {
            return Err(FunctionsError::Io(format!(
                "the deployment package {id} in the store has the SHA-256 {}",
                stored.id
            )));
        }
        Ok(())
    }

    /// A wasm function's module must be there and valid (refused at upload, not at first use).
    fn check_wasm(&self, config: &VersionConfig) -> Result<(), FunctionsError> {
        if Engine::of(&config.runtime, &config.handler)? != Engine::Wasm {
            return Ok(());
        }
        let path = self.module_path(config)?;
        WasmFunction::load(&path, config.memory_size, 1, false)
            .map(drop)
            .map_err(FunctionsError::InvalidParameter)
    }

    fn module_path(&self, config: &VersionConfig) -> Result<PathBuf, FunctionsError> {
        let relative = std::path::Path::new(&config.handler);
        let safe = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(FunctionsError::InvalidParameter(format!(
                "The handler {} must be a path inside the package",
                config.handler
            )));
        }
        Ok(self.code.dir(&config.code_id).join(relative))
    }

    /// UpdateFunctionCode.
    pub async fn update_code(
        &self,
        name: &str,
        zip: Vec<u8>,
        publish_now: bool,
        revision_id: Option<String>,
    ) -> Result<VersionConfig, FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        check_revision(&record.latest, revision_id.as_deref())?;
        let replaced = record.latest.code_id.clone();
        let code = self.store_code(zip).await?;
        let latest = &mut record.latest;
        latest.code_sha256 = code.sha256;
        latest.code_id = code.id;
        latest.code_size = code.size;
        latest.last_modified = crate::clock::last_modified_now();
        latest.revision_id = new_revision();
        self.check_wasm(&record.latest)?;
        let config = if publish_now {
            publish(&mut record, String::new())
        } else {
            record.latest.clone()
        };
        let saved = self.save(Some(&old), record);
        // The package replaced (or, when the change was refused, the one just stored) may be
        // used by nothing any more.
        self.collect_stored_code(&[replaced, config.code_id.clone()]);
        saved?;
        Ok(config)
    }

    /// UpdateFunctionConfiguration.
    pub async fn update_configuration(
        &self,
        name: &str,
        change: ConfigurationChange,
    ) -> Result<VersionConfig, FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        check_revision(&record.latest, change.revision_id.as_deref())?;
        let latest = &mut record.latest;
        change.apply(latest);
        latest.last_modified = crate::clock::last_modified_now();
        latest.revision_id = new_revision();
        self.check(&record.latest)?;
        self.check_wasm(&record.latest)?;
        let latest = record.latest.clone();
        self.save(Some(&old), record)?;
        Ok(latest)
    }

    /// DeleteFunction: the whole function, or one published version (`qualifier`).
    pub async fn delete(&self, name: &str, qualifier: Option<&str>) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        let used: Vec<String> = std::iter::once(&record.latest)
            .chain(record.versions.values())
            .map(|c| c.code_id.clone())
            .collect();
        match qualifier {
            None => {
                let mut batch = WriteBatch::new();
                batch.delete(TABLE, name.as_bytes().to_vec());
                self.store.apply(batch)?;
                self.records.write().remove(name);
                self.runners.lock().retain(|(n, _), _| n != name);
                self.targets.invalidate();
                self.logs.remove(name);
            }
            Some(LATEST) => {
                return Err(FunctionsError::InvalidParameter(
                    "$LATEST version cannot be deleted without deleting the function.".into(),
                ));
            }
            Some(q) => {
                let number = q.parse::<u64>().map_err(|_| {
                    FunctionsError::InvalidParameter(format!(
                        "Deletion of aliases is not supported by DeleteFunction: {q}"
                    ))
                })?;
                if let Some(alias) = record
                    .aliases
                    .values()
                    .find(|a| a.function_version == number.to_string())
                {
                    return Err(FunctionsError::Conflict(format!(
                        "Unable to delete version because the following aliases reference it: [{}]",
                        alias.name
                    )));
                }
                if record.versions.remove(&number).is_none() {
                    return Err(FunctionsError::function_not_found(&self.arn(name, Some(q))));
                }
                self.save(Some(&old), record)?;
            }
        }
        self.collect_code();
        self.collect_stored_code(&used);
        Ok(())
    }

    /// Removes unpacked packages no version references any more.
    fn collect_code(&self) {
        let used: std::collections::HashSet<String> = self
            .records
            .read()
            .values()
            .flat_map(|r| std::iter::once(&r.latest).chain(r.versions.values()))
            .map(|c| c.code_id.clone())
            .collect();
        let Ok(entries) = std::fs::read_dir(self.config.dir.join("code")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.trim_end_matches(".zip");
            if !id.starts_with('.') && !used.contains(id) {
                self.code.remove(id);
            }
        }
    }

    /// Removes from the store the packages among `candidates` no stored function uses any
    /// more (with `code_in_store`; the stored records decide, as other nodes' functions may
    /// share a package). Best effort: a failure leaves the package in the store.
    fn collect_stored_code(&self, candidates: &[String]) {
        if !self.config.code_in_store || candidates.is_empty() {
            return;
        }
        let used: std::collections::HashSet<String> = match self.store.scan_prefix(TABLE, b"") {
            Ok(entries) => entries
                .iter()
                .filter_map(|(_, v)| decode(v).ok())
                .flat_map(|r| {
                    std::iter::once(r.latest.code_id)
                        .chain(r.versions.into_values().map(|c| c.code_id))
                        .collect::<Vec<_>>()
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "could not read the functions to collect their code");
                return;
            }
        };
        let mut batch = WriteBatch::new();
        for id in candidates.iter().filter(|id| !used.contains(*id)) {
            batch.delete(CODE_TABLE, id.as_bytes().to_vec());
        }
        if let Err(error) = self.store.apply(batch) {
            tracing::warn!(%error, "could not remove unused deployment packages from the store");
        }
    }

    /// Reads function `name` again from the store (another node changed or deleted it): its
    /// runners and resolved targets are dropped, so the next invocation runs what is stored.
    pub fn reload(&self, name: &str) -> Result<(), FunctionsError> {
        let record = self
            .store
            .get(TABLE, name.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()?;
        match record {
            Some(record) => {
                self.records.write().insert(name.to_string(), record);
            }
            None => {
                if self.records.write().remove(name).is_some() {
                    self.logs.remove(name);
                }
            }
        }
        self.runners.lock().retain(|(n, _), _| n != name);
        self.targets.invalidate();
        Ok(())
    }

    /// Reads every function again from the store (another node may have changed any).
    pub fn reload_all(&self) -> Result<(), FunctionsError> {
        let records = load_records(self.store.as_ref())?;
        *self.records.write() = records;
        self.runners.lock().clear();
        self.targets.invalidate();
        Ok(())
    }

    /// PublishVersion.
    pub async fn publish_version(
        &self,
        name: &str,
        description: Option<String>,
    ) -> Result<VersionConfig, FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        // Publishing unchanged code and configuration again returns the newest version.
        if let Some((_, newest)) = record.versions.iter().next_back()
            && same_content(newest, &record.latest)
        {
            return Ok(newest.clone());
        }
        let config = publish(&mut record, description.unwrap_or_default());
        self.save(Some(&old), record)?;
        Ok(config)
    }

    /// ListVersionsByFunction: `$LATEST` then the versions in order.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionConfig>, FunctionsError> {
        let record = self.record(name)?;
        Ok(std::iter::once(record.latest)
            .chain(record.versions.into_values())
            .collect())
    }

    /// CreateAlias / UpdateAlias.
    pub async fn put_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<String>,
        description: Option<String>,
        create: bool,
    ) -> Result<AliasRecord, FunctionsError> {
        check_alias_name(alias)?;
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        let existing = record.aliases.get(alias).cloned();
        let target = match (create, existing) {
            (true, Some(_)) => {
                return Err(FunctionsError::Conflict(format!(
                    "Alias already exists: {}",
                    self.arn(name, Some(alias))
                )));
            }
            (false, None) => {
                return Err(FunctionsError::NotFound(format!(
                    "Alias not found: {}",
                    self.arn(name, Some(alias))
                )));
            }
            (_, existing) => AliasRecord {
                name: alias.to_string(),
                function_version: version
                    .clone()
                    .or(existing.as_ref().map(|a| a.function_version.clone()))
                    .ok_or_else(|| {
                        FunctionsError::InvalidParameter("FunctionVersion is required.".into())
                    })?,
                description: description
                    .or(existing.map(|a| a.description))
                    .unwrap_or_default(),
                revision_id: new_revision(),
            },
        };
        if target.function_version != LATEST
            && target
                .function_version
                .parse::<u64>()
                .ok()
                .is_none_or(|n| !record.versions.contains_key(&n))
        {
            return Err(FunctionsError::NotFound(format!(
                "Function not found: {}",
                self.arn(name, Some(&target.function_version))
            )));
        }
        record.aliases.insert(alias.to_string(), target.clone());
        self.save(Some(&old), record)?;
        Ok(target)
    }

    /// GetAlias.
    pub fn alias(&self, name: &str, alias: &str) -> Result<AliasRecord, FunctionsError> {
        self.record(name)?
            .aliases
            .get(alias)
            .cloned()
            .ok_or_else(|| {
                FunctionsError::NotFound(format!(
                    "Alias not found: {}",
                    self.arn(name, Some(alias))
                ))
            })
    }

    /// DeleteAlias (absent is fine, as Lambda).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        if record.aliases.remove(alias).is_some() {
            self.save(Some(&old), record)?;
        }
        Ok(())
    }

    /// AddPermission: the statement is stored and shown by GetPolicy (fleetcore's callers are
    /// all authenticated as the admin; resource policies are not evaluated).
    pub async fn add_permission(
        &self,
        name: &str,
        statement_id: &str,
        statement: String,
    ) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        if record.policy.contains_key(statement_id) {
            return Err(FunctionsError::Conflict(format!(
                "The statement id ({statement_id}) provided already exists. Please provide a new \
                 statement id, or remove the existing statement."
            )));
        }
        record.policy.insert(statement_id.to_string(), statement);
        self.save(Some(&old), record)
    }

    /// RemovePermission.
    pub async fn remove_permission(
        &self,
        name: &str,
        statement_id: &str,
    ) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        if record.policy.remove(statement_id).is_none() {
            return Err(FunctionsError::NotFound(format!(
                "Statement {statement_id} is not found in resource policy."
            )));
        }
        self.save(Some(&old), record)
    }

    /// PutFunctionConcurrency / DeleteFunctionConcurrency.
    pub async fn set_concurrency(
        &self,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<(), FunctionsError> {
        let _writer = self.writer.lock().await;
        let (old, mut record) = self.stored(name)?;
        record.reserved_concurrency = reserved;
        self.save(Some(&old), record)
    }

    /// The runner of `config`, built on first use and kept while its revision is current.
    fn runner(
        &self,
        config: &VersionConfig,
        reserved: Option<u32>,
    ) -> Result<Runner, FunctionsError> {
        let key = (config.name.clone(), config.version.clone());
        if let Some((revision, runner)) = self.runners.lock().get(&key)
            && revision == &config.revision_id
        {
            return Ok(runner.clone());
        }
        // Reading and unpacking a package another node stored takes seconds for a large one:
        // off the async worker where the runtime allows it.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.ensure_code(&config.code_id))?
            }
            _ => self.ensure_code(&config.code_id)?,
        }
        let (concurrency, strict) = match reserved {
            Some(n) => (n as usize, true),
            None => (self.config.default_concurrency, false),
        };
        let runner = match Engine::of(&config.runtime, &config.handler)? {
            Engine::Wasm => {
                let path = self.module_path(config)?;
                Runner::Wasm(Arc::new(
                    WasmFunction::load(&path, config.memory_size, concurrency, strict)
                        .map_err(FunctionsError::InvalidParameter)?,
                ))
            }
            engine => {
                let spec = self.worker_spec(config, engine);
                Runner::Process(Arc::new(Pool::new(spec, concurrency, strict)))
            }
        };
        self.runners
            .lock()
            .insert(key, (config.revision_id.clone(), runner.clone()));
        Ok(runner)
    }

    fn worker_spec(&self, config: &VersionConfig, engine: Engine) -> WorkerSpec {
        let task_root = self.code.dir(&config.code_id);
        let memory = u64::from(config.memory_size) << 20;
        let (program, args, data_limit): (PathBuf, Vec<OsString>, Option<u64>) = match engine {
            Engine::Python => (
                self.config.python.clone(),
                vec![self.runtime_dir.join("bootstrap.py").into_os_string()],
                Some(memory),
            ),
            // V8 reserves far more address space than it uses, so an rlimit would stop it from
            // starting; its heap limit is the memory limit instead.
            Engine::Node => (
                self.config.node.clone(),
                vec![
                    OsString::from(format!("--max-old-space-size={}", config.memory_size)),
                    self.runtime_dir.join("bootstrap.js").into_os_string(),
                ],
                None,
            ),
            _ => (task_root.join("bootstrap"), Vec::new(), Some(memory)),
        };
        let mut env: Vec<(String, String)> = config
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let account = &self.config.account;
        let inherited =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        env.extend([
            (
                "PATH".into(),
                inherited("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ),
            ("LANG".into(), "C.UTF-8".into()),
            ("TZ".into(), ":UTC".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("_HANDLER".into(), config.handler.clone()),
            ("LAMBDA_TASK_ROOT".into(), task_root.display().to_string()),
            (
                "LAMBDA_RUNTIME_DIR".into(),
                self.runtime_dir.display().to_string(),
            ),
            (
                "AWS_EXECUTION_ENV".into(),
                format!("AWS_Lambda_{}", config.runtime),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), config.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), config.version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                config.memory_size.to_string(),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".into(),
                format!("/aws/lambda/{}", config.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME".into(),
                format!(
                    "{}/[{}]{}",
                    crate::clock::log_stream_date(),
                    config.version,
                    uuid::Uuid::new_v4().simple()
                ),
            ),
            ("AWS_REGION".into(), account.region.clone()),
            ("AWS_DEFAULT_REGION".into(), account.region.clone()),
            ("AWS_ENDPOINT_URL".into(), self.config.endpoint_url.clone()),
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.config.access_key_id.clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.config.secret_access_key.clone(),
            ),
        ]);
        WorkerSpec {
            program,
            args,
            env,
            cwd: task_root,
            data_limit,
            run_dir: self.config.dir.join("run"),
        }
    }

    /// Invokes `reference` synchronously with the JSON `payload`; `when_busy` says whether an
    /// invocation over the function's reserved concurrency is refused or waits.
    pub async fn invoke(
        &self,
        reference: &FunctionRef,
        payload: Bytes,
        client_context: Option<String>,
        when_busy: WhenBusy,
    ) -> Result<Invoked, FunctionsError> {
        check_sync_payload(&payload)?;
        let target = self.target(reference)?;
        self.run(&target, payload, client_context, when_busy).await
    }

    /// Resolves `reference` to the version it names, its runner and metric handles.
    fn target(&self, reference: &FunctionRef) -> Result<Arc<Target>, FunctionsError> {
        let not_found = || {
            FunctionsError::function_not_found(
                &self.arn(&reference.name, reference.qualifier.as_deref()),
            )
        };
        let (generation, config, reserved) = {
            let records = self.records.read();
            // Read with the records: a change after this moves the generation past it.
            let generation = self.targets.generation();
            let record = records.get(&reference.name).ok_or_else(not_found)?;
            let config = record
                .resolve(reference.qualifier.as_deref())
                .cloned()
                .ok_or_else(not_found)?;
            (generation, config, record.reserved_concurrency)
        };
        let runner = self.runner(&config, reserved)?;
        let invoked_arn: Arc<str> =
            Arc::from(self.arn(&reference.name, reference.qualifier.as_deref()));
        Ok(Arc::new(Target::new(
            generation,
            config,
            reserved,
            runner,
            invoked_arn,
        )))
    }

    /// The target `function` (a name or ARN, as a caller of the seam names it) resolves to,
    /// from the cache while no function changed.
    fn cached_target(&self, function: &str) -> Result<Arc<Target>, FunctionsError> {
        if let Some(target) = self.targets.get(function) {
            return Ok(target);
        }
        let target = self.target(&FunctionRef::parse(function, None)?)?;
        self.targets.put(function, &target);
        Ok(target)
    }

    /// Runs one invocation of `target`, counts it and writes its log.
    async fn run(
        &self,
        target: &Target,
        payload: Bytes,
        client_context: Option<String>,
        when_busy: WhenBusy,
    ) -> Result<Invoked, FunctionsError> {
        let mut log = String::new();
        let mut outcome = self
            .execute(target, payload, client_context, when_busy, &mut log)
            .await?;
        self.put_records(target, vec![&mut outcome]).await;
        self.write_log(&target.config, &log);
        Ok(Invoked {
            outcome,
            executed_version: target.config.version.clone(),
            log,
        })
    }

    /// Runs `target` once per event (each its own invocation: request id, START/END/REPORT,
    /// metrics), waiting for a slot of its concurrency when it is all in use. A WebAssembly
    /// function runs them one after another on the calling task (yielding to the other tasks
    /// every [`YIELD_AFTER`]) and writes their logs at once; worker processes run them
    /// concurrently, as separate calls would.
    async fn run_each(
        &self,
        target: &Target,
        events: &[Bytes],
    ) -> Vec<Result<Outcome, FunctionsError>> {
        if !matches!(target.runner, Runner::Wasm(_)) {
            return futures_util::future::join_all(events.iter().map(|event| async {
                self.run(target, event.clone(), None, WhenBusy::Wait)
                    .await
                    .map(|invoked| invoked.outcome)
            }))
            .await;
        }
        let mut log = String::new();
        let mut results = Vec::with_capacity(events.len());
        let mut slice = std::time::Instant::now();
        for event in events {
            let result = self
                .execute(target, event.clone(), None, WhenBusy::Wait, &mut log)
                .await;
            results.push(result);
            if slice.elapsed() >= YIELD_AFTER {
                tokio::task::yield_now().await;
                slice = std::time::Instant::now();
            }
        }
        self.put_records(
            target,
            results.iter_mut().filter_map(|r| r.as_mut().ok()).collect(),
        )
        .await;
        self.write_log(&target.config, &log);
        results
    }

    /// Appends the records the invocations' module put (`env.put_record`) to their streams:
    /// each stream's records of all `outcomes` in as few appends as Kinesis allows (one, for a
    /// batch of up to 500). An invocation whose records are not all written fails
    /// (`Runtime.PutRecordFailed`), so its caller tries it again.
    async fn put_records(&self, target: &Target, mut outcomes: Vec<&mut Outcome>) {
        use fleetcore_stream::{MAX_PUT_BYTES, MAX_PUT_RECORDS, NewRecord};
        // By stream: (the outcome each record is of, the record).
        let mut by_stream: BTreeMap<Arc<str>, Vec<(usize, NewRecord)>> = BTreeMap::new();
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            for record in outcome.records.drain(..) {
                by_stream.entry(record.stream).or_default().push((
                    i,
                    NewRecord {
                        partition_key: record.partition_key,
                        explicit_hash_key: None,
                        data: record.data,
                    },
                ));
            }
        }
        if by_stream.is_empty() {
            return;
        }
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        for (stream, mut records) in by_stream {
            while !records.is_empty() {
                let mut bytes = 0;
                let take = records
                    .iter()
                    .take(MAX_PUT_RECORDS)
                    .take_while(|(_, r)| {
                        bytes += r.data.len() + r.partition_key.len();
                        bytes <= MAX_PUT_BYTES
                    })
                    .count()
                    .max(1);
                let rest = records.split_off(take);
                let (owners, batch): (Vec<usize>, Vec<NewRecord>) = records.into_iter().unzip();
                records = rest;
                match self.streams.put_records(&stream, batch).await {
                    Ok(results) => {
                        for (owner, result) in owners.iter().zip(results) {
                            if let Err(e) = result {
                                failed.entry(*owner).or_insert_with(|| {
                                    format!("a record for stream {stream} was refused: {e:?}")
                                });
                            }
                        }
                    }
                    Err(e) => {
                        for owner in owners {
                            failed.entry(owner).or_insert_with(|| {
                                format!("the records for stream {stream} were not written: {e}")
                            });
                        }
                    }
                }
            }
        }
        for (i, outcome) in outcomes.into_iter().enumerate() {
            if let Some(why) = failed.remove(&i) {
                tracing::warn!(function = %target.config.name, error = %why, "put_record failed");
                target.failures.increment(1);
                let failure = Outcome::failed("Runtime.PutRecordFailed", why);
                outcome.payload = failure.payload;
                outcome.function_error = failure.function_error;
            }
        }
    }

    /// Runs one invocation of `target` and counts it; its framed log is appended to `log`.
    async fn execute(
        &self,
        target: &Target,
        payload: Bytes,
        client_context: Option<String>,
        when_busy: WhenBusy,
        log: &mut String,
    ) -> Result<Outcome, FunctionsError> {
        if target.reserved == Some(0) {
            return Err(FunctionsError::TooManyRequests(
                "Rate Exceeded. (ReservedFunctionConcurrentInvocationLimitExceeded: the function's \
                 reserved concurrency is 0)"
                    .into(),
            ));
        }
        let config = &target.config;
        let request_id = fleetcore_api::context::new_request_id();
        let invocation = Invocation {
            request_id: request_id.clone(),
            payload,
            invoked_arn: Arc::clone(&target.invoked_arn),
            timeout: Duration::from_secs(u64::from(config.timeout)),
            client_context,
            when_busy,
        };
        let span = tracing::trace_span!(
            target: fleetcore_core::trace::TARGET,
            "function.invoke",
            otel.kind = "internal",
            faas.invoked_name = %config.name,
            faas.version = %config.version,
            faas.invocation_id = %request_id,
            faas.duration_ms = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        let outcome = if span.is_disabled() {
            target.runner.invoke(invocation).await
        } else {
            let outcome = target
                .runner
                .invoke(invocation)
                .instrument(span.clone())
                .await;
            match &outcome {
                Ok(o) => {
                    span.record("faas.duration_ms", o.duration.as_secs_f64() * 1000.0);
                    match &o.function_error {
                        Some(kind) => {
                            span.record("otel.status_code", "error");
                            span.record("otel.status_message", *kind);
                        }
                        None => {
                            span.record("otel.status_code", "ok");
                        }
                    }
                }
                Err(e) => {
                    span.record("otel.status_code", "error");
                    span.record("otel.status_message", e.to_string().as_str());
                }
            }
            outcome
        };
        drop(span);
        let outcome = outcome?;
        target.invocations.increment(1);
        if outcome.function_error.is_some() {
            target.failures.increment(1);
            tracing::info!(function = %config.name, %request_id, "invocation failed");
        }
        target.seconds.record(outcome.duration.as_secs_f64());
        logs::frame_into(
            log,
            &request_id,
            &config.version,
            &outcome.output,
            outcome.written,
            &Report {
                duration: outcome.duration,
                memory_size: config.memory_size,
                init: outcome.init,
            },
        );
        Ok(outcome)
    }

    /// Writes framed invocation logs of `config`'s function to its log file and to the
    /// CloudWatch Logs feed, if one is set.
    fn write_log(&self, config: &VersionConfig, log: &str) {
        if log.is_empty() {
            return;
        }
        self.logs.append(&config.name, log);
        if let Some(sink) = self.log_sink.get() {
            sink.invocation_log(&config.name, &config.version, log);
        }
    }

    /// Queues an `Event` invocation: checked, then stored durably (see `event_queue`).
    pub async fn invoke_async(
        &self,
        reference: FunctionRef,
        payload: Bytes,
    ) -> Result<(), FunctionsError> {
        if payload.len() > MAX_ASYNC_PAYLOAD {
            return Err(FunctionsError::TooLarge(format!(
                "Request must be smaller than {MAX_ASYNC_PAYLOAD} bytes for the InvokeAsync operation"
            )));
        }
        self.resolve(&reference)?;
        self.events.push(&reference, &payload).await
    }
}

/// How long a batch of WebAssembly invocations runs on its task before it lets the others run.
const YIELD_AFTER: Duration = Duration::from_micros(200);

/// How long a worker may stay idle before it is stopped.
const IDLE_WORKER_TTL: Duration = Duration::from_secs(600);

/// Every minute, stops the workers idle for longer than [`IDLE_WORKER_TTL`].
async fn reap_idle_workers(functions: std::sync::Weak<Functions>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Some(functions) = functions.upgrade() else {
            return;
        };
        let pools: Vec<Runner> = functions
            .runners
            .lock()
            .values()
            .map(|(_, runner)| runner.clone())
            .collect();
        for runner in pools {
            runner.reap(IDLE_WORKER_TTL);
        }
    }
}

/// Publishes `$LATEST` as the next version.
fn publish(record: &mut FunctionRecord, description: String) -> VersionConfig {
    let number = record.next_version;
    record.next_version += 1;
    let mut version = record.latest.clone();
    version.version = number.to_string();
    if !description.is_empty() {
        version.description = description;
    }
    version.revision_id = new_revision();
    record.versions.insert(number, version.clone());
    version
}

fn same_content(a: &VersionConfig, b: &VersionConfig) -> bool {
    a.code_sha256 == b.code_sha256
        && a.runtime == b.runtime
        && a.handler == b.handler
        && a.timeout == b.timeout
        && a.memory_size == b.memory_size
        && a.environment == b.environment
}

fn check_revision(config: &VersionConfig, expected: Option<&str>) -> Result<(), FunctionsError> {
    match expected {
        Some(id) if id != config.revision_id => Err(FunctionsError::Conflict(
            "The Revision Id provided does not match the latest Revision Id. Call the \
             GetFunction/GetAlias API to retrieve the latest Revision Id"
                .into(),
        )),
        _ => Ok(()),
    }
}

impl fleetcore_core::FunctionInvoker for Functions {
    /// Invokes through the cached target of `function`, logged as Lambda logs every invocation
    /// (START, output, END, REPORT); over the function's reserved concurrency it waits for a
    /// slot, as AWS retries a throttled invocation from a rule or an event source.
    fn invoke<'a>(
        &'a self,
        function: &'a str,
        payload: Vec<u8>,
    ) -> fleetcore_core::InvokeFuture<'a> {
        Box::pin(async move {
            let payload = Bytes::from(payload);
            check_sync_payload(&payload)?;
            let target = self.cached_target(function)?;
            let invoked = self.run(&target, payload, None, WhenBusy::Wait).await?;
            Ok(seam_output(invoked.outcome))
        })
    }

    /// As [`Self::invoke`] once per event, with the function resolved once and, for a
    /// WebAssembly function, the invocations run in turn and their logs written at once.
    fn invoke_each<'a>(
        &'a self,
        function: &'a str,
        events: &'a [Bytes],
    ) -> fleetcore_core::InvokeEachFuture<'a> {
        Box::pin(async move {
            let target = match self.cached_target(function) {
                Ok(target) => target,
                Err(error) => {
                    let error = fleetcore_core::InvokeError::from(error);
                    return events.iter().map(|_| Err(error.clone())).collect();
                }
            };
            // Events too large fail alone; the others run together.
            let mut results: Vec<
                Option<Result<fleetcore_core::InvokeOutput, fleetcore_core::InvokeError>>,
            > = events
                .iter()
                .map(|event| check_sync_payload(event).err().map(|e| Err(e.into())))
                .collect();
            let runnable: Vec<Bytes> = events
                .iter()
                .zip(&results)
                .filter(|(_, refused)| refused.is_none())
                .map(|(event, _)| event.clone())
                .collect();
            let mut ran = self.run_each(&target, &runnable).await.into_iter();
            results
                .iter_mut()
                .map(|slot| match slot.take() {
                    Some(refused) => refused,
                    None => match ran.next() {
                        Some(outcome) => outcome.map(seam_output).map_err(Into::into),
                        None => Err(fleetcore_core::InvokeError::Service(
                            "the invocation did not run".into(),
                        )),
                    },
                })
                .collect()
        })
    }
}

/// What the seam's callers get of an outcome.
fn seam_output(outcome: Outcome) -> fleetcore_core::InvokeOutput {
    fleetcore_core::InvokeOutput {
        payload: outcome.payload.into(),
        function_error: outcome.function_error.map(str::to_string),
    }
}

/// Refuses a synchronous event larger than Lambda allows.
fn check_sync_payload(payload: &[u8]) -> Result<(), FunctionsError> {
    if payload.len() > MAX_SYNC_PAYLOAD {
        return Err(FunctionsError::TooLarge(format!(
            "Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"
        )));
    }
    Ok(())
}
