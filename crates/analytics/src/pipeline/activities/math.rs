//! `math`: sets an attribute to a SQL expression over the message (null results leave the
//! attribute out).

use async_trait::async_trait;
use serde_json::Value;

use crate::columns::{Message, json_value};
use crate::pipeline::{Activity, Services, SqlExpr, required_str};

struct Math {
    attribute: String,
    expr: SqlExpr,
}

/// Builds a math activity from `{name, attribute, math, next}`.
pub(crate) fn build(members: &Value, _: &Services) -> Result<Box<dyn Activity>, String> {
    Ok(Box::new(Math {
        attribute: required_str(members, "attribute")?.to_string(),
        expr: SqlExpr::parse(required_str(members, "math")?)?,
    }))
}

#[async_trait]
impl Activity for Math {
    async fn apply(&self, mut messages: Vec<Message>) -> Result<Vec<Message>, String> {
        let refs: Vec<&Message> = messages.iter().collect();
        let values = self.expr.evaluate(&refs)?;
        for (row, message) in messages.iter_mut().enumerate() {
            match json_value(&values, row) {
                Value::Null => message.remove(&self.attribute),
                value => message.insert(self.attribute.clone(), value),
            };
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn computes_the_attribute() {
        let math = build(
            &json!({"name": "m", "attribute": "tempF", "math": "temp * 9 / 5 + 32"}),
            &Services::default(),
        )
        .unwrap();
        let messages: Vec<Message> = [json!({"temp": 100}), json!({"temp": 37.5}), json!({"x": 1})]
            .into_iter()
            .filter_map(|v| v.as_object().cloned())
            .collect();
        let out = math.apply(messages).await.unwrap();
        // one batch holds an integer and a double: the column, and so the result, is double
        assert_eq!(out[0]["tempF"], json!(212.0));
        assert_eq!(out[1]["tempF"], json!(99.5));
        assert!(!out[2].contains_key("tempF"));
    }
}
