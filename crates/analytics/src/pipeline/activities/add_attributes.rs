//! `addAttributes`: copies attributes to new names (`{"from": "to"}`, as AWS defines it).

use async_trait::async_trait;
use serde_json::Value;

use crate::columns::Message;
use crate::pipeline::{Activity, Services};

struct AddAttributes(Vec<(String, String)>);

/// Builds it from `{name, attributes{from: to}, next}`.
pub(crate) fn build(members: &Value, _: &Services) -> Result<Box<dyn Activity>, String> {
    let map = members
        .get("attributes")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .ok_or("addAttributes needs `attributes` (a map of attribute to new attribute)")?;
    let pairs = map
        .iter()
        .map(|(from, to)| {
            to.as_str()
                .filter(|t| !t.is_empty())
                .map(|to| (from.clone(), to.to_string()))
                .ok_or_else(|| format!("the new name of {from} must be a non-empty string"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Box::new(AddAttributes(pairs)))
}

#[async_trait]
impl Activity for AddAttributes {
    async fn apply(&self, mut messages: Vec<Message>) -> Result<Vec<Message>, String> {
        for message in &mut messages {
            for (from, to) in &self.0 {
                if let Some(value) = message.get(from).cloned() {
                    message.insert(to.clone(), value);
                }
            }
        }
        Ok(messages)
    }
}
