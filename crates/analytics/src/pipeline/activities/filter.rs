//! `filter`: keeps the messages for which the SQL condition is true (a missing attribute reads
//! as null, so its message is dropped).

use arrow_array::{Array, BooleanArray};
use async_trait::async_trait;
use serde_json::Value;

use crate::columns::Message;
use crate::pipeline::{Activity, Services, SqlExpr, required_str};

struct Filter(SqlExpr);

/// Builds a filter from `{name, filter, next}`.
pub(crate) fn build(members: &Value, _: &Services) -> Result<Box<dyn Activity>, String> {
    Ok(Box::new(Filter(SqlExpr::parse(required_str(
        members, "filter",
    )?)?)))
}

#[async_trait]
impl Activity for Filter {
    async fn apply(&self, messages: Vec<Message>) -> Result<Vec<Message>, String> {
        let refs: Vec<&Message> = messages.iter().collect();
        let result = self.0.evaluate(&refs)?;
        let keep = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| format!("the filter gives {}, not a boolean", result.data_type()))?
            .clone();
        Ok(messages
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.is_valid(*i) && keep.value(*i))
            .map(|(_, m)| m)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn keeps_matching_messages() {
        let filter = build(
            &json!({"name": "f", "filter": "temp > 20 AND id <> 'x'"}),
            &Services::default(),
        )
        .unwrap();
        let messages: Vec<Message> = [
            json!({"temp": 25, "id": "a"}),
            json!({"temp": 10, "id": "b"}),
            json!({"id": "c"}),
            json!({"temp": 30.5, "id": "x"}),
        ]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let kept = filter.apply(messages).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["id"], "a");
    }
}
