//! The state file, `fleetcore.tfstate.json` next to the `.tf` files: what apply made, so that
//! plan can show updates and deletes and destroy removes exactly that. JSON:
//! `{"format": "fleetcore-stack/1", "serial": N, "resources": [{"address", "type",
//! "arguments", "attributes", "dependencies"}]}`. Written after every change (to a temporary
//! file, then renamed), so a failed apply still records what it made.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StackError;

/// The state file's name.
pub const FILE_NAME: &str = "fleetcore.tfstate.json";

const FORMAT: &str = "fleetcore-stack/1";

/// One resource instance apply made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateResource {
    /// `type.name`, `type.name[0]` or `type.name["key"]`.
    pub address: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The arguments last applied.
    pub arguments: Value,
    /// The attributes the server computed (`arn`, `id`, ...).
    pub attributes: Value,
    /// The ids (`type.name`) of the resources it depends on.
    pub dependencies: Vec<String>,
}

impl StateResource {
    /// `type.name` without an instance key.
    pub fn id(&self) -> &str {
        self.address
            .split_once('[')
            .map(|(id, _)| id)
            .unwrap_or(&self.address)
    }
}

/// The state of one stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    format: String,
    /// Incremented on every write.
    pub serial: u64,
    /// The resources, in creation order.
    pub resources: Vec<StateResource>,
    #[serde(skip)]
    path: PathBuf,
}

impl State {
    /// Reads the state of the stack in `dir` (empty when there is none yet).
    pub fn load(dir: &Path) -> Result<State, StackError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    format: FORMAT.to_string(),
                    serial: 0,
                    resources: Vec::new(),
                    path,
                });
            }
            Err(e) => return Err(StackError::io(path, e)),
        };
        let mut state: State = serde_json::from_str(&text).map_err(|e| StackError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(StackError::State {
                path,
                message: format!("format {:?} is not {FORMAT:?}", state.format),
            });
        }
        state.path = path;
        Ok(state)
    }

    /// The file this state is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The instance at `address`.
    pub fn get(&self, address: &str) -> Option<&StateResource> {
        self.resources.iter().find(|r| r.address == address)
    }

    /// Records (or replaces) an instance and writes the file.
    pub fn put(&mut self, resource: StateResource) -> Result<(), StackError> {
        match self
            .resources
            .iter_mut()
            .find(|r| r.address == resource.address)
        {
            Some(slot) => *slot = resource,
            None => self.resources.push(resource),
        }
        self.save()
    }

    /// Forgets an instance and writes the file.
    pub fn remove(&mut self, address: &str) -> Result<(), StackError> {
        self.resources.retain(|r| r.address != address);
        self.save()
    }

    /// Forgets an instance without writing (refresh found it gone).
    pub fn forget(&mut self, address: &str) {
        self.resources.retain(|r| r.address != address);
    }

    /// Replaces, in memory only, the recorded arguments of `address` with what the server has
    /// (refresh found them changed behind the stack's back); apply saves them with its change.
    pub fn take_in(&mut self, address: &str, arguments: Value) {
        if let Some(r) = self.resources.iter_mut().find(|r| r.address == address) {
            r.arguments = arguments;
        }
    }

    fn save(&mut self) -> Result<(), StackError> {
        self.serial += 1;
        let text = serde_json::to_string_pretty(self).map_err(|e| StackError::State {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| StackError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| StackError::io(&self.path, e))
    }
}
