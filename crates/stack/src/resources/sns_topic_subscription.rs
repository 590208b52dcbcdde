//! `aws_sns_topic_subscription`: Subscribe (asking for the subscription's ARN at once),
//! SetSubscriptionAttributes for changes, Unsubscribe.

use serde_json::{Value, json};

use super::sns_topic::{VERSION, text};
use super::{ResourceType, found, gone, s, unexpected};
use crate::api::{Api, ApiError, xml_text};
use crate::schema::{Arg, Schema};

pub struct SnsTopicSubscription;

/// The type.
pub static TYPE: SnsTopicSubscription = SnsTopicSubscription;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("topic_arn").force_new(),
        Arg::required("protocol").force_new(),
        Arg::required("endpoint").force_new(),
        Arg::optional("filter_policy"),
        Arg::optional("filter_policy_scope"),
        Arg::optional("raw_message_delivery"),
        Arg::optional("redrive_policy"),
        Arg::optional("endpoint_auto_confirms"),
        Arg::optional("confirmation_timeout_in_minutes"),
    ],
    blocks: &[],
    computed: &["arn", "id", "owner_id", "pending_confirmation"],
};

const ATTRIBUTES: &[(&str, &str)] = &[
    ("filter_policy", "FilterPolicy"),
    ("filter_policy_scope", "FilterPolicyScope"),
    ("raw_message_delivery", "RawMessageDelivery"),
    ("redrive_policy", "RedrivePolicy"),
];

#[async_trait::async_trait]
impl ResourceType for SnsTopicSubscription {
    fn name(&self) -> &'static str {
        "aws_sns_topic_subscription"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut params = vec![
            ("TopicArn".to_string(), s(args, "topic_arn").to_string()),
            ("Protocol".to_string(), s(args, "protocol").to_string()),
            ("Endpoint".to_string(), s(args, "endpoint").to_string()),
            ("ReturnSubscriptionArn".to_string(), "true".to_string()),
        ];
        let mut n = 0;
        for (from, to) in ATTRIBUTES {
            if let Some(v) = args.get(*from) {
                n += 1;
                params.push((format!("Attributes.entry.{n}.key"), to.to_string()));
                params.push((format!("Attributes.entry.{n}.value"), text(v)));
            }
        }
        let xml = api.query("sns", "Subscribe", VERSION, &params).await?;
        let arn = xml_text(&xml, "SubscriptionArn")
            .ok_or_else(|| unexpected("Subscribe", "no SubscriptionArn"))?;
        let owner = arn.split(':').nth(4).unwrap_or_default().to_string();
        let pending = arn == "pending confirmation";
        Ok(json!({"arn": arn, "id": arn, "owner_id": owner, "pending_confirmation": pending}))
    }
    async fn read(&self, api: &Api, _: &Value, attrs: &Value) -> Result<Option<Value>, ApiError> {
        let params = [("SubscriptionArn".to_string(), s(attrs, "arn").to_string())];
        let answer = found(
            api.query("sns", "GetSubscriptionAttributes", VERSION, &params)
                .await
                .map(Value::String),
        )?;
        Ok(answer.map(|_| json!({})))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        for (from, to) in ATTRIBUTES {
            if before.get(*from) == args.get(*from) {
                continue;
            }
            let params = [
                ("SubscriptionArn".to_string(), s(attrs, "arn").to_string()),
                ("AttributeName".to_string(), to.to_string()),
                (
                    "AttributeValue".to_string(),
                    args.get(*from).map(text).unwrap_or_default(),
                ),
            ];
            api.query("sns", "SetSubscriptionAttributes", VERSION, &params)
                .await?;
        }
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, _: &Value, attrs: &Value) -> Result<(), ApiError> {
        let params = [("SubscriptionArn".to_string(), s(attrs, "arn").to_string())];
        gone(api.query("sns", "Unsubscribe", VERSION, &params).await)
    }
}
