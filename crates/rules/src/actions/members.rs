//! The members of one action object as its spec parses them: typed getters whose errors name
//! the member (`http.url must be a string`), and templates compiled for the rule's SQL version.

use serde_json::Value;

use crate::sql::{SqlVersion, Template};

/// The members of one action (`{"kind": {members}}`), with the rule's SQL version.
#[derive(Debug, Clone, Copy)]
pub struct Members<'a> {
    kind: &'a str,
    value: &'a Value,
    version: SqlVersion,
}

impl<'a> Members<'a> {
    /// The members `value` of an action of `kind` in a rule of `version`.
    pub fn new(kind: &'a str, value: &'a Value, version: SqlVersion) -> Members<'a> {
        Members {
            kind,
            value,
            version,
        }
    }

    /// The action kind.
    pub fn kind(&self) -> &'a str {
        self.kind
    }

    /// A member, if present and not null.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.value.get(field).filter(|v| !v.is_null())
    }

    /// A string member, if present; `Err` if it is there but not a string.
    pub fn str(&self, field: &str) -> Result<Option<&'a str>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{}.{field} must be a string", self.kind)),
        }
    }

    /// A string member that must be there.
    pub fn required_str(&self, field: &str) -> Result<&'a str, String> {
        self.str(field)?
            .ok_or_else(|| format!("{}.{field} must be a string", self.kind))
    }

    /// A boolean member, `default` when absent.
    pub fn bool(&self, field: &str, default: bool) -> Result<bool, String> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("{}.{field} must be a boolean", self.kind)),
        }
    }

    /// `text` compiled as a substitution template; errors name `what` (e.g. `headers[0]`).
    pub fn compile(&self, what: &str, text: &str) -> Result<Template, String> {
        Template::compile(text, self.version).map_err(|e| format!("{}.{what}: {e}", self.kind))
    }

    /// A string member compiled as a template, if present.
    pub fn template(&self, field: &str) -> Result<Option<Template>, String> {
        self.str(field)?
            .map(|text| self.compile(field, text))
            .transpose()
    }

    /// A string member compiled as a template, that must be there.
    pub fn required_template(&self, field: &str) -> Result<Template, String> {
        self.compile(field, self.required_str(field)?)
    }
}
