//! `aws_sns_topic` over SNS's Query protocol: CreateTopic (with its attributes and tags),
//! SetTopicAttributes for changes, DeleteTopic.

use serde_json::{Value, json};

use super::{ResourceType, found, gone, s, unexpected};
use crate::api::{Api, ApiError, xml_text, xml_texts};
use crate::schema::{Arg, Schema};

pub struct SnsTopic;

/// The type.
pub static TYPE: SnsTopic = SnsTopic;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("display_name"),
        Arg::optional("policy"),
        Arg::optional("delivery_policy"),
        Arg::optional("fifo_topic").force_new(),
        Arg::optional("content_based_deduplication"),
        Arg::optional("tags"),
    ],
    blocks: &[],
    computed: &["arn", "id", "owner"],
};

/// The SNS API version every request names.
pub const VERSION: &str = "2010-03-31";

/// Provider argument -> SNS attribute.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("display_name", "DisplayName"),
    ("policy", "Policy"),
    ("delivery_policy", "DeliveryPolicy"),
    ("fifo_topic", "FifoTopic"),
    ("content_based_deduplication", "ContentBasedDeduplication"),
];

/// A JSON argument as the string SNS takes.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl ResourceType for SnsTopic {
    fn name(&self) -> &'static str {
        "aws_sns_topic"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut params = vec![("Name".to_string(), s(args, "name").to_string())];
        let mut n = 0;
        for (from, to) in ATTRIBUTES {
            if let Some(v) = args.get(*from) {
                n += 1;
                params.push((format!("Attributes.entry.{n}.key"), to.to_string()));
                params.push((format!("Attributes.entry.{n}.value"), text(v)));
            }
        }
        for (i, (k, v)) in args
            .get("tags")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .enumerate()
        {
            params.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
            params.push((format!("Tags.member.{}.Value", i + 1), text(v)));
        }
        let xml = api.query("sns", "CreateTopic", VERSION, &params).await?;
        let arn =
            xml_text(&xml, "TopicArn").ok_or_else(|| unexpected("CreateTopic", "no TopicArn"))?;
        let owner = arn.split(':').nth(4).unwrap_or_default().to_string();
        Ok(json!({"arn": arn, "id": arn, "owner": owner}))
    }
    async fn read(&self, api: &Api, _: &Value, attrs: &Value) -> Result<Option<Value>, ApiError> {
        let params = [("TopicArn".to_string(), s(attrs, "arn").to_string())];
        let answer = found(
            api.query("sns", "GetTopicAttributes", VERSION, &params)
                .await
                .map(Value::String),
        )?;
        Ok(answer.map(|xml| {
            let xml = xml.as_str().unwrap_or_default();
            let keys = xml_texts(xml, "key");
            let values = xml_texts(xml, "value");
            let display = keys
                .iter()
                .zip(values)
                .find(|(k, _)| k.as_str() == "DisplayName")
                .map(|(_, v)| v);
            match display {
                Some(d) => json!({ "display_name": d }),
                None => json!({}),
            }
        }))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let arn = s(attrs, "arn").to_string();
        for (from, to) in ATTRIBUTES {
            if before.get(*from) == args.get(*from) {
                continue;
            }
            let value = args.get(*from).map(text).unwrap_or_default();
            let params = [
                ("TopicArn".to_string(), arn.clone()),
                ("AttributeName".to_string(), to.to_string()),
                ("AttributeValue".to_string(), value),
            ];
            api.query("sns", "SetTopicAttributes", VERSION, &params)
                .await?;
        }
        if before.get("tags") != args.get("tags") {
            let mut params = vec![("ResourceArn".to_string(), arn.clone())];
            for (i, (k, v)) in args
                .get("tags")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .enumerate()
            {
                params.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
                params.push((format!("Tags.member.{}.Value", i + 1), text(v)));
            }
            if params.len() > 1 {
                api.query("sns", "TagResource", VERSION, &params).await?;
            }
            let removed: Vec<String> = before
                .get("tags")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|k| args.get("tags").and_then(|t| t.get(k.as_str())).is_none())
                .cloned()
                .collect();
            if !removed.is_empty() {
                let mut params = vec![("ResourceArn".to_string(), arn.clone())];
                for (i, k) in removed.into_iter().enumerate() {
                    params.push((format!("TagKeys.member.{}", i + 1), k));
                }
                api.query("sns", "UntagResource", VERSION, &params).await?;
            }
        }
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, _: &Value, attrs: &Value) -> Result<(), ApiError> {
        let params = [("TopicArn".to_string(), s(attrs, "arn").to_string())];
        gone(api.query("sns", "DeleteTopic", VERSION, &params).await)
    }
}
