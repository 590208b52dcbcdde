//! Inputs and detector models as the API defines them, and the compiled detector model the
//! engine runs: every expression parsed, every `$input` reference checked against the inputs'
//! attributes, every transition's target resolved, every action built. A definition that does
//! not compile is refused at create time with an error naming the state, event and action.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::actions::{self, DetectorAction, Targets};
use crate::expr::{self, Expr, PathStep};

/// An input: a named message type and the attributes detector models may read from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// The input's name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `inputDefinition.attributes[].jsonPath`, as given.
    pub attributes: Vec<String>,
    /// Epoch seconds.
    pub created: f64,
    /// Epoch seconds.
    pub updated: f64,
}

impl Input {
    /// True when `path` reads an attribute of this input (or a member inside one).
    fn declares(&self, path: &[PathStep]) -> bool {
        let text = path_text(path);
        self.attributes.iter().any(|a| {
            text == *a
                || text
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }
}

/// A path as inputs declare it: `a.b[0].c`.
pub fn path_text(path: &[PathStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            PathStep::Field(f) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(f);
            }
            PathStep::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parses an attribute path (`sensor.id`, `a[0].b`) into steps.
pub fn parse_path(text: &str) -> Result<Vec<PathStep>, String> {
    match expr::parse(&format!("$input.X.{text}")) {
        Ok(Expr::Input { path, .. }) => Ok(path),
        _ => Err(format!("{text:?} is not a valid JSON path")),
    }
}

/// The stored form of a detector model version: what CreateDetectorModel / UpdateDetectorModel
/// received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorModelRecord {
    /// The model's name.
    pub name: String,
    /// Version, from 1.
    pub version: u32,
    /// Free text.
    pub description: Option<String>,
    /// The `key` attribute path, if any.
    pub key: Option<String>,
    /// The role ARN (kept; this server does not assume roles).
    pub role_arn: String,
    /// `SERIAL` or `BATCH`.
    pub evaluation_method: String,
    /// The definition as given.
    pub definition: Json,
    /// Epoch seconds.
    pub created: f64,
    /// Epoch seconds.
    pub updated: f64,
}

/// How a group of events is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// Each event's condition sees the variables the events before it set.
    Serial,
    /// All conditions of the group are evaluated first, then the actions run.
    Batch,
}

/// An event: a condition and the actions run when it holds.
pub struct Event {
    /// `eventName`.
    pub name: String,
    /// `condition`; absent means always.
    pub condition: Option<Expr>,
    /// The actions, in order.
    pub actions: Vec<Box<dyn DetectorAction>>,
}

/// A transition: an event that moves the instance to another state.
pub struct Transition {
    /// The event (its condition and actions).
    pub event: Event,
    /// Index of the next state.
    pub next: usize,
}

/// A compiled state.
pub struct State {
    /// `stateName`.
    pub name: String,
    /// `onEnter.events`.
    pub on_enter: Vec<Event>,
    /// `onInput.events`.
    pub on_input: Vec<Event>,
    /// `onInput.transitionEvents`.
    pub transitions: Vec<Transition>,
    /// `onExit.events`.
    pub on_exit: Vec<Event>,
}

/// A detector model version, compiled.
pub struct DetectorModel {
    /// What was stored.
    pub record: DetectorModelRecord,
    /// The key's path, if the model has a key.
    pub key: Option<Vec<PathStep>>,
    /// The evaluation method.
    pub evaluation: Evaluation,
    /// The states; `initial` indexes them.
    pub states: Vec<State>,
    /// Index of `initialStateName`.
    pub initial: usize,
    /// The inputs the model reads (messages of these inputs are routed to it).
    pub inputs: BTreeSet<String>,
}

impl std::fmt::Debug for DetectorModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorModel")
            .field("name", &self.record.name)
            .field("version", &self.record.version)
            .finish()
    }
}

