//! A detector instance (one per key value) and how it reacts to a message or a timer, in the
//! order AWS documents: the current state's `onInput` events, then the first transition whose
//! condition holds (its actions, the old state's `onExit`, the new state's `onEnter`).
//! SERIAL runs each event's actions before the next condition is evaluated; BATCH evaluates
//! every condition first and then runs the actions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actions::{Detector, Effect, Run, Timer, Trigger, View};
use crate::expr::Value;
use crate::model::{DetectorModel, Evaluation, Event};

/// A detector instance's durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The model's name.
    pub model: String,
    /// The model version that created it.
    pub version: u32,
    /// The key value (`None` for a model without key).
    pub key: Option<String>,
    /// The current state's name.
    pub state: String,
    /// The variables.
    pub variables: BTreeMap<String, Value>,
    /// The pending timers.
    pub timers: BTreeMap<String, Timer>,
    /// Epoch milliseconds.
    pub created_ms: u64,
    /// Epoch milliseconds.
    pub updated_ms: u64,
}

impl Instance {
    /// A new instance in the model's initial state whose `onEnter` ran for `trigger`.
    pub fn create(
        model: &DetectorModel,
        key: Option<String>,
        trigger: &Trigger,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Instance {
        let mut instance = Instance {
            model: model.record.name.clone(),
            version: model.record.version,
            key,
            state: model.states[model.initial].name.clone(),
            variables: BTreeMap::new(),
            timers: BTreeMap::new(),
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        instance.run_group(model, model.initial, Group::Enter, trigger, now_ms, effects);
        instance
    }

    /// Evaluates a message or a timer expiry.
    pub fn evaluate(
        &mut self,
        model: &DetectorModel,
        trigger: &Trigger,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        self.updated_ms = now_ms;
        let current = model.state_index(&self.state).unwrap_or(model.initial);
        let state = &model.states[current];
        let transition = match model.evaluation {
            Evaluation::Batch => {
                // Every condition sees the variables as they were before this evaluation.
                let chosen = state
                    .transitions
                    .iter()
                    .position(|t| self.holds(&t.event, trigger));
                self.run_group(model, current, Group::Input, trigger, now_ms, effects);
                chosen
            }
            Evaluation::Serial => {
                self.run_group(model, current, Group::Input, trigger, now_ms, effects);
                state
                    .transitions
                    .iter()
                    .position(|t| self.holds(&t.event, trigger))
            }
        };
        if let Some(t) = transition {
            let transition = &state.transitions[t];
            self.run_actions(model, current, &transition.event, trigger, now_ms, effects);
            self.run_group(model, current, Group::Exit, trigger, now_ms, effects);
            self.state = model.states[transition.next].name.clone();
            self.run_group(
                model,
                transition.next,
                Group::Enter,
                trigger,
                now_ms,
                effects,
            );
        }
    }

    /// Moves the instance to `state` (BatchUpdateDetector) without running events.
    pub fn force(
        &mut self,
        state: String,
        variables: BTreeMap<String, Value>,
        timers: BTreeMap<String, Timer>,
        now_ms: u64,
    ) {
        self.state = state;
        self.variables = variables;
        self.timers = timers;
        self.updated_ms = now_ms;
    }

    fn holds(&self, event: &Event, trigger: &Trigger) -> bool {
        event.condition.as_ref().is_none_or(|c| {
            c.eval(&View {
                variables: &self.variables,
                trigger,
            })
            .is_true()
        })
    }

    fn run_group(
        &mut self,
        model: &DetectorModel,
        state: usize,
        group: Group,
        trigger: &Trigger,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let s = &model.states[state];
        let events = match group {
            Group::Enter => &s.on_enter,
            Group::Input => &s.on_input,
            Group::Exit => &s.on_exit,
        };
        match model.evaluation {
            Evaluation::Serial => {
                for event in events {
                    if self.holds(event, trigger) {
                        self.run_actions(model, state, event, trigger, now_ms, effects);
                    }
                }
            }
            Evaluation::Batch => {
                let held: Vec<bool> = events.iter().map(|e| self.holds(e, trigger)).collect();
                for (event, held) in events.iter().zip(held) {
                    if held {
                        self.run_actions(model, state, event, trigger, now_ms, effects);
                    }
                }
            }
        }
    }

    fn run_actions(
        &mut self,
        model: &DetectorModel,
        state: usize,
        event: &Event,
        trigger: &Trigger,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let mut run = Run {
            variables: &mut self.variables,
            timers: &mut self.timers,
            trigger,
            now_ms,
            detector: Detector {
                model: &model.record.name,
                version: model.record.version,
                key: self.key.as_deref(),
            },
            state: &model.states[state].name,
            event: &event.name,
            effects,
            default_payload: None,
        };
        for action in &event.actions {
            action.run(&mut run);
        }
    }
}

#[derive(Clone, Copy)]
enum Group {
    Enter,
    Input,
    Exit,
}
