//! A stack's configuration: the `.tf` files of a path sorted into variables, locals,
//! resources and outputs, with variable values from defaults, `terraform.tfvars`,
//! `*.auto.tfvars`, `-var-file` and `-var` (later wins, as Terraform loads them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Location, StackError};
use crate::eval;
use crate::resources::{self, ResourceType};
use crate::source::{self, SourceAttribute, SourceBlock};

/// A `resource "type" "name"` block.
pub struct ResourceBlock {
    /// Its type.
    pub kind: &'static dyn ResourceType,
    /// Its name (the second label).
    pub name: String,
    /// The block as written.
    pub block: SourceBlock,
}

impl ResourceBlock {
    /// `type.name`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.kind.name(), self.name)
    }
}

/// The variable values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `-var-file` files, in order.
    pub files: Vec<PathBuf>,
    /// `-var name=value`, in order.
    pub vars: Vec<(String, String)>,
}

/// A loaded configuration.
pub struct Config {
    /// The folder of the `.tf` files (state file and tfvars live here).
    pub dir: PathBuf,
    /// The variables' values.
    pub vars: BTreeMap<String, Value>,
    /// `locals` attributes.
    pub locals: Vec<SourceAttribute>,
    /// The resources, in the order written.
    pub resources: Vec<ResourceBlock>,
    /// `output` blocks.
    pub outputs: Vec<SourceBlock>,
    /// Notes for the user (ignored provider settings).
    pub notes: Vec<String>,
}

impl Config {
    /// Loads the `.tf` files of `path` and the variable values.
    pub fn load(path: &Path, inputs: &VarInputs) -> Result<Config, StackError> {
        let dir = source::stack_dir(path);
        let mut config = Config {
            dir: dir.clone(),
            vars: BTreeMap::new(),
            locals: Vec::new(),
            resources: Vec::new(),
            outputs: Vec::new(),
            notes: Vec::new(),
        };
        let mut declared: BTreeMap<String, Location> = BTreeMap::new();
        for file in source::configuration_files(path)? {
            let parsed = source::read_file(&file)?;
            if let Some(attribute) = parsed.attributes.first() {
                return Err(StackError::config(
                    &attribute.at,
                    format!("`{}`: attributes belong inside a block", attribute.name),
                ));
            }
            for block in parsed.blocks {
                config.add_block(block, &mut declared)?;
            }
        }
        config.load_vars(inputs, &declared)?;
        Ok(config)
    }

    fn add_block(
        &mut self,
        block: SourceBlock,
        declared: &mut BTreeMap<String, Location>,
    ) -> Result<(), StackError> {
        match (block.kind.as_str(), block.labels.as_slice()) {
            ("terraform", []) => {}
            ("provider", [name]) if name == "aws" || name == "awscc" => {
                if let Some(region) = block.attribute("region") {
                    self.notes.push(format!(
                        "{}: provider \"{name}\": `region` is taken from the server (fleetcore has one region)",
                        region.at
                    ));
                }
            }
            ("provider", [name]) => {
                return Err(StackError::config(
                    &block.at,
                    format!("provider \"{name}\" is not supported (only aws and awscc)"),
                ));
            }
            ("variable", [name]) => {
                let default = match block.attribute("default") {
                    Some(d) => eval::evaluate(&d.expr, &eval::base_context(), &d.at)?,
                    None => Value::Null,
                };
                if declared.insert(name.clone(), block.at.clone()).is_some() {
                    return Err(StackError::config(
                        &block.at,
                        format!("variable \"{name}\" is declared twice"),
                    ));
                }
                self.vars.insert(name.clone(), default);
            }
            ("locals", []) => self.locals.extend(block.attributes),
            ("resource", [kind, name]) => {
                let Some(resource_type) = resources::lookup(kind) else {
                    return Err(StackError::config(
                        &block.at,
                        format!("resource type \"{kind}\" is not supported by fleetcore"),
                    ));
                };
                if self
                    .resources
                    .iter()
                    .any(|r| r.kind.name() == kind && &r.name == name)
                {
                    return Err(StackError::config(
                        &block.at,
                        format!("resource \"{kind}\" \"{name}\" is declared twice"),
                    ));
                }
                self.resources.push(ResourceBlock {
                    kind: resource_type,
                    name: name.clone(),
                    block,
                });
            }
            ("output", [_]) => self.outputs.push(block),
            ("data", _) => {
                return Err(StackError::config(
                    &block.at,
                    "data sources (`data` blocks) are not supported",
                ));
            }
            (kind, labels) => {
                return Err(StackError::config(
                    &block.at,
                    format!(
                        "`{kind}` block{} is not supported here",
                        if labels.is_empty() {
                            String::new()
                        } else {
                            format!(" \"{}\"", labels.join("\" \""))
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn load_vars(
        &mut self,
        inputs: &VarInputs,
        declared: &BTreeMap<String, Location>,
    ) -> Result<(), StackError> {
        let mut files: Vec<PathBuf> = Vec::new();
        let tfvars = self.dir.join("terraform.tfvars");
        if tfvars.is_file() {
            files.push(tfvars);
        }
        files.extend(source::files_with(&self.dir, |n| {
            n.ends_with(".auto.tfvars")
        })?);
        files.extend(inputs.files.iter().cloned());
        for file in files {
            let parsed = source::read_file(&file)?;
            if let Some(block) = parsed.blocks.first() {
                return Err(StackError::config(
                    &block.at,
                    "a .tfvars file holds `name = value` lines only",
                ));
            }
            for attribute in parsed.attributes {
                if !declared.contains_key(&attribute.name) {
                    return Err(StackError::config(
                        &attribute.at,
                        format!("no variable \"{}\" is declared", attribute.name),
                    ));
                }
                let value = eval::evaluate(&attribute.expr, &eval::base_context(), &attribute.at)?;
                self.vars.insert(attribute.name, value);
            }
        }
        for (name, raw) in &inputs.vars {
            if !declared.contains_key(name) {
                return Err(StackError::Input(format!(
                    "-var {name}=...: no variable \"{name}\" is declared"
                )));
            }
            // As Terraform: a value that parses as an HCL expression (number, list, map) is
            // taken as such, anything else as a string.
            let value = hcl::edit::parser::parse_expr(raw)
                .ok()
                .map(hcl::Expression::from)
                .filter(|e| {
                    !matches!(
                        e,
                        hcl::Expression::Variable(_) | hcl::Expression::Traversal(_)
                    )
                })
                .and_then(|e| {
                    use hcl::eval::Evaluate;
                    e.evaluate(&eval::base_context()).ok()
                })
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or_else(|| Value::String(raw.clone()));
            self.vars.insert(name.clone(), value);
        }
        for (name, at) in declared {
            if self.vars.get(name).is_none_or(Value::is_null) {
                return Err(StackError::config(
                    at,
                    format!(
                        "variable \"{name}\" has no value: give it a default, -var {name}=..., or a .tfvars file"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parses `name=value` of a `-var` option.
pub fn parse_var(text: &str) -> Result<(String, String), StackError> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(StackError::Input(format!(
            "-var {text}: expected name=value"
        ))),
    }
}
