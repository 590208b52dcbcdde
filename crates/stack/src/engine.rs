//! Plan, apply and destroy: one walk over the graph in dependency order. Planning evaluates
//! each resource with what is known (attributes of resources still to be created read as
//! `(known after apply)`) and compares it with the state; applying walks the same way and does
//! each change at once, so later resources see the real `arn`s of earlier ones.

use std::collections::BTreeMap;
use std::path::Path;

use hcl::eval::Context;
use serde_json::{Map, Value, json};

use crate::api::Api;
use crate::config::{Config, VarInputs};
use crate::error::StackError;
use crate::eval::{self, UNKNOWN, json_to_hcl};
use crate::graph::{self, Graph, Node};
use crate::resources::{Action, ResourceType, lookup};
use crate::state::{State, StateResource};

/// One planned change.
pub struct Change {
    /// The instance address.
    pub address: String,
    /// Its type.
    pub kind: &'static dyn ResourceType,
    /// What happens to it.
    pub action: Action,
    /// The arguments in the state (none for a create).
    pub before: Option<Value>,
    /// The arguments wanted (none for a delete).
    pub after: Option<Value>,
}

/// What apply would do.
pub struct Plan {
    /// Every managed instance, in the order apply visits them (deletes of removed resources
    /// first, in reverse dependency order).
    pub changes: Vec<Change>,
    /// Notes for the user (resources accepted but not managed, ignored settings).
    pub notes: Vec<String>,
    /// The `output` values (some may be `(known after apply)`).
    pub outputs: Vec<(String, Value)>,
}

impl Plan {
    /// Whether apply would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::NoOp)
    }
}

/// A loaded stack: configuration and dependency graph.
pub struct Stack {
    config: Config,
    graph: Graph,
}

impl Stack {
    /// Loads the `.tf` files of `path` (a file or a folder) with the given variable values.
    pub fn load(path: &Path, inputs: &VarInputs) -> Result<Stack, StackError> {
        let config = Config::load(path, inputs)?;
        let graph = graph::build(&config)?;
        Ok(Stack { config, graph })
    }

    /// The state of this stack (empty when never applied).
    pub fn state(&self) -> Result<State, StackError> {
        State::load(&self.config.dir)
    }

    /// Reads `state`'s resources back from the server: forgets those deleted by hand and takes
    /// in arguments changed by hand, so that plan shows the way back.
    pub async fn refresh(&self, api: &Api, state: &mut State) -> Result<Refreshed, StackError> {
        refresh(api, state).await
    }

    /// What apply would do, given `state` (refreshed first by the caller).
    pub async fn plan(&self, state: &State) -> Result<Plan, StackError> {
        let mut scratch = state.clone();
        self.walk(None, &mut scratch).await
    }

    /// Applies the configuration: deletes what was removed, then creates, updates and replaces
    /// in dependency order, recording each change in `state` as it is made. `progress` is told
    /// each change as it starts.
    pub async fn apply(
        &self,
        api: &Api,
        state: &mut State,
        progress: &mut (dyn FnMut(&str, &Action) + Send),
    ) -> Result<Plan, StackError> {
        let plan = self.plan(state).await?;
        for change in plan.changes.iter().filter(|c| c.action == Action::Delete) {
            progress(&change.address, &change.action);
            delete_one(api, state, &change.address).await?;
        }
        let mut apply = ApplyCtx { api, progress };
        self.walk(Some(&mut apply), state).await
    }

