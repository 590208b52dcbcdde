//! The events service: inputs and detector models (kept in the store, the latest version of
//! each model compiled), and the engine that runs detector instances. Instances are spread over
//! shards by a hash of (model, key value); each shard is a thread owning its instances and
//! timers ([`shard`]). A message of an input goes to every model that reads the input.
//!
//! Queues: each shard's command queue holds [`QUEUE`] commands; when it is full the sender
//! waits (BatchPutMessage and the rules `iotEvents` action are slowed, nothing is dropped).

mod alarms;
mod catalog;
mod instance;
mod shard;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetcore_core::{
    AccountContext, InputError, InputFuture, InputMessage, InputSink, KvStore, WriteBatch,
};
use parking_lot::{Mutex, RwLock};
use serde_json::Value as Json;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use instance::Instance;
pub use shard::LatenessObserver;

use alarms::AlarmCommand;
use catalog::Catalog;

use crate::EventsError;
use crate::actions::{Targets, Timer, Trigger};
use crate::alarm::{self, AlarmModel};
use crate::expr::Value;
use crate::model::{self, CompileEnv, DetectorModel, DetectorModelRecord, Input, SharedModel};

const TABLE_INPUTS: &str = "events.inputs";
pub(crate) const TABLE_DETECTORS: &str = "events.detectors";

/// Commands a shard's queue holds before senders wait.
const QUEUE: usize = 16_384;
/// Effects (SNS, MQTT, function calls) running at once; a shard waits for a free slot.
const EFFECTS_IN_FLIGHT: usize = 1024;
/// Largest message payload (BatchPutMessage's limit is 1 KB per message in AWS; this server
/// takes up to 128 KiB).
const MAX_PAYLOAD: usize = 128 * 1024;

type ModelTable = catalog::Latest<DetectorModel>;

/// The engine's settings.
#[derive(Clone)]
pub struct EventsConfig {
    /// Shards (threads); 0 means one per core.
    pub shards: usize,
    /// Called with each timer's lateness in milliseconds (benchmarks).
    pub lateness: Option<LatenessObserver>,
    /// A shard looks at the clock every this many commands of a turn and ends the turn early
    /// when a timer is due, so timers fire on time under load (0: timers fire only between
    /// turns of up to 4,096 commands, as before; benchmarks compare the two).
    pub timer_check: usize,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            shards: 0,
            lateness: None,
            timer_check: 64,
        }
    }
}

pub(crate) enum Command {
    Message {
        model: SharedModel,
        key: Option<String>,
        trigger: Trigger,
    },
    Update {
        model: SharedModel,
        key: Option<String>,
        state: String,
        variables: BTreeMap<String, Value>,
        timers: BTreeMap<String, Timer>,
        reply: oneshot::Sender<()>,
    },
    Describe {
        model: String,
        key: Option<String>,
        reply: oneshot::Sender<Option<Instance>>,
    },
    List {
        model: String,
        reply: oneshot::Sender<Vec<Instance>>,
    },
    Delete {
        model: String,
        key: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    DropModel {
        model: String,
        reply: oneshot::Sender<()>,
    },
    Alarm(AlarmCommand),
}

/// The running events service.
pub struct Events {
    store: Arc<dyn KvStore>,
    targets: Targets,
    account: AccountContext,
    inputs: RwLock<BTreeMap<String, Input>>,
    models: Catalog<DetectorModel>,
    alarm_models: Catalog<AlarmModel>,
    shards: Vec<mpsc::Sender<Command>>,
    /// Serializes changes of inputs and models (create/update/delete).
    changes: Mutex<()>,
}

/// Epoch milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Epoch seconds now, as the API's timestamps.
pub(crate) fn now_seconds() -> f64 {
    now_ms() as f64 / 1000.0
}

pub(crate) fn detector_key(model: &str, key: Option<&str>) -> Vec<u8> {
    let mut k = model.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key.unwrap_or("").as_bytes());
    k
}

