//! One shard of the engine: a thread that owns the instances whose key hashes to it and their
//! timers (a due-time index scanned by the same loop, so a timer fires on time without input).
//! Each turn takes up to [`TURN`] commands, evaluates them, writes every changed instance in one
//! store batch (group commit), and only then answers callers and starts the actions' effects,
//! so what a caller sees and every effect follow a durable state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::{KvStore, WriteBatch};
use tokio::sync::{Semaphore, mpsc};

use super::alarms::{AlarmModelTable, TABLE_ALARMS};
use super::instance::Instance;
use super::{Command, ModelTable, TABLE_DETECTORS, detector_key, now_ms};
use crate::actions::{Effect, Trigger};
use crate::alarm::Alarm;

/// Most commands handled between two commits.
const TURN: usize = 4096;

/// Observes how late each timer fired (milliseconds from its due time to the commit that made
/// its firing durable), for benchmarks.
pub type LatenessObserver = Arc<dyn Fn(u64) + Send + Sync>;

pub(super) type InstanceId = (String, Option<String>);

pub(super) struct Shard {
    pub store: Arc<dyn KvStore>,
    pub models: ModelTable,
    pub instances: HashMap<InstanceId, Instance>,
    pub timers: BTreeSet<(u64, String, Option<String>, String)>,
    pub effects_runtime: tokio::runtime::Handle,
    pub effect_permits: Arc<Semaphore>,
    pub lateness: Option<LatenessObserver>,
    /// Commands handled between two looks at the clock for a due timer (0: none, timers fire
    /// only between full turns).
    pub timer_check: usize,
    pub alarm_models: AlarmModelTable,
    pub alarms: HashMap<InstanceId, Alarm>,
    /// When each snoozed alarm wakes: (due, model, key).
    pub snoozes: BTreeSet<(u64, String, Option<String>)>,
}

/// What one turn changed and owes: written in one batch, then answered and started.
#[derive(Default)]
pub(super) struct Turn {
    pub dirty: HashSet<InstanceId>,
    pub deleted: Vec<InstanceId>,
    pub dirty_alarms: HashSet<InstanceId>,
    pub deleted_alarms: Vec<InstanceId>,
    pub effects: Vec<Effect>,
    pub replies: Vec<Box<dyn FnOnce() + Send>>,
    /// Due times of the timers fired in this turn (for the lateness observer).
    pub fired: Vec<u64>,
}

impl Shard {
    /// Indexes the timers of the loaded instances (a timer that came due while the server was
    /// down fires at the first turn, once).
    pub fn index_timers(&mut self) {
        for ((model, key), instance) in &self.instances {
            for (name, timer) in &instance.timers {
                self.timers
                    .insert((timer.due_ms, model.clone(), key.clone(), name.clone()));
            }
        }
    }