impl DetectorModel {
    /// The index of state `name`.
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name == name)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefinitionShape {
    states: Vec<StateShape>,
    initial_state_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateShape {
    state_name: String,
    #[serde(default)]
    on_input: Option<OnInputShape>,
    #[serde(default)]
    on_enter: Option<EventsShape>,
    #[serde(default)]
    on_exit: Option<EventsShape>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OnInputShape {
    #[serde(default)]
    events: Vec<EventShape>,
    #[serde(default)]
    transition_events: Vec<TransitionShape>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EventsShape {
    #[serde(default)]
    events: Vec<EventShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventShape {
    event_name: String,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    actions: Vec<Json>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransitionShape {
    event_name: String,
    condition: String,
    #[serde(default)]
    actions: Vec<Json>,
    next_state: String,
}

/// What compiling a definition needs to know about the server: its inputs and which action
/// targets it runs.
pub struct CompileEnv<'a> {
    /// The inputs by name.
    pub inputs: &'a BTreeMap<String, Input>,
    /// Which external targets are wired.
    pub actions: &'a Targets,
}

/// Compiles a stored detector model version; `Err` is the InvalidRequestException message.
pub fn compile(record: DetectorModelRecord, env: &CompileEnv<'_>) -> Result<DetectorModel, String> {
    let shape: DefinitionShape = serde_json::from_value(record.definition.clone())
        .map_err(|e| format!("detectorModelDefinition is not valid: {e}"))?;
    if shape.states.is_empty() {
        return Err("detectorModelDefinition.states must hold at least one state".into());
    }
    let mut names = BTreeSet::new();
    for s in &shape.states {
        if s.state_name.is_empty() || s.state_name.len() > 128 {
            return Err("a stateName must be 1 to 128 characters".into());
        }
        if !names.insert(s.state_name.as_str()) {
            return Err(format!("state '{}' is defined twice", s.state_name));
        }
    }
    let index_of = |name: &str| shape.states.iter().position(|s| s.state_name == name);
    let initial = index_of(&shape.initial_state_name).ok_or_else(|| {
        format!(
            "initialStateName '{}' is not a state of the detector model",
            shape.initial_state_name
        )
    })?;
    let evaluation = match record.evaluation_method.as_str() {
        "SERIAL" => Evaluation::Serial,
        "BATCH" => Evaluation::Batch,
        other => {
            return Err(format!(
                "evaluationMethod must be SERIAL or BATCH, not {other:?}"
            ));
        }
    };
    let key = match &record.key {
        Some(k) => Some(parse_path(k).map_err(|e| format!("key: {e}"))?),
        None => None,
    };
    let mut inputs = BTreeSet::new();
    let mut states = Vec::with_capacity(shape.states.len());
    for s in &shape.states {
        let place = |group: &str| format!("state '{}' {group}", s.state_name);
        let mut compile_events = |group: &str, events: &[EventShape]| {
            events
                .iter()
                .map(|e| {
                    compile_event(
                        &place(group),
                        &e.event_name,
                        e.condition.as_deref(),
                        &e.actions,
                        env,
                        &mut inputs,
                    )
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let on_input = s.on_input.as_ref();
        let on_enter = compile_events(
            "onEnter",
            s.on_enter.as_ref().map_or(&[][..], |e| &e.events),
        )?;
        let on_exit = compile_events("onExit", s.on_exit.as_ref().map_or(&[][..], |e| &e.events))?;
        let on_input_events = compile_events("onInput", on_input.map_or(&[][..], |e| &e.events))?;
        let mut transitions = Vec::new();
        for t in on_input.map_or(&[][..], |e| &e.transition_events) {
            let next = index_of(&t.next_state).ok_or_else(|| {
                format!(
                    "state '{}' transitionEvent '{}': nextState '{}' is not a state of the detector model",
                    s.state_name, t.event_name, t.next_state
                )
            })?;
            let event = compile_event(
                &place("transitionEvents"),
                &t.event_name,
                Some(&t.condition),
                &t.actions,
                env,
                &mut inputs,
            )?;
            transitions.push(Transition { event, next });
        }
        states.push(State {
            name: s.state_name.clone(),
            on_enter,
            on_input: on_input_events,
            transitions,
            on_exit,
        });
    }
    if inputs.is_empty() {
        return Err(
            "the detector model reads no input: at least one condition or action must use $input.<InputName>.<attribute>"
                .into(),
        );
    }
    Ok(DetectorModel {
        record,
        key,
        evaluation,
        states,
        initial,
        inputs,
    })
}

fn compile_event(
    place: &str,
    name: &str,
    condition: Option<&str>,
    actions: &[Json],
    env: &CompileEnv<'_>,
    inputs: &mut BTreeSet<String>,
) -> Result<Event, String> {
    let place = format!("{place} event '{name}'");
    let condition = match condition {
        Some(text) if !text.trim().is_empty() => {
            let e = expr::parse(text)
                .map_err(|e| format!("{place}: condition {text:?} is not valid: {e}"))?;
            check_references(&e, &place, env, inputs)?;
            Some(e)
        }
        _ => None,
    };
    let mut built = Vec::with_capacity(actions.len());
    for (i, action) in actions.iter().enumerate() {
        let action_place = format!("{place} action {}", i + 1);
        let compiled =
            actions::build(action, env.actions).map_err(|e| format!("{action_place}: {e}"))?;
        for e in compiled.expressions() {
            check_references(e, &action_place, env, inputs)?;
        }
        built.push(compiled);
    }
    Ok(Event {
        name: name.to_string(),
        condition,
        actions: built,
    })
}

/// Every `$input.X.path` must name an existing input X that declares the path.
pub fn check_references(
    e: &Expr,
    place: &str,
    env: &CompileEnv<'_>,
    inputs: &mut BTreeSet<String>,
) -> Result<(), String> {
    let mut problem = None;
    e.walk(&mut |node| {
        if problem.is_some() {
            return;
        }
        if let Expr::Input { input, path } = node {
            match env.inputs.get(input) {
                None => problem = Some(format!("{place}: input '{input}' does not exist")),
                Some(declared) if !declared.declares(path) => {
                    problem = Some(format!(
                        "{place}: $input.{input}.{} is not an attribute of input '{input}' (its attributes: {})",
                        path_text(path),
                        declared.attributes.join(", ")
                    ))
                }
                Some(_) => {
                    inputs.insert(input.clone());
                }
            }
        }
    });
    problem.map_or(Ok(()), Err)
}

/// A compiled model, shared by the engine's shards.
pub type SharedModel = Arc<DetectorModel>;