impl Events {
    /// Loads inputs, models and detector instances from `store` and starts the shards; actions
    /// reach other services through `targets`. Must run inside a tokio runtime (effects run on
    /// it).
    pub fn start(
        store: Arc<dyn KvStore>,
        targets: Targets,
        account: AccountContext,
        config: EventsConfig,
    ) -> Result<Arc<Events>, EventsError> {
        let mut inputs = BTreeMap::new();
        for (_, value) in store.scan_prefix(TABLE_INPUTS, b"")? {
            match serde_json::from_slice::<Input>(&value) {
                Ok(input) => {
                    inputs.insert(input.name.clone(), input);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable input"),
            }
        }
        let env = CompileEnv {
            inputs: &inputs,
            actions: &targets,
        };
        let models = Catalog::load(
            Arc::clone(&store),
            "events.detector_models",
            "Detector model",
            |record| model::compile(record, &env),
        )?;
        let alarm_models = Catalog::load(
            Arc::clone(&store),
            "events.alarm_models",
            "Alarm model",
            |record| alarm::compile(record, &inputs, &targets),
        )?;
        let shard_count = if config.shards == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.shards
        };
        let mut loaded: Vec<HashMap<(String, Option<String>), Instance>> =
            (0..shard_count).map(|_| HashMap::new()).collect();
        let mut restored = 0usize;
        for (_, value) in store.scan_prefix(TABLE_DETECTORS, b"")? {
            match serde_json::from_slice::<Instance>(&value) {
                Ok(instance) => {
                    let shard = shard_of(&instance.model, instance.key.as_deref(), shard_count);
                    loaded[shard].insert((instance.model.clone(), instance.key.clone()), instance);
                    restored += 1;
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable detector"),
            }
        }
        let mut loaded_alarms = alarms::load_alarms(&*store, shard_count)?;
        let runtime = tokio::runtime::Handle::current();
        let permits = Arc::new(Semaphore::new(EFFECTS_IN_FLIGHT));
        let mut shards = Vec::with_capacity(shard_count);
        for (number, instances) in loaded.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(QUEUE);
            let mut shard = shard::Shard {
                store: Arc::clone(&store),
                models: models.latest(),
                instances,
                timers: Default::default(),
                alarm_models: alarm_models.latest(),
                alarms: std::mem::take(&mut loaded_alarms[number]),
                snoozes: Default::default(),
                effects_runtime: runtime.clone(),
                effect_permits: Arc::clone(&permits),
                lateness: config.lateness.clone(),
                timer_check: config.timer_check,
            };
            shard.index_timers();
            shard.index_snoozes();
            std::thread::Builder::new()
                .name(format!("events-shard-{number}"))
                .spawn(move || shard.run(rx))
                .map_err(|e| EventsError::Unavailable(format!("starting a shard: {e}")))?;
            shards.push(tx);
        }
        tracing::info!(
            detectors = restored,
            shards = shard_count,
            "events engine started"
        );
        let events = Arc::new(Events {
            store,
            targets: targets.clone(),
            account,
            inputs: RwLock::new(inputs),
            models,
            alarm_models,
            shards,
            changes: Mutex::new(()),
        });
        let _ = targets
            .inputs
            .set(Arc::clone(&events) as Arc<dyn InputSink>);
        Ok(events)
    }

    /// The ARN of input `name`.
    pub fn input_arn(&self, name: &str) -> String {
        self.account
            .arn("iotevents", format!("input/{name}"))
            .to_string()
    }

    /// The ARN of detector model `name`.
    pub fn model_arn(&self, name: &str) -> String {
        self.account
            .arn("iotevents", format!("detectorModel/{name}"))
            .to_string()
    }

    // ---- inputs ----

    /// CreateInput.
    pub fn create_input(
        &self,
        name: &str,
        description: Option<String>,
        attributes: Vec<String>,
    ) -> Result<Input, EventsError> {
        check_name("inputName", name)?;
        check_attributes(&attributes)?;
        let _change = self.changes.lock();
        if self.inputs.read().contains_key(name) {
            return Err(EventsError::AlreadyExists {
                message: format!("Input {name} already exists"),
                id: name.to_string(),
                arn: self.input_arn(name),
            });
        }
        let now = now_seconds();
        let input = Input {
            name: name.to_string(),
            description,
            attributes,
            created: now,
            updated: now,
        };
        self.save_input(&input)?;
        self.inputs.write().insert(name.to_string(), input.clone());
        Ok(input)
    }

