//! `setVariable{variableName, value}`: sets an instance variable to an expression's value.

use serde_json::Value as Json;

use super::{DetectorAction, Run, Targets, required_str};
use crate::expr::{self, Expr};

struct SetVariable {
    name: String,
    value: Expr,
}

pub(super) fn build(members: &Json, _targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    let name = required_str(members, "variableName")?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.len() > 128
    {
        return Err(format!(
            "variableName {name:?} must start with a letter and hold only letters, digits and _"
        ));
    }
    let text = required_str(members, "value")?;
    let value = expr::parse(text).map_err(|e| format!("value {text:?} is not valid: {e}"))?;
    Ok(Box::new(SetVariable {
        name: name.to_string(),
        value,
    }))
}

impl DetectorAction for SetVariable {
    fn expressions(&self) -> Vec<&Expr> {
        vec![&self.value]
    }

    fn run(&self, run: &mut Run<'_>) {
        let value = run.eval(&self.value);
        run.variables.insert(self.name.clone(), value);
    }
}
