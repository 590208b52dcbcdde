//! Alarms in the engine. Alarm models are kept like detector models (a [`super::catalog`]:
//! every version in the store, the latest compiled); alarm instances live in the same shards as detectors (by a hash
//! of model and key value), are written in the same per-turn batch, and their actions start only
//! once the new state is durable. A snoozed alarm's wake-up time is indexed by its shard, so the
//! snooze ends on time without input, and one that ended while the server was down ends at the
//! first turn after restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fleetcore_core::KvStore;
use serde_json::json;
use tokio::sync::oneshot;

use super::shard::{InstanceId, Shard, Turn};
use super::{Command, Events, check_name, key_value, now_ms, send, shard_of, stopped};
use crate::EventsError;
use crate::actions::{Detector, Effect, Run, Trigger, View};
use crate::alarm::{
    self, Alarm, AlarmModel, AlarmModelRecord, CustomerAction, RuleEvaluation, SharedAlarmModel,
};
use crate::expr::Value;

pub(super) const TABLE_ALARMS: &str = "events.alarms";

/// The latest compiled version of each alarm model, by name.
pub(super) type AlarmModelTable = super::catalog::Latest<AlarmModel>;

/// What a shard does for alarms.
pub(crate) enum AlarmCommand {
    Message {
        model: SharedAlarmModel,
        key: Option<String>,
        trigger: Trigger,
    },
    Act {
        model: SharedAlarmModel,
        key: Option<String>,
        action: CustomerAction,
        reply: oneshot::Sender<Result<(), EventsError>>,
    },
    Describe {
        model: String,
        key: Option<String>,
        reply: oneshot::Sender<Option<Alarm>>,
    },
    List {
        model: String,
        reply: oneshot::Sender<Vec<Alarm>>,
    },
    Drop {
        model: String,
        reply: oneshot::Sender<()>,
    },
}