    /// UpdateInput.
    pub fn update_input(
        &self,
        name: &str,
        description: Option<String>,
        attributes: Vec<String>,
    ) -> Result<Input, EventsError> {
        check_attributes(&attributes)?;
        let _change = self.changes.lock();
        let mut input = self.input(name)?;
        input.description = description;
        input.attributes = attributes;
        input.updated = now_seconds();
        self.save_input(&input)?;
        self.inputs.write().insert(name.to_string(), input.clone());
        Ok(input)
    }

    /// DescribeInput.
    pub fn input(&self, name: &str) -> Result<Input, EventsError> {
        self.inputs
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EventsError::NotFound(format!("Input {name} does not exist")))
    }

    /// ListInputs.
    pub fn inputs(&self) -> Vec<Input> {
        self.inputs.read().values().cloned().collect()
    }

    /// DeleteInput.
    pub fn delete_input(&self, name: &str) -> Result<(), EventsError> {
        let _change = self.changes.lock();
        self.input(name)?;
        let mut batch = WriteBatch::new();
        batch.delete(TABLE_INPUTS, name.as_bytes());
        self.store.apply(batch)?;
        self.inputs.write().remove(name);
        Ok(())
    }

    fn save_input(&self, input: &Input) -> Result<(), EventsError> {
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE_INPUTS,
            input.name.as_bytes(),
            serde_json::to_vec(input).map_err(|e| EventsError::Invalid(e.to_string()))?,
        );
        self.store.apply(batch)?;
        Ok(())
    }

    // ---- detector models ----

    /// CreateDetectorModel (`update` false) or UpdateDetectorModel (a new version; the
    /// detectors of the old version are deleted and re-created by the next messages, as AWS
    /// does).
    pub async fn put_detector_model(
        &self,
        mut record: DetectorModelRecord,
        update: bool,
    ) -> Result<DetectorModelRecord, EventsError> {
        check_name("detectorModelName", &record.name)?;
        if record.role_arn.is_empty() {
            return Err(EventsError::Invalid("roleArn is required".into()));
        }
        let compiled = {
            let _change = self.changes.lock();
            let old = self
                .models
                .replacing(&record.name, update, || self.model_arn(&record.name))?;
            match old {
                Some(old) => {
                    record.version = old.record.version + 1;
                    record.created = old.record.created;
                    record.key = old.record.key.clone();
                }
                None => record.version = 1,
            }
            let inputs = self.inputs.read().clone();
            let env = CompileEnv {
                inputs: &inputs,
                actions: &self.targets,
            };
            let compiled = Arc::new(model::compile(record, &env).map_err(EventsError::Invalid)?);
            self.models.save(Arc::clone(&compiled))?;
            compiled
        };
        if update {
            self.drop_detectors(&compiled.record.name).await?;
        }
        Ok(compiled.record.clone())
    }

    /// DescribeDetectorModel: the latest version, or `version`.
    pub fn detector_model(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<DetectorModelRecord, EventsError> {
        self.models.record(name, version)
    }

    /// ListDetectorModels: the latest version of each.
    pub fn detector_models(&self) -> Vec<DetectorModelRecord> {
        self.models.records()
    }

    /// ListDetectorModelVersions: newest first.
    pub fn detector_model_versions(
        &self,
        name: &str,
    ) -> Result<Vec<DetectorModelRecord>, EventsError> {
        self.models.versions(name)
    }

    /// DeleteDetectorModel: every version and every detector.
    pub async fn delete_detector_model(&self, name: &str) -> Result<(), EventsError> {
        {
            let _change = self.changes.lock();
            self.models.delete(name)?;
        }
        self.drop_detectors(name).await
    }

    async fn drop_detectors(&self, name: &str) -> Result<(), EventsError> {
        for shard in &self.shards {
            let (reply, done) = oneshot::channel();
            send(
                shard,
                Command::DropModel {
                    model: name.to_string(),
                    reply,
                },
            )
            .await?;
            done.await.map_err(|_| stopped())?;
        }
        Ok(())
    }

    // ---- detectors (iotevents-data) ----

    /// Routes one message of `input` to every model reading it. `Err` is the message's error
    /// entry (code, text).
    pub async fn put_message(
        &self,
        input: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), (&'static str, String)> {
        if !self.inputs.read().contains_key(input) {
            return Err((
                "ResourceNotFoundException",
                format!("Input {input} does not exist"),
            ));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err((
                "InvalidRequestException",
                format!("the payload is larger than {MAX_PAYLOAD} bytes"),
            ));
        }
        let body: Json = serde_json::from_slice(payload).map_err(|e| {
            (
                "InvalidRequestException",
                format!("the payload is not JSON: {e}"),
            )
        })?;
        if !body.is_object() {
            return Err((
                "InvalidRequestException",
                "the payload must be a JSON object".into(),
            ));
        }
        let readers: Vec<SharedModel> = self
            .models
            .read()
            .values()
            .filter(|m| m.inputs.contains(input))
            .cloned()
            .collect();
        let message_id: Arc<str> = if message_id.is_empty() {
            Arc::from(uuid::Uuid::new_v4().to_string())
        } else {
            Arc::from(message_id)
        };
        let trigger = Trigger::Message {
            input: Arc::from(input),
            message_id,
            payload: Arc::new(body),
        };
        for model in readers {
            let Some(key) = key_value(model.key.as_deref(), &trigger, &model.record.name) else {
                continue;
            };
            let shard =
                &self.shards[shard_of(&model.record.name, key.as_deref(), self.shards.len())];
            send(
                shard,
                Command::Message {
                    model,
                    key,
                    trigger: trigger.clone(),
                },
            )
            .await
            .map_err(|e| ("ServiceUnavailableException", e.to_string()))?;
        }
        self.route_to_alarms(input, &trigger)
            .await
            .map_err(|e| ("ServiceUnavailableException", e.to_string()))
    }

    /// BatchUpdateDetector: sets a detector's state, variables and timers.
    pub async fn update_detector(
        &self,
        model_name: &str,
        key: Option<String>,
        state: &str,
        variables: BTreeMap<String, Value>,
        timers: BTreeMap<String, u64>,
    ) -> Result<(), EventsError> {
        let model = self.models.get(model_name).ok_or_else(|| {
            EventsError::NotFound(format!("Detector model {model_name} does not exist"))
        })?;
        if model.state_index(state).is_none() {
            return Err(EventsError::Invalid(format!(
                "{state} is not a state of detector model {model_name}"
            )));
        }
        if model.key.is_some() != key.is_some() {
            return Err(EventsError::Invalid(if key.is_some() {
                format!("detector model {model_name} has no key: give no keyValue")
            } else {
                format!("detector model {model_name} has a key: keyValue is required")
            }));
        }
        let now = now_ms();
        let timers = timers
            .into_iter()
            .map(|(name, seconds)| {
                (
                    name,
                    Timer {
                        due_ms: now + seconds * 1000,
                        seconds,
                    },
                )
            })
            .collect();
        let shard = &self.shards[shard_of(model_name, key.as_deref(), self.shards.len())];
        let (reply, done) = oneshot::channel();
        send(
            shard,
            Command::Update {
                model,
                key,
                state: state.to_string(),
                variables,
                timers,
                reply,
            },
        )
        .await?;
        done.await.map_err(|_| stopped())
    }

    /// DescribeDetector.
    pub async fn detector(
        &self,
        model: &str,
        key: Option<String>,
    ) -> Result<Instance, EventsError> {
        self.detector_model(model, None)?;
        let shard = &self.shards[shard_of(model, key.as_deref(), self.shards.len())];
        let (reply, done) = oneshot::channel();
        send(
            shard,
            Command::Describe {
                model: model.to_string(),
                key: key.clone(),
                reply,
            },
        )
        .await?;
        done.await.map_err(|_| stopped())?.ok_or_else(|| {
            EventsError::NotFound(match key {
                Some(k) => format!("No detector of model {model} with key value {k}"),
                None => format!("No detector of model {model}"),
            })
        })
    }

    /// ListDetectors: every detector of `model`, sorted by key value.
    pub async fn detectors(&self, model: &str) -> Result<Vec<Instance>, EventsError> {
        self.detector_model(model, None)?;
        let mut all = Vec::new();
        for shard in &self.shards {
            let (reply, done) = oneshot::channel();
            send(
                shard,
                Command::List {
                    model: model.to_string(),
                    reply,
                },
            )
            .await?;
            all.extend(done.await.map_err(|_| stopped())?);
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// BatchDeleteDetector: `Ok(false)` when there was no such detector.
    pub async fn delete_detector(
        &self,
        model: &str,
        key: Option<String>,
    ) -> Result<bool, EventsError> {
        let shard = &self.shards[shard_of(model, key.as_deref(), self.shards.len())];
        let (reply, done) = oneshot::channel();
        send(
            shard,
            Command::Delete {
                model: model.to_string(),
                key,
                reply,
            },
        )
        .await?;
        done.await.map_err(|_| stopped())
    }
}

fn trigger_payload(trigger: &Trigger) -> &Json {
    match trigger {
        Trigger::Message { payload, .. } => payload,
        _ => &Json::Null,
    }
}

/// The key value a message has for a model with key `path` (`Some(None)` for a model without
/// key); `None` when the message lacks it (counted, and the model skips the message).
fn key_value(
    path: Option<&[crate::expr::PathStep]>,
    trigger: &Trigger,
    model: &str,
) -> Option<Option<String>> {
    let Some(path) = path else {
        return Some(None);
    };
    match crate::actions::lookup(trigger_payload(trigger), path) {
        Some(Json::String(s)) => Some(Some(s.clone())),
        Some(v @ (Json::Number(_) | Json::Bool(_))) => Some(Some(v.to_string())),
        _ => {
            metrics::counter!("fleetcore_events_messages_without_key_total").increment(1);
            tracing::debug!(model, "message has no key value for the model: skipped");
            None
        }
    }
}

impl InputSink for Events {
    fn put(&self, messages: Vec<InputMessage>) -> InputFuture<'_> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(messages.len());
            for m in messages {
                outcomes.push(
                    self.put_message(&m.input_name, &m.message_id, &m.payload)
                        .await
                        .map_err(|(code, text)| match code {
                            "ResourceNotFoundException" => InputError::NotFound(text),
                            "InvalidRequestException" => InputError::Invalid(text),
                            _ => InputError::Unavailable(text),
                        }),
                );
            }
            outcomes
        })
    }
}

fn stopped() -> EventsError {
    EventsError::Unavailable("the events engine is stopping".into())
}

async fn send(shard: &mpsc::Sender<Command>, command: Command) -> Result<(), EventsError> {
    shard.send(command).await.map_err(|_| stopped())
}

fn shard_of(model: &str, key: Option<&str>, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    model.hash(&mut h);
    key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

fn check_name(what: &str, name: &str) -> Result<(), EventsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(EventsError::Invalid(format!(
            "{what} {name:?} must be 1 to 128 letters, digits, _ or -, starting with a letter or digit"
        )))
    }
}

fn check_attributes(attributes: &[String]) -> Result<(), EventsError> {
    if attributes.is_empty() || attributes.len() > 200 {
        return Err(EventsError::Invalid(
            "inputDefinition.attributes must hold 1 to 200 attributes".into(),
        ));
    }
    for a in attributes {
        model::parse_path(a)
            .map_err(|e| EventsError::Invalid(format!("inputDefinition.attributes: {e}")))?;
    }
    Ok(())
}
