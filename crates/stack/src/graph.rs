//! The dependency graph: locals and resources are nodes, references and `depends_on` are
//! edges; creation follows a topological order, deletion its reverse. A reference to something
//! not declared, or a cycle, is an error naming the place.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::error::{Location, StackError};
use crate::refs::{Reference, references};
use crate::resources;

/// A node of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// `config.locals[i]`.
    Local(usize),
    /// `config.resources[i]`.
    Resource(usize),
}

/// The nodes in an order where each comes after everything it references, and for each
/// resource the resource ids (`type.name`) it depends on.
pub struct Graph {
    /// Creation order.
    pub order: Vec<Node>,
    /// For `config.resources[i]`: the ids of the resources it depends on, directly or through
    /// locals.
    pub resource_deps: Vec<Vec<String>>,
}

/// Builds the graph of `config`.
pub fn build(config: &Config) -> Result<Graph, StackError> {
    let mut ids: BTreeMap<String, Node> = BTreeMap::new();
    for (i, local) in config.locals.iter().enumerate() {
        if ids
            .insert(format!("local.{}", local.name), Node::Local(i))
            .is_some()
        {
            return Err(StackError::config(
                &local.at,
                format!("local.{} is declared twice", local.name),
            ));
        }
    }
    for (i, resource) in config.resources.iter().enumerate() {
        ids.insert(resource.id(), Node::Resource(i));
    }

    let mut edges: Vec<(Node, Location, Vec<Node>)> = Vec::new();
    for (i, local) in config.locals.iter().enumerate() {
        let deps = resolve(&references(&local.expr), &local.at, config, &ids, false)?;
        edges.push((Node::Local(i), local.at.clone(), deps));
    }
    for (i, resource) in config.resources.iter().enumerate() {
        let mut deps = Vec::new();
        let counted = resource.block.attribute("count").is_some();
        let each = resource.block.attribute("for_each").is_some();
        for (expr, at) in expressions(&resource.block) {
            let refs = references(expr);
            for r in &refs {
                if (r.root == "count" && !counted) || (r.root == "each" && !each) {
                    return Err(StackError::config(
                        at,
                        format!(
                            "`{}` is only available in a resource with `{}`",
                            r.root,
                            if r.root == "count" {
                                "count"
                            } else {
                                "for_each"
                            }
                        ),
                    ));
                }
            }
            deps.extend(resolve(&refs, at, config, &ids, true)?);
        }
        if let Some(depends_on) = resource.block.attribute("depends_on") {
            let hcl::Expression::Array(items) = &depends_on.expr else {
                return Err(StackError::config(
                    &depends_on.at,
                    "depends_on takes a list of resource references",
                ));
            };
            for item in items {
                deps.extend(resolve(
                    &references(item),
                    &depends_on.at,
                    config,
                    &ids,
                    true,
                )?);
            }
        }
        if deps.contains(&Node::Resource(i)) {
            return Err(StackError::config(
                &resource.block.at,
                format!("{} refers to itself", resource.id()),
            ));
        }
        edges.push((Node::Resource(i), resource.block.at.clone(), deps));
    }

    let order = topological(&edges, config)?;
    let resource_deps = config
        .resources
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let mut out = BTreeSet::new();
            let mut stack = vec![Node::Resource(i)];
            let mut seen = BTreeSet::new();
            while let Some(node) = stack.pop() {
                let Some((_, _, deps)) = edges.iter().find(|(n, _, _)| *n == node) else {
                    continue;
                };
                for &dep in deps {
                    if !seen.insert(format!("{dep:?}")) {
                        continue;
                    }
                    match dep {
                        Node::Resource(j) => {
                            out.insert(config.resources[j].id());
                        }
                        Node::Local(_) => stack.push(dep),
                    }
                }
            }
            out.into_iter().collect()
        })
        .collect();
    Ok(Graph {
        order,
        resource_deps,
    })
}

/// Every expression of a block, nested blocks included.
fn expressions(block: &crate::source::SourceBlock) -> Vec<(&hcl::Expression, &Location)> {
    let mut out: Vec<(&hcl::Expression, &Location)> = block
        .attributes
        .iter()
        .filter(|a| a.name != "depends_on")
        .map(|a| (&a.expr, &a.at))
        .collect();
    for nested in &block.blocks {
        out.extend(expressions(nested));
    }
    out
}

fn resolve(
    refs: &[Reference],
    at: &Location,
    config: &Config,
    ids: &BTreeMap<String, Node>,
    in_resource: bool,
) -> Result<Vec<Node>, StackError> {
    let mut deps = Vec::new();
    for r in refs {
        let first = r.first().unwrap_or_default();
        match r.root.as_str() {
            "var" => {
                if !config.vars.contains_key(first) {
                    return Err(StackError::config(
                        at,
                        format!("reference to undeclared variable var.{first}"),
                    ));
                }
            }
            "path" => {}
            "count" | "each" if in_resource => {}
            "local" => match ids.get(&format!("local.{first}")) {
                Some(node) => deps.push(*node),
                None => {
                    return Err(StackError::config(
                        at,
                        format!("reference to undeclared local.{first}"),
                    ));
                }
            },
            root if resources::lookup(root).is_some() => {
                match ids.get(&format!("{root}.{first}")) {
                    Some(node) => deps.push(*node),
                    None => {
                        return Err(StackError::config(
                            at,
                            format!("reference to undeclared resource {root}.{first}"),
                        ));
                    }
                }
            }
            "data" => {
                return Err(StackError::config(
                    at,
                    "data sources (`data.`) are not supported",
                ));
            }
            root => {
                return Err(StackError::config(
                    at,
                    format!("reference to unknown name `{root}`"),
                ));
            }
        }
    }
    Ok(deps)
}

fn topological(
    edges: &[(Node, Location, Vec<Node>)],
    config: &Config,
) -> Result<Vec<Node>, StackError> {
    let mut done: Vec<Node> = Vec::new();
    let mut remaining: Vec<&(Node, Location, Vec<Node>)> = edges.iter().collect();
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|(_, _, deps)| deps.iter().all(|d| done.contains(d)));
        match ready {
            Some(i) => done.push(remaining.remove(i).0),
            None => {
                let name = |n: &Node| match n {
                    Node::Local(i) => format!("local.{}", config.locals[*i].name),
                    Node::Resource(i) => config.resources[*i].id(),
                };
                let (first, at, _) = remaining[0];
                let members: Vec<String> = remaining.iter().map(|(n, _, _)| name(n)).collect();
                return Err(StackError::config(
                    at,
                    format!(
                        "{} is part of a dependency cycle among: {}",
                        name(first),
                        members.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(done)
}