/// Every stored alarm, by shard.
pub(super) fn load_alarms(
    store: &dyn KvStore,
    shards: usize,
) -> Result<Vec<HashMap<InstanceId, Alarm>>, EventsError> {
    let mut loaded: Vec<HashMap<InstanceId, Alarm>> = (0..shards).map(|_| HashMap::new()).collect();
    for (_, value) in store.scan_prefix(TABLE_ALARMS, b"")? {
        match serde_json::from_slice::<Alarm>(&value) {
            Ok(alarm) => {
                let shard = shard_of(&alarm.model, alarm.key.as_deref(), shards);
                loaded[shard].insert((alarm.model.clone(), alarm.key.clone()), alarm);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable alarm"),
        }
    }
    Ok(loaded)
}

/// Runs the model's actions for an alarm whose state just changed; an action without `payload`
/// sends the alarm as DescribeAlarm shows it, with `eventTime` (epoch milliseconds).
fn run_actions(
    model: &AlarmModel,
    alarm: &Alarm,
    trigger: &Trigger,
    now_ms: u64,
    effects: &mut Vec<Effect>,
) {
    if model.actions.is_empty() {
        return;
    }
    let mut payload = alarm.to_api(model.record.severity);
    payload["eventTime"] = json!(now_ms);
    let mut variables = BTreeMap::new();
    let mut timers = BTreeMap::new();
    let mut run = Run {
        variables: &mut variables,
        timers: &mut timers,
        trigger,
        now_ms,
        detector: Detector {
            model: &model.record.name,
            version: model.record.version,
            key: alarm.key.as_deref(),
        },
        state: alarm.state.name(),
        event: alarm.state.name(),
        effects,
        default_payload: Some(&payload),
    };
    for action in &model.actions {
        action.run(&mut run);
    }
    metrics::counter!("fleetcore_events_alarm_state_changes_total", "state" => alarm.state.name())
        .increment(1);
}

impl Shard {
    /// Indexes the snoozes of the loaded alarms.
    pub(super) fn index_snoozes(&mut self) {
        for ((model, key), alarm) in &self.alarms {
            if let Some(until) = alarm.snooze_until_ms {
                self.snoozes.insert((until, model.clone(), key.clone()));
            }
        }
    }

    pub(super) fn handle_alarm(&mut self, command: AlarmCommand, turn: &mut Turn) {
        let now = now_ms();
        match command {
            AlarmCommand::Message {
                model,
                key,
                trigger,
            } => {
                let variables = BTreeMap::new();
                let view = View {
                    variables: &variables,
                    trigger: &trigger,
                };
                let value = model.property.eval(&view);
                if value == Value::Undefined {
                    metrics::counter!("fleetcore_events_alarm_messages_without_property_total")
                        .increment(1);
                    return;
                }
                let evaluation = RuleEvaluation {
                    input_property_value: value.text(),
                    operator: model.operator.name().to_string(),
                    threshold_value: model.threshold.eval(&view).text(),
                };
                let breached = model.rule.eval(&view).is_true();
                let id = (model.record.name.clone(), key);
                let alarm = self.alarms.entry(id.clone()).or_insert_with(|| {
                    Alarm::new(
                        &model.record.name,
                        model.record.version,
                        id.1.clone(),
                        model.capabilities.disabled_on_initialization,
                        now,
                    )
                });
                alarm.version = model.record.version;
                if alarm.evaluate(
                    breached,
                    evaluation,
                    model.capabilities.acknowledge_flow,
                    now,
                ) {
                    run_actions(&model, alarm, &trigger, now, &mut turn.effects);
                }
                turn.dirty_alarms.insert(id);
                metrics::counter!("fleetcore_events_alarm_evaluations_total").increment(1);
            }
            AlarmCommand::Act {
                model,
                key,
                action,
                reply,
            } => {
                let id = (model.record.name.clone(), key);
                let outcome = match self.alarms.get_mut(&id) {
                    None => Err(EventsError::NotFound(missing_alarm(&id.0, id.1.as_deref()))),
                    Some(alarm) => {
                        match alarm.act(action, model.capabilities.acknowledge_flow, now) {
                            Err(message) => Err(EventsError::Invalid(message)),
                            Ok(changed) => {
                                if let Some(until) = alarm.snooze_until_ms {
                                    self.snoozes.insert((until, id.0.clone(), id.1.clone()));
                                }
                                if changed {
                                    run_actions(
                                        &model,
                                        alarm,
                                        &Trigger::Update,
                                        now,
                                        &mut turn.effects,
                                    );
                                }
                                turn.dirty_alarms.insert(id);
                                Ok(())
                            }
                        }
                    }
                };
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(outcome);
                }));
            }
            AlarmCommand::Describe { model, key, reply } => {
                let found = self.alarms.get(&(model, key)).cloned();
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(found);
                }));
            }
            AlarmCommand::List { model, reply } => {
                let found: Vec<Alarm> = self
                    .alarms
                    .iter()
                    .filter(|((m, _), _)| *m == model)
                    .map(|(_, a)| a.clone())
                    .collect();
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(found);
                }));
            }
            AlarmCommand::Drop { model, reply } => {
                let ids: Vec<InstanceId> = self
                    .alarms
                    .keys()
                    .filter(|(m, _)| *m == model)
                    .cloned()
                    .collect();
                for id in ids {
                    self.alarms.remove(&id);
                    turn.dirty_alarms.remove(&id);
                    turn.deleted_alarms.push(id);
                }
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
        }
    }

    /// Ends the snoozes that are due.
    pub(super) fn fire_snoozes(&mut self, turn: &mut Turn) {
        let now = now_ms();
        while let Some(first) = self.snoozes.first() {
            if first.0 > now {
                break;
            }
            let Some((due, model_name, key)) = self.snoozes.pop_first() else {
                break;
            };
            let id = (model_name, key);
            let Some(alarm) = self.alarms.get_mut(&id) else {
                continue;
            };
            // A snooze ended early (enable, disable, a new snooze) leaves a stale entry: skip it.
            if alarm.snooze_until_ms != Some(due) {
                continue;
            }
            if self.lateness.is_some() {
                turn.fired.push(due);
            }
            if alarm.snooze_over(now) {
                if let Some(model) = self.alarm_models.read().get(&id.0).cloned() {
                    run_actions(
                        &model,
                        alarm,
                        &Trigger::Timer("snooze".into()),
                        now,
                        &mut turn.effects,
                    );
                }
                turn.dirty_alarms.insert(id);
            }
        }
    }
}

fn missing_alarm(model: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("No alarm of alarm model {model} with key value {k}"),
        None => format!("No alarm of alarm model {model}"),
    }
}

impl Events {
    /// The ARN of alarm model `name`.
    pub fn alarm_model_arn(&self, name: &str) -> String {
        self.account
            .arn("iotevents", format!("alarmModel/{name}"))
            .to_string()
    }