    pub fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "an events shard could not start its runtime");
                return;
            }
        };
        runtime.block_on(async move {
            loop {
                let mut turn = Turn::default();
                let next_due = match (self.timers.first(), self.snoozes.first()) {
                    (Some(t), Some(s)) => Some(t.0.min(s.0)),
                    (t, s) => t.map(|t| t.0).or(s.map(|s| s.0)),
                };
                let wait = next_due.map(|due| Duration::from_millis(due.saturating_sub(now_ms())));
                let first = match wait {
                    Some(wait) => tokio::select! {
                        c = commands.recv() => match c { Some(c) => Some(c), None => break },
                        _ = tokio::time::sleep(wait) => None,
                    },
                    None => match commands.recv().await {
                        Some(c) => Some(c),
                        None => break,
                    },
                };
                if let Some(command) = first {
                    self.handle(command, &mut turn);
                    for taken in 1..TURN {
                        // A timer that comes due ends the turn early, so it fires (and is
                        // committed) within a few commands of its time, not behind a full turn.
                        if self.timer_check != 0
                            && taken % self.timer_check == 0
                            && self.timer_due(now_ms())
                        {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(c) => self.handle(c, &mut turn),
                            Err(_) => break,
                        }
                    }
                }
                self.fire_due(&mut turn);
                self.fire_snoozes(&mut turn);
                self.commit(&turn);
                if let Some(observe) = &self.lateness {
                    let now = now_ms();
                    for due in &turn.fired {
                        observe(now.saturating_sub(*due));
                    }
                }
                for reply in turn.replies {
                    reply();
                }
                for effect in turn.effects {
                    let Ok(permit) = Arc::clone(&self.effect_permits).acquire_owned().await else {
                        break;
                    };
                    self.effects_runtime.spawn(async move {
                        if let Err(error) = effect.call.await {
                            metrics::counter!("fleetcore_events_action_failures_total", "action" => effect.action).increment(1);
                            tracing::warn!(action = effect.action, %error, "detector action failed");
                        }
                        drop(permit);
                    });
                }
            }
        });
    }

    fn handle(&mut self, command: Command, turn: &mut Turn) {
        let now = now_ms();
        match command {
            Command::Message {
                model,
                key,
                trigger,
            } => {
                let id = (model.record.name.clone(), key);
                let instance = match self.instances.get_mut(&id) {
                    Some(instance) => {
                        instance.evaluate(&model, &trigger, now, &mut turn.effects);
                        instance
                    }
                    None => {
                        let mut instance = Instance::create(
                            &model,
                            id.1.clone(),
                            &trigger,
                            now,
                            &mut turn.effects,
                        );
                        instance.evaluate(&model, &trigger, now, &mut turn.effects);
                        self.instances.entry(id.clone()).or_insert(instance)
                    }
                };
                for (name, timer) in &instance.timers {
                    self.timers
                        .insert((timer.due_ms, id.0.clone(), id.1.clone(), name.clone()));
                }
                turn.dirty.insert(id);
                metrics::counter!("fleetcore_events_evaluations_total").increment(1);
            }
            Command::Update {
                model,
                key,
                state,
                variables,
                timers,
                reply,
            } => {
                let id = (model.record.name.clone(), key);
                let instance = self
                    .instances
                    .entry(id.clone())
                    .or_insert_with(|| Instance {
                        model: model.record.name.clone(),
                        version: model.record.version,
                        key: id.1.clone(),
                        state: state.clone(),
                        variables: Default::default(),
                        timers: Default::default(),
                        created_ms: now,
                        updated_ms: now,
                    });
                instance.force(state, variables, timers, now);
                for (name, timer) in &instance.timers {
                    self.timers
                        .insert((timer.due_ms, id.0.clone(), id.1.clone(), name.clone()));
                }
                turn.dirty.insert(id);
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
            Command::Describe { model, key, reply } => {
                let found = self.instances.get(&(model, key)).cloned();
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(found);
                }));
            }
            Command::List { model, reply } => {
                let found: Vec<Instance> = self
                    .instances
                    .iter()
                    .filter(|((m, _), _)| *m == model)
                    .map(|(_, i)| i.clone())
                    .collect();
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(found);
                }));
            }
            Command::Delete { model, key, reply } => {
                let id = (model, key);
                let existed = self.instances.remove(&id).is_some();
                if existed {
                    turn.dirty.remove(&id);
                    turn.deleted.push(id);
                }
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(existed);
                }));
            }
            Command::DropModel { model, reply } => {
                let ids: Vec<InstanceId> = self
                    .instances
                    .keys()
                    .filter(|(m, _)| *m == model)
                    .cloned()
                    .collect();
                for id in ids {
                    self.instances.remove(&id);
                    turn.dirty.remove(&id);
                    turn.deleted.push(id);
                }
                turn.replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
            Command::Alarm(command) => self.handle_alarm(command, turn),
        }
    }

    /// Whether a timer or a snooze is due at `now`.
    fn timer_due(&self, now: u64) -> bool {
        self.timers.first().is_some_and(|t| t.0 <= now)
            || self.snoozes.first().is_some_and(|s| s.0 <= now)
    }

    fn fire_due(&mut self, turn: &mut Turn) {
        let now = now_ms();
        while let Some(first) = self.timers.first() {
            if first.0 > now {
                break;
            }
            let Some((due, model_name, key, timer)) = self.timers.pop_first() else {
                break;
            };
            let id = (model_name, key);
            let Some(instance) = self.instances.get_mut(&id) else {
                continue;
            };
            // A reset or cleared timer leaves a stale index entry: skip it.
            if instance.timers.get(&timer).is_none_or(|t| t.due_ms != due) {
                continue;
            }
            let Some(model) = self.models.read().get(&id.0).cloned() else {
                continue;
            };
            instance.timers.remove(&timer);
            if self.lateness.is_some() {
                turn.fired.push(due);
            }
            instance.evaluate(&model, &Trigger::Timer(timer), now, &mut turn.effects);
            for (name, t) in &instance.timers {
                self.timers
                    .insert((t.due_ms, id.0.clone(), id.1.clone(), name.clone()));
            }
            turn.dirty.insert(id);
            metrics::counter!("fleetcore_events_timers_fired_total").increment(1);
        }
    }

    fn commit(&self, turn: &Turn) {
        if turn.dirty.is_empty()
            && turn.deleted.is_empty()
            && turn.dirty_alarms.is_empty()
            && turn.deleted_alarms.is_empty()
        {
            return;
        }
        let mut batch = WriteBatch::new();
        for id in &turn.deleted_alarms {
            batch.delete(TABLE_ALARMS, detector_key(&id.0, id.1.as_deref()));
        }
        for id in &turn.dirty_alarms {
            if let Some(alarm) = self.alarms.get(id) {
                match serde_json::to_vec(alarm) {
                    Ok(value) => {
                        batch.put(TABLE_ALARMS, detector_key(&id.0, id.1.as_deref()), value)
                    }
                    Err(e) => tracing::error!(error = %e, "an alarm could not be encoded"),
                }
            }
        }
        for id in &turn.deleted {
            batch.delete(TABLE_DETECTORS, detector_key(&id.0, id.1.as_deref()));
        }
        for id in &turn.dirty {
            if let Some(instance) = self.instances.get(id) {
                match serde_json::to_vec(instance) {
                    Ok(value) => {
                        batch.put(TABLE_DETECTORS, detector_key(&id.0, id.1.as_deref()), value)
                    }
                    Err(e) => tracing::error!(error = %e, "a detector could not be encoded"),
                }
            }
        }
        if let Err(e) = self.store.apply(batch) {
            metrics::counter!("fleetcore_events_commit_failures_total").increment(1);
            tracing::error!(error = %e, "detector state could not be written");
        }
    }
}