    async fn walk(
        &self,
        mut apply: Option<&mut ApplyCtx<'_, '_>>,
        state: &mut State,
    ) -> Result<Plan, StackError> {
        let config = &self.config;
        let mut locals = Map::new();
        let mut resources: BTreeMap<&'static str, Map<String, Value>> = BTreeMap::new();
        let mut changes = Vec::new();
        let mut notes = config.notes.clone();
        let mut walked: Vec<String> = Vec::new();
        let var = Value::Object(config.vars.clone().into_iter().collect());
        let dir = config.dir.to_string_lossy().into_owned();
        let path = json!({"module": dir, "root": dir, "cwd": "."});

        for node in &self.graph.order {
            let mut ctx = eval::base_context();
            ctx.declare_var("var", json_to_hcl(&var));
            ctx.declare_var("path", json_to_hcl(&path));
            ctx.declare_var("local", json_to_hcl(&Value::Object(locals.clone())));
            for (kind, named) in &resources {
                ctx.declare_var(*kind, json_to_hcl(&Value::Object(named.clone())));
            }
            match *node {
                Node::Local(i) => {
                    let local = &config.locals[i];
                    let value = eval::evaluate(&local.expr, &ctx, &local.at)?;
                    locals.insert(local.name.clone(), value);
                }
                Node::Resource(i) => {
                    let resource = &config.resources[i];
                    let deps = &self.graph.resource_deps[i];
                    let value = self
                        .walk_resource(
                            i,
                            &ctx,
                            deps,
                            &mut apply,
                            state,
                            &mut changes,
                            &mut notes,
                            &mut walked,
                        )
                        .await?;
                    resources
                        .entry(resource.kind.name())
                        .or_default()
                        .insert(resource.name.clone(), value);
                }
            }
        }

        let mut ctx = eval::base_context();
        ctx.declare_var("var", json_to_hcl(&var));
        ctx.declare_var("path", json_to_hcl(&path));
        ctx.declare_var("local", json_to_hcl(&Value::Object(locals)));
        for (kind, named) in &resources {
            ctx.declare_var(*kind, json_to_hcl(&Value::Object(named.clone())));
        }
        let mut outputs = Vec::new();
        for output in &config.outputs {
            let name = output.labels.first().cloned().unwrap_or_default();
            let Some(value) = output.attribute("value") else {
                return Err(StackError::config(
                    &output.at,
                    format!("output \"{name}\" has no value"),
                ));
            };
            outputs.push((name, eval::evaluate(&value.expr, &ctx, &value.at)?));
        }

        if apply.is_none() {
            let orphans: Vec<&StateResource> = deletion_order(state)
                .into_iter()
                .filter(|r| !walked.contains(&r.address))
                .collect();
            let deletes: Vec<Change> = orphans
                .into_iter()
                .filter_map(|r| {
                    Some(Change {
                        address: r.address.clone(),
                        kind: lookup(&r.kind)?,
                        action: Action::Delete,
                        before: Some(r.arguments.clone()),
                        after: None,
                    })
                })
                .collect();
            changes.splice(0..0, deletes);
        }
        Ok(Plan {
            changes,
            notes,
            outputs,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn walk_resource(
        &self,
        i: usize,
        ctx: &Context<'_>,
        deps: &[String],
        apply: &mut Option<&mut ApplyCtx<'_, '_>>,
        state: &mut State,
        changes: &mut Vec<Change>,
        notes: &mut Vec<String>,
        walked: &mut Vec<String>,
    ) -> Result<Value, StackError> {
        let resource = &self.config.resources[i];
        let kind = resource.kind;
        let id = resource.id();
        let block = &resource.block;
        for meta in ["lifecycle", "provisioner", "connection"] {
            if let Some(b) = block.blocks.iter().find(|b| b.kind == meta) {
                return Err(StackError::config(
                    &b.at,
                    format!("{id}: `{meta}` is not supported"),
                ));
            }
        }
        let instances = instances(block, ctx, &id)?;
        let mut collected = Vec::new();
        for (key, each) in &instances {
            let address = match key {
                InstanceKey::Single => id.clone(),
                InstanceKey::Index(n) => format!("{id}[{n}]"),
                InstanceKey::Key(k) => format!("{id}[{}]", Value::String(k.clone())),
            };
            let mut ctx = ctx.clone();
            match (key, each) {
                (InstanceKey::Index(n), _) => {
                    ctx.declare_var("count", json_to_hcl(&json!({ "index": n })));
                }
                (InstanceKey::Key(k), Some(v)) => {
                    ctx.declare_var("each", json_to_hcl(&json!({ "key": k, "value": v })));
                }
                _ => {}
            }
            let args = eval::evaluate_body(
                block,
                kind.schema(),
                &address,
                &ctx,
                &["count", "for_each", "depends_on", "provider"],
            )?;
            kind.validate(&args).map_err(|message| {
                StackError::config(&block.at, format!("{address}: {message}"))
            })?;
            if let Some((attrs, note)) = kind.not_managed(&args) {
                notes.push(format!("{address} ({}): {note}", block.at));
                collected.push((key.clone(), merge(&args, &attrs)));
                continue;
            }
            walked.push(address.clone());
            let current = state.get(&address).cloned();
            let action = kind.plan(&args, current.as_ref().map(|c| &c.arguments));
            let mut attrs = current
                .as_ref()
                .map(|c| c.attributes.clone())
                .unwrap_or(Value::Null);
            match apply {
                None => {
                    if matches!(action, Action::Create | Action::Replace(_)) {
                        attrs = Value::Object(
                            kind.schema()
                                .computed
                                .iter()
                                .map(|c| (c.to_string(), Value::String(UNKNOWN.to_string())))
                                .collect(),
                        );
                    }
                }
                Some(apply) => {
                    if action != Action::NoOp {
                        (apply.progress)(&address, &action);
                    }
                    let fail = |source| StackError::Api {
                        address: address.clone(),
                        source,
                    };
                    match &action {
                        Action::NoOp | Action::Delete => {}
                        Action::Create => {
                            attrs = kind.create(apply.api, &args).await.map_err(fail)?;
                        }
                        Action::Update(_) => {
                            let before = current
                                .as_ref()
                                .map(|c| c.arguments.clone())
                                .unwrap_or_default();
                            attrs = kind
                                .update(apply.api, &before, &args, &attrs)
                                .await
                                .map_err(fail)?;
                        }
                        Action::Replace(_) => {
                            delete_one(apply.api, state, &address).await?;
                            attrs = kind.create(apply.api, &args).await.map_err(fail)?;
                        }
                    }
                    if action != Action::NoOp {
                        state.put(StateResource {
                            address: address.clone(),
                            kind: kind.name().to_string(),
                            arguments: args.clone(),
                            attributes: attrs.clone(),
                            dependencies: deps.to_vec(),
                        })?;
                    } else if let Some(c) =
                        state.resources.iter_mut().find(|r| r.address == address)
                    {
                        c.dependencies = deps.to_vec();
                    }
                }
            }
            changes.push(Change {
                address,
                kind,
                action,
                before: current.map(|c| c.arguments),
                after: Some(args.clone()),
            });
            collected.push((key.clone(), merge(&args, &attrs)));
        }
        Ok(match instances.first().map(|(k, _)| k) {
            None if block.attribute("for_each").is_some() => Value::Object(Map::new()),
            None => Value::Array(Vec::new()),
            Some(InstanceKey::Single) => collected.pop().map(|(_, v)| v).unwrap_or_default(),
            Some(InstanceKey::Index(_)) => {
                Value::Array(collected.into_iter().map(|(_, v)| v).collect())
            }
            Some(InstanceKey::Key(_)) => Value::Object(
                collected
                    .into_iter()
                    .filter_map(|(k, v)| match k {
                        InstanceKey::Key(k) => Some((k, v)),
                        _ => None,
                    })
                    .collect(),
            ),
        })
    }
}

struct ApplyCtx<'a, 'p> {
    api: &'a Api,
    progress: &'p mut (dyn FnMut(&str, &Action) + Send),
}

/// Destroys everything `state` records, dependents first; `progress` is told each delete.
pub async fn destroy(
    api: &Api,
    state: &mut State,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), StackError> {
    let order: Vec<String> = deletion_order(state)
        .into_iter()
        .map(|r| r.address.clone())
        .collect();
    for address in order {
        progress(&address);
        delete_one(api, state, &address).await?;
    }
    Ok(())
}

/// What refresh found on the server.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Resources of the state that are gone from the server (forgotten, to be created again).
    pub gone: Vec<String>,
    /// Resources changed behind the stack's back, with the changed argument paths; the state
    /// now holds what the server has, so plan shows the way back as an update.
    pub drifted: Vec<(String, Vec<String>)>,
}

/// Reads every resource of `state` back from the server: forgets the ones that are gone and
/// takes in the arguments changed behind the stack's back (only the ones the state sets).
pub async fn refresh(api: &Api, state: &mut State) -> Result<Refreshed, StackError> {
    let mut out = Refreshed::default();
    for resource in state.resources.clone() {
        let Some(kind) = lookup(&resource.kind) else {
            continue;
        };
        let live = kind
            .read(api, &resource.arguments, &resource.attributes)
            .await
            .map_err(|source| StackError::Api {
                address: resource.address.clone(),
                source,
            })?;
        let Some(live) = live else {
            state.forget(&resource.address);
            out.gone.push(resource.address);
            continue;
        };
        let mut arguments = resource.arguments.clone();
        let mut paths = Vec::new();
        for (key, value) in live.as_object().into_iter().flatten() {
            let Some(recorded) = arguments.get_mut(key).filter(|v| !v.is_null()) else {
                continue;
            };
            if !same(recorded, value) {
                paths.extend(crate::plan::changed_paths(recorded, value, key));
                *recorded = value.clone();
            }
        }
        if !paths.is_empty() {
            state.take_in(&resource.address, arguments);
            out.drifted.push((resource.address, paths));
        }
    }
    Ok(out)
}

/// Whether a recorded argument and the server's value are the same setting: numbers by value
/// (`1` and `1.0`), strings holding JSON documents by their content.
fn same(recorded: &Value, live: &Value) -> bool {
    match (recorded, live) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) if a != b => {
            match (
                serde_json::from_str::<Value>(a),
                serde_json::from_str::<Value>(b),
            ) {
                (Ok(x @ (Value::Object(_) | Value::Array(_))), Ok(y)) => same(&x, &y),
                _ => false,
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, x)| b.get(k).is_some_and(|y| same(x, y)))
        }
        (a, b) => a == b,
    }
}

