//! `selectAttributes`: keeps only the named attributes.

use async_trait::async_trait;
use serde_json::Value;

use crate::columns::Message;
use crate::pipeline::{Activity, Services, required_names};

struct SelectAttributes(Vec<String>);

/// Builds it from `{name, attributes[], next}`.
pub(crate) fn build(members: &Value, _: &Services) -> Result<Box<dyn Activity>, String> {
    Ok(Box::new(SelectAttributes(required_names(
        members,
        "attributes",
    )?)))
}

#[async_trait]
impl Activity for SelectAttributes {
    async fn apply(&self, mut messages: Vec<Message>) -> Result<Vec<Message>, String> {
        for message in &mut messages {
            message.retain(|k, _| self.0.contains(k));
        }
        Ok(messages)
    }
}