    /// CreateAlarmModel (`update` false) or UpdateAlarmModel (a new version; the alarms keep
    /// their state and are evaluated by the new version from their next message).
    pub fn put_alarm_model(
        &self,
        mut record: AlarmModelRecord,
        update: bool,
    ) -> Result<AlarmModelRecord, EventsError> {
        check_name("alarmModelName", &record.name)?;
        if record.role_arn.is_empty() {
            return Err(EventsError::Invalid("roleArn is required".into()));
        }
        if record.description.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err(EventsError::Invalid(
                "alarmModelDescription must be at most 1024 characters".into(),
            ));
        }
        let _change = self.changes.lock();
        let old = self
            .alarm_models
            .replacing(&record.name, update, || self.alarm_model_arn(&record.name))?;
        match old {
            Some(old) => {
                record.version = old.record.version + 1;
                record.created = old.record.created;
                record.key = old.record.key.clone();
                record.tags = old.record.tags.clone();
            }
            None => record.version = 1,
        }
        let inputs = self.inputs.read().clone();
        let compiled =
            Arc::new(alarm::compile(record, &inputs, &self.targets).map_err(EventsError::Invalid)?);
        self.alarm_models.save(Arc::clone(&compiled))?;
        Ok(compiled.record.clone())
    }

    /// DescribeAlarmModel: the latest version, or `version`.
    pub fn alarm_model(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<AlarmModelRecord, EventsError> {
        self.alarm_models.record(name, version)
    }

    /// ListAlarmModels: the latest version of each, by name.
    pub fn alarm_models(&self) -> Vec<AlarmModelRecord> {
        self.alarm_models.records()
    }

    /// ListAlarmModelVersions: newest first.
    pub fn alarm_model_versions(&self, name: &str) -> Result<Vec<AlarmModelRecord>, EventsError> {
        self.alarm_models.versions(name)
    }

    /// DeleteAlarmModel: every version and every alarm.
    pub async fn delete_alarm_model(&self, name: &str) -> Result<(), EventsError> {
        {
            let _change = self.changes.lock();
            self.alarm_models.delete(name)?;
        }
        for shard in &self.shards {
            let (reply, done) = oneshot::channel();
            let model = name.to_string();
            send(shard, Command::Alarm(AlarmCommand::Drop { model, reply })).await?;
            done.await.map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Sends a message of `input` to every alarm model whose rule reads it.
    pub(super) async fn route_to_alarms(
        &self,
        input: &str,
        trigger: &Trigger,
    ) -> Result<(), EventsError> {
        let readers: Vec<SharedAlarmModel> = self
            .alarm_models
            .read()
            .values()
            .filter(|m| m.input == input)
            .cloned()
            .collect();
        for model in readers {
            let Some(key) = key_value(model.key.as_deref(), trigger, &model.record.name) else {
                continue;
            };
            let shard =
                &self.shards[shard_of(&model.record.name, key.as_deref(), self.shards.len())];
            let trigger = trigger.clone();
            send(
                shard,
                Command::Alarm(AlarmCommand::Message {
                    model,
                    key,
                    trigger,
                }),
            )
            .await?;
        }
        Ok(())
    }

    fn alarm_shard(&self, model: &str, key: Option<&str>) -> &tokio::sync::mpsc::Sender<Command> {
        &self.shards[shard_of(model, key, self.shards.len())]
    }

    /// Applies an operator's action (BatchAcknowledgeAlarm, ...) to one alarm, once durable.
    pub async fn act_on_alarm(
        &self,
        model_name: &str,
        key: Option<String>,
        action: CustomerAction,
    ) -> Result<(), EventsError> {
        let model = self.alarm_models.get(model_name).ok_or_else(|| {
            EventsError::NotFound(format!("Alarm model {model_name} does not exist"))
        })?;
        if model.key.is_some() != key.is_some() {
            return Err(EventsError::Invalid(if key.is_some() {
                format!("alarm model {model_name} has no key: give no keyValue")
            } else {
                format!("alarm model {model_name} has a key: keyValue is required")
            }));
        }
        let (reply, done) = oneshot::channel();
        let shard = self.alarm_shard(model_name, key.as_deref());
        send(
            shard,
            Command::Alarm(AlarmCommand::Act {
                model,
                key,
                action,
                reply,
            }),
        )
        .await?;
        done.await.map_err(|_| stopped())?
    }

    /// DescribeAlarm.
    pub async fn alarm(&self, model: &str, key: Option<String>) -> Result<Alarm, EventsError> {
        self.alarm_model(model, None)?;
        let (reply, done) = oneshot::channel();
        let shard = self.alarm_shard(model, key.as_deref());
        let describe = AlarmCommand::Describe {
            model: model.to_string(),
            key: key.clone(),
            reply,
        };
        send(shard, Command::Alarm(describe)).await?;
        done.await
            .map_err(|_| stopped())?
            .ok_or_else(|| EventsError::NotFound(missing_alarm(model, key.as_deref())))
    }

    /// ListAlarms: every alarm of `model`, sorted by key value.
    pub async fn alarms(&self, model: &str) -> Result<Vec<Alarm>, EventsError> {
        self.alarm_model(model, None)?;
        let mut all = Vec::new();
        for shard in &self.shards {
            let (reply, done) = oneshot::channel();
            let list = AlarmCommand::List {
                model: model.to_string(),
                reply,
            };
            send(shard, Command::Alarm(list)).await?;
            all.extend(done.await.map_err(|_| stopped())?);
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// The severity the latest version of `model` gives its alarms.
    pub fn alarm_severity(&self, model: &str) -> Option<i64> {
        self.alarm_models.get(model).and_then(|m| m.record.severity)
    }
}