async fn delete_one(api: &Api, state: &mut State, address: &str) -> Result<(), StackError> {
    let Some(resource) = state.get(address).cloned() else {
        return Ok(());
    };
    let kind = lookup(&resource.kind).ok_or_else(|| StackError::State {
        path: state.path().to_path_buf(),
        message: format!("{address}: unknown resource type {}", resource.kind),
    })?;
    kind.delete(api, &resource.arguments, &resource.attributes)
        .await
        .map_err(|source| StackError::Api {
            address: address.to_string(),
            source,
        })?;
    state.remove(address)
}

/// The state's resources in an order where each comes before everything it depends on.
fn deletion_order(state: &State) -> Vec<&StateResource> {
    let mut remaining: Vec<&StateResource> = state.resources.iter().rev().collect();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let next = remaining
            .iter()
            .position(|r| {
                !remaining
                    .iter()
                    .any(|other| other.dependencies.iter().any(|d| d == r.id()))
            })
            .unwrap_or(0);
        out.push(remaining.remove(next));
    }
    out
}

#[derive(Debug, Clone)]
enum InstanceKey {
    Single,
    Index(u64),
    Key(String),
}

fn instances(
    block: &crate::source::SourceBlock,
    ctx: &Context<'_>,
    id: &str,
) -> Result<Vec<(InstanceKey, Option<Value>)>, StackError> {
    if let Some(count) = block.attribute("count") {
        let value = eval::evaluate(&count.expr, ctx, &count.at)?;
        let n = value.as_u64().ok_or_else(|| {
            StackError::config(
                &count.at,
                format!("{id}: count must be a whole number, not {value}"),
            )
        })?;
        return Ok((0..n).map(|i| (InstanceKey::Index(i), None)).collect());
    }
    if let Some(for_each) = block.attribute("for_each") {
        let value = eval::evaluate(&for_each.expr, ctx, &for_each.at)?;
        return match value {
            Value::Object(map) => Ok(map
                .into_iter()
                .map(|(k, v)| (InstanceKey::Key(k), Some(v)))
                .collect()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok((InstanceKey::Key(s.clone()), Some(Value::String(s)))),
                    other => Err(StackError::config(
                        &for_each.at,
                        format!("{id}: for_each over a set takes strings, not {other}"),
                    )),
                })
                .collect(),
            other => Err(StackError::config(
                &for_each.at,
                format!("{id}: for_each takes a map or a set of strings, not {other}"),
            )),
        };
    }
    Ok(vec![(InstanceKey::Single, None)])
}

fn merge(args: &Value, attrs: &Value) -> Value {
    let mut out = args.as_object().cloned().unwrap_or_default();
    if let Some(attrs) = attrs.as_object() {
        for (k, v) in attrs {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::same;
    use serde_json::json;

    #[test]
    fn server_values_match_recorded_arguments_by_meaning() {
        assert!(same(&json!(1), &json!(1.0)));
        assert!(!same(&json!(1), &json!(2)));
        assert!(same(
            &json!(r#"{"a": [1, {"b": "c"}]}"#),
            &json!(r#"{"a":[1.0,{"b":"c"}]}"#)
        ));
        assert!(!same(&json!(r#"{"a": 1}"#), &json!(r#"{"a": 2}"#)));
        assert!(!same(&json!("SELECT 1"), &json!("SELECT 2")));
        assert!(
            !same(&json!("1"), &json!("1.0")),
            "strings that are not documents"
        );
        assert!(same(&json!({"x": [1, 2]}), &json!({"x": [1.0, 2]})));
        assert!(!same(&json!({"x": 1}), &json!({"x": 1, "y": 2})));
    }
}
