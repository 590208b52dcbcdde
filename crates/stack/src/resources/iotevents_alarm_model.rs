//! `awscc_iotevents_alarm_model`: CreateAlarmModel / UpdateAlarmModel / DeleteAlarmModel.
//! awscc's snake_case properties become the API's camelCase; the server checks the rule and
//! the actions at create and names the member at fault.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, camel_keys, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct AlarmModel;

/// The type.
pub static TYPE: AlarmModel = AlarmModel;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("alarm_model_name").force_new(),
        Arg::required("alarm_rule"),
        Arg::required("role_arn"),
        Arg::optional("alarm_model_description"),
        Arg::optional("alarm_event_actions"),
        Arg::optional("alarm_capabilities"),
        Arg::optional("severity"),
        Arg::optional("key").force_new(),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

/// The members UpdateAlarmModel takes (everything but the name, the key and the tags).
fn body(args: &Value) -> Value {
    let mut b = json!({
        "alarmRule": camel_keys(args.get("alarm_rule").unwrap_or(&Value::Null)),
        "roleArn": s(args, "role_arn"),
    });
    for (arg, member) in [
        ("alarm_event_actions", "alarmEventActions"),
        ("alarm_capabilities", "alarmCapabilities"),
        ("severity", "severity"),
        ("alarm_model_description", "alarmModelDescription"),
    ] {
        if let Some(v) = args.get(arg).filter(|v| !v.is_null()) {
            b[member] = camel_keys(v);
        }
    }
    b
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iotevents",
        path: format!("/alarm-models/{}", label(s(args, "alarm_model_name"))),
        describe: "DescribeAlarmModel",
        delete: "DeleteAlarmModel",
    }
}

#[async_trait::async_trait]
impl ResourceType for AlarmModel {
    fn name(&self) -> &'static str {
        "awscc_iotevents_alarm_model"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut b = body(args);
        b["alarmModelName"] = json!(s(args, "alarm_model_name"));
        if let Some(k) = opt_s(args, "key") {
            b["key"] = json!(k);
        }
        if let Some(tags) = args.get("tags") {
            b["tags"] = camel_keys(tags);
        }
        let out = api
            .rest(
                "iotevents",
                "CreateAlarmModel",
                Method::POST,
                "/alarm-models",
                Some(&b),
            )
            .await?;
        let arn = opt_s(&out, "alarmModelArn")
            .ok_or_else(|| unexpected("CreateAlarmModel", "no alarmModelArn"))?;
        Ok(json!({"arn": arn, "id": s(args, "alarm_model_name")}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    ("severity", "/severity"),
                    ("alarm_model_description", "/alarmModelDescription"),
                ],
            )
        }))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        api.rest(
            "iotevents",
            "UpdateAlarmModel",
            Method::POST,
            &rest(args).path,
            Some(&body(args)),
        )
        .await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}
